"""The certification hot path as plain ASGI: POST /api/v1/certifications without FastAPI's routing
and dependency solving, which cost more CPU per request than the group commit itself.

It only takes the plainly valid request: a cached bearer token whose role may certify, and a JSON
object with integer fields. Anything else (unknown token, float money, extra keys, bad JSON) is
passed on, body replayed, to the FastAPI route, which gives the full, documented error. Both paths
share certify_outcome, so a request gets the same answer either way.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_app import auth
from tenant_app.api.certifications import certify_outcome
from tenant_app.api.limits import is_json_media_type
from tenant_app.api.router import API_V1
from tenant_app.domains import AMOUNT, ID, PERIOD, IntDomain
from tenant_app.security import tokens
from tenant_app.security.permissions import Action
from tenant_app.services.certification import CertifyRequest

PATH = f"{API_V1}/certifications"
_FIELDS = frozenset({"budget_line_id", "amount", "period", "purpose"})
_MAX_BODY = 4096


class _Route:
    """What the metrics middleware reads as the route template."""

    path_format = PATH


def _in(domain: IntDomain, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and domain.low <= value <= domain.high


def parse(body: bytes) -> dict[str, Any] | None:
    """The certification fields when the body is plainly valid; None sends it to the full route.

    Plainly valid means inside the declared domains (tenant_app/domains.py): an id, amount or
    period outside them goes to the route, which refuses it with its code before it is queued.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not set(data) <= _FIELDS:
        return None
    if not (_in(ID, data.get("budget_line_id")) and _in(AMOUNT, data.get("amount"))):
        return None
    period = data.get("period")
    if period is not None and not _in(PERIOD, period):
        return None
    purpose = data.get("purpose", "")
    if not isinstance(purpose, str) or len(purpose) > 255:
        return None
    return data


class CertifyFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        principal = _cached_principal(scope) if _json_or_unset(scope) else None
        data = parse(body) if complete and principal is not None else None
        if data is None or principal is None:
            await self.app(scope, _replay(body, complete, receive), send)
            return
        scope["route"] = _Route()
        state = scope["app"].state.tenant
        status, payload = await certify_outcome(state, CertifyRequest(
            budget_line_id=data["budget_line_id"], amount=data["amount"], user_id=principal.user_id,
            allowed_agencies=principal.agency_ids, period=data.get("period"),
            purpose=data.get("purpose", "")))
        content = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode("ascii"))]})
        await send({"type": "http.response.body", "body": content})


def _json_or_unset(scope: Scope) -> bool:
    """Only a JSON body (or one without a Content-Type) is taken here; the route refuses the rest."""
    content_type = next((value for name, value in scope["headers"] if name == b"content-type"), None)
    return content_type is None or is_json_media_type(content_type.decode("latin-1"))


def _cached_principal(scope: Scope) -> auth.Principal | None:
    header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    raw = tokens.parse_bearer(header.decode("latin-1")) if header else None
    principal = auth.PRINCIPAL_CACHE.get(tokens.token_digest(raw)) if raw else None
    return principal if principal is not None and principal.may(Action.CERTIFY) else None


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The body read so far, and whether it is complete (False: too large or the client left)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > _MAX_BODY:
            return b"".join(chunks), False


def _replay(prefix: bytes, complete: bool, receive: Receive) -> Receive:
    """Hand the FastAPI route what was already read, then whatever the client still sends."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": prefix, "more_body": not complete}
        return await receive()

    return replayed
