"""The gateway's edge: the haproxy binary (master-worker mode) and its two sockets.

- master socket (`-S`): the master CLI; `reload` re-executes the master with the new config, which
  starts a new worker and lets the old one finish its connections;
- runtime socket (`stats socket ... expose-fd listeners` in the config): the worker's runtime API
  (server states), and the way the new worker receives the listening sockets from the old one, so
  no connection is refused while a reload is under way.

All paths derive from the gateway's own directory given by the caller (the platform uses
<state>/haproxy); nothing here reads settings.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import fcntl
import io
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioning.gateway import (
    Frontend,
    GatewayError,
    RequestLogRing,
    ServerToggle,
    Timeouts,
    render,
    runtime_toggles,
)

HAPROXY = Path("/usr/sbin/haproxy")
# sun_path is 108 bytes on Linux, including the terminating NUL.
_UNIX_PATH_MAX = 107
SOCKET_TIMEOUT_S = 5.0
RELOAD_TIMEOUT_S = 20.0
START_TIMEOUT_S = 20.0
START_ALERT_GRACE_S = 0.5


class ApplyAction(enum.StrEnum):
    STARTED = "started"
    RELOADED = "reloaded"
    TOGGLED = "toggled"  # servers in or out of maintenance through the runtime API, no reload
    UNCHANGED = "unchanged"


class ServerState(enum.StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    MAINT = "MAINT"
    # Draining, not checked, or anything else HAProxy reports: neither proven up nor down.
    OTHER = "OTHER"


@dataclass(frozen=True)
class ApplyResult:
    action: ApplyAction
    worker_pid: int | None
    seconds: float


@dataclass(frozen=True)
class ServerStatus:
    backend: str
    server: str
    state: ServerState
    raw: str  # HAProxy's own words, e.g. "DOWN 1/2" or "no check"
    check: str  # last check result, e.g. "L7OK" or "L4CON"


@dataclass(frozen=True)
class GatewayPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def master_socket(self) -> Path:
        return self.root / "master.sock"

    @property
    def runtime_socket(self) -> Path:
        return self.root / "runtime.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "haproxy.pid"

    @property
    def log(self) -> Path:
        return self.root / "haproxy.log"

    @property
    def request_log_mark(self) -> Path:
        """The request log's reader: the last line it has read (monitoring.edge.RequestLogReader)."""
        return self.root / "rum.mark"

    @property
    def lock(self) -> Path:
        return self.root / "apply.lock"


def _ask(path: Path, command: str, timeout: float = SOCKET_TIMEOUT_S) -> str:
    """Send one command to an HAProxy CLI socket and read the answer until it closes the connection."""
    return _ask_bytes(path, command, timeout).decode(errors="replace")


def _ask_bytes(path: Path, command: str, timeout: float) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # end of input: the CLI answers and closes (else it waits for more)
        chunks: list[bytes] = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


class NoRequestLog(GatewayError):
    """The gateway runs without its request log (rendered with real_user_timing off)."""


def dump_request_log(runtime_socket: Path, timeout: float = SOCKET_TIMEOUT_S) -> bytes:
    """Every request line the current worker's ring holds, oldest first, one per LF (`show events`:
    the whole ring, about 4 MiB once it has filled; ~3 ms of the gateway's CPU). Raises OSError when
    the gateway is not running, NoRequestLog when it runs without the ring."""
    answer = _ask_bytes(runtime_socket, f"show events {RequestLogRing.name}", timeout)
    if answer.startswith(b"No such event sink"):
        raise NoRequestLog(f"the gateway of {runtime_socket.parent} runs without its request log")
    return answer


@dataclass(frozen=True)
class _Procs:
    master: int
    failed_reloads: int
    workers: tuple[int, ...]


def _parse_show_proc(text: str) -> _Procs:
    """`show proc` on the master CLI: the master line (with its failed-reload count), then # workers."""
    master, failed, workers, section = 0, 0, [], ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").split()[0] if line.strip("# ") else ""
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit():
            continue
        if fields[1] == "master":
            master = int(fields[0])
            if "failed:" in line:
                failed = int(line.split("failed:")[1].split("]")[0])
        elif fields[1] == "worker" and section == "workers":
            workers.append(int(fields[0]))
    return _Procs(master, failed, tuple(workers))


def _parse_state(raw: str) -> ServerState:
    word = raw.split(" ")[0]
    return ServerState(word) if word in ServerState.__members__ else ServerState.OTHER


