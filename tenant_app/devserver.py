"""A real server in a subprocess on 127.0.0.1 and a free port, for integration tests and benches.

`python -m tenant_app serve` is started exactly as in a county VM (settings from the environment),
and the context manager waits for /healthz before yielding the base URL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"  # network rule: tests and benches talk to loopback only


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(database_url: str, *, extra_env: Mapping[str, str] | None = None,
                   startup_timeout_s: float = 60.0, log_path: Path | None = None) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "TENANT_APP_DATABASE_URL": database_url, "TENANT_APP_HOST": LOOPBACK,
           "TENANT_APP_PORT": str(port), "TENANT_APP_SECRET": "test-secret-not-for-production",
           **(extra_env or {})}
    env.pop("TENANT_APP_SETTINGS_FILE", None)
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115  (closed below)
    process = subprocess.Popen([sys.executable, "-m", "tenant_app", "serve"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    base = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tenant_app server exited with {process.returncode} before answering")
            try:
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("tenant_app server did not become healthy in time")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path and not isinstance(log, int):
            log.close()
