"""The tenant address, as plain data rendered to an HAProxy configuration (no processes, no files here).

One HAProxy serves the whole platform: one frontend per county bound to 127.0.0.1 on the county's
stable port, its backend the county's VM app forward on 127.0.0.1, health-checked on /healthz.
Failover moves a county by applying again: its fenced server disabled, then that server (the same
VM name and port at the other site) enabled, both without a reload (`runtime_toggles`); any
other change of a backend is a reload (provisioning.haproxy).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from provisioning.errors import ProvisioningError

# The network rule: the gateway listens on, and forwards to, loopback only.
LOOPBACK = "127.0.0.1"
HEALTH_PATH = "/healthz"
# Real-user timing: one line per request, written into an in-memory ring of each worker
# (RequestLogRing) that the monitoring service reads through the runtime socket once a second
# (provisioning.haproxy.dump_request_log). Fields are space-separated, path and query quoted;
# monitoring.rum parses exactly this. %pid %rt (the worker and its request counter) make each line
# unique, so a reader can tell where its previous read ended. Timers (ms): Tw queue, Tr server's
# response headers, Ta whole active time; %hs is the captured Server-Timing of the app. Only what
# the split needs: every field is formatted for every request of every county.
RUM_LOG_TAG = "ccrum2"
RUM_LOG_FORMAT = RUM_LOG_TAG + r" %pid %rt %Ts.%ms %f %ST %HM %{+Q}HP %{+Q}HQ %Tw %Tr %Ta %hs"
RUM_SERVER_TIMING_LEN = 120
RUM_LINE_MAX = 4096  # bytes; a longer line is cut by HAProxy (the parser counts it malformed)


@dataclass(frozen=True)
class RequestLogRing:
    """Where the request lines wait: HAProxy's `ring`, in memory, one per worker, with no server.

    Nothing is forwarded: a ring's forwarder is woken by every line, and that cost the gateway
    7-8 % of its CPU per request; a ring nobody forwards costs only the line's formatting and copy
    (2-4 %). The reader asks for the whole ring (`show events`) once a second and keeps what is
    after its previous read. When nobody reads, the oldest lines are overwritten: a stopped reader
    never slows a county. ring_bytes holds ~44000 lines of ~95 bytes, 1.5 s of a saturated gateway.
    """

    name: str = "rum"
    maxlen: int = RUM_LINE_MAX
    ring_bytes: int = 4 << 20


# HAProxy identifiers allow more, but county slugs and VM names never need it and it keeps the
# rendered names (fe_<slug>, be_<slug>) safe to use on the runtime API's command line.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class GatewayError(ProvisioningError, ValueError):
    """Frontends the gateway refuses to render, with a message an operator can act on."""


def _check_port(port: int, what: str) -> None:
    if not 1 <= port <= 65535:
        raise GatewayError(f"{what}: port {port} is outside 1-65535")


@dataclass(frozen=True)
class Backend:
    """One server behind a county's frontend: a VM's app forward on 127.0.0.1:host_port.

    `enabled` False: the server stays in the configuration as `disabled` (HAProxy's maintenance:
    never sent a request, across reloads and restarts too). A fenced VM's server is kept that way, so
    that moving it back in service, the failover's switch, needs no reload (`runtime_toggles`)."""

    name: str
    host_port: int
    enabled: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise GatewayError(f"backend name {self.name!r}: use lower-case letters, digits, '-', '_', '.'")
        _check_port(self.host_port, f"backend {self.name}")


@dataclass(frozen=True)
class Frontend:
    """A county's address: 127.0.0.1:listen_port, served by its backends (none: answers 503)."""

    tenant: str
    listen_port: int
    backends: Sequence[Backend] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not _NAME.match(self.tenant):
            raise GatewayError(f"tenant {self.tenant!r}: use lower-case letters, digits, '-', '_', '.'")
        _check_port(self.listen_port, f"frontend {self.tenant}")
        object.__setattr__(self, "backends", tuple(self.backends))
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise GatewayError(f"frontend {self.tenant}: duplicate backend names {sorted(names)}")

    @property
    def frontend_name(self) -> str:
        return f"fe_{self.tenant}"

    @property
    def backend_name(self) -> str:
        return f"be_{self.tenant}"