class HAProxyGateway:
    """One HAProxy for the platform, kept in step with a list of frontends by `apply`."""

    def __init__(self, directory: Path, binary: Path = HAPROXY, timeouts: Timeouts | None = None,
                 real_user_timing: bool = True) -> None:
        """directory: the gateway's own folder (config, sockets, pidfile, log), created on apply.
        real_user_timing: log every request's timers into the ring that dump_request_log reads (off
        only to measure its cost)."""
        self.paths = GatewayPaths(directory)
        self.binary = binary
        self.timeouts = timeouts or Timeouts()
        self.real_user_timing = real_user_timing
        for sock in (self.paths.master_socket, self.paths.runtime_socket):
            if len(str(sock)) > _UNIX_PATH_MAX:
                raise GatewayError(f"socket path {sock} is longer than {_UNIX_PATH_MAX} bytes; "
                                   "use a shorter state directory")

    # ------------------------------------------------------------ apply

    def render(self, frontends: Sequence[Frontend]) -> str:
        return render(frontends, self.paths.runtime_socket, self.timeouts, request_log=self.real_user_timing)

    def apply(self, frontends: Sequence[Frontend]) -> ApplyResult:
        """Make the running HAProxy serve exactly these frontends, without dropping a request.

        Render, validate with `haproxy -c`, atomically replace the config, then reload through the
        master socket (or start HAProxy if it is not running). Unchanged config + running = no-op.
        When only servers go in or out of maintenance (a fencing, a failover's switch), the running
        worker is told so through the runtime API instead of a reload: a reload is `haproxy -c`
        and a new worker, 0.2-0.5 s of a failover county's way back to serving.
        """
        began = time.monotonic()
        text = self.render(frontends)  # refuses bad data before anything is touched
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            running = self.running()
            current = self.paths.config.read_text() if self.paths.config.exists() else None
            if running and current == text:
                return ApplyResult(ApplyAction.UNCHANGED, self._worker_pid(), time.monotonic() - began)
            toggles = runtime_toggles(current, text) if running and current is not None else None
            # Servers' `disabled` flags changed in a file `haproxy -c` accepted: no need to ask again.
            self._install(text, check=not toggles)
            if toggles and self._toggle(toggles):
                return ApplyResult(ApplyAction.TOGGLED, self._worker_pid(), time.monotonic() - began)
            worker: int | None
            try:
                if running:
                    worker = self._reload()
                    action = ApplyAction.RELOADED
                else:
                    worker = self._start()
                    action = ApplyAction.STARTED
            except GatewayError:
                # Put back the config that is still serving: the file must describe what runs, or
                # the next apply of the same frontends would be mistaken for a no-op.
                if current is not None:
                    self._install(current)
                else:
                    self.paths.config.unlink(missing_ok=True)
                raise
        return ApplyResult(action, worker, time.monotonic() - began)

    def _toggle(self, toggles: Sequence[ServerToggle]) -> bool:
        """Each server in or out of maintenance in the running worker; False when the worker did not
        take one of them (the caller reloads: the file already says what must run)."""
        for toggle in toggles:
            state = "ready" if toggle.enabled else "maint"
            try:
                command = f"set server {toggle.backend}/{toggle.server} state {state}"
                answer = _ask(self.paths.runtime_socket, command)
            except OSError:
                return False
            if answer.strip():  # the runtime API says nothing on success
                return False
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two applies at once (two CLI commands) would interleave install and reload.
        with self.paths.lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def check(self, config: Path) -> None:
        """`haproxy -c`: raise GatewayError with HAProxy's own message if it refuses the file."""
        result = subprocess.run([str(self.binary), "-c", "-q", "-f", str(config)],
                                capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            raise GatewayError(f"haproxy -c refused {config}: {(result.stderr or result.stdout).strip()}")

    def _install(self, text: str, *, check: bool = True) -> None:
        fd, name = tempfile.mkstemp(prefix=".haproxy.", suffix=".cfg", dir=self.paths.root)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if check:
                self.check(tmp)
            os.replace(tmp, self.paths.config)  # a reader sees the old file or the new one, never half
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------ process

    def master_pid(self) -> int | None:
        try:
            pid = int(self.paths.pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self) -> bool:
        if self.master_pid() is None:
            return False
        try:
            return bool(self._procs().workers)
        except OSError:
            return False

    def _procs(self) -> _Procs:
        return _parse_show_proc(_ask(self.paths.master_socket, "show proc"))

    def _worker_pid(self) -> int | None:
        try:
            workers = self._procs().workers
        except OSError:
            return None
        return workers[0] if workers else None

    def _start(self) -> int | None:
        for stale in (self.paths.master_socket, self.paths.runtime_socket, self.paths.pidfile):
            stale.unlink(missing_ok=True)
        log_offset = self.paths.log.stat().st_size if self.paths.log.exists() else 0
        with self.paths.log.open("a") as log:
            # `setsid -f` detaches the master from us (not our child, so never our zombie) while it
            # stays in the foreground with its stderr on our log: `-D` would send it to /dev/null, and
            # the reason a later reload fails (a port taken...) is only ever printed there.
            subprocess.run(
                ["setsid", "-f", str(self.binary), "-W", "-S", f"{self.paths.master_socket},mode,600",
                 "-f", str(self.paths.config), "-p", str(self.paths.pidfile)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=START_TIMEOUT_S, check=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        alerted_at: float | None = None
        while time.monotonic() < deadline:
            master = self.master_pid()
            worker = self._worker_pid() if master is not None else None
            if worker is not None:
                return worker
            # An ALERT with no master is a failed start (e.g. a port taken): stop waiting. The grace
            # is for the master not having written its pidfile yet, and for ALERTs that are not fatal
            # (a backend with no server up is one).
            if master is None and self._alerts_since(log_offset, default=""):
                alerted_at = alerted_at or time.monotonic()
                if time.monotonic() - alerted_at > START_ALERT_GRACE_S:
                    break
            time.sleep(0.05)
        raise GatewayError(f"haproxy did not start: {self._alerts_since(log_offset)}")

    def _reload(self) -> int:
        before = self._procs()
        log_offset = self.paths.log.stat().st_size if self.paths.log.exists() else 0
        with contextlib.suppress(OSError):
            # The master re-executes itself on `reload` and drops this connection: no answer to read.
            _ask(self.paths.master_socket, "reload", timeout=RELOAD_TIMEOUT_S)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                now = self._procs()
            except OSError:
                time.sleep(0.05)  # the master is between exec and listening again
                continue
            if now.failed_reloads > before.failed_reloads:
                why = self._alerts_since(log_offset)
                raise GatewayError(f"haproxy refused the reload (the old config still serves): {why}")
            fresh = [pid for pid in now.workers if pid not in before.workers]
            if fresh:
                return fresh[0]
            time.sleep(0.05)
        raise GatewayError(f"haproxy reload did not produce a new worker in {RELOAD_TIMEOUT_S:.0f}s")

    def _alerts_since(self, offset: int, default: str | None = None) -> str:
        """HAProxy's ALERT lines written to the log after `offset` (why a start or reload failed);
        `default` (or the log's tail) when there are none."""
        try:
            with self.paths.log.open("rb") as handle:
                handle.seek(offset)
                lines = handle.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        alerts = [line.split(":", 1)[-1].strip() for line in lines if "ALERT" in line]
        if alerts:
            return " | ".join(alerts)
        return default if default is not None else self._log_tail()

    def _log_tail(self, lines: int = 4) -> str:
        # The master keeps the log file it was started with as stderr, across re-executions.
        try:
            tail = self.paths.log.read_text(errors="replace").strip().splitlines()[-lines:]
        except FileNotFoundError:
            return f"see {self.paths.log}"
        return " | ".join(tail) or f"see {self.paths.log}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the master and its workers (SIGTERM: immediate stop); no-op if it is not running."""
        pid = self.master_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        self.paths.pidfile.unlink(missing_ok=True)

    # ------------------------------------------------------------ runtime API

    def server_states(self) -> list[ServerStatus]:
        """Every server of every backend with its health as the current worker sees it."""
        text = _ask(self.paths.runtime_socket, "show stat")
        reader = csv.DictReader(io.StringIO(text.lstrip("# ")))
        states = []
        for row in reader:
            server = row.get("svname", "")
            if not server or server in ("FRONTEND", "BACKEND"):
                continue
            raw = row.get("status", "")
            states.append(ServerStatus(row.get("pxname", ""), server, _parse_state(raw), raw,
                                       row.get("check_status", "")))
        return states

    def vouch_up(self, tenant: str, servers: Sequence[str]) -> list[str]:
        """Tell the running worker these servers of a county are healthy now (`set server BE/SRV
        health up`); returns those it accepted (none when HAProxy is not running).

        For a caller that has just seen each server's app answer its health check itself: a county
        whose address was added while its VM was still coming up has been checked DOWN, and would
        otherwise wait up to a check interval for its next check to bring it UP. Checks go on as
        before and take it DOWN again if it fails them.
        """
        accepted: list[str] = []
        for server in servers:
            try:
                answer = _ask(self.paths.runtime_socket, f"set server be_{tenant}/{server} health up")
            except OSError:
                return accepted
            if not answer.strip():  # the runtime API says nothing on success, why not otherwise
                accepted.append(server)
        return accepted

    def backend_state(self, tenant: str) -> dict[str, ServerStatus]:
        name = f"be_{tenant}"
        return {s.server: s for s in self.server_states() if s.backend == name}

    def wait_for(self, tenant: str, server: str, state: ServerState, timeout: float = 15.0) -> ServerStatus:
        """Wait until a county's server reaches a state (e.g. UP after a failover), or raise."""
        deadline = time.monotonic() + timeout
        last: ServerStatus | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                last = self.backend_state(tenant).get(server)
                if last is not None and last.state == state:
                    return last
            time.sleep(0.1)
        seen = f"{last.raw} ({last.check})" if last else "absent"
        raise GatewayError(f"{tenant}/{server} did not become {state.value} in {timeout:.0f}s: {seen}")
