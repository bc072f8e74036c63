"""K = 32 parallel HTTP clients certify against ONE budget line through a real uvicorn server on
127.0.0.1, on SQLite and on PostgreSQL: the committed total never exceeds the balance, the line's
running total equals its certification rows, and every refusal states the balance it saw."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenant_app import hotline
from tenant_app.devserver import running_server

CLIENTS = 32
REQUESTS_PER_CLIENT = 12
AVAILABLE = 10_000  # about a third of what the clients ask for in total, so the line runs dry


async def _client(base: str, token: str, line_id: int, seed: int) -> list[tuple[int, int, dict[str, Any]]]:
    rng = random.Random(seed)
    results = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                 timeout=30) as client:
        for _ in range(REQUESTS_PER_CLIENT):
            amount = rng.randint(1, 160)
            response = await client.post("/api/v1/certifications",
                                         json={"budget_line_id": line_id, "amount": amount})
            results.append((amount, response.status_code, response.json()))
    return results


async def _storm(base: str, token: str, line_id: int) -> list[tuple[int, int, dict[str, Any]]]:
    batches = await asyncio.gather(*(_client(base, token, line_id, seed) for seed in range(CLIENTS)))
    return [result for batch in batches for result in batch]


@pytest.mark.timeout(120)
def test_parallel_certifications_never_overcommit(db_url: str, tmp_path: Path) -> None:
    line = hotline.prepare(db_url, AVAILABLE)
    with running_server(db_url, log_path=tmp_path / "server.log") as base:
        results = asyncio.run(_storm(base, line.token, line.budget_line_id))

    accepted = [(amount, body) for amount, status, body in results if status == 201]
    refused = [(amount, body) for amount, status, body in results if status != 201]
    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    assert refused, "the clients asked for more than the balance, so some must be refused"

    committed_in_responses = sum(amount for amount, _ in accepted)
    db = hotline.committed(db_url, line.budget_line_id)
    assert db.rows_total == committed_in_responses <= AVAILABLE
    assert db.line_certified == db.rows_total  # no lost update on the running total
    assert db.line_available == AVAILABLE - db.rows_total >= 0
    assert db.rows_count == len(accepted)

    for amount, body in accepted:
        assert body["available_after"] == body["available_before"] - amount >= 0
    for amount, body in refused:
        assert body["code"] == "insufficient_balance", body
        seen = body["detail"]["available"]
        assert body["detail"]["requested"] == amount
        assert 0 <= seen < amount  # the refusal is explained by the balance it saw
        assert f"{amount:,}" in body["message"]

    # Numbers issued in the same transactions are gapless: 1..n with no hole and no duplicate.
    numbers = sorted(body["number"] for _, body in accepted)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
