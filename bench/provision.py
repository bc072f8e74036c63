"""Provisioning speed, measured side by side in one run (issues #4 and #7, section "Speed").

1. bare boot: a throwaway linked clone of the golden image (same spec as a `--cold` county: its own
   seed and data disks), defined and started through the hypervisor edge; timed from define until
   SSH sends its banner (bare_ssh_s) and until the app answers /healthz 200 (bare_boot_s).
2. ready_s: `countycloud tenant create COUNTY --cold` as a subprocess, timed from the command's start
   until the county's address (HAProxy, 127.0.0.1:gateway port) first answers /healthz 200.
3. clone_ready_s: the same with the default path (a clone of the site's prebooted template).
4. --counties N: N counties the default way (from templates) with one `tenant create` naming them
   all (or, with --clone-concurrency, one command per county, at most that many not yet serving):
   time from the command's start until all answer through their addresses, and the largest RSS of
   their QEMU processes while their jobs run (Ansible converges included). Reported both as #7's
   clone13_all_ready_s / clone_rss_mb_max and as #4's all_ready_s / rss_mb_max (`tenant create`,
   which clones by default since #7). With --counties 13 and without --skip-cold13, the same with
   --cold (cold13_all_ready_s, cold13_rss_mb_max), one command per county and at most
   --cold-concurrency at a time (13 TCG boots at once are slower than the cores allow).

Every `tenant create` is left to finish (it converges with Ansible after the county serves) and its
job's per-step durations are reported; every county the bench made is retired with --purge at the end.

The CLI runs from a snapshot of the committed tree (`git archive HEAD`) unless --source worktree:
the golden image is keyed by tenant_app's source, which others edit all day, and an edit in the
middle of a run would make a `tenant create` rebuild the image and the templates inside the figure.

Its own environment: state dir /var/lib/countycloud-bench, guest ports 27000-27999, gateway ports
28000-28499, the shared image cache. `setup --no-templates`, `inventory apply` and `template build
primary` (the site every sample county lives at) run first and are not timed.

Issue #14 (item 12) adds, for the N counties from templates: clone13_ratio = clone13_all_ready_s
÷ bare_boot_s of the same run (so the bare boot runs whenever N > 1, even with --skip-single), and
clone13_command_s = the whole `tenant create` naming all N, from its start until it exits (every
job finished: converges, or their skips, included).

Last line: one JSON object with p1_ratio, ready_s, bare_boot_s, clone_ready_s, clone_ratio,
clone13_all_ready_s, clone13_ratio, clone13_command_s, clone_rss_mb_max, counties, all_ready_s,
rss_mb_max, cold13_all_ready_s, cold13_rss_mb_max (null when not measured).
Run: .venv/bin/python bench/provision.py [--counties 13] [--skip-cold13]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provisioning import address, disks, images, seed  # noqa: E402
from provisioning.domain_xml import render_domain_xml  # noqa: E402
from provisioning.hypervisor import Hypervisor  # noqa: E402
from provisioning.platform import ensure_ssh_key, host_domain_type  # noqa: E402
from provisioning.sites import site_paths  # noqa: E402
from provisioning.spec import new_uuid  # noqa: E402
from provisioning.vmplan import VmPaths, VmPlan, app_env, cold_spec, machine_id  # noqa: E402

STATE_DIR = Path("/var/lib/countycloud-bench")
BENCH_ENV = {
    # Below the kernel's ephemeral range (32768-60999), like every range of the platform: inside it,
    # TIME-WAIT sockets of the bench's own health polling held ports its counties were allocated.
    "COUNTYCLOUD_GUEST_PORT_FIRST": "27000", "COUNTYCLOUD_GUEST_PORT_LAST": "27999",
    "COUNTYCLOUD_GATEWAY_PORT_FIRST": "28000", "COUNTYCLOUD_GATEWAY_PORT_LAST": "28499",
}
# The bare VM's forwards come from the top of the bench's guest range: the inventory hands ports
# out from the bottom, so the two never meet (each is also checked free before use).
BARE_PORTS = range(27999, 27900, -1)
SITE = "primary"  # every sample county lives there
SINGLE_COUNTY = "keelung"  # the demo's county
SMALL = (1, 1024, 256)  # the sample counties' size: vCPUs, MiB, data disk MiB (as a cold county)
BOOT_TIMEOUT_S = 900.0
JOB_TIMEOUT_S = 1800.0
POLL_S = 0.1
# Each county's address is polled this often: through HAProxy every attempt reaches the guest's
# user-mode network (up to 3 connects with HAProxy's retries), so 13 watchers at POLL_S loaded the
# very guests they time. A county is seen serving at most this much late.
ADDRESS_POLL_S = 0.25
GOALS = {"p1_ratio": 1.25, "clone_ratio": 0.10, "clone13_all_ready_s": 30.0, "clone_rss_mb_max": 400.0,
         "all_ready_s": 240.0, "rss_mb_max": 600.0, "clone13_ratio": 0.5, "clone13_command_s": 60.0}


def say(text: str) -> None:
    print(text, flush=True)


def load_note() -> dict[str, Any]:
    """How busy the machine is: others boot VMs on the same 2 cores."""
    ours = str(STATE_DIR)
    qemus = [p for p in psutil.process_iter(["name", "cmdline"])
             if (p.info["name"] or "").startswith("qemu-system")]
    foreign = [p for p in qemus if not any(ours in arg for arg in (p.info["cmdline"] or []))]
    return {"load1": round(os.getloadavg()[0], 2), "cores": os.cpu_count(),
            "other_qemu": len(foreign), "our_qemu": len(qemus) - len(foreign)}


# --- the CLI, as a subprocess in the bench's environment -----------------------------------------

@dataclass
class Cli:
    source: Path
    env: dict[str, str]
    logs: Path

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "controlplane", *args]

    def run(self, *args: str, check: bool = True, timeout: float = JOB_TIMEOUT_S) -> str:
        result = subprocess.run(self.argv(*args), cwd=self.source, env=self.env, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"countycloud {' '.join(args)} exited {result.returncode}: "
                               f"{(result.stderr or result.stdout).strip()[-1500:]}")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args))

    def spawn(self, label: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{label}.log").open("wb")
        return subprocess.Popen(self.argv(*args), cwd=self.source, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def snapshot_source(state_dir: Path) -> Path:
    """The committed tree at HEAD, unpacked once per commit (git archive only reads the repo)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    root = state_dir / "src"
    target = root / commit
    if not target.exists():
        tmp = root / f".{commit}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", "HEAD"], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise RuntimeError("git archive HEAD failed")
        tmp.rename(target)
    for old in root.iterdir():
        # Earlier commits' snapshots, once no run can still be using them (an interrupted run's
        # `setup` child may go on for minutes, reading the image recipe from its snapshot).
        if old != target and time.time() - old.stat().st_mtime > 3 * 3600:
            shutil.rmtree(old, ignore_errors=True)
    target.touch()
    return target


