"""provisioning.guest: commands and files through the guest agent, against a fake hypervisor whose
agent answers from a script (exit codes, base64 output, silence)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest

from provisioning import guest, vm
from provisioning.guest import CommandResult, GuestCommandError
from provisioning.hypervisor import AgentTimeout, Hypervisor, HypervisorError

Status = dict[str, Any]


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class FakeHypervisor(Hypervisor):
    """Answers guest-agent commands from a script; records every call. No libvirt connection."""

    def __init__(self, statuses: Callable[[list[str]], list[Status]] | list[Status]) -> None:
        self.site = "primary"
        self.uri = "fake://"
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []
        self._statuses = statuses
        self._pending: list[Status] = []
        self._next_pid = 100

    def close(self) -> None:
        pass

    def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
              timeout_s: int = 10) -> Any:
        self.calls.append((name, command, arguments))
        if command == "guest-exec":
            assert arguments is not None
            argv = [arguments["path"], *arguments["arg"]]
            script = self._statuses(argv) if callable(self._statuses) else self._statuses
            self._pending = list(script)
            self._next_pid += 1
            return {"pid": self._next_pid}
        if command == "guest-exec-status":
            assert arguments == {"pid": self._next_pid}
            if len(self._pending) > 1:
                return self._pending.pop(0)
            return self._pending[0]  # the last answer repeats (e.g. "still running")
        if command == "guest-set-time":
            return {}
        raise AssertionError(f"unexpected agent command {command}")

    def commands(self, command: str) -> list[dict[str, Any] | None]:
        return [arguments for _vm, name, arguments in self.calls if name == command]


def test_exec_sends_path_and_args_and_decodes_output() -> None:
    hv = FakeHypervisor([
        {"exited": False},
        {"exited": True, "exitcode": 0, "out-data": b64("基隆市\n"), "err-data": b64("warn")},
    ])
    result = guest.agent_exec(hv, "keelung-accounting-1", ["/bin/echo", "-n", "基隆市"])
    assert result == CommandResult(rc=0, stdout="基隆市\n", stderr="warn")
    assert result.ok
    assert hv.commands("guest-exec") == [
        {"path": "/bin/echo", "arg": ["-n", "基隆市"], "capture-output": True}]
    assert len(hv.commands("guest-exec-status")) == 2  # polled until it exited
    assert {vm for vm, _c, _a in hv.calls} == {"keelung-accounting-1"}


def test_exec_without_output_gives_empty_strings() -> None:
    hv = FakeHypervisor([{"exited": True, "exitcode": 0}])
    assert guest.agent_exec(hv, "vm1", ["/bin/true"]) == CommandResult(rc=0, stdout="", stderr="")


def test_undecodable_output_is_replaced_not_raised() -> None:
    hv = FakeHypervisor([{"exited": True, "exitcode": 0, "out-data": b64(b"ok \xff\xfe")}])
    assert guest.agent_exec(hv, "vm1", ["/bin/cat", "/dev/urandom"]).stdout == "ok \ufffd\ufffd"


def test_failed_command_raises_with_vm_command_exit_code_and_stderr() -> None:
    hv = FakeHypervisor([{"exited": True, "exitcode": 3, "out-data": b64("partial"),
                          "err-data": b64("mount: /srv/tenant-data: no such device\n")}])
    with pytest.raises(GuestCommandError) as failure:
        guest.agent_exec(hv, "keelung-accounting-1", ["/bin/mount", "/dev/vdc", "/srv/tenant-data"])
    assert str(failure.value) == (
        "keelung-accounting-1: `/bin/mount /dev/vdc /srv/tenant-data` exited 3: "
        "mount: /srv/tenant-data: no such device")


def test_failed_command_without_stderr_reports_stdout_tail() -> None:
    hv = FakeHypervisor([{"exited": True, "exitcode": 1, "out-data": b64("x" * 2000 + "the end\n")}])
    with pytest.raises(GuestCommandError) as failure:
        guest.agent_exec(hv, "vm1", ["/usr/local/sbin/countycloud-activate"])
    message = str(failure.value)
    assert message.endswith("the end") and "exited 1" in message
    assert len(message) < 600  # only the tail of a long output


def test_unchecked_failure_is_returned() -> None:
    hv = FakeHypervisor([{"exited": True, "exitcode": 1, "out-data": b64("")}])
    result = guest.agent_exec(hv, "vm1", ["/bin/test", "-e", "/run/x"], check=False)
    assert result.rc == 1 and not result.ok


def test_command_killed_by_a_signal_is_a_failure() -> None:
    # qemu-ga reports a signal instead of an exit code for a killed process.
    hv = FakeHypervisor([{"exited": True, "signal": 9}])
    assert guest.agent_exec(hv, "vm1", ["/bin/sleep", "100"], check=False).rc == -1
    with pytest.raises(GuestCommandError, match="exited -1"):
        guest.agent_exec(hv, "vm1", ["/bin/sleep", "100"])


def test_command_still_running_at_the_deadline_times_out() -> None:
    hv = FakeHypervisor([{"exited": False}])
    started = time.monotonic()
    with pytest.raises(AgentTimeout, match=r"vm1: `/bin/sleep 600` still running after \d+ s"):
        guest.agent_exec(hv, "vm1", ["/bin/sleep", "600"], timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert len(hv.commands("guest-exec-status")) >= 3  # it kept polling until the deadline


def test_a_silent_agent_fails_the_command_with_its_timeout() -> None:
    class Silent(FakeHypervisor):
        def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
                  timeout_s: int = 10) -> Any:
            raise AgentTimeout(f"site primary: guest agent of {name} did not answer {command} within 10 s")

    with pytest.raises(AgentTimeout, match="did not answer guest-exec"):
        guest.agent_exec(Silent([]), "vm1", ["/bin/true"])


# --- files through the agent (no process in the guest) ---------------------------------------------

class FileAgent(FakeHypervisor):
    """An agent with a small file system behind guest-file-open/read/write/close."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__([])
        self.files = files
        self.handles: dict[int, tuple[str, str]] = {}

    def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
              timeout_s: int = 10) -> Any:
        self.calls.append((name, command, arguments))
        assert arguments is not None
        if command == "guest-file-open":
            if arguments["mode"] == "r" and arguments["path"] not in self.files:
                raise HypervisorError(f"site primary: guest agent guest-file-open on {name}: No such file")
            handle = 1000 + len(self.handles)
            self.handles[handle] = (arguments["path"], arguments["mode"])
            if arguments["mode"] == "w":
                self.files[arguments["path"]] = b""
            return handle
        path, _mode = self.handles[arguments["handle"]]
        if command == "guest-file-write":
            self.files[path] += base64.b64decode(arguments["buf-b64"])
            return {"count": len(base64.b64decode(arguments["buf-b64"])), "eof": False}
        if command == "guest-file-read":
            data = self.files[path][: arguments["count"]]
            return {"count": len(data), "buf-b64": b64(data), "eof": True}
        if command == "guest-file-close":
            del self.handles[arguments["handle"]]
            return {}
        raise AssertionError(f"unexpected agent command {command}")


