"""The certification fast path takes only plainly valid bodies; everything else goes to the full route."""

from __future__ import annotations

import asyncio

from tenant_app.api.fastpath import _read_body, _replay, parse


def test_plain_bodies_are_taken() -> None:
    assert parse(b'{"budget_line_id": 3, "amount": 100}') == {"budget_line_id": 3, "amount": 100}
    assert parse(b'{"budget_line_id": 3, "amount": 1, "period": 13, "purpose": "\\u6587\\u5177"}')


def test_anything_unusual_falls_back_to_the_documented_route() -> None:
    for body in (b'{"budget_line_id": 3, "amount": 100.0}', b'{"budget_line_id": 3, "amount": "100"}',
                 b'{"budget_line_id": 3, "amount": true}', b'{"budget_line_id": 3}', b"[1, 2]",
                 b'{"budget_line_id": 3, "amount": 1, "extra": 1}', b"not json",
                 b'{"budget_line_id": 3, "amount": 1, "period": 14}',
                 b'{"budget_line_id": 3, "amount": 1, "purpose": 5}'):
        assert parse(body) is None, body


def test_a_large_body_is_replayed_whole_to_the_route() -> None:
    chunks = [b"x" * 3000, b"y" * 3000, b"z" * 10]
    messages = [{"type": "http.request", "body": c, "more_body": i < 2} for i, c in enumerate(chunks)]

    async def receive() -> dict:
        return messages.pop(0)

    async def scenario() -> bytes:
        prefix, complete = await _read_body(receive)
        assert not complete
        replayed = _replay(prefix, complete, receive)
        body = b""
        while True:
            message = await replayed()
            body += message["body"]
            if not message.get("more_body"):
                return body

    assert asyncio.run(scenario()) == b"".join(chunks)
