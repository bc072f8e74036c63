"""The REST server edge: a site's restic repository served on 127.0.0.1 by `rclone serve restic`.

Started and supervised like the site daemons (provisioning/sites.py): a pid file, an idempotent
start, a stop, a state that is UP only when the recorded process is our server and answers HTTP,
and `ensure_running` that restarts a dead one (called by the platform before each offsite copy and
by `supervise` on a thread). rest-server is used instead when it is installed (same protocol).

No HTTP authentication: the server listens on 127.0.0.1 only (network rule) and everything in a
restic repository is encrypted with the repository's password, which never travels to the server.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psutil

from backup import processes

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# The secondary site's repository server (each other site's is the next: backup/restports.py).
# Below Linux's ephemeral range (32768-60999) like the guest (22000-22999) and gateway
# (21000-21999) ports, and clear of both; 23000-23009 are kept for backup REST servers (one per
# site that receives copies).
DEFAULT_PORT = 23000


class ServerState(StrEnum):
    UP = "up"
    DOWN = "down"


class RestServerError(RuntimeError):
    """The REST server could not be started; the message carries the end of its log."""


class ServerProgram(StrEnum):
    RCLONE = "rclone"
    REST_SERVER = "rest-server"


@dataclass(frozen=True)
class RestServer:
    """One REST server: the folder it serves (each subfolder a repository), its port and its files."""

    root: Path
    port: int
    pidfile: Path
    logfile: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def repository_location(self, name: str) -> str:
        """restic's location for repository `name` under the served folder."""
        return f"rest:{self.url}{name}"


def program() -> ServerProgram:
    """rest-server where installed (restic's own), else rclone (installed by scripts/host-setup.sh)."""
    return ServerProgram.REST_SERVER if shutil.which("rest-server") else ServerProgram.RCLONE


def _argv(server: RestServer, which: ServerProgram) -> list[str]:
    address = f"{LOOPBACK}:{server.port}"
    if which is ServerProgram.REST_SERVER:
        return ["rest-server", "--listen", address, "--path", str(server.root), "--no-auth"]
    # --cache-objects=false: a control plane at this site may read the folder directly; a listing
    # cached by the server would hide what it wrote.
    return ["rclone", "serve", "restic", "--addr", address, "--cache-objects=false", str(server.root)]


def pid(server: RestServer) -> int | None:
    """The server's pid, if the pid file names a live (not zombie) process that is this server."""
    try:
        recorded = int(server.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return recorded if _is_our_server(server, recorded) else None


def _is_our_server(server: RestServer, candidate: int) -> bool:
    return processes.serves(processes.live_argv(candidate), server.root, server.port)


def answers(server: RestServer, timeout_s: float = 2.0) -> bool:
    """Whether something speaks HTTP on the server's port (any status: `/` is not a repository)."""
    connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=timeout_s)
    try:
        connection.request("HEAD", "/")
        connection.getresponse().read()
    except OSError:
        return False
    finally:
        connection.close()
    return True


def has_config(server: RestServer, name: str, timeout_s: float = 2.0) -> bool:
    """Whether repository `name` under the server has its `config` (what `restic init` writes last):
    a HEAD request, no key derivation. False on any doubt (the caller then asks restic)."""
    connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=timeout_s)
    try:
        connection.request("HEAD", f"/{name}/config")
        status = connection.getresponse().status
    except OSError:
        return False
    finally:
        connection.close()
    return status == 200


def state(server: RestServer) -> ServerState:
    return ServerState.UP if pid(server) is not None and answers(server) else ServerState.DOWN


def start(server: RestServer, timeout_s: float = 30.0) -> int:
    """Start the server if it is not running (idempotent); returns its pid. The bound is generous:
    on a machine busy with TCG guests and two test workers, 15 s passed once before it answered."""
    with processes.one_start_at_a_time(server.pidfile):
        return _start(server, timeout_s)