# --- 1. the bare boot ----------------------------------------------------------------------------

def free_port(candidates: Iterable[int], taken: set[int]) -> int:
    for port in candidates:
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free port for the bare VM at the top of the bench's guest range")


def ssh_banner(port: int) -> bool:
    """True once sshd itself answers: QEMU's forward accepts connections before the guest listens
    and then closes them, so only the "SSH-" banner proves the guest's sshd is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.settimeout(1.0)
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def write_bare_disks(plan: VmPlan, paths: VmPaths, image: images.GoldenImage, ssh_key: Path) -> None:
    """What the provisioning job's disks step makes for a cold county: an overlay on the golden
    image, an empty data disk, a seed with settings and its own identity."""
    paths.directory.mkdir(parents=True, exist_ok=True)
    disks.overlay(paths.system_disk, image.disk)
    seed.make_data_disk(paths.data_disk, plan.data_disk_mib)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", plan.name, "-f",
                    str(paths.host_key)], check=True, capture_output=True)
    public_key = ensure_ssh_key(ssh_key).with_suffix(".pub").read_text().strip()
    seed.build_seed_image(
        paths.seed_disk, settings=app_env(plan), hostname=plan.name, authorized_keys=[public_key],
        identity={
            "machine-id": (machine_id(plan) + "\n").encode(),
            "random-seed": secrets.token_bytes(512),
            "ssh_host_ed25519_key": paths.host_key.read_bytes(),
            "ssh_host_ed25519_key.pub": paths.host_key.with_suffix(".pub").read_bytes(),
        },
    )


def bare_boot(state_dir: Path, image: images.GoldenImage, taken_ports: set[int]) -> dict[str, Any]:
    site = site_paths(state_dir, SITE)
    name = f"bench-bare-{os.getpid()}"
    vcpus, memory_mib, data_mib = SMALL
    plan = VmPlan(name=name, uuid=new_uuid(), tenant="bench", county_name="bench", site=SITE, vcpus=vcpus,
                  memory_mib=memory_mib, data_disk_mib=data_mib,
                  ssh_port=free_port(BARE_PORTS, taken_ports), app_port=free_port(BARE_PORTS, taken_ports),
                  app_secret=secrets.token_urlsafe(24), settings={})
    # Outside the site's vms/ folder: nothing of the platform (template dependents, retire) sees it.
    paths = VmPaths(state_dir / "bench-bare" / name)
    result: dict[str, Any] = {"load": load_note()}
    with Hypervisor(SITE, site.uri) as hv:
        try:
            began = time.monotonic()
            write_bare_disks(plan, paths, image, state_dir / "ssh" / "id_ed25519")
            result["bare_disks_s"] = round(time.monotonic() - began, 2)
            spec = cold_spec(plan, paths, image, host_domain_type())
            began = time.monotonic()  # the figure starts at define, as the issue puts it
            hv.define(render_domain_xml(spec))
            hv.start(name)
            ssh_s: float | None = None
            peak = 0.0
            pid: int | None = None
            while True:
                elapsed = time.monotonic() - began
                if ssh_s is None and ssh_banner(plan.ssh_port):
                    ssh_s = elapsed
                if address.healthy(plan.app_port, timeout_s=1.0):
                    boot_s = time.monotonic() - began
                    break
                if elapsed > BOOT_TIMEOUT_S:
                    raise RuntimeError(f"bare VM {name}: no /healthz 200 within {BOOT_TIMEOUT_S:.0f} s")
                pid = pid or hv.qemu_pid(name)
                peak = max(peak, rss_mb(pid))
                time.sleep(POLL_S)
            if ssh_s is None:  # the app answered first; SSH follows within a poll or two
                while not ssh_banner(plan.ssh_port) and time.monotonic() - began < BOOT_TIMEOUT_S:
                    time.sleep(POLL_S)
                ssh_s = time.monotonic() - began
            result.update(bare_ssh_s=round(ssh_s, 2), bare_boot_s=round(boot_s, 2),
                          bare_rss_mb=round(max(peak, rss_mb(pid or hv.qemu_pid(name))), 1))
        finally:
            hv.undefine(name)
            shutil.rmtree(paths.directory, ignore_errors=True)
    return result


# --- 2-4. counties through the CLI ---------------------------------------------------------------

def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def qemu_pids(vm_names: Iterable[str], state_dir: Path) -> dict[str, int]:
    """QEMU processes by the `guest=NAME,` argument libvirt gives each one, among those whose disks
    are under our state dir: other engineers' test sites run county VMs of the same names."""
    needles = {f"guest={name},": name for name in vm_names}
    found: dict[str, int] = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        argv = proc.info["cmdline"] or []
        ours = any(str(state_dir) in arg for arg in argv)
        if not ours or not (proc.info["name"] or "").startswith("qemu-system"):
            continue
        for arg in argv:
            for needle, name in needles.items():
                if needle in arg:
                    found[name] = proc.pid
    return found


