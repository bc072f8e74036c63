"""monitoring's side effects: HTTP through pycurl (the probes), the gateway's log socket, psutil.

Everything else in the package is plain functions over plain data and is tested without these.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import selectors
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlencode

import psutil
import pycurl

LOOPBACK = "127.0.0.1"  # network rule: probes talk to addresses on loopback only


class FetchError(enum.StrEnum):
    """Why no answer came back at all (an answer with a bad status is not a FetchError)."""

    CONNECT = "connect"  # refused or timed out connecting: nothing listens, or the county is down
    TIMEOUT = "timeout"  # connected, but the whole answer did not come in time
    OTHER = "other"


class FetchFailed(RuntimeError):
    def __init__(self, kind: FetchError, message: str, elapsed_ms: float) -> None:
        super().__init__(message)
        self.kind = kind
        self.elapsed_ms = elapsed_ms


@dataclass(frozen=True)
class Phases:
    """curl's view of one answer, in ms: name lookup, TCP connect, TLS, waiting for the first
    byte (request sent -> first byte back), transfer of the rest; total is all of it."""

    dns_ms: float
    connect_ms: float
    tls_ms: float
    first_byte_ms: float
    transfer_ms: float
    total_ms: float


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-case names; the last value of a repeated header
    body: bytes
    phases: Phases


def _phases(curl: pycurl.Curl) -> Phases:
    lookup = curl.getinfo(pycurl.NAMELOOKUP_TIME)
    connect = curl.getinfo(pycurl.CONNECT_TIME)
    tls = curl.getinfo(pycurl.APPCONNECT_TIME)
    pretransfer = curl.getinfo(pycurl.PRETRANSFER_TIME)
    first = curl.getinfo(pycurl.STARTTRANSFER_TIME)
    total = curl.getinfo(pycurl.TOTAL_TIME)
    ms = 1000.0
    return Phases(dns_ms=lookup * ms, connect_ms=max(connect - lookup, 0.0) * ms,
                  tls_ms=max(tls - connect, 0.0) * ms if tls else 0.0,
                  first_byte_ms=max(first - pretransfer, 0.0) * ms,
                  transfer_ms=max(total - first, 0.0) * ms, total_ms=total * ms)


class CurlClient:
    """One browser-like session (cookies, one kept-alive connection) against one base URL."""

    def __init__(self, base_url: str, *, connect_timeout_s: float = 1.5, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._curl = pycurl.Curl()
        self._curl.setopt(pycurl.COOKIEFILE, "")  # the in-memory cookie engine: the session cookie
        self._curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(connect_timeout_s * 1000))
        self._curl.setopt(pycurl.TIMEOUT_MS, int(timeout_s * 1000))
        self._curl.setopt(pycurl.NOSIGNAL, 1)
        self._curl.setopt(pycurl.FOLLOWLOCATION, 0)  # the probe checks each redirect itself
        self._curl.setopt(pycurl.PROXY, "")  # never an environment proxy: loopback only

    def __enter__(self) -> CurlClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._curl.close()

    def request(self, method: str, path: str, *, form: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None) -> Answer:
        curl = self._curl
        body, head = io.BytesIO(), io.BytesIO()
        curl.setopt(pycurl.URL, self.base_url + path)
        curl.setopt(pycurl.WRITEDATA, body)
        curl.setopt(pycurl.HEADERFUNCTION, head.write)
        curl.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in (headers or {}).items()])
        if method == "GET":
            curl.setopt(pycurl.HTTPGET, 1)
        elif method == "POST":
            curl.setopt(pycurl.POSTFIELDS, urlencode(dict(form or {})))
        else:
            curl.setopt(pycurl.CUSTOMREQUEST, method)
        try:
            curl.perform()
        except pycurl.error as error:
            code = error.args[0] if error.args else 0
            kind = {pycurl.E_COULDNT_CONNECT: FetchError.CONNECT,
                    pycurl.E_OPERATION_TIMEDOUT: FetchError.TIMEOUT}.get(code, FetchError.OTHER)
            # A connect that timed out is a connect failure, whatever curl's code says.
            if kind is FetchError.TIMEOUT and not curl.getinfo(pycurl.CONNECT_TIME):
                kind = FetchError.CONNECT
            raise FetchFailed(kind, str(error.args[-1] if error.args else error),
                              curl.getinfo(pycurl.TOTAL_TIME) * 1000) from error
        finally:
            if method not in ("GET", "POST"):
                curl.setopt(pycurl.CUSTOMREQUEST, None)
        return Answer(int(curl.getinfo(pycurl.RESPONSE_CODE)), _headers(head.getvalue()), body.getvalue(),
                      _phases(curl))


def _headers(raw: bytes) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in raw.decode("latin-1").splitlines():
        if line.startswith("HTTP/"):
            result = {}  # a new response (after a 100 Continue): keep the final one's headers
            continue
        name, sep, value = line.partition(":")
        if sep:
            result[name.strip().lower()] = value.strip()
    return result


# --------------------------------------------------------------------------- gateway log socket


class RumReceiver:
    """The unix stream socket the gateway's request lines arrive on (provisioning GatewayPaths.rum_socket).

    HAProxy's ring forwards its lines through the gateway's relay (provisioning.gateway.RumRelay) as
    a stream: each line followed by LF (the ring server's `log-proto legacy`, RFC 6587
    non-transparent framing), many lines per read, a line possibly split across reads. Several
    connections can be open at once: during a reload the old and the new worker each forward their
    own ring; HAProxy's health checks connect and close without a byte. Bound by this service;
    `drain` reads what has arrived without blocking.
    """

    def __init__(self, path: Path, buffer_bytes: int = 4 * 1024 * 1024, backlog: int = 16) -> None:
        self.path = path
        self._buffer_bytes = buffer_bytes
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by a previous run: a unix socket path cannot be re-bound
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        os.chmod(path, 0o660)
        self._sock.listen(backlog)
        self._sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ)
        self._partial: dict[socket.socket, bytes] = {}  # per connection: the line not yet ended

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def connections(self) -> int:
        return len(self._partial)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            # A burst while this service is busy waits in the kernel, then in HAProxy's ring.
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._buffer_bytes)
            self._partial[conn] = b""
            self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket, lines: list[str], limit: int) -> None:
        """Read what this connection has (up to about limit lines); complete lines into lines."""
        pending = self._partial[conn]
        while len(lines) < limit:
            try:
                data = conn.recv(262144)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:  # closed (a reload's old worker, a health check): its last line, if cut, too
                if pending:
                    lines.append(pending.decode("utf-8", errors="replace"))
                self._forget(conn)
                return
            pending += data
            *complete, pending = pending.split(b"\n")
            lines.extend(line.decode("utf-8", errors="replace") for line in complete)
        self._partial[conn] = pending

    def _forget(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        del self._partial[conn]
        conn.close()

    def drain(self, limit: int = 100_000) -> list[str]:
        """Every complete line that has arrived (about limit at most), without waiting."""
        lines: list[str] = []
        for key, _ in self._selector.select(0):
            if key.fileobj is self._sock:
                self._accept()
        for conn in list(self._partial):
            if len(lines) >= limit:
                break
            self._read(conn, lines, limit)
        return lines

    def wait(self, timeout_s: float) -> bool:
        """Whether anything (a connection, bytes, a close) arrived within timeout_s."""
        return bool(self._selector.select(timeout_s))

    def close(self) -> None:
        for conn in list(self._partial):
            self._forget(conn)
        self._selector.close()
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class RumListener:
    """Reads the gateway's socket continuously in a thread and hands lines over in batches.

    A reader that falls behind costs the gateway nothing: the lines wait in the socket, then in
    HAProxy's ring (4 MiB per worker), and only past that are they dropped (HAProxy never waits).
    """

    def __init__(self, path: Path, on_lines: Callable[[list[str]], object], poll_s: float = 0.2,
                 nice: int = 19) -> None:
        self.receiver = RumReceiver(path)
        self._on_lines = on_lines
        self._poll_s = poll_s
        self._nice = nice
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rum-listener", daemon=True)

    def _run(self) -> None:
        # Lowest priority for this thread only (on Linux the nice value is per thread): when the
        # machine is busy the gateway and the counties come first; its ring holds the lines meanwhile
        # (past 4 MiB HAProxy drops them: real-user timing is then a sample, never a brake).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        while not self._stop.is_set():
            if self.receiver.wait(self._poll_s):
                lines = self.receiver.drain()
                if lines:
                    self._on_lines(lines)

    def start(self) -> RumListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.receiver.close()

    def __enter__(self) -> RumListener:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- host


@dataclass(frozen=True)
class HostReading:
    cpu_pct: float
    cpus: int
    memory_total_bytes: int
    memory_available_bytes: int
    disk_total_bytes: int
    disk_used_bytes: int
    net_sent_bytes: int
    net_recv_bytes: int
    load_1m: float


def read_host(disk_path: Path = Path("/")) -> HostReading:
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(disk_path))
    net = psutil.net_io_counters()
    return HostReading(cpu_pct=psutil.cpu_percent(interval=None), cpus=psutil.cpu_count() or 1,
                       memory_total_bytes=memory.total, memory_available_bytes=memory.available,
                       disk_total_bytes=disk.total, disk_used_bytes=disk.used,
                       net_sent_bytes=net.bytes_sent, net_recv_bytes=net.bytes_recv,
                       load_1m=os.getloadavg()[0])


def process_cpu_seconds() -> float:
    """This process's CPU time so far (user + system): what a probe costs is measured with it."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


# --------------------------------------------------------------------------- rollup file


def write_json_atomic(path: Path, data: object) -> None:
    """Write the whole file or nothing (a crash mid-write leaves the previous rollups)."""
    import json
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, ensure_ascii=False, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def read_json(path: Path) -> object | None:
    import json

    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
