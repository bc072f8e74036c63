"""Real-user timings: HAProxy's log lines for every request through a county's address -> samples.

The gateway writes one line per request in RUM_LOG_FORMAT (provisioning.gateway) to a unix datagram
socket this service reads (monitoring.edge.RumReceiver). A line carries the gateway's timers, the
frontend (fe_<county>), method, path and query, status and the app's `Server-Timing` header as
captured from the response. Lines that are not ours (HAProxy's own notices) and lines that do not
parse are counted and skipped: one bad line never stops the stream.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from monitoring.timings import ServerTiming, Source, Split, parse_server_timing, split
from monitoring.transactions import DEFAULT_TABLE, Transaction, TransactionTable
from provisioning.gateway import RUM_LOG_TAG

_LINE = re.compile(
    "^" + re.escape(RUM_LOG_TAG)
    + r" (?P<at>\d+(?:\.\d+)?) fe_(?P<county>[a-z0-9][a-z0-9_.-]*) (?P<status>-?\d+) (?P<method>\S+)"
    r' "(?P<path>[^"]*)" "(?P<query>[^"]*)"'
    r" (?P<TR>-?\d+) (?P<Tw>-?\d+) (?P<Tc>-?\d+) (?P<Tr>-?\d+) (?P<Ta>-?\d+) (?P<bytes>\d+) (?P<term>\S+)"
    r" \{(?P<timing>[^}]*)\}\s*$"
)


class Skip(enum.StrEnum):
    """Why a line gave no sample."""

    FOREIGN = "foreign"  # not a request line of ours (an HAProxy notice, an empty datagram)
    MALFORMED = "malformed"  # ours, but not in the expected shape
    ABORTED = "aborted"  # the client or the gateway gave up before an answer: no timing to keep


@dataclass(frozen=True)
class Sample:
    """One timed answer of one county, from the gateway (real users) or from a probe."""

    county: str
    transaction: Transaction
    at: float  # epoch seconds
    status: int
    timing: Split
    source: Source = Source.REAL_USER

    @property
    def failed(self) -> bool:
        return self.status >= 500 or self.status <= 0


@dataclass
class ParseStats:
    lines: int = 0
    samples: int = 0
    skipped: dict[Skip, int] = field(default_factory=lambda: dict.fromkeys(Skip, 0))

    def skip(self, reason: Skip) -> None:
        self.skipped[reason] += 1


def parse_line(line: str, table: TransactionTable = DEFAULT_TABLE) -> Sample | Skip:
    """One log line -> a sample, or the reason it gives none."""
    text = line.strip()
    if not text.startswith(RUM_LOG_TAG + " "):
        return Skip.FOREIGN
    match = _LINE.match(text)
    if match is None:
        return Skip.MALFORMED
    g = match.groupdict()
    total_ms = int(g["Ta"])
    if total_ms < 0 or (int(g["Tr"]) < 0 and int(g["status"]) < 500):
        # A gateway's own 5xx (no server answered) is kept: a county down shows in real-user data too.
        return Skip.ABORTED
    timing: ServerTiming | None = parse_server_timing(g["timing"]) if g["timing"] else None
    # Queue: the gateway's own wait for a free slot (Tw; -1 when the request never got that far).
    queue_ms = max(int(g["Tw"]), 0)
    return Sample(
        county=g["county"],
        transaction=table.classify(g["method"], g["path"], g["query"]),
        at=float(g["at"]),
        status=int(g["status"]),
        timing=split(total_ms, timing, queue_ms),
    )


def parse_lines(lines: Iterable[str], stats: ParseStats | None = None,
                table: TransactionTable = DEFAULT_TABLE) -> Iterator[Sample]:
    """Samples from lines (datagrams or a file's lines), counting what is skipped in `stats`."""
    stats = stats if stats is not None else ParseStats()
    for line in lines:
        stats.lines += 1
        result = parse_line(line, table)
        if isinstance(result, Skip):
            stats.skip(result)
            continue
        stats.samples += 1
        yield result