@dataclass
class County:
    slug: str
    gateway_port: int
    vms: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready_s: float | None = None
    exit_s: float | None = None
    rc: int | None = None
    rss_mb: float = 0.0
    pids: dict[str, int] = field(default_factory=dict)
    # Its QEMUs' CPU seconds when it first answered: what coming up cost it (the rest of its CPU
    # until the last county serves is what it cost while serving idle).
    qemu_s_at_ready: float | None = None


def describe(cli: Cli, slug: str) -> County:
    row = cli.json("tenant", "show", slug, "--json")
    if not row.get("address"):
        raise RuntimeError(f"{slug} has no address port; inventory apply first")
    port = int(str(row["address"]).rstrip("/").rsplit(":", 1)[1])
    return County(slug=slug, gateway_port=port, vms=[vm["name"] for vm in row["vms"]])


def status_of(cli: Cli, slug: str) -> str:
    return str(cli.json("tenant", "show", slug, "--json")["status"])


def retire(cli: Cli, slugs: Iterable[str]) -> None:
    """Retire (--purge) every county that is not planned or retired, after cancelling its unfinished
    jobs: `tenant create` resumes an unfinished job of its county, so one left by an interrupted run
    would carry on from its old step (Ansible against a county that no longer exists)."""
    for slug in slugs:
        for job in cli.json("job", "list", "--json", "--target", slug, "--limit", "20"):
            if job["status"] not in ("succeeded", "cancelled"):
                cli.run("job", "cancel", job["id"], check=False)
        if status_of(cli, slug) not in ("planned", "retired"):
            cli.run("tenant", "retire", slug, "--purge")


