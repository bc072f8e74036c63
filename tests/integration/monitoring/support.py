"""Real components for the monitoring tests: a seeded county served by uvicorn on 127.0.0.1, a
delaying TCP proxy (the slow network), the real HAProxy with its request log socket."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from monitoring.edge import CurlClient, RequestLogReader
from monitoring.probes import ProbeAccount, Target
from monitoring.rum import RingRead
from monitoring.timings import Split, parse_server_timing, split
from provisioning.gateway import Backend, Frontend
from provisioning.haproxy import HAProxyGateway
from tenant_app.db import make_engine, session_scope
from tenant_app.devserver import LOOPBACK, free_port
from tenant_app.migrations import upgrade
from tenant_app.probe_account import ensure_probe_account
from tenant_app.seed import seed_demo
from tenant_app.settings import Settings

from .app_server import ACTUAL_HEADER, DELAY_HEADER, DELAY_VARIABLE

SECRET = "monitoring-test-secret-0123456789"


def seed_county(database_url: str) -> ProbeAccount:
    """Migrate, seed the demo county, add the probe account (as a county VM's first boot would)."""
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as db:
            seed_demo(db, Settings(database_url=database_url, secret=SECRET))
            account = ensure_probe_account(db)
            return ProbeAccount(account.username, account.password, account.api_token, account.budget_line_id)
    finally:
        engine.dispose()


@contextmanager
def app_server(database_url: str, *, server_delay_ms: float = 0.0, log_path: Path | None = None,
               startup_timeout_s: float = 60.0) -> Iterator[int]:
    """The app on 127.0.0.1:<port> (yielded) in a subprocess, healthy before it is yielded."""
    port = free_port()
    env = {**os.environ, "TENANT_APP_DATABASE_URL": database_url, "TENANT_APP_HOST": LOOPBACK,
           "TENANT_APP_PORT": str(port), "TENANT_APP_SECRET": SECRET, "TENANT_APP_COUNTY_ID": "testcounty",
           DELAY_VARIABLE: str(server_delay_ms)}
    env.pop("TENANT_APP_SETTINGS_FILE", None)
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115  (closed below)
    process = subprocess.Popen([sys.executable, "-m", "tests.integration.monitoring.app_server"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[3])
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app server exited with {process.returncode} before answering")
            try:
                if httpx.get(f"http://{LOOPBACK}:{port}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("app server did not become healthy in time")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not isinstance(log, int):
            log.close()


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that holds every chunk `one_way_s` before passing it on, in each
    direction: a request-answer exchange gains 2 x one_way_s, however many chunks it has (chunks
    keep their spacing, like a long line)."""

    def __init__(self, upstream_port: int, one_way_s: float) -> None:
        self.upstream_port = upstream_port
        self.one_way_s = one_way_s
        self.port = 0
        self.lateness_s: list[float] = []  # how late past its due time each chunk went out
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(due - self._loop.time(), 0.0))
                self.lateness_s.append(self._loop.time() - due)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((self._loop.time() + self.one_way_s, data))
        except ConnectionError:
            pass
        queue.put_nowait((0.0, b""))
        with suppress(ConnectionError):
            await sender

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w), return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, LOOPBACK, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def injected_ms(self) -> float:
        """What one request-answer exchange actually gained: a chunk each way, as late as they went."""
        late = statistics.median(self.lateness_s) if self.lateness_s else 0.0
        return 2 * (self.one_way_s + late) * 1000

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def gateway(counties: dict[str, int], *, real_user_timing: bool = True) -> Iterator[tuple[HAProxyGateway,
                                                                                           dict[str, int]]]:
    """The real HAProxy with one frontend per county (slug -> backend port); yields the gateway and
    slug -> the county's address port. Short /tmp dir: unix socket paths are limited to 107 bytes."""
    state = Path(tempfile.mkdtemp(prefix="ccmon-", dir="/tmp"))
    gw = HAProxyGateway(state / "haproxy", real_user_timing=real_user_timing)
    addresses = {slug: free_port() for slug in counties}
    frontends = [Frontend(slug, addresses[slug], (Backend(f"{slug}-vm", port),))
                 for slug, port in counties.items()]
    try:
        gw.paths.root.mkdir(parents=True, exist_ok=True)
        gw.apply(frontends)
        yield gw, addresses
    finally:
        gw.stop()
        shutil.rmtree(state, ignore_errors=True)


def request_log_reader(gw: HAProxyGateway, on_read: Callable[[RingRead], object],
                       period_s: float = 0.2) -> RequestLogReader:
    """The service's reader of this gateway's request log, reading more often than its 1 s so that
    tests wait less."""
    return RequestLogReader(gw.paths.runtime_socket, gw.paths.request_log_mark, on_read, period_s=period_s)


def interleaved_splits(targets: dict[str, Target], injected_ms: float, n: int,
                       warm_up: int) -> tuple[dict[str, list[Split]], float]:
    """Open the probe's budget line n times per county, round-robin over base / slownet / slowapp
    (each on its own kept-alive curl session), so load on the machine falls on all three alike.
    Requests to slowapp carry the test delay header. The split is the probe's: curl's total minus
    the app's Server-Timing. Also returns the server delay as it actually happened (median, ms)."""
    delay = {DELAY_HEADER: f"{injected_ms:g}"}
    clients = {county: CurlClient(t.base_url) for county, t in targets.items()}
    splits: dict[str, list[Split]] = {county: [] for county in targets}
    actual: list[float] = []
    try:
        for i in range(n + warm_up):
            for county, target in targets.items():
                headers = {"Authorization": f"Bearer {target.account.api_token}",
                           **(delay if county == "slowapp" else {})}
                answer = clients[county].request(
                    "GET", f"/api/v1/budget-lines/{target.account.budget_line_id}", headers=headers)
                if answer.status != 200:
                    raise RuntimeError(f"{county}: {answer.status}")
                if i >= warm_up:
                    timing = parse_server_timing(answer.headers.get("server-timing"))
                    splits[county].append(split(answer.phases.total_ms, timing))
                    if county == "slowapp":
                        actual.append(float(answer.headers[ACTUAL_HEADER]))
    finally:
        for client in clients.values():
            client.close()
    return splits, statistics.median(actual)


def _shift(changed: list[Split], base: list[Split], part: str) -> float:
    """The median of paired differences (the i-th request of each county went out back to back),
    which cancels the machine's drifting load better than a difference of medians."""
    return statistics.median(getattr(c, f"{part}_ms") - getattr(b, f"{part}_ms")
                             for c, b in zip(changed, base, strict=True))


def attribution_errors(by_county: dict[str, list[Split]], network_injected_ms: float,
                       server_injected_ms: float) -> dict[str, float]:
    """How far each side's change is from what was injected (ms), for counties base (nothing
    injected), slownet (injected on the network) and slowapp (injected in the server). The injected
    amounts are as they happened (nominally 200 ms; a loaded machine's timers run late)."""
    base, net, app = by_county["base"], by_county["slownet"], by_county["slowapp"]
    return {
        "network delay -> network": abs(_shift(net, base, "network") - network_injected_ms),
        "network delay -> not server": abs(_shift(net, base, "server")),
        "server delay -> server": abs(_shift(app, base, "server") - server_injected_ms),
        "server delay -> not network": abs(_shift(app, base, "network")),
    }
