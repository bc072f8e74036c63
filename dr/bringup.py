"""One county brought up at another site from a restore point: restore its data disk, clone the
site's prebooted template under the county's identity (or boot the image: `cold`), activate it,
wait for its app, switch its address, probe through the address.

Every part is idempotent and the whole is resumable: a county whose app already answers at the
site is not started again (libvirt holds one domain per name, so a rerun can never make a second
copy), and a county finished by a killed attempt is read back from its record in the job's folder
with the times it was measured with.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from dr import records, restorepoints
from dr.restorepoints import Point
from provisioning import address, images, templates, vm
from provisioning import records as provisioning_records
from provisioning.errors import ProvisioningError
from provisioning.hypervisor import DomainState, Hypervisor
from provisioning.platform import Platform
from provisioning.vmplan import VmPaths, VmPlan

PROBE_TIMEOUT_S = 60.0


class CountyRun(BaseModel):
    """What happened to one county: the point used, each part's seconds, and when it served."""

    model_config = ConfigDict(frozen=True)
    county: str
    vm: str
    site: str
    point: Point
    how: str  # clone / cold / already serving
    parts: dict[str, float]  # part -> seconds, in order
    started_at: float  # epoch
    serving_at: float  # epoch: answered through its address (or its app port when not switched)
    app_port: int
    address_port: int | None


@dataclass
class _Clock:
    parts: dict[str, float]

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.parts[name] = round(self.parts.get(name, 0.0) + time.monotonic() - began, 3)


@dataclass(frozen=True)
class Target:
    """Where and as what the county comes up."""

    site: str
    plan: VmPlan  # the county's identity (failover) or an isolated one (DR test)
    switch: bool  # move the county and its address (failover) or not (DR test)
    cold: bool = False


def record_path(workdir: Path, county: str) -> Path:
    return workdir / f"{county}.done.json"


def finished(workdir: Path, county: str) -> CountyRun | None:
    path = record_path(workdir, county)
    return CountyRun.model_validate_json(path.read_text()) if path.exists() else None


def place_data_disk(restored_disk: Path, own: Path, serving: bool) -> str:
    """Move the restored disk into place as the VM's own data disk at the site. Moved, not linked:
    the VM writes to it, and a restored disk left under its point's name would no longer hold that
    point for a later restore to reuse. An older disk there is kept beside it, never overwritten."""
    own.parent.mkdir(parents=True, exist_ok=True)
    if own.exists():
        if serving:
            raise ProvisioningError(f"{own} is the disk of a VM that serves; refusing to swap it")
        kept = own.with_name(f"{own.name}.before-{int(time.time())}")
        os.replace(own, kept)
        os.replace(restored_disk, own)
        return f"in place (the disk there before is kept as {kept.name})"
    os.replace(restored_disk, own)
    return "in place"


def _backing(platform: Platform, hv: Hypervisor, site: str, plan: VmPlan, cold: bool,
             ) -> tuple[images.GoldenImage, templates.Template | None]:
    """The golden image at the site and, for a clone, the site's template of the county's memory size
    (there since `countycloud setup`; built now if it is not, which takes a boot)."""
    golden = images.ensure(platform.cache_dir, log=lambda _line: None)
    image = images.at_site(golden, platform.site(site).images)
    if cold:
        return image, None
    template = templates.build(hv, platform.site(site), image, platform.domain_type, plan.memory_mib,
                               log=lambda _line: None)
    templates.check_usable(template)
    return image, template


def _runs(platform: Platform, site: str, name: str) -> bool:
    with platform.hypervisor(site) as hv:
        return hv.state(name) in (DomainState.RUNNING, DomainState.PAUSED)


def switch_address(platform: Platform, county: str, site: str, plan: VmPlan, note: str) -> int:
    """Record the county at `site` and put its VM there behind its address; the address's port."""
    records.move_county(platform.engine, county, site, note=note)
    vm.point_address(platform, provisioning_records.frontends(platform.engine))
    vm.vouch_serving(platform, county, {plan.name: plan.app_port})
    return records.gateway_port(platform.engine, county)


def bring_up(platform: Platform, county: str, point: Point, target: Target, workdir: Path,
             log: Callable[[str], None] = print) -> CountyRun:
    """The county serving at `target.site` from `point`; see the module's docstring."""
    done = finished(workdir, county)
    if done is not None and address.healthy(done.app_port):
        return done
    clock = _Clock({})
    started_at = time.time()
    plan, site = target.plan, target.site
    paths: VmPaths = vm.vm_disks(platform, site, plan.name)
    serving = address.healthy(plan.app_port, timeout_s=1.0)
    how = "already serving"
    if not serving:
        if _runs(platform, site, plan.name):
            # An interrupted attempt's VM runs on the disk it restored: a second restore would move
            # that disk aside under it, and its writes would go to the file kept aside.
            log(f"{county}: its VM already runs at {site} (an interrupted attempt's): not restored again")
        else:
            with clock.part("restore"):
                restored = restorepoints.restore(platform, site, plan.name, point, plan.data_disk_mib,
                                                 workdir)
                log(f"{county}: data disk {place_data_disk(restored, paths.data_disk, serving=False)}")
        with platform.hypervisor(site) as hv:
            image, template = _backing(platform, hv, site, plan, target.cold)
            with clock.part("disks"):
                backing = image.disk if template is None else template.system_disk
                vm.make_disks(hv, plan, paths, system_backing=backing, ssh_key=platform.ssh_key)
            with clock.part("start"):
                mode = vm.BringUp.COLD if target.cold else vm.BringUp.CLONE
                how = vm.start(hv, plan, paths, mode=mode, image=image, template=template,
                               domain_type=platform.domain_type).how
            if not target.cold:
                with clock.part("activate"):
                    vm.activate(hv, plan.name, paths)
                with clock.part("resize"):  # the template's size is the county's memory, not its vCPUs
                    vm.resize(hv, plan.name, plan.vcpus, plan.memory_mib)
            with clock.part("ready"):
                vm.wait_ready(hv, plan.name, plan.app_port, platform.boot_timeout_s)
    gateway = None
    if target.switch:
        with clock.part("switch"):
            gateway = switch_address(platform, county, site, plan, note=f"brought up from {point.short}")
    with clock.part("probe"):
        address.wait_healthy(gateway or plan.app_port, timeout_s=PROBE_TIMEOUT_S)
    run = CountyRun(county=county, vm=plan.name, site=site, point=point, how=how, parts=clock.parts,
                    started_at=started_at, serving_at=time.time(), app_port=plan.app_port,
                    address_port=gateway)
    record_path(workdir, county).write_text(json.dumps(run.model_dump(mode="json")))
    return run
