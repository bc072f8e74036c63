"""Request bounds before anything parses a body: size, JSON nesting depth and media type.

Pure ASGI (like middleware.py) because it sits in front of the certification fast path: for a
plain small JSON body it costs one header scan and two bytes.count calls.

- A body above `MAX_BODY` (1 MiB) answers 413 `payload_too_large`, from Content-Length before
  reading, or as soon as the chunks read pass the limit.
- A JSON body nested deeper than `MAX_DEPTH` answers 400 `json_too_deep`: Python's json module
  recurses per level and a few thousand levels raise RecursionError inside the parser.
- On /api/, a body sent with a Content-Type other than JSON answers 415 `unsupported_media_type`:
  the API reads JSON only, and text/plain is what a cross-site form can send without a preflight.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_app.api.errors import API_PREFIX, MAX_ERROR_BODY
from tenant_app.rules.errors import ErrorCode

MAX_BODY = 1024 * 1024
MAX_DEPTH = 32
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


def json_depth_exceeds(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether brackets outside strings nest deeper than `limit` (malformed JSON is the parser's)."""
    if body.count(b"[") + body.count(b"{") <= limit:  # cannot nest deeper than it has brackets
        return False
    depth = 0
    in_string = False
    escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSE:
            depth -= 1
    return False


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _refuse(send: Send, status: int, code: ErrorCode, message_zh: str, message_en: str) -> None:
    body = json.dumps({"code": code.value, "message": message_zh, "message_en": message_en, "detail": {},
                       "errors": [{"code": code.value, "message": message_zh, "message_en": message_en,
                                   "detail": {}}]}, ensure_ascii=False).encode("utf-8")
    assert len(body) <= MAX_ERROR_BODY
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii")), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY, max_depth: int = MAX_DEPTH) -> None:
        self.app = app
        self.max_body = max_body
        self.max_depth = max_depth

    async def _too_large(self, send: Send) -> None:
        await _refuse(send, 413, ErrorCode.PAYLOAD_TOO_LARGE, f"請求內容超過 {self.max_body:,} 位元組",
                      f"the request body is larger than {self.max_body} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(send)
            return
        content_type = _header(scope, b"content-type")
        is_api = scope["path"].startswith(API_PREFIX)
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if body and is_api and content_type is not None and not is_json_media_type(content_type):
            await _refuse(send, 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "請以 application/json 傳送請求內容",
                          "send the request body as application/json")
            return
        if body and (is_api or (content_type is not None and is_json_media_type(content_type))) \
                and json_depth_exceeds(body, self.max_depth):
            await _refuse(send, 400, ErrorCode.JSON_TOO_DEEP, f"JSON 巢狀層數超過 {self.max_depth}",
                          f"the JSON body nests deeper than {self.max_depth} levels")
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, in one message; after it, whatever the server sends (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