def watch_address(county: County, stop: threading.Event) -> None:
    """Poll one county's address until its first /healthz 200 (a thread per county: one slow answer
    under load must not delay noticing the others, and a county whose command already failed, say
    in its Ansible step after it served, is still timed)."""
    while not stop.is_set():
        if address.healthy(county.gateway_port, timeout_s=2.0):
            county.ready_s = time.monotonic() - county.started
            county.qemu_s_at_ready = qemu_cpu_s(qemu_pids(county.vms, STATE_DIR).values())
            say(f"  {county.slug}: healthy through 127.0.0.1:{county.gateway_port} "
                f"{county.ready_s:.1f} s after its command started")
            return
        time.sleep(ADDRESS_POLL_S)


def qemu_cpu_s(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return round(total, 2)


@dataclass
class CpuShare:
    """Where the machine's CPU went between the first command's start and the last county serving:
    the whole machine (busy = not idle), each county's QEMU, the `tenant create` process with the
    children it waited for (mkfs, qemu-img, haproxy -c...), the site's libvirtd and HAProxy."""

    began: Any = None
    result: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def _busy(times: Any) -> float:
        return float(times.user + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0)
                     + getattr(times, "nice", 0))

    @staticmethod
    def _named(fragment: str) -> float:
        total = 0.0
        for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            argv = " ".join(proc.info["cmdline"] or [])
            if fragment in (proc.info["name"] or "") and str(STATE_DIR) in argv and proc.info["cpu_times"]:
                total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
        return total

    def start(self) -> None:
        self.began = (psutil.cpu_times(), self._named("libvirtd"), self._named("haproxy"), time.monotonic())

    def stop(self, counties: list[County]) -> None:
        if self.began is None or self.result:
            return
        machine, libvirtd, haproxy, at = self.began
        now = psutil.cpu_times()
        qemu: dict[str, float] = {}
        for county in counties:
            for vm, pid in county.pids.items():
                try:
                    times = psutil.Process(pid).cpu_times()
                except psutil.Error:
                    continue
                qemu[vm] = round(times.user + times.system, 2)
        clis: dict[int, float] = {}
        for county in counties:
            if county.proc is not None and county.proc.pid not in clis:
                try:
                    times = psutil.Process(county.proc.pid).cpu_times()
                except psutil.Error:
                    continue
                clis[county.proc.pid] = (times.user + times.system + times.children_user
                                         + times.children_system)
        self.result = {
            "window_s": round(time.monotonic() - at, 2), "cores": os.cpu_count(),
            "machine_busy_s": round(self._busy(now) - self._busy(machine), 1),
            "qemu_s": round(sum(qemu.values()), 1), "qemu_s_each": qemu,
            # Split at each county's first answer: coming up, then serving while the rest come up.
            "qemu_s_to_serve": round(sum(c.qemu_s_at_ready or 0.0 for c in counties), 1),
            "qemu_s_to_serve_each": {c.slug: c.qemu_s_at_ready for c in counties},
            "cli_s": round(sum(clis.values()), 1),
            "libvirtd_s": round(self._named("libvirtd") - libvirtd, 1),
            "haproxy_s": round(self._named("haproxy") - haproxy, 1),
        }


