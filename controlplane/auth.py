"""Users, API tokens, console sessions and the log-in throttle.

Passwords are argon2 hashes (pwdlib, as the tenant app does). A token or a session cookie is 256
random bits shown once; only its SHA-256 is stored. Sessions are rows, so signing out, disabling a
user or changing a password ends them at once. Every change here is audited in its own transaction.

The throttle counts an attempt *before* the password is checked, with one UPDATE per key: parallel
attempts (threads, or several service processes on one database) each take a slot, so no more than
the limit are ever checked within the window. A successful sign-in gives its slot back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane import audit
from controlplane.actors import Actor, ActorKind
from controlplane.errors import (
    Conflict,
    ControlPlaneError,
    ErrorCode,
    Forbidden,
    InvalidInput,
    NotFoundError,
)
from controlplane.models import ApiToken, ConsoleSession, LoginThrottle, User
from controlplane.roles import Action, Role, allows
from inventory.db import as_utc, session_scope

_HASHER = PasswordHash((Argon2Hasher(),))
# Checked against when the user does not exist, so an unknown name costs the same time as a wrong
# password (no user enumeration by timing). Made at the first sign-in, not at import: an argon2 hash
# is ~0.16 s of every CLI command's start otherwise.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _HASHER.hash("countycloud-no-such-user")
    return _DUMMY_HASH

NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")
TENANT_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; a bound keeps a sign-in from being a CPU sink
TOKEN_PREFIX = "cct_"
ADMIN_NAME = "admin"
ADMIN_PASSWORD_FILE = "admin-password"


class AuthError(ControlPlaneError):
    code = ErrorCode.UNAUTHENTICATED


class Throttled(ControlPlaneError):
    code = ErrorCode.THROTTLED


@dataclass(frozen=True)
class Limits:
    """The throttle's and the sessions' settings (from controlplane.settings)."""

    max_failures_per_user: int = 5
    max_failures_per_address: int = 20
    window_s: int = 900
    session_hours: float = 12.0


@dataclass(frozen=True)
class UserView:
    name: str
    role: Role
    tenant: str | None
    disabled: bool
    created_at: datetime
    has_password: bool

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role.value, "tenant": self.tenant, "disabled": self.disabled,
                "created_at": _iso(self.created_at), "has_password": self.has_password}


@dataclass(frozen=True)
class TokenView:
    id: str
    user: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "user": self.user, "label": self.label, "created_at": _iso(self.created_at),
                "last_used_at": _iso(self.last_used_at), "revoked_at": _iso(self.revoked_at),
                "active": self.revoked_at is None}


@dataclass(frozen=True)
class SignedIn:
    """What a sign-in gives the browser: the cookie value (shown once) and the session's CSRF token."""

    cookie: str
    csrf_token: str
    actor: Actor


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- checks (pure)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidInput(f"user name {name!r}: 1-63 lower-case letters, digits, '.', '_' or '-', "
                           "starting with a letter")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def check_scope(role: Role, tenant: str | None) -> str | None:
    """A county user needs its one county; no other role may be scoped."""
    if role == Role.COUNTY:
        if not tenant or not TENANT_RE.match(tenant):
            raise InvalidInput("a county user needs its county's slug (--tenant)")
        return tenant
    if tenant:
        raise InvalidInput(f"only a county user is limited to one county, not a {role.value} user")
    return None


def _require(actor: Actor, action: Action) -> None:
    if not allows(actor.role, action):
        raise Forbidden(f"{actor.describe()} ({actor.role.value}) may not {action.value}")


