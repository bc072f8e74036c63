"""The browser's session cookie, signed and timestamped with itsdangerous.

The cookie holds no authority by itself: when logged in it carries a random session id whose
SHA-256 digest names a server-side UserSession row (so log-out and deactivation take effect at
once); before log-in it carries an anonymous CSRF token so even the log-in form is protected.
It also carries one flash message for the page after a redirect.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE_NAME = "tenant_session"
DEFAULT_MAX_AGE_S = 8 * 3600  # one working day; after that the user logs in again
_SALT = "tenant_app.session.v1"


class FlashKind(StrEnum):
    INFO = "info"
    OK = "ok"
    ERROR = "error"


def new_secret_token() -> str:
    return secrets.token_urlsafe(32)


def session_id_digest(session_id: str) -> str:
    """What the database stores: a leaked table row cannot be replayed as a cookie."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass
class CookieState:
    session_id: str | None = None
    anon_csrf: str = field(default_factory=new_secret_token)
    flash: str | None = None
    flash_kind: FlashKind = FlashKind.INFO

    def set_flash(self, message: str, kind: FlashKind = FlashKind.INFO) -> None:
        self.flash, self.flash_kind = message, kind

    def pop_flash(self) -> tuple[str | None, FlashKind]:
        message, kind = self.flash, self.flash_kind
        self.flash, self.flash_kind = None, FlashKind.INFO
        return message, kind


class SessionCodec:
    def __init__(self, secret: str, max_age_s: int = DEFAULT_MAX_AGE_S) -> None:
        if len(secret) < 8:
            raise ValueError("session secret must be at least 8 characters")
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age_s = max_age_s

    def dumps(self, state: CookieState) -> str:
        return self._serializer.dumps(asdict(state))

    def loads(self, cookie: str | None) -> CookieState:
        """The state in `cookie`, or a fresh anonymous one when it is missing, forged or expired."""
        if not cookie:
            return CookieState()
        try:
            raw: Any = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:  # SignatureExpired is a subclass
            return CookieState()
        if not isinstance(raw, dict) or not isinstance(raw.get("anon_csrf"), str):
            return CookieState()
        sid = raw.get("session_id")
        flash = raw.get("flash")
        try:
            kind = FlashKind(raw.get("flash_kind", FlashKind.INFO))
        except ValueError:
            kind = FlashKind.INFO
        return CookieState(
            session_id=sid if isinstance(sid, str) else None,
            anon_csrf=raw["anon_csrf"],
            flash=flash if isinstance(flash, str) else None,
            flash_kind=kind,
        )