def provision(cli: Cli, counties: list[County], cold: bool, concurrency: int | None,
              label: str, cpu: CpuShare | None = None) -> float | None:
    """Start `tenant create` for every county, poll their addresses; returns the seconds from the
    first start until all answered /healthz 200 (None if any never did). `concurrency` None: one
    `tenant create` naming every county (they are provisioned together in one process); a number:
    one command per county, at most that many counties not yet serving. Every command is then left
    to finish (its Ansible converges run after the counties serve)."""
    waiting = list(counties)
    running: list[County] = []
    watchers: list[threading.Thread] = []
    stop = threading.Event()
    began = time.monotonic()
    said_all = False
    next_rss = 0.0
    if cpu is not None:
        cpu.start()
    try:
        while waiting or running:
            # The pool bounds counties on their way to serving: a command whose county already
            # answers is only converging it with Ansible, and holding a slot for that would make the
            # last counties wait on the first ones' configuration rather than on the cores.
            if concurrency is None and waiting:
                command = cli.spawn(f"{label}-all", "tenant", "create", *(c.slug for c in waiting),
                                    *(["--cold"] if cold else []))
                for county in waiting:
                    county.proc, county.started = command, time.monotonic()
                    running.append(county)
                    watcher = threading.Thread(target=watch_address, args=(county, stop), daemon=True)
                    watcher.start()
                    watchers.append(watcher)
                waiting.clear()
            while waiting and sum(1 for c in running if c.ready_s is None) < (concurrency or 1):
                county = waiting.pop(0)
                county.started = time.monotonic()
                args = ["tenant", "create", county.slug] + (["--cold"] if cold else [])
                county.proc = cli.spawn(f"{label}-{county.slug}", *args)
                running.append(county)
                watcher = threading.Thread(target=watch_address, args=(county, stop), daemon=True)
                watcher.start()
                watchers.append(watcher)
            for county in list(running):
                assert county.proc is not None
                rc = county.proc.poll()
                if rc is not None:
                    county.rc, county.exit_s = rc, time.monotonic() - county.started
                    running.remove(county)
                    if rc != 0:
                        say(f"  {county.slug}: tenant create exited {rc} "
                            f"(log in {cli.logs}/{label}-*.log)")
                elif time.monotonic() - county.started > JOB_TIMEOUT_S:
                    county.proc.terminate()
            if time.monotonic() >= next_rss:
                # Twice a second is enough for a peak that builds over seconds, and keeps the bench's
                # own /proc scans from competing with the guests it measures.
                sample_rss(running)
                next_rss = time.monotonic() + 0.5
            if not said_all and not waiting and all(c.ready_s is not None for c in counties):
                said_all = True
                if cpu is not None:
                    sample_rss(running)  # every QEMU's pid known before their CPU is read
                    cpu.stop(counties)
                say(f"  all {len(counties)} healthy; waiting for the commands to finish")
            time.sleep(POLL_S)
        # Every command has ended; a county that serves is seen within a few more polls.
        deadline = time.monotonic() + 10.0
        while any(w.is_alive() for w in watchers) and time.monotonic() < deadline:
            time.sleep(POLL_S)
    except BaseException:
        # Interrupted (SIGTERM, Ctrl-C) or failed: end our own commands before anyone retires
        # their counties, so no job goes on against a county being torn down.
        for county in running:
            if county.proc is not None and county.proc.poll() is None:
                county.proc.terminate()
                county.proc.wait(timeout=60)
        raise
    finally:
        stop.set()
    if any(c.ready_s is None for c in counties):
        return None  # the caller names the counties that never served
    # From the first command's start until the last county answered (each county's own figure is
    # from its own command's start, which differs once the pool holds some back).
    return max(c.started + (c.ready_s or 0.0) for c in counties) - began


