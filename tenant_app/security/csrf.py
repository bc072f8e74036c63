"""CSRF check for state-changing forms: the form's hidden token must equal the session's token.

The token lives in the signed session cookie, so a cross-site page can neither read nor forge it;
comparing in constant time keeps the check from leaking it byte by byte.
"""

from __future__ import annotations

import hmac

CSRF_FIELD = "csrf_token"
CSRF_REFUSED_MESSAGE = "表單驗證碼（CSRF）無效或已過期，請重新整理頁面後再試一次。"


def csrf_valid(session_token: str, submitted: str | None) -> bool:
    if not submitted or not session_token:
        return False
    return hmac.compare_digest(session_token.encode(), submitted.encode())
