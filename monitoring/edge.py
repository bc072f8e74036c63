"""monitoring's side effects: HTTP through pycurl (the probes), the gateway's request log, psutil.

Everything else in the package is plain functions over plain data and is tested without these.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import io
import os
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlencode

import psutil
import pycurl

from monitoring.rum import Gap, RingRead, unread
from provisioning.gateway import RequestLogRing
from provisioning.haproxy import NoRequestLog, dump_request_log

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


# --------------------------------------------------------------------------- gateway request log


class ReaderBusy(OSError):
    """Another process on this machine already reads this gateway's request log."""


class RequestLogReader:
    """Reads the gateway's ring of request lines once a period and hands what is new since its
    previous read to `on_read` (monitoring.rum.unread says what; the engine's ingest_ring_read
    takes it).

    Two threads: the reader, at normal priority, asks for the ring on time (a late read is lines
    overwritten), and reads again after half a period when a read found more than half the ring
    new (a ring read costs the gateway the same whatever is new in it: read more often only when
    lines would otherwise be lost); the ingester, at nice 19, parses and rolls up (when the machine
    is busy the gateway and the counties come first; up to `backlog` reads wait for it, past that a
    read is dropped and the next one says so: Gap.BEHIND).

    Where the previous read ended (its newest line's "<pid> <counter>") is kept in `mark_file`, so
    a restarted service neither reads a line twice nor misses one the ring still holds. One reader
    per gateway: the mark file is locked while it runs (a second one raises ReaderBusy). The
    gateway not running is not an error: the next period tries again.
    """

    def __init__(self, runtime_socket: Path, mark_file: Path, on_read: Callable[[RingRead], object],
                 period_s: float = 1.0, nice: int = 19, backlog: int = 10) -> None:
        self.runtime_socket = runtime_socket
        self.mark_file = mark_file
        self.reads = 0
        self.failed_reads = 0
        self._on_read = on_read
        self._period_s = period_s
        self._nice = nice
        self._busy_bytes = RequestLogRing().ring_bytes // 2
        self._lock: int | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue[RingRead | None] = queue.Queue(maxsize=backlog)
        self._behind = False
        self._reader = threading.Thread(target=self._read_loop, name="request-log", daemon=True)
        self._ingester = threading.Thread(target=self._ingest_loop, name="request-log-ingest", daemon=True)

    def read_once(self) -> int:
        """One read of the whole ring, handed over at once; the number of new lines."""
        found = self._take()
        if found is None:
            return 0
        self._on_read(found)
        return len(found.lines)

    def _take(self) -> RingRead | None:
        """What is new in the ring (None: nothing, or the gateway did not answer); the mark moved."""
        try:
            dump = dump_request_log(self.runtime_socket)
        except (OSError, NoRequestLog):  # not running (yet), between a reload's workers, or unlogged
            self.failed_reads += 1
            return None
        self.reads += 1
        mark = self._read_mark()
        found = unread(dump, mark)
        if found.mark != mark and found.mark is not None:
            self._write_mark(found.mark)
        return found if found.lines or found.gap is not None else None

    def _read_mark(self) -> str | None:
        try:
            return self.mark_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _write_mark(self, mark: str) -> None:
        # Replaced whole, never half-written; no fsync: after a machine crash a stale mark only
        # means lines read twice, and the ring is gone with the machine anyway.
        temporary = self.mark_file.with_name(self.mark_file.name + ".new")
        temporary.write_text(mark + "\n")
        os.replace(temporary, self.mark_file)

    def _read_loop(self) -> None:
        delay = self._period_s
        while not self._stop.wait(delay):
            found = self._take()
            busy = found is not None and sum(len(line) + 1 for line in found.lines) > self._busy_bytes
            delay = self._period_s / 2 if busy else self._period_s
            if found is not None:
                self._hand_over(found)

    def _hand_over(self, found: RingRead, wait_s: float = 0.0) -> None:
        if self._behind and found.gap is None:
            found = found._replace(gap=Gap.BEHIND)
        try:
            if wait_s:
                self._queue.put(found, timeout=wait_s)
            else:
                self._queue.put_nowait(found)
        except queue.Full:
            self._behind = True  # dropped: the ingester is that far behind
            return
        self._behind = False

    def _ingest_loop(self) -> None:
        # On Linux the nice value is per thread: only this one yields to the rest of the machine.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        while (found := self._queue.get()) is not None:
            self._on_read(found)

    def start(self) -> RequestLogReader:
        self.mark_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.mark_file.with_name(self.mark_file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ReaderBusy(f"another process reads the request log of {self.runtime_socket.parent}") \
                from None
        self._lock = fd
        self._ingester.start()
        self._reader.start()
        return self

    def stop(self) -> None:
        """Stop after one last read, and after what was read is ingested (nothing left to the next run)."""
        self._stop.set()
        if self._reader.is_alive():
            self._reader.join(10)
            found = self._take()
            if found is not None:
                self._hand_over(found, wait_s=10.0)
        if self._ingester.is_alive():
            self._queue.put(None)
            self._ingester.join(30)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> RequestLogReader:
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
