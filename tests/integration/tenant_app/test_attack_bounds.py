"""Attack suite, issue 14 items 1, 3, 6, 7 and 8: hostile and malformed requests against a seeded
county on SQLite and PostgreSQL. Each answer must be a 4xx with a stable code and a bounded body,
never a 500, never unbounded work, and nothing may be written.

Item 2 (one bad certification failing others in its group) is test_attack_certify_group.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from tenant_app.db import session_scope
from tenant_app.models import BudgetLine, FiscalYear, JournalEntry, JournalLine, PeriodClose
from tenant_app.seed import DEMO_PASSWORD
from tests.integration.tenant_app.core_support import County, seeded_county
from tests.integration.tenant_app.web_support import login, post_form

# The limits as docs/tenant_app.md states them (spelled out, so this suite also runs against code
# that predates tenant_app/domains.py and shows what it did).
MAX_ERROR_BODY = 4096
MONEY_MAX = 10**12
HUGE = 2**63  # one past BIGINT: what overflowed the drivers
HALF = 2**62  # two of these overflowed the running totals (item 3)
NAN_BODIES = ('{"budget_line_id": %d, "amount": NaN}', '{"budget_line_id": %d, "amount": Infinity}',
              '{"budget_line_id": %d, "amount": -Infinity}')


@pytest.fixture
def county(db_url: str) -> Iterator[County]:
    with seeded_county(db_url) as seeded:
        yield seeded


def _refused(response: object, status: int, code: str) -> dict[str, object]:
    """A refusal with the expected status and stable code, in a JSON body of at most 4 KiB."""
    assert response.status_code == status, (response.status_code, response.text[:500])  # type: ignore[attr-defined]
    raw = response.content  # type: ignore[attr-defined]
    assert len(raw) <= MAX_ERROR_BODY, len(raw)
    body = json.loads(raw)
    assert body["code"] == code, body
    return body


def _count(county: County, model: type) -> int:
    with session_scope(county.engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _year(county: County) -> int:
    with session_scope(county.engine) as session:
        return session.get_one(FiscalYear, county.fiscal_year_id).year


def _manual(county: County, debit: object, credit: object, **overrides: object) -> object:
    lines = overrides.pop("lines", [{"account_code": "5101", "debit": debit},
                                    {"account_code": "1101", "credit": credit}])
    body = {"agency_id": county.fin_agency_id, "fiscal_year_id": county.fiscal_year_id, "period": 1,
            "description": "調整", "lines": lines, **overrides}
    return county.client.post("/api/v1/journal", json=body, headers=county.auth("fin-accountant"))


# ---- item 1: one request must not take the machine's memory ------------------------------------


def test_item1_period_close_with_huge_period_is_refused_at_the_edge(county: County) -> None:
    client, chief = county.client, county.auth("fin-chief")
    target = {"agency_id": county.fin_agency_id, "fiscal_year_id": county.fiscal_year_id}
    # 10**6 answered a 13.8 MB 409 listing every "open" period; it must be a small 422 now.
    started = time.monotonic()
    _refused(client.post("/api/v1/periods/close", json={**target, "period": 1_000_000}, headers=chief),
             422, "period_out_of_range")
    _refused(client.post("/api/v1/periods/close", json={**target, "period": HUGE}, headers=chief),
             422, "period_out_of_range")
    assert time.monotonic() - started < 5
    assert _count(county, PeriodClose) == 0

    # The web form shares the service: refused there too, with a page, not a 500 or a 409.
    login(client, "fin-chief", DEMO_PASSWORD)
    for period in ("1000000", str(HUGE), "14", "0", "-3", "2.0"):
        page = post_form(client, "/periods/close", {"period": period}, from_page="/periods")
        assert page.status_code == 422, (period, page.status_code)  # type: ignore[attr-defined]
        assert len(page.content) < 200_000  # type: ignore[attr-defined]
    assert _count(county, PeriodClose) == 0

    # A page size or offset from the query is bounded too.
    listing = f"/api/v1/journal?agency_id={county.fin_agency_id}&fiscal_year_id={county.fiscal_year_id}"
    _refused(client.get(listing + "&limit=100000000", headers=chief), 422, "number_out_of_range")
    _refused(client.get(listing + f"&offset={HUGE}", headers=chief), 422, "number_out_of_range")


# ---- item 3: money has an upper bound, totals stay exact, reports answer --------------------------


def test_item3_money_above_the_bound_is_refused_and_reports_keep_answering(county: County) -> None:
    client, chief = county.client, county.auth("fin-chief")
    line = county.line(county.fin_agency_id, "2000")
    entries = _count(county, JournalEntry)

    _refused(_manual(county, HALF, HALF), 422, "money_out_of_range")
    _refused(_manual(county, MONEY_MAX + 1, MONEY_MAX + 1), 422, "money_out_of_range")
    assert _count(county, JournalEntry) == entries

    for amount in (HALF, -HALF, MONEY_MAX + 1):
        amended = client.post(f"/api/v1/budget-lines/{line.id}/amendments",
                              json={"amount": amount, "reason": "追加"}, headers=chief)
        _refused(amended, 422, "money_out_of_range")

    # At the bound itself everything is accepted and stays an exact integer.
    assert _manual(county, MONEY_MAX, MONEY_MAX).status_code == 201  # type: ignore[attr-defined]
    assert _manual(county, MONEY_MAX, MONEY_MAX).status_code == 201  # type: ignore[attr-defined]
    for _ in range(2):
        amended = client.post(f"/api/v1/budget-lines/{line.id}/amendments",
                              json={"amount": MONEY_MAX, "reason": "追加"}, headers=chief)
        assert amended.status_code == 201, amended.text
    balance = county.balance(line.id)
    assert balance["amended"] == 2 * MONEY_MAX and isinstance(balance["amended"], int)
    with session_scope(county.engine) as session:
        stored = session.get_one(BudgetLine, line.id).amended
        assert type(stored) is int and stored == 2 * MONEY_MAX

    year = _year(county)
    for kind in ("trial-balance", "balance-sheet", "ledger", "execution"):
        for fmt in ("html", "xlsx"):
            report = client.get(f"/api/v1/reports/{kind}?year={year}&format={fmt}", headers=chief)
            assert report.status_code == 200, (kind, fmt, report.text[:300])


# ---- item 6: a journal line may not name another agency's budget line ----------------------------


def test_item6_journal_line_on_another_agencys_budget_line_is_refused(county: County) -> None:
    with session_scope(county.engine) as session:
        other = session.scalars(select(BudgetLine.id).where(BudgetLine.agency_id != county.fin_agency_id)
                                .limit(1)).one()
        before = int(session.scalar(select(func.count()).select_from(JournalLine)
                                    .where(JournalLine.budget_line_id == other)) or 0)
    lines = [{"account_code": "5101", "debit": 10, "budget_line_id": other},
             {"account_code": "1101", "credit": 10}]
    body = _refused(_manual(county, 0, 0, lines=lines), 422, "journal_line_other_agency")
    assert body["detail"]["budget_line_id"] == other  # type: ignore[index]
    with session_scope(county.engine) as session:
        after = int(session.scalar(select(func.count()).select_from(JournalLine)
                                   .where(JournalLine.budget_line_id == other)) or 0)
    assert after == before


# ---- item 7: a clear 4xx where a 500 was -----------------------------------------------------------


def test_item7_out_of_range_ids_and_periods_are_4xx_everywhere(county: County) -> None:
    client = county.client
    clerk, accountant = county.auth("fin-clerk"), county.auth("fin-accountant")
    chief = county.auth("fin-chief")
    line = county.line(county.fin_agency_id, "2000")
    for path in (f"/api/v1/budget-lines/{HUGE}", f"/api/v1/vouchers/{HUGE}",
                 f"/api/v1/certifications?budget_line_id={HUGE}",
                 f"/api/v1/budget-lines?agency_id={HUGE}",
                 f"/api/v1/journal?agency_id={county.fin_agency_id}&fiscal_year_id={HUGE}"):
        _refused(client.get(path, headers=accountant), 422, "id_out_of_range")
    _refused(client.post("/api/v1/certifications", json={"budget_line_id": HUGE, "amount": 1}, headers=clerk),
             422, "id_out_of_range")
    _refused(client.post(f"/api/v1/journal/{HUGE}/reverse", json={"period": 1}, headers=accountant),
             422, "id_out_of_range")
    _refused(client.post("/api/v1/transfers", json={"from_line_id": line.id, "to_line_id": HUGE, "amount": 1,
                                                     "reason": "x"}, headers=chief), 422, "id_out_of_range")

    entry = _manual(county, 7, 7).json()  # type: ignore[attr-defined]
    for period in (0, 14, -3):
        _refused(_manual(county, 5, 5, period=period), 422, "period_out_of_range")
        _refused(client.post(f"/api/v1/journal/{entry['id']}/reverse", json={"period": period},
                             headers=accountant), 422, "period_out_of_range")
        _refused(client.post("/api/v1/periods/close", json={
            "agency_id": county.fin_agency_id, "fiscal_year_id": county.fiscal_year_id, "period": period},
            headers=chief), 422, "period_out_of_range")

    # Foreign keys: an unknown account, fiscal year or budget line is named, not a traceback.
    _refused(_manual(county, 0, 0, lines=[{"account_code": "9999", "debit": 5},
                                          {"account_code": "1101", "credit": 5}]), 422, "reference_not_found")
    _refused(_manual(county, 5, 5, fiscal_year_id=999_999), 422, "reference_not_found")
    _refused(_manual(county, 0, 0, lines=[{"account_code": "5101", "debit": 5, "budget_line_id": 999_999},
                                          {"account_code": "1101", "credit": 5}]), 422, "reference_not_found")

    # NaN and Infinity: refused, and the refusal itself serialises.
    for template in NAN_BODIES:
        response = client.post("/api/v1/certifications", content=template % line.id,
                               headers={**clerk, "Content-Type": "application/json"})
        _refused(response, 422, "money_not_integer")

    # Deep nesting on the certification route (fast path) and on a FastAPI route.
    deep = "[" * 1900 + "]" * 1900
    for path in ("/api/v1/certifications", "/api/v1/journal"):
        response = client.post(path, content=f'{{"budget_line_id": {deep}, "amount": 1}}',
                               headers={**clerk, "Content-Type": "application/json"})
        _refused(response, 400, "json_too_deep")
    # A body above 1 MiB is refused before it is read.
    big = client.post("/api/v1/certifications", content=b'{"purpose": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                      headers={**clerk, "Content-Type": "application/json"})
    _refused(big, 413, "payload_too_large")
    assert county.balance(line.id)["certified"] == 0


def test_item7_constraint_failures_map_to_stable_codes(county: County) -> None:
    """The last resort behind the services' checks: what the database itself refuses, on both."""
    from tenant_app.api.errors import constraint_refusal

    line = county.line(county.fin_agency_id, "2000")
    assert _manual(county, 7, 7).status_code == 201  # type: ignore[attr-defined]
    with session_scope(county.engine) as session:
        good = session.scalars(select(JournalEntry).limit(1)).one()
        row = {"agency_id": good.agency_id, "fiscal_year_id": good.fiscal_year_id, "kind": good.kind.value,
               "number": 999_999, "period": 1, "entry_date": good.entry_date,
               "event_kind": good.event_kind.value, "source_type": "", "description": "x",
               "posted_at": good.posted_at}
    cases = [({**row, "period": 14}, "period_out_of_range", 422),
             ({**row, "fiscal_year_id": 999_999}, "reference_not_found", 422),
             ({**row, "number": good.number}, "duplicate", 409)]
    for values, code, status in cases:
        with pytest.raises(IntegrityError) as caught, session_scope(county.engine) as session:
            session.execute(insert(JournalEntry).values(**values))
        error, answered = constraint_refusal(caught.value)
        assert (error.code.value, answered) == (code, status), str(caught.value.orig)
    assert line.id  # the seeded county is untouched by the refused inserts
    assert county.balance(line.id)["certified"] == 0


