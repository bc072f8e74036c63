"""Users, tokens, sessions and the log-in throttle, on SQLite and PostgreSQL; the user/token CLI."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from controlplane import audit, auth
from controlplane.actors import ActorKind, cli_actor
from controlplane.errors import Conflict, ErrorCode, Forbidden, InvalidInput
from controlplane.models import ApiToken, LoginThrottle
from controlplane.roles import Role
from inventory.db import make_engine, migrate, session_scope

ADMIN = cli_actor()
PASSWORD = "correct horse battery"


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    migrate(db_url)
    audit.configure(tmp_path / "state")
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def test_sign_in_gives_a_session_that_sign_out_ends(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "alice", Role.CENTRAL_IT, password=PASSWORD)
    signed = auth.sign_in(engine, "alice", PASSWORD, "127.0.0.1")
    found = auth.session_actor(engine, signed.cookie, "127.0.0.1")
    assert found is not None
    actor, csrf = found
    assert (actor.kind, actor.name, actor.role) == (ActorKind.USER, "alice", Role.CENTRAL_IT)
    assert csrf == signed.csrf_token
    assert auth.session_actor(engine, signed.cookie + "x", "127.0.0.1") is None
    auth.sign_out(engine, signed.cookie)
    assert auth.session_actor(engine, signed.cookie, "127.0.0.1") is None


def test_wrong_password_and_unknown_user_are_the_same_error(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "alice", Role.AUDITOR, password=PASSWORD)
    with pytest.raises(auth.AuthError) as wrong:
        auth.sign_in(engine, "alice", "not the password", "127.0.0.1")
    with pytest.raises(auth.AuthError) as unknown:
        auth.sign_in(engine, "nobody", PASSWORD, "127.0.0.1")
    assert str(wrong.value) == str(unknown.value)
    assert wrong.value.code == ErrorCode.UNAUTHENTICATED


def test_an_unknown_user_is_checked_against_a_hash_made_at_the_first_sign_in(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_DUMMY_HASH", None)  # as a fresh process has it: none made at import
    checked: list[str] = []
    verify = auth._HASHER.verify_and_update
    monkeypatch.setattr(auth._HASHER, "verify_and_update",
                        lambda password, hashed: (checked.append(hashed), verify(password, hashed))[1])
    with pytest.raises(auth.AuthError):
        auth.sign_in(engine, "nobody", PASSWORD, "127.0.0.1")
    assert auth._DUMMY_HASH is not None and checked == [auth._DUMMY_HASH]  # a wrong password's cost


@pytest.mark.real_password_cost  # the race is over the hash's time
def test_the_throttle_holds_under_parallel_attempts(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "alice", Role.AUDITOR, password=PASSWORD)
    limits = auth.Limits(max_failures_per_user=3, max_failures_per_address=100, window_s=600)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        try:
            auth.sign_in(engine, "alice", f"wrong-{i}-password", f"192.0.2.{i}", limits)
            result = "in"
        except auth.Throttled:
            result = "throttled"
        except auth.AuthError:
            result = "checked"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes) == ["checked"] * 3 + ["throttled"] * 5
    # Even the right password is refused while the window lasts.
    with pytest.raises(auth.Throttled):
        auth.sign_in(engine, "alice", PASSWORD, "127.0.0.1", limits)


def test_the_address_throttle_counts_failures_only(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "alice", Role.AUDITOR, password=PASSWORD)
    limits = auth.Limits(max_failures_per_user=100, max_failures_per_address=2, window_s=600)
    for _ in range(5):  # successes give their slot back
        auth.sign_in(engine, "alice", PASSWORD, "127.0.0.2", limits)
    for name in ("bob", "carol"):
        with pytest.raises(auth.AuthError):
            auth.sign_in(engine, name, "whatever-password", "127.0.0.2", limits)
    with pytest.raises(auth.Throttled):
        auth.sign_in(engine, "alice", PASSWORD, "127.0.0.2", limits)
    auth.sign_in(engine, "alice", PASSWORD, "127.0.0.3", limits)  # another address is not held


def test_an_expired_window_starts_over(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "alice", Role.AUDITOR, password=PASSWORD)
    limits = auth.Limits(max_failures_per_user=1, max_failures_per_address=100, window_s=600)
    with pytest.raises(auth.AuthError):
        auth.sign_in(engine, "alice", "wrong-password", "127.0.0.1", limits)
    with pytest.raises(auth.Throttled):
        auth.sign_in(engine, "alice", PASSWORD, "127.0.0.1", limits)
    # The window began long enough ago (moved back rather than waited for: no timing in the test).
    with session_scope(engine) as session:
        session.execute(update(LoginThrottle).values(
            window_started_at=datetime.now(UTC) - timedelta(seconds=limits.window_s + 1)))
    assert auth.sign_in(engine, "alice", PASSWORD, "127.0.0.1", limits).actor.name == "alice"


def test_tokens_are_stored_hashed_and_stop_when_revoked_or_the_user_is_disabled(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "ci", Role.OPERATOR)
    token, secret = auth.create_token(engine, ADMIN, "ci", "pipeline")
    with session_scope(engine) as session:
        stored = session.scalars(select(ApiToken)).one()
        assert secret not in (stored.token_hash, stored.id) and len(stored.token_hash) == 64
    actor = auth.authenticate_token(engine, secret, "127.0.0.1")
    assert (actor.kind, actor.name, actor.role, actor.token_id) == (ActorKind.TOKEN, "ci", Role.OPERATOR,
                                                                    token.id)
    assert auth.list_tokens(engine, ADMIN, "ci")[0].last_used_at is not None
    auth.disable_user(engine, ADMIN, "ci")
    with pytest.raises(auth.AuthError, match="disabled"):
        auth.authenticate_token(engine, secret, "127.0.0.1")
    auth.disable_user(engine, ADMIN, "ci", disabled=False)
    auth.authenticate_token(engine, secret, "127.0.0.1")
    auth.revoke_token(engine, ADMIN, token.id)
    with pytest.raises(auth.AuthError, match="revoked"):
        auth.authenticate_token(engine, secret, "127.0.0.1")


def test_disabling_or_a_new_password_ends_sessions(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "alice", Role.CENTRAL_IT, password=PASSWORD)
    first = auth.sign_in(engine, "alice", PASSWORD, "127.0.0.1")
    auth.set_password(engine, ADMIN, "alice", "another long password")
    assert auth.session_actor(engine, first.cookie, "127.0.0.1") is None
    second = auth.sign_in(engine, "alice", "another long password", "127.0.0.1")
    auth.disable_user(engine, ADMIN, "alice")
    assert auth.session_actor(engine, second.cookie, "127.0.0.1") is None
    with pytest.raises(auth.AuthError):
        auth.sign_in(engine, "alice", "another long password", "127.0.0.1")


def test_who_may_manage_users_and_tokens(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "alice", Role.CENTRAL_IT, password=PASSWORD)
    auth.create_user(engine, ADMIN, "bob", Role.AUDITOR, password=PASSWORD)
    alice = auth.sign_in(engine, "alice", PASSWORD, "127.0.0.1").actor
    bob = auth.sign_in(engine, "bob", PASSWORD, "127.0.0.1").actor
    with pytest.raises(Forbidden):
        auth.create_user(engine, alice, "eve", Role.ADMIN, password=PASSWORD)
    mine, _ = auth.create_token(engine, alice, "alice")
    with pytest.raises(Forbidden):
        auth.create_token(engine, alice, "bob")
    with pytest.raises(Forbidden):
        auth.revoke_token(engine, bob, mine.id)
    assert [t.id for t in auth.list_tokens(engine, bob)] == [mine.id]  # an auditor reads all
    assert [u.name for u in auth.list_users(engine, bob)] == ["alice", "bob"]
    with pytest.raises(Forbidden):
        auth.list_users(engine, alice)
    auth.set_password(engine, alice, "alice", "my own new password")  # one's own password
    with pytest.raises(Forbidden):
        auth.set_password(engine, alice, "bob", "not my account!!")


def test_input_checks(engine: Engine) -> None:
    with pytest.raises(InvalidInput):
        auth.create_user(engine, ADMIN, "Bad Name", Role.AUDITOR, password=PASSWORD)
    with pytest.raises(InvalidInput):
        auth.create_user(engine, ADMIN, "short", Role.AUDITOR, password="short")
    with pytest.raises(InvalidInput):
        auth.create_user(engine, ADMIN, "liaison", Role.COUNTY, password=PASSWORD)  # no county
    with pytest.raises(InvalidInput):
        auth.create_user(engine, ADMIN, "ops", Role.OPERATOR, tenant="keelung", password=PASSWORD)
    auth.create_user(engine, ADMIN, "liaison", Role.COUNTY, tenant="keelung", password=PASSWORD)
    with pytest.raises(Conflict):
        auth.create_user(engine, ADMIN, "liaison", Role.AUDITOR, password=PASSWORD)
    liaison = auth.sign_in(engine, "liaison", PASSWORD, "127.0.0.1").actor
    assert liaison.tenant == "keelung"


def test_changes_are_audited_without_secrets(engine: Engine) -> None:
    auth.create_user(engine, ADMIN, "ci", Role.OPERATOR, password=PASSWORD)
    token, secret = auth.create_token(engine, ADMIN, "ci")
    auth.revoke_token(engine, ADMIN, token.id)
    events = audit.list_events(engine)
    assert [e.action for e in events] == ["token.revoke", "token.create", "user.create"]
    assert all(e.actor_kind == ActorKind.OS_USER for e in events)
    dumped = repr([audit.event_json(e) for e in events])
    assert secret not in dumped and PASSWORD not in dumped
    assert audit.verify(engine, audit.anchor_path(engine)).ok


def test_the_first_start_makes_an_admin_once(engine: Engine, tmp_path: Path) -> None:
    path = auth.ensure_admin(engine, tmp_path / "state")
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    name, password = path.read_text().split()
    assert name == "admin"
    assert auth.sign_in(engine, name, password, "127.0.0.1").actor.role == Role.ADMIN
    assert auth.ensure_admin(engine, tmp_path / "state") is None


def test_cli_user_and_token(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane import bootstrap
    from controlplane.cli import app

    monkeypatch.setattr(bootstrap, "engine", lambda: engine)
    monkeypatch.setattr(bootstrap, "settings", lambda: type("S", (), {"state_dir": audit._anchor_root()})())
    runner = CliRunner()
    added = runner.invoke(app, ["user", "add", "carol", "--role", "operator", "--generate"])
    assert added.exit_code == 0, added.output
    password = added.output.split("password (shown once): ")[1].split()[0]
    assert auth.sign_in(engine, "carol", password, "127.0.0.1").actor.role == Role.OPERATOR
    assert runner.invoke(app, ["user", "add", "carol", "--role", "operator", "--generate"]).exit_code == 1
    bad = runner.invoke(app, ["user", "add", "dave", "--role", "county", "--generate"])
    assert bad.exit_code == 2 and "county" in bad.output
    piped = runner.invoke(app, ["user", "passwd", "carol", "--password-stdin"], input="a piped password\n")
    assert piped.exit_code == 0, piped.output
    auth.sign_in(engine, "carol", "a piped password", "127.0.0.1")
    created = runner.invoke(app, ["token", "create", "--user", "carol", "--label", "ci"])
    assert created.exit_code == 0, created.output
    secret = next(line for line in created.output.split() if line.startswith(auth.TOKEN_PREFIX))
    actor = auth.authenticate_token(engine, secret, "127.0.0.1")
    listed = runner.invoke(app, ["token", "list", "--json"])
    assert actor.token_id in listed.output and secret not in listed.output
    assert runner.invoke(app, ["token", "revoke", str(actor.token_id)]).exit_code == 0
    assert runner.invoke(app, ["token", "revoke", "tok_nope"]).exit_code == 2
    assert runner.invoke(app, ["user", "disable", "carol"]).exit_code == 0
    assert '"disabled": true' in runner.invoke(app, ["user", "list", "--json"]).output


