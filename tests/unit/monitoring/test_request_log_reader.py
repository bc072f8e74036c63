"""RequestLogReader against a stand-in for the gateway's runtime socket (the real HAProxy is
tests/integration/monitoring/test_rum_stream.py): what it reads reaches the ingester in order and
once, a slow ingester makes it drop reads and say so, and stopping ingests what was read."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitoring.edge import RequestLogReader
from monitoring.rum import Gap, RingRead, mark_of
from tests.support.stand_in_ring import StandInRing


class Ring:
    """The lines logged so far, answered whole at every read (this ring never wraps)."""

    def __init__(self, path: Path) -> None:
        self.lines: list[bytes] = []
        self._socket = StandInRing(path, lambda: b"".join(line + b"\n" for line in list(self.lines)) + b"\n")

    def log(self, count: int) -> None:
        start = len(self.lines)
        self.lines += [f'ccrum2 40 {i} 1796392915.761 fe_keelung 200 GET "/budget" "" 0 5 6 {{}}'.encode()
                       for i in range(start, start + count)]

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def ring() -> Iterator[tuple[Ring, Path]]:
    directory = Path(tempfile.mkdtemp(prefix="ccring-", dir="/tmp"))  # unix socket paths are short
    stand_in = Ring(directory / "runtime.sock")
    try:
        yield stand_in, directory
    finally:
        stand_in.close()
        shutil.rmtree(directory, ignore_errors=True)


def _counters(reads: list[RingRead]) -> list[int]:
    return [int(str(mark_of(line.encode())).split()[1]) for read in reads for line in read.lines]


def test_every_line_reaches_the_ingester_once_in_order(ring: tuple[Ring, Path]) -> None:
    stand_in, directory = ring
    reads: list[RingRead] = []
    with RequestLogReader(directory / "runtime.sock", directory / "rum.mark", reads.append, period_s=0.05):
        for _ in range(5):
            stand_in.log(30)
            time.sleep(0.12)
        stand_in.log(7)  # logged just before the stop: the last read takes them
    assert _counters(reads) == list(range(157))
    assert (directory / "rum.mark").read_text() == "40 156\n"


def test_a_slow_ingester_drops_reads_and_the_next_one_says_so(ring: tuple[Ring, Path]) -> None:
    stand_in, directory = ring
    release = threading.Event()
    reads: list[RingRead] = []

    def slow(read: RingRead) -> None:
        release.wait(10)
        reads.append(read)

    reader = RequestLogReader(directory / "runtime.sock", directory / "rum.mark", slow, period_s=0.05,
                              backlog=1).start()
    try:
        for _ in range(6):  # one read held by the ingester, one waiting, the others dropped
            stand_in.log(10)
            time.sleep(0.15)
        release.set()
        stand_in.log(10)
        time.sleep(0.3)
    finally:
        reader.stop()
    assert Gap.BEHIND in [read.gap for read in reads]
    counters = _counters(reads)
    assert counters == sorted(set(counters)) and counters[-1] == 69  # never twice, the newest kept
    assert len(counters) < 70  # the dropped reads' lines are lost, and counted as a gap


def test_a_gateway_that_does_not_answer_is_no_read(tmp_path: Path) -> None:
    reads: list[RingRead] = []
    reader = RequestLogReader(tmp_path / "runtime.sock", tmp_path / "rum.mark", reads.append)
    assert reader.read_once() == 0 and reader.failed_reads == 1 and reads == []