def _user(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is None:
        raise NotFoundError(f"no user named {name!r}")
    return user


def _user_view(user: User) -> UserView:
    return UserView(user.name, user.role, user.tenant, user.disabled, user.created_at,
                    user.password_hash is not None)


def _actor_of(user: User, kind: ActorKind, source: str, token_id: str | None = None) -> Actor:
    return Actor(kind, user.name, user.role, tenant=user.tenant, source=source, token_id=token_id)


# ---------------------------------------------------------------- users


def create_user(engine: Engine, actor: Actor, name: str, role: Role, *, tenant: str | None = None,
                password: str | None = None) -> UserView:
    _require(actor, Action.MANAGE_USERS)
    check_name(name)
    tenant = check_scope(role, tenant)
    password_hash = _HASHER.hash(check_password(password)) if password is not None else None
    try:
        with session_scope(engine) as session:
            user = User(name=name, role=role, tenant=tenant, password_hash=password_hash, disabled=False,
                        created_at=_now(), password_changed_at=_now() if password_hash else None)
            session.add(user)
            session.flush()
            audit.record(session, actor, "user.create", f"user:{name}",
                         detail={"role": role.value, "tenant": tenant})
            return _user_view(user)
    except IntegrityError:
        raise Conflict(f"a user named {name!r} already exists") from None


def list_users(engine: Engine, actor: Actor) -> list[UserView]:
    if not (allows(actor.role, Action.MANAGE_USERS) or allows(actor.role, Action.READ_AUDIT)):
        raise Forbidden(f"{actor.describe()} ({actor.role.value}) may not list users")
    with session_scope(engine) as session:
        return [_user_view(user) for user in session.scalars(select(User).order_by(User.name))]


def set_password(engine: Engine, actor: Actor, name: str, password: str) -> None:
    """An admin sets anyone's password; a user its own. Every session of the user ends."""
    if not (name == actor.name and actor.kind in (ActorKind.USER, ActorKind.TOKEN)):
        _require(actor, Action.MANAGE_USERS)
    check_password(password)
    with session_scope(engine) as session:
        user = _user(session, name)
        user.password_hash = _HASHER.hash(password)
        user.password_changed_at = _now()
        session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
        audit.record(session, actor, "user.password", f"user:{name}")


def disable_user(engine: Engine, actor: Actor, name: str, *, disabled: bool = True) -> None:
    """A disabled user cannot sign in, and its sessions and tokens stop working at once."""
    _require(actor, Action.MANAGE_USERS)
    with session_scope(engine) as session:
        user = _user(session, name)
        user.disabled = disabled
        session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
        audit.record(session, actor, "user.disable" if disabled else "user.enable", f"user:{name}")


def ensure_admin(engine: Engine, state_dir: Path) -> Path | None:
    """On the first start (no users at all): create `admin` with a generated password, written once
    to a 0600 file in the state folder (never logged). Returns that file, or None if users exist."""
    from controlplane.actors import SYSTEM

    with session_scope(engine) as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
    password = secrets.token_urlsafe(18)
    path = state_dir / ADMIN_PASSWORD_FILE
    try:
        create_user(engine, SYSTEM, ADMIN_NAME, Role.ADMIN, password=password)
    except Conflict:
        return None  # another service process made it first
    state_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"{ADMIN_NAME}\n{password}\n")
    os.replace(temporary, path)
    return path


# ---------------------------------------------------------------- tokens


def create_token(engine: Engine, actor: Actor, user_name: str, label: str = "") -> tuple[TokenView, str]:
    """A new token for `user_name` (one's own with OWN_TOKENS, anyone's with MANAGE_USERS). The secret
    is returned here only; it cannot be read again."""
    if user_name != actor.name or actor.kind == ActorKind.OS_USER:
        _require(actor, Action.MANAGE_USERS)
    else:
        _require(actor, Action.OWN_TOKENS)
    if len(label) > 120 or "\x00" in label:
        raise InvalidInput("a token's label has at most 120 characters, none of them NUL")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(6)
    with session_scope(engine) as session:
        user = _user(session, user_name)
        if user.disabled:
            raise Conflict(f"user {user_name!r} is disabled")
        token = ApiToken(id=token_id, user_id=user.id, label=label, token_hash=_sha256(secret),
                         created_at=_now())
        session.add(token)
        session.flush()
        audit.record(session, actor, "token.create", f"token:{token_id}", detail={"user": user_name,
                                                                                  "label": label})
        return TokenView(token.id, user_name, label, token.created_at, None, None), secret


def list_tokens(engine: Engine, actor: Actor, user_name: str | None = None) -> list[TokenView]:
    """Everyone's tokens for a user manager or an auditor; one's own otherwise."""
    sees_all = allows(actor.role, Action.MANAGE_USERS) or allows(actor.role, Action.READ_AUDIT)
    if not sees_all:
        if actor.kind not in (ActorKind.USER, ActorKind.TOKEN):
            raise Forbidden("only a user has tokens")
        if user_name not in (None, actor.name):
            raise Forbidden(f"{actor.describe()} may list only its own tokens")
        user_name = actor.name
    with session_scope(engine) as session:
        query = select(ApiToken, User.name).join(User).order_by(ApiToken.created_at)
        if user_name is not None:
            query = query.where(User.name == user_name)
        return [TokenView(t.id, name, t.label, t.created_at, t.last_used_at, t.revoked_at)
                for t, name in session.execute(query)]


def revoke_token(engine: Engine, actor: Actor, token_id: str) -> None:
    with session_scope(engine) as session:
        row = session.execute(select(ApiToken, User.name).join(User).where(ApiToken.id == token_id)).first()
        if row is None:
            raise NotFoundError(f"no token with id {token_id!r}")
        token, owner = row
        if owner != actor.name or actor.kind == ActorKind.OS_USER:
            _require(actor, Action.MANAGE_USERS)
        if token.revoked_at is None:
            token.revoked_at = _now()
            audit.record(session, actor, "token.revoke", f"token:{token_id}", detail={"user": owner})


# How stale a token's last-used time may get: writing it on every request would make each read of
# the API a write (one SQLite writer for the whole service).
LAST_USED_RESOLUTION = timedelta(minutes=1)


# Every API request and console page runs one of these: built once, the values bound per request.
# A token is a 256-bit random secret, so its SHA-256 (not a slow password hash) is the lookup key.
_TOKEN_OWNER = select(ApiToken, User).join(User).where(ApiToken.token_hash == bindparam("token_hash"))
_SESSION_OWNER = select(ConsoleSession, User).join(User).where(ConsoleSession.id == bindparam("session_id"))


