"""Real-user timings: HAProxy's log lines for every request through a county's address -> samples.

The gateway writes one line per request in RUM_LOG_FORMAT (provisioning.gateway) into its ring, which
this service reads whole once a second (monitoring.edge.RequestLogReader); `unread` keeps what is
after the previous read. A line carries the worker and its request counter, the gateway's timers,
the frontend (fe_<county>), method, path and query, status and the app's `Server-Timing` header as
captured from the response. Lines that are not ours (HAProxy's own notices) and lines that do not
parse are counted and skipped: one bad line never stops the stream.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from monitoring.timings import Source, Split, parse_server_timing, split
from monitoring.transactions import DEFAULT_TABLE, Transaction, TransactionTable
from provisioning.gateway import RUM_LOG_TAG

_PREFIX = RUM_LOG_TAG + " "
_PREFIX_BYTES = _PREFIX.encode()
_FIELDS = 12  # space-separated fields before the captured header (which has spaces of its own)


class Skip(enum.StrEnum):
    """Why a line gave no sample."""

    FOREIGN = "foreign"  # not a request line of ours (an HAProxy notice, an empty line)
    MALFORMED = "malformed"  # ours, but not in the expected shape
    ABORTED = "aborted"  # the client or the gateway gave up before an answer: no timing to keep


class Gap(enum.StrEnum):
    """Why lines may have been lost between two reads of the gateway's ring."""

    OVERRUN = "overrun"  # the ring wrapped past the previous read: more lines than it holds came between
    NEW_WORKER = "new_worker"  # a reload: the old worker's lines after the previous read went with it
    BEHIND = "behind"  # the service read them but could not parse them as fast: a read was dropped


class RingRead(NamedTuple):
    lines: list[str]  # the lines after the previous read, oldest first
    mark: str | None  # "<pid> <counter>" of the newest line: where the next read starts
    gap: Gap | None


def mark_of(line: bytes) -> str | None:
    """The "<pid> <counter>" of one of our lines (unique per line: a worker never repeats a counter)."""
    parts = line.split(b" ", 3)
    if len(parts) < 4 or parts[0] != _PREFIX_BYTES[:-1] or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return f"{int(parts[1])} {int(parts[2])}"


def unread(dump: bytes, mark: str | None) -> RingRead:
    """The lines of a whole-ring dump (oldest first, one per LF) that come after the line `mark`
    names; all of them when there is no mark yet or the marked line is gone (then why, in `gap`).

    Searched from the end: between two reads a second apart the new lines are the ring's last ones.
    """
    end = len(dump)
    while end and dump[end - 1] == 0x0A:  # the CLI ends its answer with an empty line
        end -= 1
    newest = dump.rfind(b"\n", 0, end) + 1
    newest_mark = mark_of(dump[newest:end]) if end else None
    start, gap = 0, None
    if mark is not None:
        needle = _PREFIX_BYTES + mark.encode() + b" "
        at = dump.rfind(b"\n" + needle, 0, end)
        if at >= 0 or dump.startswith(needle):
            after = dump.find(b"\n", at + 1, end)
            start = end if after < 0 else after + 1
        elif end:
            # Same worker, marked line gone: overwritten before this read. Another worker: a reload.
            gap = Gap.OVERRUN if newest_mark and newest_mark.split()[0] == mark.split()[0] else Gap.NEW_WORKER
    lines = dump[start:end].decode("utf-8", errors="replace").split("\n") if start < end else []
    return RingRead(lines, newest_mark or mark, gap)


class Sample(NamedTuple):
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
    gaps: dict[Gap, int] = field(default_factory=lambda: dict.fromkeys(Gap, 0))

    def skip(self, reason: Skip) -> None:
        self.skipped[reason] += 1

    def copy(self) -> ParseStats:
        return ParseStats(self.lines, self.samples, dict(self.skipped), dict(self.gaps))


def parse_line(line: str, table: TransactionTable = DEFAULT_TABLE) -> Sample | Skip:
    """One log line -> a sample, or the reason it gives none.

    Split on spaces rather than matched with one regex: this runs once per request of every county.
    Nothing before the captured header can hold a space (HAProxy quotes path and query, and a
    request line has no raw spaces in them).
    """
    if not line.startswith(_PREFIX):
        return Skip.FOREIGN
    parts = line.rstrip("\n ").split(" ", _FIELDS)
    if len(parts) < _FIELDS:
        return Skip.MALFORMED
    _tag, _pid, _counter, at, frontend, status_text, method, path, query, tw, tr, ta = parts[:_FIELDS]
    captured = parts[_FIELDS] if len(parts) > _FIELDS else ""
    try:
        status, total_ms, server_ms, queue_ms = int(status_text), int(ta), int(tr), int(tw)
        when = float(at)
    except ValueError:
        return Skip.MALFORMED
    quoted = len(path) > 1 and path[0] == path[-1] == '"' and len(query) > 1 and query[0] == query[-1] == '"'
    if not frontend.startswith("fe_") or not quoted:
        return Skip.MALFORMED
    if captured and not (captured[0] == "{" and captured[-1] == "}"):
        return Skip.MALFORMED
    # A gateway's own 5xx (no server answered) is kept: a county down shows in real-user data too.
    if total_ms < 0 or (server_ms < 0 and status < 500) or method == "<BADREQ>":
        return Skip.ABORTED
    timing = parse_server_timing(captured[1:-1]) if captured else None
    return Sample(
        county=frontend[3:],
        transaction=table.classify(method, path[1:-1], query[1:-1]),
        at=when,
        status=status,
        # Queue: the gateway's own wait for a free slot (Tw; -1 when the request never got that far).
        timing=split(total_ms, timing, max(queue_ms, 0)),
    )


def parse_lines(lines: Iterable[str], stats: ParseStats | None = None,
                table: TransactionTable = DEFAULT_TABLE) -> Iterator[Sample]:
    """Samples from lines (the stream's lines or a file's), counting what is skipped in `stats`."""
    stats = stats if stats is not None else ParseStats()
    for line in lines:
        stats.lines += 1
        result = parse_line(line, table)
        if isinstance(result, Skip):
            stats.skip(result)
            continue
        stats.samples += 1
        yield result
