"""`countycloud serve`: the API, the console and the job workers in one process on 127.0.0.1.

`--background` starts it detached, with a pid file and a log file in the state folder, and returns
once it answers; `--stop` ends the one the pid file names. The first start creates the `admin` user
and writes its generated password once to a 0600 file in the state folder (never to the log).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from controlplane.cli.common import EXIT_FAILED, console, errors

PID_FILE = "service.pid"
LOG_FILE = "service.log"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: COUNTYCLOUD_SERVICE_PORT, "
                                                  "8600).", min=1, max=65535)] = None,
    background: Annotated[bool, typer.Option(
        "--background", help="Start detached and return once it answers (pid and log in the state folder)."
    )] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the service the pid file names.")] = False,
) -> None:
    """Run the API (/api/v1, docs at /docs), the console (/) and the job workers."""
    from controlplane import bootstrap

    settings = bootstrap.settings()
    state = settings.state_dir
    port = port or settings.service_port
    if stop:
        raise typer.Exit(stop_service(state))
    from provisioning.steps import ProvisioningError

    try:  # each site's backup REST server needs a port of its own: refused before anything starts
        bootstrap.check_backup_ports(bootstrap.declared_site_places())
    except ProvisioningError as error:
        errors.print(str(error), markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    running = running_pid(state)
    if running is not None:
        errors.print(f"the service already runs (pid {running}, {state / PID_FILE}); "
                     "`countycloud serve --stop` first", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED)
    from controlplane import service

    ctx = service.context_from_settings(settings)
    admin_file = service.first_admin(ctx)
    address = f"http://{HOST}:{port}/"
    if admin_file is not None:
        console.print(f"first start: user admin, password in {admin_file} (readable by this user only)",
                      markup=False)
    if background:
        raise typer.Exit(start_background(state, port, address))
    write_pid(state, os.getpid())
    try:
        import uvicorn

        console.print(f"CountyCloud service on {address} (API {address}api/v1, docs {address}docs)",
                      markup=False)
        app = service.build_app(ctx, on_start=service.start_workers, on_stop=service.stop_workers)
        uvicorn.run(app, host=HOST, port=port, log_level="info", access_log=False,
                    timeout_graceful_shutdown=10)
    finally:
        remove_pid(state, os.getpid())


# ---------------------------------------------------------------- pid file


def write_pid(state: Path, pid: int) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / PID_FILE).write_text(f"{pid}\n")


def remove_pid(state: Path, pid: int) -> None:
    path = state / PID_FILE
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == pid:
            path.unlink()


def _is_service(pid: int) -> bool:
    """The pid is alive and is a `serve` of ours (a stale pid file may name a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in command and any(b"controlplane" in part or b"countycloud" in part for part in command)


def running_pid(state: Path) -> int | None:
    try:
        pid = int((state / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _is_service(pid) else None


def stop_service(state: Path) -> int:
    pid = running_pid(state)
    if pid is None:
        console.print("the service is not running", markup=False)
        (state / PID_FILE).unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _is_service(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_service(pid):
        os.kill(pid, signal.SIGKILL)
        console.print(f"the service (pid {pid}) did not stop in {STOP_TIMEOUT_S:.0f} s: killed", markup=False)
    else:
        console.print(f"the service (pid {pid}) stopped", markup=False)
    (state / PID_FILE).unlink(missing_ok=True)
    return 0


# ---------------------------------------------------------------- background


def start_background(state: Path, port: int, address: str) -> int:
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / LOG_FILE
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors.print(f"the service exited at start (status {process.returncode}); see {log_path}:",
                         markup=False, highlight=False)
            errors.print(_tail(log_path), markup=False, highlight=False)
            return EXIT_FAILED
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{address}healthz", timeout=1.0).status_code == 200:
                console.print(f"CountyCloud service on {address} (pid {process.pid}, log {log_path})",
                              markup=False)
                return 0
        time.sleep(0.2)
    errors.print(f"the service did not answer within {START_TIMEOUT_S:.0f} s; see {log_path}",
                 markup=False, highlight=False)
    return EXIT_FAILED


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
