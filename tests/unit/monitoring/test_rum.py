from __future__ import annotations

from monitoring.rum import Gap, ParseStats, RingRead, Skip, mark_of, parse_line, parse_lines, unread
from monitoring.transactions import Transaction

OK = ('ccrum2 4242 7 1796392915.761 fe_taichung 201 POST "/api/v1/certifications" "" 3 48 52 '
      '{app;dur=44.10, db;dur=30.00}')
GATEWAY_503 = 'ccrum2 4242 7 1796392915.900 fe_taichung 503 GET "/budget" "" 0 -1 2001 {}'
ABORTED = 'ccrum2 4242 7 1796392916.000 fe_taichung -1 GET "/budget" "" 0 -1 -1 {}'


def test_a_line_becomes_a_split_sample() -> None:
    sample = parse_line(OK)
    assert not isinstance(sample, Skip)
    assert (sample.county, sample.transaction, sample.status) == ("taichung", Transaction.CERTIFY, 201)
    assert sample.at == 1796392915.761
    t = sample.timing
    assert (t.total_ms, t.queue_ms, t.server_ms, t.db_ms, t.app_ms) == (52.0, 3.0, 44.1, 30.0, 44.1 - 30.0)
    assert abs(t.network_ms - (52 - 3 - 44.1)) < 1e-9


def test_a_gateway_503_is_kept_as_a_failure_and_an_aborted_request_is_skipped() -> None:
    down = parse_line(GATEWAY_503)
    assert not isinstance(down, Skip) and down.failed and down.timing.server_ms == 0.0
    assert parse_line(ABORTED) is Skip.ABORTED


def test_bad_lines_are_counted_and_skipped_without_stopping_the_stream() -> None:
    stats = ParseStats()
    bad_time = 'ccrum2 4242 7 x fe_a 200 GET "/" "" 0 0 0 {}'
    lines = [OK, "garbage", OK[:40], bad_time, "", GATEWAY_503, ABORTED]
    samples = list(parse_lines(lines, stats))
    assert len(samples) == 2 == stats.samples
    assert stats.lines == 7
    assert stats.skipped == {Skip.FOREIGN: 2, Skip.MALFORMED: 2, Skip.ABORTED: 1}


def test_a_connection_closed_before_its_request_is_aborted_not_malformed() -> None:
    # As HAProxy logs a client that opened a connection and closed it without a request (wrk does
    # at the end of a run): no timers, no captured header.
    line = 'ccrum2 4242 7 1796393979.951 fe_fast 400 <BADREQ> "<BADREQ>" "<BADREQ>" -1 -1 0 \n'
    assert parse_line(line) is Skip.ABORTED


def ring_line(pid: int, counter: int) -> bytes:
    return (f'ccrum2 {pid} {counter} 1796392915.761 fe_taichung 200 GET "/budget" "" 0 5 6 '
            '{app;dur=4.00, db;dur=1.00}').encode()


def dump(*lines: bytes) -> bytes:
    """As `show events` answers: each line then LF, and an empty line at the end."""
    return b"".join(line + b"\n" for line in lines) + b"\n"


def test_a_ring_read_keeps_only_what_came_after_the_marked_line() -> None:
    first = unread(dump(ring_line(40, 1), ring_line(40, 2)), None)
    assert [mark_of(line.encode()) for line in first.lines] == ["40 1", "40 2"]
    assert (first.mark, first.gap) == ("40 2", None)
    # The next read: the ring still holds the old lines before the new ones; 12 is not 1's prefix.
    second = unread(dump(ring_line(40, 1), ring_line(40, 2), ring_line(40, 12), ring_line(40, 3)), first.mark)
    assert [mark_of(line.encode()) for line in second.lines] == ["40 12", "40 3"]
    assert (second.mark, second.gap) == ("40 3", None)
    nothing_new = unread(dump(ring_line(40, 2), ring_line(40, 12), ring_line(40, 3)), second.mark)
    assert (nothing_new.lines, nothing_new.mark, nothing_new.gap) == ([], "40 3", None)


def test_a_marked_line_at_the_start_of_the_ring_is_found_too() -> None:
    read = unread(dump(ring_line(40, 2), ring_line(40, 3)), "40 2")
    assert [mark_of(line.encode()) for line in read.lines] == ["40 3"]


def test_a_marked_line_gone_is_an_overrun_for_its_worker_and_a_reload_for_another() -> None:
    overwritten = unread(dump(ring_line(40, 9), ring_line(40, 10)), "40 2")
    assert (len(overwritten.lines), overwritten.mark, overwritten.gap) == (2, "40 10", Gap.OVERRUN)
    reloaded = unread(dump(ring_line(41, 1)), "40 10")
    assert (len(reloaded.lines), reloaded.mark, reloaded.gap) == (1, "41 1", Gap.NEW_WORKER)


def test_an_empty_ring_keeps_the_mark_and_reports_no_gap() -> None:
    # A reload's new worker before its first request: nothing lost yet, nothing to read.
    assert unread(b"\n", "40 3") == RingRead([], "40 3", None)
    assert unread(b"", None) == RingRead([], None, None)


def test_the_lines_read_parse_as_samples() -> None:
    read = unread(dump(ring_line(40, 1)), None)
    assert [s.county for s in parse_lines(read.lines)] == ["taichung"]
