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


# ---------------------------------------------------------------- the anchored head (issue 14, item 8)

KEYED_SECRET = "county-secret-for-audit-tests"


@pytest.fixture
def keyed(db_url: str, engine: Engine) -> Engine:
    """The engine of a database whose audit head is signed, as the county's app signs it."""
    audit.anchor_key(db_url, KEYED_SECRET)
    return engine


def _errors(engine: Engine) -> list[tuple[int, audit.AuditErrorCode]]:
    return _codes(engine)


def _sql(engine: Engine, statement: str, **params: Any) -> None:
    """Tampering with raw SQL, as someone with the database (but not the VM's settings) could."""
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def test_a_signed_log_records_when_signing_began(keyed: Engine) -> None:
    _fill(keyed, 2)
    with session_scope(keyed) as session:
        first = session.get_one(AuditEvent, 1)
        assert (first.actor, first.action) == (audit.ANCHOR_ACTOR, audit.AuditAction.HEAD_ANCHORED)
        assert audit.payload_of(first)["finding"] == "fresh"
        assert audit.head(session)[0] == 3
    assert _errors(keyed) == []


def test_deleting_the_newest_entries_is_detected(keyed: Engine) -> None:
    _fill(keyed, 5)  # entries 2..6 after the one that records the start of signing
    _sql(keyed, "DELETE FROM audit_event WHERE seq > 4")
    errors = _errors(keyed)
    assert errors == [(4, audit.AuditErrorCode.TRUNCATED_TAIL)]
    with session_scope(keyed) as session:
        assert "5..6 were deleted" in audit.verify(session)[0].message_en


def test_a_rewritten_head_row_cannot_be_signed_without_the_key(keyed: Engine) -> None:
    _fill(keyed, 5)
    four = _row(keyed, 4)
    _sql(keyed, "DELETE FROM audit_event WHERE seq > 4")
    forged_with_another_key = audit.head_mac(b"k" * 32, 4, four["hash"])
    for mac in ("", forged_with_another_key):
        _sql(keyed, "UPDATE audit_head SET seq = 4, hash = :h, mac = :m", h=four["hash"], m=mac)
        assert _errors(keyed) == [(4, audit.AuditErrorCode.HEAD_UNANCHORED)]
    _sql(keyed, "DELETE FROM audit_head")
    assert _errors(keyed) == [(4, audit.AuditErrorCode.HEAD_UNANCHORED)]


def test_newest_entries_replaced_with_a_recomputed_chain_are_detected(keyed: Engine) -> None:
    _fill(keyed, 5)
    row = _row(keyed, 6)
    forged = audit.entry_hash(6, row["at"], "mallory", row["action"], row["payload"], row["prev_hash"])
    _overwrite(keyed, 6, {"actor": "mallory", "hash": forged})
    assert _errors(keyed) == [(6, audit.AuditErrorCode.HEAD_MISMATCH)]


def test_the_next_append_keeps_the_evidence_of_a_truncation(keyed: Engine) -> None:
    _fill(keyed, 5)
    _sql(keyed, "DELETE FROM audit_event WHERE seq > 4")
    _fill(keyed, 1)  # the app carries on
    with session_scope(keyed) as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert [r.seq for r in rows] == [1, 2, 3, 4, 7, 8]  # numbered on from the anchored head
        assert rows[4].action == audit.AuditAction.HEAD_MISMATCH
        assert audit.payload_of(rows[4])["anchored_seq"] == 6
        assert audit.head(session) == (8, rows[-1].hash)
    # Signed again at the new head, and still reported: the gap, and what entry 7 found.
    assert _errors(keyed) == [(7, audit.AuditErrorCode.SEQUENCE_GAP),
                              (7, audit.AuditErrorCode.TRUNCATED_TAIL)]


def test_a_truncation_with_a_forged_unsigned_head_stays_on_record_after_the_next_append(
    keyed: Engine,
) -> None:
    _fill(keyed, 5)
    four = _row(keyed, 4)
    _sql(keyed, "DELETE FROM audit_event WHERE seq > 4")
    # Made to look like a head written by a tool without the key, which the app adopts ...
    _sql(keyed, "UPDATE audit_head SET seq = 4, hash = :h, mac = ''", h=four["hash"])
    _fill(keyed, 1)
    # ... but signing began at entry 1: a second beginning is reported, for good.
    assert _errors(keyed) == [(5, audit.AuditErrorCode.HEAD_UNANCHORED)]
    _fill(keyed, 2)
    assert _errors(keyed) == [(5, audit.AuditErrorCode.HEAD_UNANCHORED)]


def test_without_the_key_a_plain_truncation_is_still_seen(engine: Engine) -> None:
    _fill(engine, 4)
    _sql(engine, "DELETE FROM audit_event WHERE seq = 4")
    assert _errors(engine) == [(3, audit.AuditErrorCode.TRUNCATED_TAIL)]


def test_the_first_adoption_of_an_unsigned_head_is_not_an_error_a_second_one_is(
    db_url: str, engine: Engine
) -> None:
    _fill(engine, 3)  # written by a tool without the county's key
    audit.anchor_key(db_url, KEYED_SECRET)
    _fill(engine, 1)
    with session_scope(engine) as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)).all()
    assert actions[3] == audit.AuditAction.HEAD_ANCHORED and len(actions) == 5
    assert _errors(engine) == []
    # Later someone deletes the tail and the anchor row: the app re-anchors, on the record.
    _sql(engine, "DELETE FROM audit_event WHERE seq > 4")
    _sql(engine, "DELETE FROM audit_head")
    _fill(engine, 1)
    assert _errors(engine) == [(5, audit.AuditErrorCode.HEAD_UNANCHORED)]


def test_the_migration_anchors_an_existing_log_which_the_app_then_adopts(db_url: str) -> None:
    from alembic import command

    from tenant_app.migrations import alembic_config, upgrade

    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        _fill(eng, 3)
        command.downgrade(alembic_config(db_url), "0002")  # a county from before the anchor
        with eng.connect() as conn:
            assert not eng.dialect.has_table(conn, "audit_head")
        upgrade(db_url)
        with eng.connect() as conn:
            head = conn.execute(text("SELECT seq, hash, mac FROM audit_head")).one()
        assert (head.seq, head.mac) == (3, "") and head.hash == _row(eng, 3)["hash"]
        audit.anchor_key(db_url, KEYED_SECRET)
        _fill(eng, 1)
        assert _errors(eng) == []
        _sql(eng, "DELETE FROM audit_event WHERE seq = 5")
        assert _errors(eng) == [(4, audit.AuditErrorCode.TRUNCATED_TAIL)]
    finally:
        eng.dispose()


def test_a_hand_written_head_entry_is_reported_not_a_crash(keyed: Engine) -> None:
    _fill(keyed, 1)
    with session_scope(keyed) as session:  # someone forges a "signing began" entry with junk in it
        audit.append(session, "mallory", audit.AuditAction.HEAD_ANCHORED, {"finding": "🙂"})
    assert _errors(keyed) == [(3, audit.AuditErrorCode.HEAD_UNANCHORED)]