def _start(server: RestServer, timeout_s: float) -> int:
    running = pid(server)
    # Our live server that missed one 2 s answer is busy (uploads of two restic commands at once on a
    # loaded machine), not hung: it is given longer before being stopped under their feet.
    if running is not None and (answers(server) or answers(server, timeout_s=10.0)):
        return running
    stop(server)  # a hung or half-started leftover
    squatter = _listener_on(server.port)
    if squatter is not None:
        # Another folder's server (or anything else) would answer in our place, and restic would then
        # fail with "wrong password" against a repository that is not this site's.
        raise RestServerError(
            f"port {LOOPBACK}:{server.port} is already served by pid {squatter[0]} ({squatter[1]}), not by "
            f"the REST server for {server.root}: stop it, or give this site another port "
            "(COUNTYCLOUD_BACKUP_REST_PORT, the secondary's; COUNTYCLOUD_BACKUP_REST_PORTS, by site)")
    server.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    server.pidfile.parent.mkdir(parents=True, exist_ok=True)
    argv = _argv(server, program())
    # Through a shell that exits at once, so the server is nobody's child: it outlives the command
    # that started it and never lingers as a zombie of a long-running control plane.
    launched = subprocess.run(
        ["sh", "-c", '"$@" </dev/null >>"$LOGFILE" 2>&1 & echo $!', "sh", *argv],
        env={**os.environ, "LOGFILE": str(server.logfile)},
        capture_output=True, text=True, check=True, start_new_session=True, timeout=10,
    )
    new_pid = int(launched.stdout.strip())
    server.pidfile.write_text(f"{new_pid}\n")
    deadline = time.monotonic() + timeout_s
    # Ours must be alive as well as something answering: a port taken in the meantime would answer
    # while our server exits on "address already in use".
    while not (answers(server, timeout_s=0.5) and _is_our_server(server, new_pid)):
        if not _is_our_server(server, new_pid) or time.monotonic() > deadline:
            stop(server)
            raise RestServerError(
                f"REST server on {LOOPBACK}:{server.port} for {server.root} did not start: "
                f"{_log_tail(server)}")
        time.sleep(0.05)
    return new_pid


def _listener_on(port: int) -> tuple[int | None, str] | None:
    """Who listens on 127.0.0.1:`port` (pid, command line) when something does; pid None when the
    socket is not ours to see (another user's process)."""
    try:
        listening = [c for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                     and c.laddr.ip in (LOOPBACK, "0.0.0.0", "::")]
    except psutil.AccessDenied:
        listening = []
    if not listening:
        return None
    owner = listening[0].pid
    try:
        command = " ".join(psutil.Process(owner).cmdline()) if owner else "unknown process"
    except psutil.Error:
        command = "a process that has just exited"
    return owner, command


def stop(server: RestServer, grace_s: float = 5.0) -> int | None:
    """Stop the server (SIGTERM, then SIGKILL after `grace_s`); returns the pid stopped, if any."""
    running = pid(server)
    if running is not None:
        processes.terminate(running, lambda candidate: _is_our_server(server, candidate), grace_s)
        _wait_port_released(server.port, running)
    server.pidfile.unlink(missing_ok=True)
    return running


def _wait_port_released(port: int, stopped: int, timeout_s: float = 5.0) -> None:
    """Until the stopped server's listening socket is gone. An exiting process loses its command
    line (what `_is_our_server` reads) before its sockets are closed, so `terminate` may return while
    the port is still its own, and a start right after took it for another server's (the suite
    under load, 2026-12-05: "already served by pid N (a process that has just exited)")."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        squatter = _listener_on(port)
        if squatter is None or squatter[0] != stopped:
            return
        time.sleep(0.05)


def ensure_running(server: RestServer) -> bool:
    """Restart the server if it is down; True when it had to be (re)started."""
    if state(server) is ServerState.UP:
        return False
    start(server)
    return True


def supervise(server: RestServer, stopping: threading.Event, interval_s: float = 1.0) -> int:
    """Keep the server up until `stopping` is set; returns how many times it was restarted.

    A start that fails (port taken, disk gone) is retried at the next tick, not raised: the
    supervisor outlives the outage it is there for.
    """
    restarts = 0
    while not stopping.is_set():
        try:
            if ensure_running(server):
                restarts += 1
                log.warning("REST server for %s was down; restarted on port %s", server.root, server.port)
        except (RestServerError, OSError, subprocess.SubprocessError) as error:
            log.error("REST server for %s could not be restarted: %s", server.root, error)
        stopping.wait(interval_s)
    return restarts


def _log_tail(server: RestServer, lines: int = 15) -> str:
    try:
        return "\n".join(server.logfile.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
