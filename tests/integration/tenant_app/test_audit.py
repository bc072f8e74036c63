"""The hash-chained audit log on SQLite and PostgreSQL: appends verify; edits, deletions and
reorders of history are each detected."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text

from tenant_app import audit
from tenant_app.db import Base, make_engine, session_scope
from tenant_app.models import AuditEvent


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


def _fill(engine: Engine, n: int) -> None:
    with session_scope(engine) as session:
        for i in range(n):
            payload = {"voucher": i, "名": "甲"}
            audit.append(session, f"user{i % 3}", audit.AuditAction.VOUCHER_SIGNED, payload)


def _codes(engine: Engine) -> list[tuple[int, audit.AuditErrorCode]]:
    with session_scope(engine) as session:
        return [(e.seq, e.code) for e in audit.verify(session)]


def test_appended_entries_chain_and_verify(engine: Engine) -> None:
    _fill(engine, 5)
    with session_scope(engine) as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
        assert rows[0].prev_hash == audit.GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
        assert audit.payload_of(rows[2]) == {"voucher": 2, "名": "甲"}
        assert audit.head(session) == (5, rows[-1].hash)
        assert audit.verify(session) == []


def test_an_edited_payload_is_detected(engine: Engine) -> None:
    _fill(engine, 5)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET payload = :p WHERE seq = 3"), {"p": '{"voucher":999}'})
    assert _codes(engine) == [(3, audit.AuditErrorCode.HASH_MISMATCH)]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(engine: Engine) -> None:
    _fill(engine, 5)
    with session_scope(engine) as session:
        row = session.get(AuditEvent, 3)
        assert row is not None
        row.actor = "mallory"
        row.hash = audit.entry_hash(row.seq, row.at, row.actor, row.action, row.payload, row.prev_hash)
    assert _codes(engine) == [(4, audit.AuditErrorCode.BROKEN_LINK)]


def test_a_deleted_entry_is_detected(engine: Engine) -> None:
    _fill(engine, 5)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 2"))
    assert _codes(engine) == [(3, audit.AuditErrorCode.SEQUENCE_GAP), (3, audit.AuditErrorCode.BROKEN_LINK)]


def test_swapped_entries_are_detected(engine: Engine) -> None:
    _fill(engine, 4)
    with session_scope(engine) as session:
        two, three = session.get(AuditEvent, 2), session.get(AuditEvent, 3)
        assert two is not None and three is not None
        fields = ("at", "actor", "action", "payload", "prev_hash", "hash")
        values2 = {f: getattr(two, f) for f in fields}
        values3 = {f: getattr(three, f) for f in fields}
        # Move the rows through a temporary value: the hash column is unique.
        three.hash = "x" * 64
        session.flush()
        for f in fields:
            setattr(two, f, values3[f])
        session.flush()
        for f in fields:
            setattr(three, f, values2[f])
    codes = {c for _, c in _codes(engine)}
    assert audit.AuditErrorCode.HASH_MISMATCH in codes
    assert audit.AuditErrorCode.BROKEN_LINK in codes


def test_a_rolled_back_change_leaves_no_audit_entry(engine: Engine) -> None:
    _fill(engine, 2)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        audit.append(session, "clerk", audit.AuditAction.VOUCHER_SIGNED, {"voucher": 7})
        raise RuntimeError("the audited change failed")
    with session_scope(engine) as session:
        assert audit.head(session)[0] == 2
        assert audit.verify(session) == []


def test_the_hash_does_not_depend_on_the_time_zone_of_the_timestamp() -> None:
    utc = dt.datetime(2026, 3, 1, 1, 2, 3, 456789, tzinfo=dt.UTC)
    taipei = utc.astimezone(dt.timezone(dt.timedelta(hours=8)))
    naive_utc = utc.replace(tzinfo=None)
    hashes = {audit.entry_hash(1, t, "a", "b", "{}", audit.GENESIS_HASH) for t in (utc, taipei, naive_utc)}
    assert len(hashes) == 1


def test_concurrent_appends_keep_one_unbroken_chain(engine: Engine) -> None:
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for i in range(10):
                with session_scope(engine) as session:
                    audit.append(session, name, audit.AuditAction.REPORT_EXPORTED, {"i": i})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{k}",)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope(engine) as session:
        assert audit.head(session)[0] == 60
        assert audit.verify(session) == []
