"""The replica target edge: a site's replica folder served on 127.0.0.1 by `rclone serve sftp`, the
server replicated counties' guests stream their databases to (through each VM's guestfwd).

Supervised like the offsite REST server (backup/restserver.py): a pid file, an idempotent start,
a stop, a state that is UP only when the recorded process is our server and speaks SSH, and
`ensure_running` / `supervise`. Authentication is by key only: the server's own host key and the
guests' client key are made here once (0600, never on a command line or in a log); the server
accepts the client key's public half (`--authorized-keys`), guests pin the host key.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from backup import processes
from backup.replica import ReplicaSite

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ServerState(StrEnum):
    UP = "up"
    DOWN = "down"


class ReplicaServerError(RuntimeError):
    """The replica server could not be started; the message carries the end of its log."""


@dataclass(frozen=True)
class ReplicaServer:
    site: ReplicaSite
    port: int


def server(site: ReplicaSite, port: int) -> ReplicaServer:
    return ReplicaServer(site, port)


def ensure_keys(site: ReplicaSite) -> None:
    """The server's host key, the guests' client key and the authorized_keys file (made once)."""
    site.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = ((site.host_key, "countycloud-replica-host"), (site.client_key, "countycloud-replica"))
    for key, comment in keys:
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                           check=True, capture_output=True, timeout=30)
        key.chmod(0o600)
    wanted = site.client_key.with_suffix(".pub").read_text()
    if not site.authorized_keys.exists() or site.authorized_keys.read_text() != wanted:
        site.authorized_keys.write_text(wanted)
        site.authorized_keys.chmod(0o600)


def host_key_line(site: ReplicaSite) -> str:
    """The server's public host key as `TYPE BASE64` (what a guest pins)."""
    kind, body, *_ = site.host_key.with_suffix(".pub").read_text().split()
    return f"{kind} {body}"


def _argv(target: ReplicaServer) -> list[str]:
    site = target.site
    return ["rclone", "serve", "sftp", "--addr", f"{LOOPBACK}:{target.port}",
            "--authorized-keys", str(site.authorized_keys), "--key", str(site.host_key), str(site.served)]


def pid(target: ReplicaServer) -> int | None:
    try:
        recorded = int(target.site.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return recorded if _is_our_server(target, recorded) else None


def _is_our_server(target: ReplicaServer, candidate: int) -> bool:
    argv = processes.live_argv(candidate)
    return argv is not None and "sftp" in argv and processes.serves(argv, target.site.served, target.port)


def answers(target: ReplicaServer, timeout_s: float = 2.0) -> bool:
    """Whether an SSH server greets on the port."""
    try:
        with socket.create_connection((LOOPBACK, target.port), timeout=timeout_s) as connection:
            return connection.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def state(target: ReplicaServer) -> ServerState:
    return ServerState.UP if pid(target) is not None and answers(target) else ServerState.DOWN


def start(target: ReplicaServer, timeout_s: float = 30.0) -> int:
    """Start the server if it is not running (idempotent); returns its pid."""
    with processes.one_start_at_a_time(target.site.pidfile):
        return _start(target, timeout_s)


def _start(target: ReplicaServer, timeout_s: float) -> int:
    running = pid(target)
    if running is not None and answers(target):
        return running
    stop(target)
    ensure_keys(target.site)
    target.site.served.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Through a shell that exits at once, so the server is nobody's child (as restserver.start).
    launched = subprocess.run(
        ["sh", "-c", '"$@" </dev/null >>"$LOGFILE" 2>&1 & echo $!', "sh", *_argv(target)],
        env={**os.environ, "LOGFILE": str(target.site.logfile)},
        capture_output=True, text=True, check=True, start_new_session=True, timeout=10,
    )
    new_pid = int(launched.stdout.strip())
    target.site.pidfile.write_text(f"{new_pid}\n")
    deadline = time.monotonic() + timeout_s
    while not answers(target, timeout_s=0.5):
        if not _is_our_server(target, new_pid) or time.monotonic() > deadline:
            stop(target)
            raise ReplicaServerError(f"replica server on {LOOPBACK}:{target.port} for {target.site.served} "
                                     f"did not start: {_log_tail(target)}")
        time.sleep(0.05)
    return new_pid


def stop(target: ReplicaServer, grace_s: float = 5.0) -> int | None:
    running = pid(target)
    if running is not None:
        processes.terminate(running, lambda candidate: _is_our_server(target, candidate), grace_s)
    target.site.pidfile.unlink(missing_ok=True)
    return running


def ensure_running(target: ReplicaServer) -> bool:
    """Restart the server if it is down; True when it had to be (re)started."""
    if state(target) is ServerState.UP:
        return False
    start(target)
    return True


def supervise(target: ReplicaServer, stopping: threading.Event, interval_s: float = 1.0) -> int:
    """Keep the server up until `stopping` is set; returns how many times it was restarted."""
    restarts = 0
    while not stopping.is_set():
        try:
            if ensure_running(target):
                restarts += 1
                log.warning("replica server for %s was down; restarted on port %s", target.site.served,
                            target.port)
        except (ReplicaServerError, OSError, subprocess.SubprocessError) as error:
            log.error("replica server for %s could not be restarted: %s", target.site.served, error)
        stopping.wait(interval_s)
    return restarts


def _log_tail(target: ReplicaServer, lines: int = 15) -> str:
    try:
        return "\n".join(target.site.logfile.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