def sample_rss(counties: list[County]) -> None:
    """Each county's largest QEMU RSS so far (one scan of /proc finds every QEMU not yet known)."""
    missing = [vm for county in counties for vm in county.vms if vm not in county.pids]
    found = qemu_pids(missing, STATE_DIR) if missing else {}
    for county in counties:
        county.pids.update({vm: pid for vm, pid in found.items() if vm in county.vms})
        for pid in county.pids.values():
            county.rss_mb = max(county.rss_mb, rss_mb(pid))


def job_steps(cli: Cli, slug: str) -> dict[str, Any]:
    """The newest provisioning job of the county: its id, the CLI's start-up before the job began,
    and each step's duration."""
    listed = cli.json("job", "list", "--json", "--target", slug, "--limit", "1")
    if not listed:
        return {}
    job = json.loads(cli.run("job", "show", listed[0]["id"], "--json", check=False))
    return {"job": job["id"], "status": job["status"], "job_s": round(job["duration_s"] or 0.0, 2),
            "steps": {step["name"]: round(step["duration_s"] or 0.0, 2) for step in job["steps"]},
            # When each step ran and what it said: kept in the run's log folder, not the JSON line.
            "detail": [(step["name"], step["started_at"], step["finished_at"], step["output"][-300:])
                       for step in job["steps"]]}


def single(cli: Cli, slug: str, cold: bool, label: str) -> dict[str, Any]:
    retire(cli, [slug])  # a county left over from an interrupted run
    county = describe(cli, slug)
    load = load_note()
    try:
        ready = provision(cli, [county], cold=cold, concurrency=1, label=label)
        if ready is None:
            raise RuntimeError(f"{slug} never answered through its address "
                               f"(log: {cli.logs}/{label}-{slug}.log)")
        steps = job_steps(cli, slug)
        steps.pop("detail", None)
        return {"ready_s": round(ready, 2), "command_s": round(county.exit_s or 0.0, 2), "rc": county.rc,
                "rss_mb": round(county.rss_mb, 1), "load": load, **steps}
    finally:
        retire(cli, [slug])


def many(cli: Cli, slugs: list[str], cold: bool, concurrency: int | None, label: str) -> dict[str, Any]:
    retire(cli, slugs)
    counties = [describe(cli, slug) for slug in slugs]
    load = load_note()
    try:
        cpu = CpuShare()
        ready = provision(cli, counties, cold=cold, concurrency=concurrency, label=label, cpu=cpu)
        jobs = {c.slug: job_steps(cli, c.slug) for c in counties}
        # Every job's steps, for finding where the time went (the JSON line keeps the slowest only).
        (cli.logs / f"{label}-jobs.json").write_text(json.dumps(
            {c.slug: {"ready_s": c.ready_s, "command_s": c.exit_s, **jobs[c.slug]} for c in counties},
            indent=1))
        for job in jobs.values():
            job.pop("detail", None)
    finally:
        retire(cli, slugs)
    slowest = max(counties, key=lambda c: c.ready_s if c.ready_s is not None else float("inf"))
    return {
        "counties": len(counties), "concurrency": concurrency or "one command for all",
        "all_ready_s": round(ready, 2) if ready is not None else None,
        "rss_mb_max": round(max(c.rss_mb for c in counties), 1),
        "ready_s": {c.slug: round(c.ready_s, 2) if c.ready_s is not None else None for c in counties},
        "never_healthy": [c.slug for c in counties if c.ready_s is None],
        "command_failed": [c.slug for c in counties if c.rc != 0],
        "command_s_max": round(max(c.exit_s or 0.0 for c in counties), 2), "load": load,
        "slowest": {"county": slowest.slug, **jobs.get(slowest.slug, {})},
        "cpu_until_all_serve": cpu.result,
        "step_s_max": step_maxima(jobs.values()),
    }


def step_maxima(jobs: Iterable[dict[str, Any]]) -> dict[str, float]:
    """The longest duration of each kind of step over all jobs (per-VM steps folded by their kind)."""
    maxima: dict[str, float] = {}
    for job in jobs:
        for name, seconds in job.get("steps", {}).items():
            kind = name.split(":", 1)[-1]
            maxima[kind] = max(maxima.get(kind, 0.0), seconds)
    return maxima