def test_write_file_puts_the_bytes_in_the_guest_and_closes_the_handle() -> None:
    hv = FileAgent({})
    guest.write_file(hv, "vm1", "/run/countycloud/activate-request", b"1764300000.25\n")
    assert hv.files == {"/run/countycloud/activate-request": b"1764300000.25\n"}
    assert hv.handles == {}, "every handle opened is closed"
    assert [command for _vm, command, _args in hv.calls] == [
        "guest-file-open", "guest-file-write", "guest-file-close"]


def test_read_file_returns_the_contents_or_none_when_missing() -> None:
    error = b"mount /dev/vdc: No such device\n"
    hv = FileAgent({"/run/countycloud/activation-error": error})
    assert guest.read_file(hv, "vm1", "/run/countycloud/activation-error") == error
    assert guest.read_file(hv, "vm1", "/run/countycloud/nothing-here") is None
    assert hv.handles == {}


def test_read_file_lets_an_agent_timeout_through() -> None:
    class Silent(FakeHypervisor):
        def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
                  timeout_s: int = 10) -> Any:
            raise AgentTimeout(f"site primary: guest agent of {name} did not answer {command} within 10 s")

    with pytest.raises(AgentTimeout):
        guest.read_file(Silent([]), "vm1", "/etc/hostname")


# --- the activation request (provisioning.vm) ------------------------------------------------------

class BootingGuest(FileAgent):
    """A guest whose agent answers before its launcher made /run/countycloud: a file can be written
    only in a folder that exists, and `mkdir -p` through guest-exec makes one."""

    def __init__(self, folders: set[str]) -> None:
        super().__init__({})
        self.folders = folders

    def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
              timeout_s: int = 10) -> Any:
        assert arguments is not None or command != "guest-file-open"
        if command == "guest-exec":
            assert arguments is not None and arguments["path"] == "/bin/mkdir"
            self.folders.add(arguments["arg"][-1])
            self._statuses = [{"exited": True, "exitcode": 0}]
            return FakeHypervisor.agent(self, name, command, arguments)
        if command == "guest-exec-status":
            return FakeHypervisor.agent(self, name, command, arguments)
        if command == "guest-file-open" and arguments is not None:
            folder = arguments["path"].rsplit("/", 1)[0]
            if arguments["mode"] == "w" and folder not in self.folders:
                self.calls.append((name, command, arguments))
                raise HypervisorError(
                    f"site primary: guest agent guest-file-open on {name}: failed to open file "
                    f"'{arguments['path']}' (mode: 'w'): No such file or directory")
        return super().agent(name, command, arguments, timeout_s)


def test_a_restored_clone_gets_its_request_without_any_process_in_the_guest() -> None:
    hv = BootingGuest({"/run/countycloud"})
    before = time.time()
    vm.request_activation(hv, "keelung-accounting-1")
    assert before <= float(hv.files[vm.ACTIVATE_REQUEST]) <= time.time()
    assert hv.commands("guest-exec") == [], "the clone's path starts no process"


def test_a_guest_still_booting_gets_the_launcher_folder_and_then_its_request() -> None:
    # A fresh clone's `make demo` failed here: keelung existed, stopped, and was booted from its
    # own disks; its agent answered before the launcher had made /run/countycloud.
    hv = BootingGuest(set())
    vm.request_activation(hv, "keelung-accounting-1")
    assert "/run/countycloud" in hv.folders
    assert hv.files[vm.ACTIVATE_REQUEST].endswith(b"\n")
    assert hv.handles == {}


def test_an_agent_that_does_not_answer_is_not_taken_for_a_booting_guest() -> None:
    class Silent(FakeHypervisor):
        def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
                  timeout_s: int = 10) -> Any:
            self.calls.append((name, command, arguments))
            raise AgentTimeout(f"site primary: guest agent of {name} did not answer {command} within 10 s")

    silent = Silent([])
    with pytest.raises(AgentTimeout):
        vm.request_activation(silent, "keelung-accounting-1")
    assert silent.commands("guest-exec") == []
