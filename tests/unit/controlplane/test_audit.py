"""The audit log's hash chain: concurrent appends stay one chain, and verify finds an edited row, a row
deleted from the middle and a truncated tail, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select, text, update
from typer.testing import CliRunner

from controlplane import audit
from controlplane.actors import Actor, ActorKind
from controlplane.models import AuditEvent, AuditHead
from controlplane.roles import Role
from inventory.db import make_engine, migrate, session_scope

ALICE = Actor(ActorKind.USER, "alice", Role.CENTRAL_IT, source="127.0.0.1")
BOT = Actor(ActorKind.TOKEN, "ci", Role.OPERATOR, source="127.0.0.1", token_id="tok_abc")


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    migrate(db_url)
    audit.configure(tmp_path / "state")
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _record(engine: Engine, n: int, actor: Actor = ALICE) -> None:
    for i in range(n):
        with session_scope(engine) as session:
            audit.record(session, actor, "tenant.resize", f"county-{i}", job_id=f"resize-{i}",
                         detail={"vcpus": i, "note": "臺中"})


def _verify(engine: Engine) -> audit.VerifyReport:
    return audit.verify(engine, audit.anchor_path(engine))


def test_an_untouched_chain_verifies_and_the_anchor_follows_its_head(engine: Engine) -> None:
    _record(engine, 5)
    _record(engine, 2, BOT)
    report = _verify(engine)
    assert report.ok, report.problems
    assert report.events == 7
    assert report.anchor == report.head
    assert report.head is not None and report.head.seq == 7


def test_a_rolled_back_change_leaves_no_event(engine: Engine) -> None:
    _record(engine, 1)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        audit.record(session, ALICE, "tenant.retire", "keelung")
        raise RuntimeError("the change failed")
    _record(engine, 1)
    report = _verify(engine)
    assert report.ok, report.problems
    assert [e.action for e in audit.list_events(engine)] == ["tenant.resize", "tenant.resize"]


def test_an_edited_row_is_found(engine: Engine) -> None:
    _record(engine, 5)
    with session_scope(engine) as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor_name="mallory"))
    report = _verify(engine)
    assert not report.ok
    assert any("event 3: its content was changed" in p for p in report.problems), report.problems


def test_an_edited_detail_is_found(engine: Engine) -> None:
    _record(engine, 3)
    with session_scope(engine) as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(detail={"vcpus": 99}))
    assert any("event 2" in p for p in _verify(engine).problems)


def test_a_row_deleted_from_the_middle_is_found(engine: Engine) -> None:
    _record(engine, 5)
    with session_scope(engine) as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 3))
    report = _verify(engine)
    assert any("event 3 is missing" in p for p in report.problems), report.problems
    assert any("event 4: does not follow" in p for p in report.problems), report.problems


def test_a_truncated_tail_is_found_even_with_the_head_row_rewound(engine: Engine) -> None:
    _record(engine, 5)
    with session_scope(engine) as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq > 3))
    report = _verify(engine)
    assert any("removed from the end" in p for p in report.problems), report.problems
    # A careful intruder also rewinds the head row: the chain is then valid in itself, and only the
    # anchor outside the database still knows event 5.
    with session_scope(engine) as session:
        third = session.scalars(select(AuditEvent).where(AuditEvent.seq == 3)).one()
        session.execute(update(AuditHead).values(seq=3, hash=third.hash))
    report = _verify(engine)
    assert report.problems == ["the chain ends at event 3, but event 5 was anchored: the tail was truncated"]


def test_a_rewritten_chain_does_not_match_the_anchor(engine: Engine, tmp_path: Path) -> None:
    _record(engine, 3)
    anchor = audit.read_anchor(audit.anchor_path(engine))
    assert anchor is not None
    # Everything recomputed consistently (as someone with the code could), but the anchor disagrees.
    with session_scope(engine) as session:
        session.execute(delete(AuditEvent))
        session.execute(update(AuditHead).values(seq=0, hash=audit.GENESIS))
    _record(engine, 3, BOT)
    report = audit.verify(engine, anchor)
    assert any("differs from the anchored one" in p for p in report.problems), report.problems


def test_concurrent_appends_make_one_chain(engine: Engine) -> None:
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            _record(engine, 8)
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    report = _verify(engine)
    assert report.ok, report.problems
    assert report.events == 32
    with session_scope(engine) as session:
        distinct = session.scalar(select(func.count(func.distinct(AuditEvent.prev_hash))))
    assert distinct == 32


def test_a_fork_is_refused_by_the_database(engine: Engine) -> None:
    _record(engine, 2)
    with pytest.raises(Exception), session_scope(engine) as session:  # noqa: B017 (IntegrityError)
        first = session.scalars(select(AuditEvent).where(AuditEvent.seq == 1)).one()
        session.execute(text(
            "INSERT INTO audit_events (seq, at, actor_kind, actor_name, role, source, action, target, detail,"
            " prev_hash, hash) VALUES (99, :at, 'user', 'x', 'admin', '', 'a', 't', '{}', :prev, :h)"),
            {"at": first.at, "prev": first.prev_hash, "h": "f" * 64})


def test_the_anchor_never_moves_back(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    audit.write_anchor(path, audit.Anchor(5, "e" * 64))
    audit.write_anchor(path, audit.Anchor(4, "d" * 64))
    assert audit.read_anchor(path) == audit.Anchor(5, "e" * 64)


def test_cli_verify_exits_1_and_says_what_broke(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane import bootstrap
    from controlplane.cli import app

    _record(engine, 3)
    monkeypatch.setattr(bootstrap, "engine", lambda: engine)
    monkeypatch.setattr(bootstrap, "settings", lambda: type("S", (), {"state_dir": audit._anchor_root()})())
    runner = CliRunner()
    good = runner.invoke(app, ["audit", "verify"])
    assert good.exit_code == 0, good.output
    assert "intact: 3 events" in good.output
    listed = runner.invoke(app, ["audit", "list", "--json"])
    assert listed.exit_code == 0 and '"seq": 3' in listed.output
    with session_scope(engine) as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(target="elsewhere"))
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "event 2: its content was changed" in bad.output