# --- the run -------------------------------------------------------------------------------------

class Interrupted(Exception):
    """SIGTERM: the phase under way stops, its counties are retired, the JSON line still printed."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Interrupted("interrupted by SIGTERM")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--counties", type=int, default=1, help="1 (single-county figures) to 13")
    parser.add_argument("--skip-cold13", action="store_true", help="no cold run of the N counties")
    parser.add_argument("--clone-concurrency", type=int, default=None,
                        help="one `tenant create` per county, at most N of them not yet serving "
                             "(default: one `tenant create` naming all N counties)")
    parser.add_argument("--cold-concurrency", type=int, default=4,
                        help="the same for --cold (TCG boots contend for the cores)")
    parser.add_argument("--source", choices=("head", "worktree"), default="head",
                        help="run the CLI from a snapshot of HEAD (default) or from the work tree")
    parser.add_argument("--skip-single", action="store_true",
                        help="no cold/clone single figures (the bare boot still runs for clone13_ratio)")
    parser.add_argument("--places", default="",
                        help="comma-separated COUNTYCLOUD_BRINGUP_PLACES values (0: no limit): the N "
                             "counties from templates once per value, side by side; the figures are "
                             "the first value's (default: the platform's own setting, once)")
    parser.add_argument("--skip-bare", action="store_true",
                        help="no bare boot (no ratios): for comparing --places values quickly")
    args = parser.parse_args()
    if not 1 <= args.counties <= 13:
        parser.error("--counties takes 1 to 13")

    state_dir = STATE_DIR  # fixed: the RSS and load figures tell our QEMUs from others' by it
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "bench-logs" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logs.mkdir(parents=True)
    source = snapshot_source(state_dir) if args.source == "head" else ROOT
    env = {**os.environ, **BENCH_ENV, "COUNTYCLOUD_STATE_DIR": str(state_dir),
           # ansible-runner finds ansible-playbook on PATH: the venv's bin must be on it.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cli = Cli(source=source, env=env, logs=logs)
    out: dict[str, Any] = {key: None for key in (
        "p1_ratio", "ready_s", "bare_boot_s", "clone_ready_s", "clone_ratio", "clone13_all_ready_s",
        "clone13_ratio", "clone13_command_s", "clone_rss_mb_max", "counties", "all_ready_s", "rss_mb_max",
        "cold13_all_ready_s", "cold13_rss_mb_max")}
    out.update(bare_ssh_s=None, source=str(source), logs=str(logs))

    say(f"setup (not timed; may rebuild the golden image and templates) from {source}")
    began = time.monotonic()
    # Only the site the counties live at gets its template: the secondary's would be one more TCG
    # boot on cores others share, and no figure here uses it.
    setup_log = cli.run("setup", "--no-templates")
    cli.run("inventory", "apply")
    cli.run("template", "build", SITE)
    out["setup_s"] = round(time.monotonic() - began, 1)
    # The image the snapshot's setup made ready: the bare boot uses the very same golden image.
    keys = re.findall(r"golden image ([0-9a-f]{16}): ready", setup_log)
    image = images.load(Path(env.get("COUNTYCLOUD_CACHE_DIR", "/var/cache/countycloud")),
                        keys[-1]) if keys else None
    if image is None:
        raise SystemExit(f"setup named no golden image that is ready: {setup_log[-1000:]}")
    out["image"] = image.key
    slugs = [row["tenant"] for row in cli.json("tenant", "list", "--json")]

    errors: list[str] = []
    out["errors"] = errors
    interrupted = False
    signal.signal(signal.SIGTERM, _on_sigterm)

    def phase(name: str, action: Callable[[], None]) -> None:
        """One figure failing (a county that never came up) still leaves the others in the JSON;
        after a SIGTERM the remaining phases are skipped."""
        nonlocal interrupted
        if interrupted:
            errors.append(f"{name}: not run (interrupted)")
            return
        try:
            action()
        except Interrupted as error:
            interrupted = True
            errors.append(f"{name}: {error}")
            say(f"  {name} INTERRUPTED")
        except Exception as error:  # the bench reports every failure and goes on
            errors.append(f"{name}: {error}")
            say(f"  {name} FAILED: {error}")

    def bare_phase() -> None:
        say("bare boot: define + start a linked clone of the golden image")
        bare = bare_boot(state_dir, image, set())
        out.update(bare_ssh_s=bare["bare_ssh_s"], bare_boot_s=bare["bare_boot_s"], bare=bare)
        say(f"  SSH banner {bare['bare_ssh_s']} s, /healthz 200 {bare['bare_boot_s']} s")

    def cold_phase() -> None:
        say(f"cold county: tenant create {SINGLE_COUNTY} --cold")
        cold = single(cli, SINGLE_COUNTY, cold=True, label="cold")
        out.update(ready_s=cold["ready_s"], p1_ratio=ratio(cold["ready_s"], out["bare_boot_s"]), cold=cold)

    def clone_phase() -> None:
        say(f"template county: tenant create {SINGLE_COUNTY}")
        clone = single(cli, SINGLE_COUNTY, cold=False, label="clone")
        out.update(clone_ready_s=clone["ready_s"], clone_ratio=ratio(clone["ready_s"], out["bare_boot_s"]),
                   clone=clone)

    chosen = slugs[: args.counties]

    places: list[int | None] = [int(value) for value in args.places.split(",") if value.strip()]

    def clones_phase() -> None:
        how = ("one command" if args.clone_concurrency is None
               else f"{min(args.clone_concurrency, len(chosen))} commands at a time")
        runs: dict[str, dict[str, Any]] = {}
        for value in places or [None]:
            run_cli = cli if value is None else Cli(source=cli.source, logs=cli.logs, env={
                **cli.env, "COUNTYCLOUD_BRINGUP_PLACES": str(value)})
            label = "clone-many" if value is None else f"clone-many-places{value}"
            say(f"{len(chosen)} counties from templates, {how}"
                + ("" if value is None else f", {value or 'unlimited'} places"))
            runs[str(value)] = many(run_cli, chosen, cold=False, concurrency=args.clone_concurrency,
                                    label=label)
        if places:
            out["places"] = {value: {
                "all_ready_s": run["all_ready_s"], "ratio": ratio(run["all_ready_s"], out["bare_boot_s"]),
                "command_s": run["command_s_max"], "cpu": run["cpu_until_all_serve"],
                "ready_s": run["ready_s"]} for value, run in runs.items()}
        clones = next(iter(runs.values()))
        out.update(clone13_all_ready_s=clones["all_ready_s"],
                   clone13_ratio=ratio(clones["all_ready_s"], out["bare_boot_s"]),
                   clone13_command_s=clones["command_s_max"] if not clones["command_failed"] else None,
                   clone_rss_mb_max=clones["rss_mb_max"],
                   counties=len(chosen), all_ready_s=clones["all_ready_s"], rss_mb_max=clones["rss_mb_max"],
                   clone_many=clones)

    def colds_phase() -> None:
        say(f"13 counties cold, {args.cold_concurrency} at a time")
        colds = many(cli, chosen, cold=True, concurrency=args.cold_concurrency, label="cold-many")
        out.update(cold13_all_ready_s=colds["all_ready_s"], cold13_rss_mb_max=colds["rss_mb_max"],
                   cold_many=colds)

    if (not args.skip_single or args.counties > 1) and not args.skip_bare:
        phase("bare", bare_phase)  # the denominator of clone13_ratio as well
    if not args.skip_single:
        phase("cold", cold_phase)
        phase("clone", clone_phase)
    if args.counties > 1:
        phase("clones", clones_phase)
        if args.counties == 13 and not args.skip_cold13:
            phase("colds", colds_phase)

    out["goals_met"] = {key: (out[key] is not None and out[key] <= goal) if out[key] is not None else None
                        for key, goal in GOALS.items()}
    print(json.dumps(out, ensure_ascii=False, separators=(",", ":")), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
