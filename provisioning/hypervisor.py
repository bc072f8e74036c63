"""The libvirt edge: the only module that calls libvirt. Everything it returns is plain data.

One `Hypervisor` per site connection. Operations are idempotent where libvirt allows it (defining
an existing domain redefines it, destroying a stopped one is a no-op) so job steps can be rerun.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import libvirt
import libvirt_qemu

from provisioning.errors import ProvisioningError

# libvirt prints every error to stderr by default; we raise them as HypervisorError instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
# What a driver answers to a flag it does not know (e.g. the test driver and UNDEFINE_NVRAM).
_FLAG_UNSUPPORTED = (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT)


class DomainState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUT_OFF = "shut_off"
    CRASHED = "crashed"
    OTHER = "other"
    MISSING = "missing"


_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}


class HypervisorError(ProvisioningError):
    """A libvirt call failed; the message names the site, the domain and libvirt's reason."""


class AgentTimeout(HypervisorError):
    """The guest agent did not answer in time."""


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: DomainState
    persistent: bool
    vcpus: int
    memory_mib: int
    max_memory_mib: int


class Hypervisor:
    def __init__(self, site: str, uri: str) -> None:
        self.site = site
        self.uri = uri
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as error:
            raise HypervisorError(
                f"site {site}: libvirtd unreachable at {uri} ({error.get_error_message()}); "
                f"is the site up? try `countycloud site start {site}`"
            ) from error

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _domain(self, name: str) -> libvirt.virDomain | None:
        try:
            return self._conn.lookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self._error(name, "look up", error) from error

    def _require(self, name: str) -> libvirt.virDomain:
        domain = self._domain(name)
        if domain is None:
            raise HypervisorError(f"site {self.site}: no domain named {name}")
        return domain

    def _error(self, name: str, action: str, error: libvirt.libvirtError) -> HypervisorError:
        return HypervisorError(f"site {self.site}: {action} {name}: {error.get_error_message()}")

    # --- inspection -------------------------------------------------------------------------
    def info(self, name: str) -> DomainInfo | None:
        domain = self._domain(name)
        if domain is None:
            return None
        state, max_kib, kib, vcpus, _cpu_time = domain.info()
        return DomainInfo(
            name=name, uuid=domain.UUIDString(), state=_STATES.get(state, DomainState.OTHER),
            persistent=bool(domain.isPersistent()), vcpus=vcpus, memory_mib=kib // 1024,
            max_memory_mib=max_kib // 1024,
        )

    def state(self, name: str) -> DomainState:
        info = self.info(name)
        return info.state if info else DomainState.MISSING

    def usage(self) -> dict[str, dict[str, float]]:
        """Read-only counters of every running domain, for monitoring: libvirt's bulk stats
        (cpu.time ns, balloon.current/maximum KiB, vcpu.current, net.N.rx.bytes, block.N.rd.bytes...)
        over the basics from info(), which every driver has."""
        flags = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
                 | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE
                 | libvirt.VIR_DOMAIN_STATS_BLOCK)
        try:
            found = self._conn.getAllDomainStats(flags, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"site {self.site}: domain stats: {error.get_error_message()}") from error
        usage: dict[str, dict[str, float]] = {}
        for domain, values in found:
            _state, max_kib, kib, vcpus, cpu_ns = domain.info()
            basics = {"cpu.time": cpu_ns, "balloon.current": kib, "balloon.maximum": max_kib,
                      "vcpu.current": vcpus}
            bulk = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
            usage[domain.name()] = {**{k: float(v) for k, v in basics.items()}, **bulk}
        return usage

    def names(self) -> list[str]:
        return sorted(domain.name() for domain in self._conn.listAllDomains())

    def xml(self, name: str, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return str(self._require(name).XMLDesc(flags))

    def max_vcpus(self, name: str) -> int:
        """The most vCPUs the running domain can be given live (its `<vcpu>` element)."""
        found = ElementTree.fromstring(self.xml(name)).findtext("vcpu")
        if found is None:
            raise HypervisorError(f"site {self.site}: {name} has no <vcpu> in its XML")
        return int(found)

    def disk_targets(self, name: str) -> set[str]:
        """The target devices (vda, vdb, ...) of the domain's disks as they are now."""
        root = ElementTree.fromstring(self.xml(name))
        return {target.get("dev", "") for target in root.iterfind("devices/disk/target")}

    def qemu_pid(self, name: str) -> int | None:
        """The QEMU process of a running domain (libvirt's API does not expose it)."""
        needle = f"guest={name},".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"qemu-system-x86_64") and any(needle in arg for arg in argv):
                return int(proc.name)
        return None

    # --- lifecycle --------------------------------------------------------------------------
    def define(self, xml: str) -> None:
        try:
            self._conn.defineXML(xml)
        except libvirt.libvirtError as error:
            raise self._error("(domain XML)", "define", error) from error

    def start(self, name: str) -> None:
        domain = self._require(name)
        if domain.isActive():
            return
        try:
            domain.create()
        except libvirt.libvirtError as error:
            raise self._error(name, "start", error) from error

    def destroy(self, name: str) -> None:
        domain = self._domain(name)
        if domain is None or not domain.isActive():
            return
        try:
            domain.destroy()
        except libvirt.libvirtError as error:
            if domain.isActive():
                raise self._error(name, "destroy", error) from error

    def undefine(self, name: str) -> None:
        domain = self._domain(name)
        if domain is None:
            return
        # Asked before destroying: a transient domain (a restored clone) vanishes when it stops.
        persistent = domain.isPersistent()
        if domain.isActive():
            self.destroy(name)
        if persistent:
            try:
                try:
                    domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                except libvirt.libvirtError as error:
                    if error.get_error_code() not in _FLAG_UNSUPPORTED:
                        raise
                    domain.undefine()  # a driver without the NVRAM flag (our guests have no NVRAM)
            except libvirt.libvirtError as error:
                raise self._error(name, "undefine", error) from error

    def make_persistent(self, name: str) -> None:
        """Turn a restored (transient) domain into a defined one, with its live devices."""
        domain = self._require(name)
        if domain.isPersistent():
            return
        self.define(str(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)))

    def save(self, name: str, path: Path) -> None:
        try:
            self._require(name).save(str(path))
        except libvirt.libvirtError as error:
            raise self._error(name, "save", error) from error

    def restore(self, path: Path) -> None:
        try:
            self._conn.restoreFlags(str(path), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
        except libvirt.libvirtError as error:
            raise self._error(str(path), "restore", error) from error

    # --- live changes -----------------------------------------------------------------------
    def attach_disk(self, name: str, disk_xml: str) -> None:
        domain = self._require(name)
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
        if domain.isPersistent():
            flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
        try:
            domain.attachDeviceFlags(disk_xml, flags)
        except libvirt.libvirtError as error:
            raise self._error(name, "attach a disk to", error) from error

    def set_vcpus(self, name: str, vcpus: int) -> None:
        domain = self._require(name)
        try:
            domain.setVcpusFlags(vcpus, _LIVE_AND_CONFIG if domain.isPersistent() else
                                 libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as error:
            raise self._error(name, f"set {vcpus} vCPUs on", error) from error

    def set_memory(self, name: str, memory_mib: int) -> None:
        domain = self._require(name)
        try:
            domain.setMemoryFlags(memory_mib * 1024, _LIVE_AND_CONFIG if domain.isPersistent() else
                                  libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as error:
            raise self._error(name, f"set {memory_mib} MiB memory on", error) from error

    # --- guest agent ------------------------------------------------------------------------
    def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
              timeout_s: int = 10) -> Any:
        """One guest-agent command; returns its `return` value."""
        payload = json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})})
        domain = self._require(name)
        try:
            answer = libvirt_qemu.qemuAgentCommand(domain, payload, timeout_s, 0)
        except libvirt.libvirtError as error:
            code = error.get_error_code()
            if code in (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_OPERATION_TIMEOUT):
                raise AgentTimeout(
                    f"site {self.site}: guest agent of {name} did not answer {command} within {timeout_s} s"
                ) from error
            raise self._error(name, f"guest agent {command} on", error) from error
        return json.loads(answer).get("return")

    def wait_for_agent(self, name: str, timeout_s: float) -> float:
        """Poll guest-ping until it answers; returns the seconds waited."""
        started = time.monotonic()
        while True:
            try:
                self.agent(name, "guest-ping", timeout_s=2)
                return time.monotonic() - started
            except HypervisorError:
                if time.monotonic() - started > timeout_s:
                    raise AgentTimeout(
                        f"site {self.site}: guest agent of {name} silent for {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.2)
