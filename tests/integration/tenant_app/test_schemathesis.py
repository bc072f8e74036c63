"""Property-based run of the tenant app's API from its own OpenAPI schema (schemathesis), against the
app in process on SQLite and PostgreSQL: schema-conforming and schema-violating requests alike, as an
accountant and a chief accountant of the demo county (so they reach the handlers, not only 401).

Every answer must be below 500, and every error must be JSON with a stable string `code`.
About half the cases have their ids swapped for ones that exist, so requests also get past the
404s into the services (certifications, journal entries, period close, amendments, transfers...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from sqlalchemy import select

from tenant_app import hotline
from tenant_app.app import create_app
from tenant_app.auth import issue_api_token
from tenant_app.db import make_engine, session_scope
from tenant_app.models import Agency, BudgetLine, FiscalYear, User
from tenant_app.settings import Settings

CASES = 2600  # distinct generated requests, each run on both databases: 5200 runs in all
CHIEF_PATHS = ("/amendments", "/transfers", "/periods/close")  # the chief accountant's (CLOSE_PERIOD)


@dataclass
class Known:
    """Ids that exist in the seeded county, by the name a parameter or body field gives them."""

    ids: dict[str, list[int]] = field(default_factory=dict)

    def for_name(self, name: str) -> list[int] | None:
        if name in self.ids:
            return self.ids[name]
        if name.endswith("line_id"):
            return self.ids["budget_line_id"]
        return None


def _seed(db_url: str) -> tuple[dict[str, str], Known]:
    line = hotline.prepare(db_url, 1_000_000)
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            users = {u.username: u.id for u in session.scalars(select(User))}
            tokens = {name: issue_api_token(session, users[name], actor="test", name="schemathesis")[0]
                      for name in ("fin-accountant", "fin-chief")}
            known = Known({
                "agency_id": list(session.scalars(select(Agency.id))),
                "fiscal_year_id": list(session.scalars(select(FiscalYear.id))),
                "year": list(session.scalars(select(FiscalYear.year))),
                "budget_line_id": [line.budget_line_id, *session.scalars(select(BudgetLine.id).limit(5))],
                "on_behalf_of": list(users.values()),
            })
    finally:
        engine.dispose()
    return tokens, known


def _use_known(case: Any, known: Known, pick: int) -> None:
    """Swap generated ids for existing ones, where a parameter or field names one."""
    for container in (case.path_parameters, case.query, case.body):
        if not isinstance(container, dict):
            continue
        for name in list(container):
            choices = known.for_name(str(name))
            if choices:
                container[name] = choices[pick % len(choices)]


def _check(case: Any, response: Any, headers: dict[str, str]) -> None:
    """schemathesis' Response: status_code, headers (name -> list of values), content."""
    shown = response.content[:300].decode("utf-8", "replace")  # reports answer binary XLSX / ODS
    where = f"{case.as_curl_command(headers=headers)}\n-> {response.status_code}: {shown}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), where
        body = json.loads(response.content)
        assert isinstance(body, dict) and isinstance(body.get("code"), str) and body["code"], where


# Generated once, run against each database: generating a case costs several times more than
# running it, and the two databases must answer the same requests anyway.
_GENERATED: list[tuple[Any, bool, int]] = []


def _cases(schema: Any) -> list[tuple[Any, bool, int]]:
    if not _GENERATED:
        strategy = st.one_of(schema.as_strategy(GenerationMode.POSITIVE),
                             schema.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=CASES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy, swap=st.booleans(), pick=st.integers(0, 1000))
        def collect(case: Any, swap: bool, pick: int) -> None:
            _GENERATED.append((case, swap, pick))

        collect()
    return _GENERATED


@pytest.mark.timeout(600)
@pytest.mark.xdist_group("tenant-schemathesis")  # both databases in one worker: the cases are generated once
def test_api_answers_every_generated_request_without_a_5xx(db_url: str) -> None:
    tokens, known = _seed(db_url)
    # In process (schemathesis' ASGI transport runs the app's lifespan, so the certification writer
    # runs too): no server start-up and no sockets in the time budget. The app must use the seed's
    # secret, because it unwraps the signing keys the seed wrapped.
    app = create_app(Settings(database_url=db_url))
    cases = _cases(schemathesis.openapi.from_asgi("/openapi.json", app))
    reached = 0
    try:
        for case, swap, pick in cases:
            if swap:
                _use_known(case, known, pick)
            user = "fin-chief" if any(p in case.path for p in CHIEF_PATHS) else "fin-accountant"
            headers = {"Authorization": f"Bearer {tokens[user]}"}
            response = case.call(app=app, headers=headers)
            reached += response.status_code not in (401, 403, 404)
            _check(case, response, headers)
    finally:
        shutdown_lifespans()  # stops the writer and disposes the engine before the database is dropped
    assert len(cases) >= CASES
    assert reached >= len(cases) // 2  # most requests got past authentication into the handlers
