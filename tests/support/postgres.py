"""A PostgreSQL server for the test suite, started on demand and shared by every test run.

The cluster lives outside the clone and listens only on 127.0.0.1 (network rule). It is left
running after the session so that concurrent or later pytest runs reuse it; a stale one (dead pid)
is restarted (under a file lock: pytest-xdist workers and other runs may all ask at once). Each
caller gets a fresh, uniquely named database, made and dropped over one admin connection per process
(a `createdb` subprocess per test cost about as much as the test's own work); `fresh_database(template=)`
copies a prepared database instead (tests/support/snapshots.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("COUNTYCLOUD_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_DIR = Path(os.environ.get("COUNTYCLOUD_TEST_PG_DIR", "/var/tmp/countycloud-test-pg"))
PG_PORT = int(os.environ.get("COUNTYCLOUD_TEST_PG_PORT", "55432"))
PG_USER = "postgres"


def _as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", PG_USER, "--", *argv], check=True, capture_output=True, text=True
    )


def _ready() -> bool:
    probe = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-q"], check=False
    )
    return probe.returncode == 0


def ensure_server() -> str:
    """Start the test cluster if it is not answering; return the admin URL (libpq form, no driver)."""
    if not _ready():
        PG_DIR.parent.mkdir(parents=True, exist_ok=True)
        with open(PG_DIR.parent / f"{PG_DIR.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter; the others find it answering afterwards
            _start()
    return f"postgresql://{PG_USER}@127.0.0.1:{PG_PORT}"


def _start() -> None:
    if not _ready():
        data = PG_DIR / "data"
        if not (data / "PG_VERSION").exists():
            if PG_DIR.exists():
                shutil.rmtree(PG_DIR)
            PG_DIR.mkdir(parents=True)
            shutil.chown(PG_DIR, PG_USER, PG_USER)
            _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", PG_USER, "-E", "UTF8")
        (data / "postmaster.pid").unlink(missing_ok=True) if not _ready() else None
        _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(PG_DIR / "server.log"), "-w", "-t", "60",
            "-o", f"-c listen_addresses=127.0.0.1 -p {PG_PORT} -c unix_socket_directories={PG_DIR} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start",
        )
        deadline = time.monotonic() + 30
        while not _ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"test PostgreSQL did not start; see {PG_DIR / 'server.log'}")
            time.sleep(0.2)


@functools.cache
def _admin() -> psycopg.Connection[tuple[object, ...]]:
    """One autocommit connection to the maintenance database, kept for the process."""
    return psycopg.connect(f"{ensure_server()}/postgres", autocommit=True)


def _execute(statement: str) -> None:
    try:
        _admin().execute(statement)
    except psycopg.OperationalError:  # the server was restarted under us: reconnect once
        _admin.cache_clear()
        _admin().execute(statement)


def fresh_database(prefix: str = "t", *, template: str | None = None) -> str:
    """Create an empty database (or a copy of `template`, a database name nobody is connected to) and
    return its SQLAlchemy URL (psycopg 3 driver)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    create_database(name, template=template)
    return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{PG_PORT}/{name}"


def create_database(name: str, *, template: str | None = None) -> None:
    # FILE_COPY: the suite's databases are small, and copying their files beats WAL-logging every
    # block (PostgreSQL 15's default) when the server runs with fsync off.
    copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    _execute(f'CREATE DATABASE "{name}"{copy}')


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def drop_database(url: str) -> None:
    # Best effort, as before: a leftover database only costs disk.
    with contextlib.suppress(psycopg.Error):
        _execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')


def move_aside(url: str, new_name: str) -> str:
    """Rename the database (its sessions ended first, as a lost server's would be): the URL it has now."""
    name = database_name(url)
    _execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
    _execute(f'ALTER DATABASE "{name}" RENAME TO "{new_name}"')
    return url.rsplit("/", 1)[0] + "/" + new_name
