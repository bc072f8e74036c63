"""provisioning.hypervisor against libvirt's in-memory `test:///default` driver: lifecycle idempotence,
inspection, live resize within the maxima, and error messages that name the site.

Connections to test:///default inside one process share one driver while any is open, so every test
uses domain names of its own and removes them afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import libvirt
import pytest

from provisioning.domain_xml import render_domain_xml
from provisioning.hypervisor import AgentTimeout, DomainState, Hypervisor, HypervisorError
from provisioning.vm import resize_live
from tests.unit.provisioning.specs import keelung_spec

URI = "test:///default"


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    hypervisor = Hypervisor("primary", URI)
    before = set(hypervisor.names())
    yield hypervisor
    for name in set(hypervisor.names()) - before:
        hypervisor.undefine(name)
    hypervisor.close()


def _xml(name: str, vcpus: int = 1, memory_mib: int = 1024) -> str:
    spec = keelung_spec(name=name, uuid=str(uuid.uuid4()), vcpus=vcpus, memory_mib=memory_mib)
    return render_domain_xml(spec)


def _name() -> str:
    return f"cc-test-{uuid.uuid4().hex[:8]}"


def _transient(hv: Hypervisor, name: str) -> None:
    """A running domain that is not defined: what a restore from a state file leaves."""
    hv._conn.createXML(_xml(name), 0)


def test_unreachable_site_names_the_site_and_how_to_start_it(tmp_path: object) -> None:
    with pytest.raises(HypervisorError) as failure:
        Hypervisor("secondary", "qemu:///system?socket=/nonexistent/countycloud/libvirt-sock")
    message = str(failure.value)
    assert message.startswith("site secondary: libvirtd unreachable at qemu:///system?socket=")
    assert "countycloud site start secondary" in message


def test_define_start_info(hv: Hypervisor) -> None:
    name = _name()
    xml = _xml(name)
    hv.define(xml)
    assert hv.state(name) is DomainState.SHUT_OFF
    hv.start(name)
    info = hv.info(name)
    assert info is not None
    assert (info.name, info.state, info.persistent) == (name, DomainState.RUNNING, True)
    assert (info.vcpus, info.memory_mib, info.max_memory_mib) == (1, 1024, 4096)
    assert f"<uuid>{info.uuid}</uuid>" in xml
    assert name in hv.names() and hv.names() == sorted(hv.names())
    assert f"<name>{name}</name>" in hv.xml(name)
    assert hv.qemu_pid(name) is None  # no QEMU behind the test driver


def test_lifecycle_calls_are_idempotent(hv: Hypervisor) -> None:
    name = _name()
    xml = _xml(name)
    hv.define(xml)
    hv.define(xml)  # redefining an existing domain is fine
    hv.start(name)
    hv.start(name)  # already running: no-op
    assert hv.state(name) is DomainState.RUNNING
    hv.destroy(name)
    hv.destroy(name)  # already stopped: no-op
    assert hv.state(name) is DomainState.SHUT_OFF
    hv.undefine(name)
    hv.undefine(name)  # already gone: no-op
    hv.destroy(name)  # gone: no-op
    assert hv.state(name) is DomainState.MISSING
    assert hv.info(name) is None
    assert name not in hv.names()


def test_undefine_of_a_running_domain_stops_it_first(hv: Hypervisor) -> None:
    name = _name()
    hv.define(_xml(name))
    hv.start(name)
    hv.undefine(name)
    assert hv.state(name) is DomainState.MISSING


def test_undefine_of_a_transient_domain_destroys_it(hv: Hypervisor) -> None:
    name = _name()
    _transient(hv, name)
    hv.undefine(name)
    assert hv.state(name) is DomainState.MISSING


def test_make_persistent_defines_a_restored_transient_domain(hv: Hypervisor) -> None:
    name = _name()
    _transient(hv, name)
    info = hv.info(name)
    assert info is not None and info.persistent is False
    hv.make_persistent(name)
    hv.make_persistent(name)  # already defined: no-op
    info = hv.info(name)
    assert info is not None and info.persistent is True and info.state is DomainState.RUNNING
    hv.destroy(name)
    assert hv.state(name) is DomainState.SHUT_OFF  # still defined after it stops


def test_errors_name_the_site_the_action_and_the_domain(hv: Hypervisor) -> None:
    missing = _name()
    with pytest.raises(HypervisorError, match=f"^site primary: no domain named {missing}$"):
        hv.start(missing)
    with pytest.raises(HypervisorError, match=f"^site primary: no domain named {missing}$"):
        hv.xml(missing)
    with pytest.raises(HypervisorError, match=r"^site primary: define \(domain XML\): "):
        hv.define("<domain type='qemu'><name>broken")


def test_set_vcpus_live_up_to_the_maximum_and_not_beyond(hv: Hypervisor) -> None:
    name = _name()
    hv.define(_xml(name))
    hv.start(name)
    hv.set_vcpus(name, 3)
    info = hv.info(name)
    assert info is not None and info.vcpus == 3
    assert "current='3'" in hv.xml(name, inactive=True)  # the defined config follows the live change
    with pytest.raises(HypervisorError) as failure:
        hv.set_vcpus(name, 5)
    assert str(failure.value).startswith(f"site primary: set 5 vCPUs on {name}: ")
    assert "5 > 4" in str(failure.value)
    info = hv.info(name)
    assert info is not None and info.vcpus == 3  # unchanged by the refused resize


def test_set_memory_live_within_the_maximum(hv: Hypervisor) -> None:
    name = _name()
    _transient(hv, name)
    hv.set_memory(name, 2048)
    info = hv.info(name)
    assert info is not None and info.memory_mib == 2048
    with pytest.raises(HypervisorError) as failure:
        hv.set_memory(name, 8192)
    assert str(failure.value).startswith(f"site primary: set 8192 MiB memory on {name}: ")
    info = hv.info(name)
    assert info is not None and info.memory_mib == 2048


def test_resize_live_changes_only_what_differs(hv: Hypervisor) -> None:
    name = _name()
    _transient(hv, name)
    assert resize_live(hv, name, 2, 2048) == "vCPUs 1 -> 2, memory 1024 -> 2048 MiB"
    assert resize_live(hv, name, 2, 2048) == "already 2 vCPU / 2048 MiB"
    assert resize_live(hv, name, 2, 1536) == "memory 2048 -> 1536 MiB"


def test_resize_live_of_a_missing_domain_names_the_site(hv: Hypervisor) -> None:
    from provisioning.errors import ProvisioningError

    with pytest.raises(ProvisioningError, match="no such domain at site primary"):
        resize_live(hv, _name(), 2, 2048)


def test_guest_agent_unsupported_is_an_error_naming_the_command(hv: Hypervisor) -> None:
    name = _name()
    _transient(hv, name)
    with pytest.raises(HypervisorError) as failure:
        hv.agent(name, "guest-ping")
    assert not isinstance(failure.value, AgentTimeout)
    assert str(failure.value).startswith(f"site primary: guest agent guest-ping on {name}: ")


def test_wait_for_agent_gives_up_after_its_timeout(hv: Hypervisor) -> None:
    name = _name()
    _transient(hv, name)
    with pytest.raises(AgentTimeout, match=f"site primary: guest agent of {name} silent for"):
        hv.wait_for_agent(name, timeout_s=0.3)


def test_connections_are_closed_by_the_context_manager() -> None:
    with Hypervisor("primary", URI) as hypervisor:
        assert hypervisor._conn.isAlive()
    with pytest.raises(libvirt.libvirtError):
        hypervisor._conn.getURI()