# ---- item 8: the smaller ones -----------------------------------------------------------------------


def test_item8_small_refusals_have_the_right_code_and_a_bounded_body(county: County) -> None:
    client, clerk, chief = county.client, county.auth("fin-clerk"), county.auth("fin-chief")
    line = county.line(county.fin_agency_id, "2000")
    for amount in (0, -1):
        _refused(client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": amount},
                             headers=clerk), 422, "money_not_positive")
    for bad in ("2", 2.0, True):
        _refused(client.post("/api/v1/certifications", json={"budget_line_id": bad, "amount": 1},
                             headers=clerk), 422, "not_integer")
        with_period = {"budget_line_id": line.id, "amount": 1, "period": bad}
        _refused(client.post("/api/v1/certifications", json=with_period, headers=clerk), 422, "not_integer")
    for path in (f"/api/v1/budget-lines/{line.id}.0", f"/api/v1/budget-lines/+{line.id}"):
        _refused(client.get(path, headers=clerk), 422, "not_integer")

    # Closing period 14 is a range error, not "period 1 is open".
    closing = _refused(client.post("/api/v1/periods/close", json={
        "agency_id": county.fin_agency_id, "fiscal_year_id": county.fiscal_year_id, "period": 14},
        headers=chief), 422, "period_out_of_range")
    assert "open" not in json.dumps(closing)

    # A 1 MB bad field is not echoed: the whole refusal stays under 4 KiB.
    megabyte = "x" * 1_000_000
    for body in ({"budget_line_id": line.id, "amount": 1, "purpose": megabyte},
                 {"budget_line_id": line.id, "amount": megabyte},
                 {"budget_line_id": megabyte, "amount": 1}):
        response = client.post("/api/v1/certifications", json=body, headers=clerk)
        assert response.status_code == 422 and len(response.content) <= MAX_ERROR_BODY, len(response.content)
        assert megabyte[:1000] not in response.text

    # JSON sent as text/plain (what a cross-site form can send) is refused on the certification route.
    valid = {"budget_line_id": line.id, "amount": 1}
    plain = client.post("/api/v1/certifications", content=json.dumps(valid),
                        headers={**clerk, "Content-Type": "text/plain"})
    _refused(plain, 415, "unsupported_media_type")
    assert county.balance(line.id)["certified"] == 0
    accepted = client.post("/api/v1/certifications", json=valid, headers=clerk)
    assert accepted.status_code == 201, accepted.text
