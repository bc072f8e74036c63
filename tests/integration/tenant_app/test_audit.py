"""The hash-chained audit log on SQLite and PostgreSQL: appends verify; edits, deletions and
reorders of history are each detected."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select, text, update

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


def test_the_application_cannot_change_or_delete_an_entry(engine: Engine) -> None:
    _fill(engine, 2)
    with pytest.raises(audit.AuditLogAppendOnlyError), session_scope(engine) as session:
        row = session.get_one(AuditEvent, 1)
        row.actor = "mallory"
        session.flush()
    with pytest.raises(audit.AuditLogAppendOnlyError), session_scope(engine) as session:
        session.delete(session.get_one(AuditEvent, 2))
        session.flush()
    assert _codes(engine) == []


_COLUMNS = ("at", "actor", "action", "payload", "prev_hash", "hash")


def _row(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(select(AuditEvent.__table__).where(AuditEvent.seq == seq)).mappings().one()
    return dict(found)


def _overwrite(engine: Engine, seq: int, values: dict[str, Any]) -> None:
    """Tampering behind the application's back, as someone with the database file could."""
    with engine.begin() as conn:
        conn.execute(update(AuditEvent).where(AuditEvent.seq == seq).values(**values))


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(engine: Engine) -> None:
    _fill(engine, 5)
    row = _row(engine, 3)
    forged = audit.entry_hash(3, row["at"], "mallory", row["action"], row["payload"], row["prev_hash"])
    _overwrite(engine, 3, {"actor": "mallory", "hash": forged})
    assert _codes(engine) == [(4, audit.AuditErrorCode.BROKEN_LINK)]


def test_swapped_entries_are_detected(engine: Engine) -> None:
    _fill(engine, 4)
    two, three = _row(engine, 2), _row(engine, 3)
    # Through a temporary hash: the hash column is unique.
    _overwrite(engine, 3, {"hash": "x" * 64})
    _overwrite(engine, 2, {c: three[c] for c in _COLUMNS})
    _overwrite(engine, 3, {c: two[c] for c in _COLUMNS})
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
