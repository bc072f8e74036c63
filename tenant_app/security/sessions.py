"""Browser sessions kept in a signed, timestamped cookie (itsdangerous).

The cookie carries only identifiers (user id, chosen agency, CSRF token, one flash message); the
server re-reads the user and their grants from the database on every request, so a revoked role or
grant takes effect at once even though the cookie itself cannot be revoked before it expires.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE_NAME = "tenant_session"
DEFAULT_MAX_AGE_S = 8 * 3600  # one working day; after that the user logs in again
_SALT = "tenant_app.session.v1"


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class SessionData:
    """What the browser session remembers between requests."""

    csrf_token: str = field(default_factory=new_csrf_token)
    user_id: int | None = None
    agency_id: int | None = None
    flash: str | None = None
    flash_kind: str = "info"

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    def set_flash(self, message: str, kind: str = "info") -> None:
        self.flash, self.flash_kind = message, kind

    def pop_flash(self) -> tuple[str | None, str]:
        message, kind = self.flash, self.flash_kind
        self.flash, self.flash_kind = None, "info"
        return message, kind

    def rotate(self, user_id: int | None) -> None:
        """A new CSRF token and a clean state at log-in and log-out (prevents session fixation)."""
        self.user_id = user_id
        self.agency_id = None
        self.csrf_token = new_csrf_token()


class SessionCodec:
    def __init__(self, secret: str, max_age_s: int = DEFAULT_MAX_AGE_S) -> None:
        if len(secret) < 16:
            raise ValueError("session secret must be at least 16 characters")
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age_s = max_age_s

    def dumps(self, data: SessionData) -> str:
        return self._serializer.dumps(asdict(data))

    def loads(self, cookie: str | None) -> SessionData:
        """The session in `cookie`, or a fresh anonymous one when it is missing, forged or expired."""
        if not cookie:
            return SessionData()
        try:
            raw: Any = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:  # SignatureExpired is a subclass
            return SessionData()
        if not isinstance(raw, dict) or not isinstance(raw.get("csrf_token"), str):
            return SessionData()
        return SessionData(
            csrf_token=raw["csrf_token"],
            user_id=raw.get("user_id") if isinstance(raw.get("user_id"), int) else None,
            agency_id=raw.get("agency_id") if isinstance(raw.get("agency_id"), int) else None,
            flash=raw.get("flash") if isinstance(raw.get("flash"), str) else None,
            flash_kind=str(raw.get("flash_kind") or "info"),
        )
