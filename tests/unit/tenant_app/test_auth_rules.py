"""Log-in, API tokens, server-side sessions and the role table, against a real database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app import audit, auth
from tenant_app.enums import Role
from tenant_app.models import AuditEvent, User
from tenant_app.security import session_store
from tenant_app.security.permissions import PERMISSIONS, Action, allowed
from tenant_app.security.ratelimit import LoginRateLimiter
from tests.unit.tenant_app import auth_support
from tests.unit.tenant_app.auth_support import PASSWORD, Fixture


@pytest.fixture
def county(db_url: str) -> Iterator[Fixture]:
    fixture = auth_support.build(db_url)
    auth.forget_cached_principals()
    yield fixture
    fixture.engine.dispose()


def _actions(db_session: Session) -> list[str]:
    return [e.action for e in db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]


def test_login_succeeds_case_insensitively_and_is_audited(county: Fixture) -> None:
    with county.session() as db:
        result = auth.authenticate(db, " Clerk ", PASSWORD, "127.0.0.1", LoginRateLimiter())
        db.commit()
        assert result.outcome is auth.LoginOutcome.OK
        assert result.user is not None and result.user.username == "clerk"
        assert _actions(db) == [auth.AuthAuditAction.LOGIN]
        assert audit.verify(db) == []


def test_wrong_password_unknown_user_and_inactive_user_look_the_same(county: Fixture) -> None:
    limiter = LoginRateLimiter()
    with county.session() as db:
        db.get_one(User, county.users[Role.AUDITOR]).active = False
        db.commit()  # authenticate ends the caller's transaction before hashing
        outcomes = []
        for name, password in (("clerk", "wrong"), ("nobody", PASSWORD), ("auditor", PASSWORD)):
            outcomes.append(auth.authenticate(db, name, password, "c", limiter))
            db.commit()  # each attempt's audit entry is the caller's to commit
        assert {o.outcome for o in outcomes} == {auth.LoginOutcome.BAD_CREDENTIALS}
        assert {o.message for o in outcomes} == {"帳號或密碼錯誤。"}
        assert _actions(db) == [auth.AuthAuditAction.LOGIN_FAILED] * 3


def test_sixth_attempt_is_throttled_even_with_the_right_password(county: Fixture) -> None:
    limiter = LoginRateLimiter(max_failures=5, window_s=300)
    with county.session() as db:
        for _ in range(5):
            failed = auth.authenticate(db, "clerk", "bad", "c", limiter)
            assert failed.outcome is auth.LoginOutcome.BAD_CREDENTIALS
        blocked = auth.authenticate(db, "clerk", PASSWORD, "c", limiter)
        assert blocked.outcome is auth.LoginOutcome.THROTTLED
        assert "分鐘後再試" in blocked.message
        # The same user from another client is not locked out by someone else's guessing.
        assert auth.authenticate(db, "clerk", PASSWORD, "other", limiter).outcome is auth.LoginOutcome.OK


def test_token_resolves_to_principal_with_grants_until_revoked(county: Fixture) -> None:
    with county.session() as db:
        raw, row = auth.issue_api_token(db, county.users[Role.CLERK], actor="admin", name="bench")
        db.commit()
        principal = auth.principal_for_token(db, raw)
        assert principal is not None
        assert principal.role is Role.CLERK and principal.agency_ids == frozenset({county.agency_a})
        assert auth.principal_for_token(db, raw + "x") is None
        assert auth.revoke_api_token(db, row.id, actor="admin")
        assert not auth.revoke_api_token(db, row.id, actor="admin")  # second revoke: nothing to do
        db.commit()
        assert auth.principal_for_token(db, raw) is None
        assert _actions(db) == [auth.AuthAuditAction.TOKEN_ISSUED, auth.AuthAuditAction.TOKEN_REVOKED]


def test_expired_token_and_inactive_user_are_refused(county: Fixture) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with county.session() as db:
        expired, _ = auth.issue_api_token(db, county.users[Role.CLERK], actor="admin", expires_at=past)
        live, _ = auth.issue_api_token(db, county.users[Role.ACCOUNTANT], actor="admin")
        db.get_one(User, county.users[Role.ACCOUNTANT]).active = False
        db.commit()
        assert auth.principal_for_token(db, expired) is None
        assert auth.principal_for_token(db, live) is None


def test_server_side_session_lifecycle(county: Fixture) -> None:
    now = dt.datetime.now(dt.UTC)
    with county.session() as db:
        raw, row = session_store.create(db, county.users[Role.CLERK], ttl_s=60, now=now)
        db.commit()
        assert row.id != raw  # only the digest is stored
        assert session_store.load(db, raw, now=now) is not None
        assert session_store.load(db, "forged", now=now) is None
        assert session_store.load(db, raw, now=now + dt.timedelta(seconds=61)) is None  # expired: gone
        db.commit()
        raw2, _ = session_store.create(db, county.users[Role.CLERK])
        raw3, _ = session_store.create(db, county.users[Role.CLERK])
        session_store.end(db, raw2)
        assert session_store.load(db, raw2) is None and session_store.load(db, raw3) is not None
        assert session_store.end_all_for_user(db, county.users[Role.CLERK]) == 1
        assert session_store.load(db, raw3) is None


def test_auditor_is_read_only_and_admin_touches_no_money() -> None:
    writes = set(Action) - {Action.VIEW, Action.RUN_REPORTS, Action.VIEW_AUDIT}
    assert not PERMISSIONS[Role.AUDITOR] & writes
    money = {Action.CERTIFY, Action.PREPARE_VOUCHER, Action.PAY, Action.POST_JOURNAL, Action.CLOSE_PERIOD}
    assert not PERMISSIONS[Role.COUNTY_ADMIN] & money
    assert allowed([Role.AUDITOR], Action.VIEW_AUDIT) and not allowed([Role.CLERK], Action.VIEW_AUDIT)
    assert allowed([Role.CHIEF_ACCOUNTANT], Action.CLOSE_PERIOD)
    assert not allowed([Role.CLERK], Action.CLOSE_PERIOD)
    assert all(role in PERMISSIONS for role in Role)