@dataclass(frozen=True)
class Timeouts:
    """Kept short: every hop is on one machine; a slow county must not hold the gateway's slots."""

    connect_ms: int = 2000
    client_ms: int = 30000
    server_ms: int = 30000
    # A server that is UP is checked every check_interval_ms; after a failed check, every
    # check_transition_ms (HAProxy's `fastinter`), so a failing county is DOWN after 5 + 2 x 1 = 7 s
    # (6 s with checks every 2 s); a DOWN one every check_down_ms (`downinter`), so a county that
    # comes back serves as soon as before. Every check of a serving county is an HTTP request its TCG
    # guest answers: every 2 s that was 2.7 % of a core per idle county, the most an idle county
    # cost (1.9 % without checks, 0.5 % without its app; docs/benchmarks.md, issue 14 item 12).
    check_interval_ms: int = 5000
    check_transition_ms: int = 1000
    check_down_ms: int = 2000
    # A county's app runs in an emulated (TCG) guest: on a busy host one health answer can take
    # seconds. Measured with 15 guests on 2 cores, 2 s checks flapped healthy counties DOWN, so a
    # check may take 5 s and a server is taken out only after 3 failures in a row.
    check_timeout_ms: int = 5000
    check_fall: int = 3
    # Old workers still serving long connections after a reload are stopped after this long.
    hard_stop_after_s: int = 30


def validate(frontends: Sequence[Frontend]) -> list[str]:
    """Every reason the set cannot be served at once (empty if it can)."""
    problems: list[str] = []
    seen_tenants: set[str] = set()
    listen: dict[int, str] = {}
    for fe in frontends:
        if fe.tenant in seen_tenants:
            problems.append(f"tenant {fe.tenant} has two frontends")
        seen_tenants.add(fe.tenant)
        if fe.listen_port in listen:
            problems.append(
                f"port {fe.listen_port} is the address of both {listen[fe.listen_port]} and {fe.tenant}"
            )
        listen[fe.listen_port] = fe.tenant
    for fe in frontends:
        for backend in fe.backends:
            if backend.host_port in listen:
                problems.append(
                    f"backend {backend.name} of {fe.tenant} points at port {backend.host_port}, which is "
                    f"the gateway's own address for {listen[backend.host_port]}"
                )
    return problems


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined,  # a missing key is a bug, never an empty directive
    autoescape=False,  # not markup: names are already restricted to a safe alphabet above
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(frontends: Sequence[Frontend], runtime_socket: Path, timeouts: Timeouts | None = None,
           request_log: bool = False) -> str:
    """The whole haproxy.cfg for these frontends (sorted by tenant, so the text is stable).

    runtime_socket is the admin socket of the workers; it also hands the listening sockets to the
    next worker on reload (`expose-fd listeners`), which is what makes the reload hitless, and it is
    where the request log is read. request_log: log every request's timers into the ring
    (RequestLogRing); off only to measure what it costs.
    """
    problems = validate(frontends)
    if problems:
        raise GatewayError("; ".join(problems))
    return _ENV.get_template("haproxy.cfg.j2").render(
        frontends=sorted(frontends, key=lambda fe: fe.tenant),
        runtime_socket=str(runtime_socket),
        timeouts=timeouts or Timeouts(),
        loopback=LOOPBACK,
        health_path=HEALTH_PATH,
        rum=RequestLogRing() if request_log else None,
        rum_log_format=RUM_LOG_FORMAT,
        rum_server_timing_len=RUM_SERVER_TIMING_LEN,
    )


@dataclass(frozen=True)
class ServerToggle:
    """A server put in or out of maintenance through the runtime API."""

    backend: str  # HAProxy's backend name, be_<slug>
    server: str
    enabled: bool


_SERVER_LINE = re.compile(r"^\s*server (\S+) \S+ check( disabled)?$")
_BACKEND_LINE = re.compile(r"^backend (\S+)$")


def runtime_toggles(served: str, wanted: str) -> list[ServerToggle] | None:
    """The runtime API's changes that make a worker serving the configuration `served` serve `wanted`
    (both rendered by `render`): only servers going in or out of maintenance. None when anything else
    differs and a reload is needed."""
    served_lines, wanted_lines = served.splitlines(), wanted.splitlines()
    if len(served_lines) != len(wanted_lines):
        return None
    toggles: list[ServerToggle] = []
    backend: str | None = None
    for before, after in zip(served_lines, wanted_lines, strict=True):
        opened = _BACKEND_LINE.match(after)
        if opened:
            backend = opened.group(1)
        if before == after:
            continue
        old_server, new_server = _SERVER_LINE.match(before), _SERVER_LINE.match(after)
        if (backend is None or old_server is None or new_server is None
                or before.replace(" disabled", "") != after.replace(" disabled", "")):
            return None
        toggles.append(ServerToggle(backend, new_server.group(1), enabled=new_server.group(2) is None))
    return toggles