def authenticate_token(engine: Engine, secret: str, source: str) -> Actor:
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        raise AuthError("not a CountyCloud API token")
    with session_scope(engine) as session:
        row = session.execute(_TOKEN_OWNER, {"token_hash": _sha256(secret)}).first()
        if row is None:
            raise AuthError("unknown token")
        token, user = row
        if token.revoked_at is not None:
            raise AuthError(f"token {token.id} was revoked")
        if user.disabled:
            raise AuthError(f"user {user.name!r} is disabled")
        now = _now()
        if token.last_used_at is None or now - as_utc(token.last_used_at) > LAST_USED_RESOLUTION:
            token.last_used_at = now
        return _actor_of(user, ActorKind.TOKEN, source, token.id)


# ---------------------------------------------------------------- the throttle


def _take_slot(engine: Engine, key: str, limit: int, window: timedelta) -> bool:
    """Count one attempt for `key`; False if the window's attempts were already used up."""
    now = _now()
    for _attempt in range(3):
        try:
            with session_scope(engine) as session:
                # A window that has passed starts over (the condition makes the reset atomic too).
                session.execute(update(LoginThrottle)
                                .where(LoginThrottle.key == key,
                                       LoginThrottle.window_started_at < now - window)
                                .values(failures=0, window_started_at=now))
                counted = session.execute(update(LoginThrottle).where(LoginThrottle.key == key)
                                          .values(failures=LoginThrottle.failures + 1))
                if counted.rowcount == 0:  # type: ignore[attr-defined]
                    session.add(LoginThrottle(key=key, failures=1, window_started_at=now))
                    session.flush()
                    return True
                failures = session.scalar(select(LoginThrottle.failures).where(LoginThrottle.key == key))
                return (failures or 0) <= limit
        except IntegrityError:
            continue  # another attempt made the row just now: count on it
    return False


def _give_back(engine: Engine, key: str, *, reset: bool) -> None:
    with session_scope(engine) as session:
        values = {"failures": 0} if reset else {"failures": LoginThrottle.failures - 1}
        session.execute(update(LoginThrottle).where(LoginThrottle.key == key, LoginThrottle.failures > 0)
                        .values(**values))


# ---------------------------------------------------------------- console sessions


def sign_in(engine: Engine, name: str, password: str, source: str, limits: Limits = Limits()) -> SignedIn:
    """Check a name and password under the throttle; a new session on success."""
    window = timedelta(seconds=limits.window_s)
    if "\x00" in name or not name:
        raise AuthError("wrong user name or password")  # no such name can exist (PostgreSQL text)
    user_key, address_key = f"user:{name[:100]}", f"addr:{source[:100]}"
    if not _take_slot(engine, address_key, limits.max_failures_per_address, window):
        raise Throttled("too many failed sign-ins from this address; try again later")
    if not _take_slot(engine, user_key, limits.max_failures_per_user, window):
        raise Throttled("too many failed sign-ins for this user; try again later")
    with session_scope(engine) as session:
        user = session.scalars(select(User).where(User.name == name)).first()
        stored = user.password_hash if user is not None else None
    valid, new_hash = False, None
    if len(password) <= MAX_PASSWORD:
        try:
            valid, new_hash = _HASHER.verify_and_update(password, stored or _dummy_hash())
        except Exception:  # a malformed stored hash is a failed sign-in, not a server error
            valid = False
    if user is None or stored is None or user.disabled or not valid:
        raise AuthError("wrong user name or password")
    _give_back(engine, user_key, reset=True)
    _give_back(engine, address_key, reset=False)
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_hex(32)
    with session_scope(engine) as session:
        if new_hash:
            session.execute(update(User).where(User.id == user.id).values(password_hash=new_hash))
        session.add(ConsoleSession(id=_sha256(cookie), user_id=user.id, csrf_token=csrf, source=source[:120],
                                   created_at=_now(),
                                   expires_at=_now() + timedelta(hours=limits.session_hours)))
        # Expired sessions are cleared as new ones start: no scheduler needed for it.
        session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < _now()))
    return SignedIn(cookie, csrf, _actor_of(user, ActorKind.USER, source))


def session_actor(engine: Engine, cookie: str, source: str) -> tuple[Actor, str] | None:
    """The signed-in user behind a cookie and its session's CSRF token, or None."""
    if not cookie or len(cookie) > 200:
        return None
    with session_scope(engine) as session:
        row = session.execute(_SESSION_OWNER, {"session_id": _sha256(cookie)}).first()
        if row is None:
            return None
        console_session, user = row
        if user.disabled or as_utc(console_session.expires_at) < _now():
            return None
        return _actor_of(user, ActorKind.USER, source), console_session.csrf_token


def sign_out(engine: Engine, cookie: str) -> None:
    with session_scope(engine) as session:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == _sha256(cookie)))


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
