"""Reports read from a snapshot that neither waits for nor blocks the application's writers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import DBAPIError

from tenant_app.db import make_engine, session_scope
from tenant_app.models import BudgetLine
from tenant_app.reports import execution
from tenant_app.reports.reading import dispose_readers, snapshot_session

from . import b_county


@pytest.fixture
def county(db_url: str) -> Iterator[tuple[Engine, b_county.County_]]:
    engine = make_engine(db_url)
    ids = b_county.build(engine)
    yield engine, ids
    dispose_readers()
    engine.dispose()


def _budget_total(engine: Engine) -> int:
    with snapshot_session(engine) as s:
        return execution.query(s, year=2026, period=13).totals().budget


def test_a_report_does_not_wait_for_an_open_write(county: tuple[Engine, b_county.County_]) -> None:
    engine, ids = county
    before = _budget_total(engine)
    writing = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with session_scope(engine) as s:  # BEGIN IMMEDIATE on SQLite: holds the write lock
            s.execute(
                update(BudgetLine).where(BudgetLine.id == ids.lines[0]).values(budget=BudgetLine.budget + 1)
            )
            writing.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(10)
    started = time.perf_counter()
    seen = _budget_total(engine)
    elapsed = time.perf_counter() - started
    release.set()
    thread.join()
    assert seen == before  # the uncommitted change is not visible
    assert elapsed < 2.0  # and the report did not sit in the 10 s busy timeout
    assert _budget_total(engine) == before + 1


def test_a_report_sees_one_snapshot_while_others_commit(county: tuple[Engine, b_county.County_]) -> None:
    engine, ids = county
    with snapshot_session(engine) as s:
        first = execution.query(s, year=2026, period=13).totals().budget
        with session_scope(engine) as w:  # commits while the report is between its statements
            w.execute(
                update(BudgetLine).where(BudgetLine.id == ids.lines[0]).values(budget=BudgetLine.budget + 5)
            )
        second = execution.query(s, year=2026, period=13).totals().budget
    assert first == second
    assert _budget_total(engine) == first + 5


def test_the_report_session_cannot_write(county: tuple[Engine, b_county.County_]) -> None:
    engine, _ = county
    with pytest.raises(DBAPIError), snapshot_session(engine) as s:
        s.execute(text("UPDATE budget_line SET budget = 0"))
    assert _budget_total(engine) > 0
