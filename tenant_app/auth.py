"""Who is calling, and what they may touch: log-in, API tokens, roles and per-agency scope.

Both the web UI and the JSON API work with a `Principal`: plain data (user, role, granted agencies)
read from the database once per request, so rules here are testable without HTTP. FastAPI
dependencies at the bottom wire it into routes:

- `current_api_user`: the bearer token's principal (401 with a JSON error otherwise);
- `require_role(*roles)` / `require_action(action)`: 403 unless the principal's role allows it;
- `require_agency(param)`: 403 unless the agency named by a path or query parameter is granted.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tenant_app import audit
from tenant_app.enums import Role
from tenant_app.models import ApiToken, User, UserAgency
from tenant_app.security import passwords, tokens
from tenant_app.security.permissions import Action, allowed, refusal_message
from tenant_app.security.ratelimit import LoginRateLimiter


@dataclass(frozen=True)
class Principal:
    """An authenticated user as the rules see them."""

    user_id: int
    username: str
    display_name: str
    role: Role
    agency_ids: frozenset[int]

    def may(self, action: Action) -> bool:
        return allowed((self.role,), action)

    def sees_agency(self, agency_id: int) -> bool:
        return agency_id in self.agency_ids


def principal_for(db: Session, user: User) -> Principal:
    agency_ids = db.scalars(select(UserAgency.agency_id).where(UserAgency.user_id == user.id)).all()
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=Role(user.role),
        agency_ids=frozenset(agency_ids),
    )


def load_principal(db: Session, user_id: int) -> Principal | None:
    user = db.get(User, user_id)
    if user is None or not user.active:
        return None
    return principal_for(db, user)


class AuthAuditAction(StrEnum):
    """Audit-log actions written by authentication (B's audit.append chains them with the rest)."""

    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    LOGOUT = "auth.logout"
    TOKEN_ISSUED = "auth.token_issued"
    TOKEN_REVOKED = "auth.token_revoked"


# ------------------------------------------------------------------------------------------ log-in


class LoginOutcome(StrEnum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    THROTTLED = "throttled"


LOGIN_MESSAGES: dict[LoginOutcome, str] = {
    LoginOutcome.OK: "登入成功。",
    # One message for "no such user", "wrong password" and "deactivated": no account enumeration.
    LoginOutcome.BAD_CREDENTIALS: "帳號或密碼錯誤。",
    LoginOutcome.THROTTLED: "登入失敗次數過多，請於 {minutes} 分鐘後再試。",
}


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    user: User | None = None
    retry_after_s: int = 0

    @property
    def message(self) -> str:
        minutes = max(1, -(-self.retry_after_s // 60))
        return LOGIN_MESSAGES[self.outcome].format(minutes=minutes)


def normalise_username(username: str) -> str:
    return username.strip().casefold()


def authenticate(
    db: Session, username: str, password: str, client: str, limiter: LoginRateLimiter
) -> LoginResult:
    """Check a username and password, counting failures per user and client against `limiter`.

    Call it with nothing pending: it ends (rolls back) the caller's open transaction before hashing,
    because on SQLite that transaction holds the write lock, and a morning of log-ins must not queue
    the certification writer behind argon2's deliberate slowness. The audit entry it appends is the
    caller's to commit.
    """
    name = normalise_username(username)
    # Counted as a failure from the start (refunded on success): parallel guesses cannot all pass
    # the check before the first has been counted.
    throttle = limiter.begin(name, client)
    if not throttle.allowed:
        return LoginResult(LoginOutcome.THROTTLED, retry_after_s=throttle.retry_after_s)
    row = db.execute(select(User.id, User.password_hash).where(User.username == name)).first()
    db.rollback()
    # Verify even for unknown users so both paths take one argon2 verification's time.
    ok, new_hash = (False, None)
    if row is None:
        passwords.verify_password(password, None)
    else:
        ok, new_hash = passwords.verify_and_update(password, row.password_hash)
    user = db.get(User, row.id) if row is not None else None
    if user is None or not ok or not user.active:
        # The attempted name is recorded (never the password): repeated guessing shows in the log.
        audit.append(db, name[:64], AuthAuditAction.LOGIN_FAILED, {"client": client})
        return LoginResult(LoginOutcome.BAD_CREDENTIALS)
    if new_hash is not None:  # argon2 parameters changed since the hash was made
        user.password_hash = new_hash
    limiter.succeeded(name, client)
    audit.append(db, user.username, AuthAuditAction.LOGIN, {"client": client})
    return LoginResult(LoginOutcome.OK, user=user)


# ------------------------------------------------------------------------------------- API tokens


def issue_api_token(db: Session, user_id: int, *, actor: str, name: str = "",
                    expires_at: dt.datetime | None = None) -> tuple[str, ApiToken]:
    """A new bearer token for `user_id`: the raw token is returned once and never stored."""
    raw = tokens.new_token()
    row = ApiToken(user_id=user_id, token_hash=tokens.token_digest(raw), name=name, expires_at=expires_at)
    db.add(row)
    db.flush()
    audit.append(db, actor, AuthAuditAction.TOKEN_ISSUED,
                 {"token_id": row.id, "user_id": user_id, "name": name,
                  "expires_at": expires_at.isoformat() if expires_at else None})
    return raw, row


def revoke_api_token(db: Session, token_id: int, *, actor: str) -> bool:
    """Revoke a token; False if it did not exist or was already revoked (nothing audited then)."""
    result = db.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked.is_(False))
                        .values(revoked=True))
    PRINCIPAL_CACHE.clear()
    done = bool(getattr(result, "rowcount", 0))
    if done:
        audit.append(db, actor, AuthAuditAction.TOKEN_REVOKED, {"token_id": token_id})
    return done


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def principal_for_token(db: Session, raw_token: str, now: dt.datetime | None = None) -> Principal | None:
    """The principal a bearer token stands for, or None if unknown, revoked, expired or its user inactive."""
    digest = tokens.token_digest(raw_token)
    row = db.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
    if row is None or row.revoked:
        return None
    if row.expires_at is not None and _aware(row.expires_at) <= (now or dt.datetime.now(dt.UTC)):
        return None
    return load_principal(db, row.user_id)


class PrincipalCache:
    """Token digest -> principal for a few seconds.

    The API's certification path is hot (thousands of requests a second) and on SQLite every
    transaction takes the write lock, so a database lookup per request would queue behind the
    certification writer. Revocation and user/grant changes made through this app clear the cache
    at once; the TTL only bounds changes made behind the app's back.
    """

    def __init__(self, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self.ttl_s:
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        with self._lock:
            self._entries[key] = (self._clock(), principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


PRINCIPAL_CACHE = PrincipalCache()


def forget_cached_principals() -> None:
    """Call after any change to users, roles, grants or tokens."""
    PRINCIPAL_CACHE.clear()


# ----------------------------------------------------------------------------- FastAPI dependencies


class AuthErrorCode(StrEnum):
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN_ROLE = "forbidden_role"
    FORBIDDEN_AGENCY = "forbidden_agency"
    BAD_AGENCY = "bad_agency"


def auth_error(status_code: int, code: AuthErrorCode, message: str, **extra: Any) -> HTTPException:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == status.HTTP_401_UNAUTHORIZED else None
    detail = {"code": code.value, "message": message, **extra}
    return HTTPException(status_code, detail=detail, headers=headers)


def get_db(request: Request) -> Iterator[Session]:
    """A database session for one request, from the app's session factory; closed afterwards."""
    session: Session = request.app.state.tenant.sessions()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def current_api_user(request: Request) -> Principal:
    """The principal behind `Authorization: Bearer <token>`; 401 (JSON) if missing or not valid."""
    raw = tokens.parse_bearer(request.headers.get("authorization"))
    if raw is None:
        raise auth_error(status.HTTP_401_UNAUTHORIZED, AuthErrorCode.UNAUTHENTICATED,
                         "缺少 Bearer 權杖 (missing bearer token)")
    digest = tokens.token_digest(raw)
    principal = PRINCIPAL_CACHE.get(digest)
    if principal is None:
        with request.app.state.tenant.sessions() as db:
            principal = principal_for_token(db, raw)
            db.rollback()  # read-only: end the transaction (and SQLite's write lock) at once
        if principal is None:
            raise auth_error(status.HTTP_401_UNAUTHORIZED, AuthErrorCode.UNAUTHENTICATED,
                             "權杖無效、已撤銷或已過期 (invalid, revoked or expired token)")
        PRINCIPAL_CACHE.put(digest, principal)
    request.state.principal = principal
    return principal


def require_role(*roles: Role) -> Callable[..., Principal]:
    """A dependency: the API principal, if their role is one of `roles`; 403 otherwise."""
    wanted = frozenset(roles)

    def dependency(principal: Principal = Depends(current_api_user)) -> Principal:
        if principal.role not in wanted:
            raise auth_error(status.HTTP_403_FORBIDDEN, AuthErrorCode.FORBIDDEN_ROLE,
                             f"此操作需要角色：{', '.join(sorted(r.value for r in wanted))}",
                             role=principal.role.value)
        return principal

    return dependency


def require_action(action: Action) -> Callable[..., Principal]:
    """A dependency: the API principal, if the permission table lets their role do `action`."""

    def dependency(principal: Principal = Depends(current_api_user)) -> Principal:
        if not principal.may(action):
            raise auth_error(status.HTTP_403_FORBIDDEN, AuthErrorCode.FORBIDDEN_ROLE, refusal_message(action),
                             action=action.value, role=principal.role.value)
        return principal

    return dependency


def check_agency(principal: Principal, agency_id: int) -> None:
    """Raise 403 unless `agency_id` is granted to the principal; for agencies named in a request body."""
    if not principal.sees_agency(agency_id):
        raise auth_error(status.HTTP_403_FORBIDDEN, AuthErrorCode.FORBIDDEN_AGENCY,
                         f"您沒有機關 {agency_id} 的權限 (agency not granted)", agency_id=agency_id)


def require_agency(param: str = "agency_id") -> Callable[..., Principal]:
    """A dependency: the API principal, if the agency in path/query parameter `param` is granted."""

    def dependency(request: Request, principal: Principal = Depends(current_api_user)) -> Principal:
        raw = request.path_params.get(param, request.query_params.get(param))
        try:
            agency_id = int(raw) if raw is not None else None
        except ValueError:
            agency_id = None
        if agency_id is None:
            raise auth_error(status.HTTP_422_UNPROCESSABLE_CONTENT, AuthErrorCode.BAD_AGENCY,
                             f"缺少或無效的機關代號參數 {param}", param=param)
        check_agency(principal, agency_id)
        return principal

    return dependency
