"""Servers the platform starts and supervises (the REST server, the replica target), read back from
/proc: pid files outlive their processes, and pids are reused."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def live_argv(pid: int) -> list[str] | None:
    """The process's command line while it lives; None once it is gone or a zombie. A zombie is a
    killed child of ours not reaped yet (it still answers signal 0): it is reaped here."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if status.rsplit(")", 1)[-1].split()[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return [arg.decode(errors="replace") for arg in argv]


def serves(argv: list[str] | None, folder: Path, port: int) -> bool:
    """Whether a command line is a server of `folder` on `port`."""
    return argv is not None and str(folder) in argv and any(f":{port}" in arg for arg in argv)


def terminate(pid: int, still_ours: Callable[[int], bool], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL once `grace_s` passed; returns when `still_ours(pid)` is false or the
    kill's own 5 s are over."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while still_ours(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not still_ours(pid):
            return


@contextlib.contextmanager
def one_start_at_a_time(pidfile: Path) -> Iterator[None]:
    """Starts of one server are serialized (threads and processes: flock on a file beside its pid
    file). Two at once (the supervisor's tick and a request of the control plane, both seeing a slow
    server miss one answer) each stopped the other's and one unlinked the pid file of the server the
    other had just started: that server was left serving with no pid file, refused as a squatter by
    every later start (seen with the REST server in the VM backup test, 2026-12-05, load average 17)."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(pidfile.with_name(pidfile.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
