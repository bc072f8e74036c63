from __future__ import annotations

from monitoring.rum import ParseStats, Skip, parse_line, parse_lines
from monitoring.transactions import Transaction

OK = ('ccrum1 1796392915.761 fe_taichung 201 POST "/api/v1/certifications" "" 0 3 1 48 52 543 ---- '
      '{app;dur=44.10, db;dur=30.00}')
GATEWAY_503 = 'ccrum1 1796392915.900 fe_taichung 503 GET "/budget" "" 0 0 -1 -1 2001 217 SC-- {}'
ABORTED = 'ccrum1 1796392916.000 fe_taichung -1 GET "/budget" "" 0 0 0 -1 -1 0 CR-- {}'


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
    bad_time = 'ccrum1 x fe_a 200 GET "/" "" 0 0 0 0 0 0 ---- {}'
    lines = [OK, "garbage", OK[:40], bad_time, "", GATEWAY_503, ABORTED]
    samples = list(parse_lines(lines, stats))
    assert len(samples) == 2 == stats.samples
    assert stats.lines == 7
    assert stats.skipped == {Skip.FOREIGN: 2, Skip.MALFORMED: 2, Skip.ABORTED: 1}


def test_a_connection_closed_before_its_request_is_aborted_not_malformed() -> None:
    # As HAProxy logs a client that opened a connection and closed it without a request (wrk does
    # at the end of a run): no timers, no captured header.
    line = 'ccrum1 1796393979.951 fe_fast 400 <BADREQ> "<BADREQ>" "<BADREQ>" -1 -1 -1 -1 0 0 CR-- \n'
    assert parse_line(line) is Skip.ABORTED
