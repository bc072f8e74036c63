"""The core JSON API against a real database (SQLite and PostgreSQL): certification, vouchers with
three signatures, payment, transfers, period close, journal reversal; every refusal a JSON error
with a stable code, and nothing half-written."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from tenant_app.db import session_scope
from tenant_app.models import Certification, JournalEntry, JournalLine
from tenant_app.rules.errors import RuleViolationError

from .core_support import County, seeded_county

SERVER_TIMING = re.compile(r"^app;dur=\d+\.\d+, db;dur=\d+\.\d+$")
THIS_MONTH = dt.date.today().month


@pytest.fixture
def county(db_url: str) -> Iterator[County]:
    with seeded_county(db_url) as seeded:
        yield seeded


def _count(county: County, model: type) -> int:
    with session_scope(county.engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _journal_balanced(county: County) -> None:
    with session_scope(county.engine) as session:
        rows = session.execute(select(JournalLine.entry_id, func.sum(JournalLine.debit),
                                      func.sum(JournalLine.credit)).group_by(JournalLine.entry_id)).all()
    assert rows and all(debit == credit for _, debit, credit in rows)


def test_health_metrics_and_server_timing_on_every_response(county: County) -> None:
    client = county.client
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    for response in (health, client.get("/metrics"), client.get("/api/v1/budget-lines/999999",
                                                                  headers=county.auth("fin-clerk")),
                     client.get("/api/v1/budget-lines?agency_id=1"), client.get("/no-such-page")):
        assert SERVER_TIMING.match(response.headers["server-timing"]), response.headers
    line = county.line(county.fin_agency_id, "2000")
    client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 5},
                headers=county.auth("fin-clerk"))
    metrics = client.get("/metrics").text
    assert "tenant_app_certifications_total 1.0" in metrics
    assert "tenant_app_request_seconds_bucket" in metrics


def test_certification_refusals_are_explained_and_write_nothing(county: County) -> None:
    client, clerk = county.client, county.auth("fin-clerk")
    line = county.line(county.fin_agency_id, "2000")
    available = county.balance(line.id)["available"]

    ok = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 1_000,
                                                     "purpose": "文具"}, headers=clerk)
    assert ok.status_code == 201, ok.text
    assert ok.json()["available_before"] == available and ok.json()["available_after"] == available - 1_000
    assert county.balance(line.id)["available"] == available - 1_000
    _journal_balanced(county)
    before = _count(county, Certification)

    too_much = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": available},
                           headers=clerk)
    assert too_much.status_code == 409
    assert too_much.json()["code"] == "insufficient_balance"
    assert too_much.json()["detail"] == {"budget_line_id": line.id, "available": available - 1_000,
                                         "requested": available}

    floating = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 10.0},
                           headers=clerk)
    assert floating.status_code == 422 and floating.json()["code"] == "money_not_integer"

    other_agency = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 1},
                               headers=county.auth("edu-clerk"))
    assert other_agency.status_code == 403 and other_agency.json()["code"] == "forbidden_agency"

    auditor = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 1},
                          headers=county.auth("auditor"))
    assert auditor.status_code == 403 and auditor.json()["code"] == "forbidden_role"

    anonymous = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 1})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"

    assert _count(county, Certification) == before
    assert county.balance(line.id)["available"] == available - 1_000

    release = client.post(f"/api/v1/certifications/{ok.json()['id']}/release", json={}, headers=clerk)
    assert release.status_code == 200 and release.json()["status"] == "settled"
    assert county.balance(line.id)["available"] == available
    _journal_balanced(county)


def test_voucher_signed_three_times_is_paid_and_refusals_on_the_way(county: County) -> None:
    client = county.client
    line = county.line(county.fin_agency_id, "2000")
    cert = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 10_000},
                       headers=county.auth("fin-clerk")).json()
    voucher_body = {"agency_id": county.fin_agency_id, "certification_id": cert["id"], "payee": "大同文具行",
                    "amount": 8_000, "period": THIS_MONTH, "einvoices": ["AB12345678"],
                    "lines": [{"budget_line_id": line.id, "amount": 8_000, "description": "影印紙"}]}
    created = client.post("/api/v1/vouchers", json=voucher_body, headers=county.auth("fin-clerk"))
    assert created.status_code == 201, created.text
    voucher = created.json()

    duplicate = client.post("/api/v1/vouchers", json={**voucher_body, "amount": 1_000, "lines": [
        {"budget_line_id": line.id, "amount": 1_000}]}, headers=county.auth("fin-clerk"))
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "einvoice_duplicate"

    over = client.post("/api/v1/vouchers", json={**voucher_body, "einvoices": [], "amount": 10_001, "lines": [
        {"budget_line_id": line.id, "amount": 10_001}]}, headers=county.auth("fin-clerk"))
    assert over.status_code == 422 and over.json()["code"] == "certification_over_remaining"

    unsigned = client.post(f"/api/v1/vouchers/{voucher['id']}/pay", headers=county.auth("fin-accountant"))
    assert unsigned.status_code == 422 and unsigned.json()["code"] == "voucher_not_approved"
    assert "signatures_invalid" in {e["code"] for e in unsigned.json()["errors"]}

    for signer in ("fin-clerk", "fin-chief"):
        signed = client.post(f"/api/v1/vouchers/{voucher['id']}/sign", json={}, headers=county.auth(signer))
        assert signed.status_code == 200, signed.text
    # The preparer can never sign again as the agency head's step.
    self_sign = client.post(f"/api/v1/vouchers/{voucher['id']}/sign", json={},
                            headers=county.auth("fin-clerk"))
    assert self_sign.status_code == 403 and self_sign.json()["code"] == "signatures_invalid"
    approved = client.post(f"/api/v1/vouchers/{voucher['id']}/sign", json={}, headers=county.auth("fin-head"))
    assert approved.json()["status"] == "approved" and len(approved.json()["signatures"]) == 3

    paid = client.post(f"/api/v1/vouchers/{voucher['id']}/pay", headers=county.auth("fin-accountant"))
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid"
    balance = county.balance(line.id)
    assert balance["paid_on_certified"] == 8_000 and balance["certified"] == 10_000
    again = client.post(f"/api/v1/vouchers/{voucher['id']}/pay", headers=county.auth("fin-accountant"))
    assert again.status_code == 422 and again.json()["code"] == "voucher_not_approved"
    assert county.balance(line.id)["paid_on_certified"] == 8_000
    _journal_balanced(county)


def test_transfers_follow_the_twenty_percent_and_personnel_rules(county: County) -> None:
    client, chief = county.client, county.auth("fin-chief")
    services = county.line(county.fin_agency_id, "2000")  # 業務費 12 000 000
    equipment = county.line(county.fin_agency_id, "3000")  # 設備及投資 6 000 000
    personnel = county.line(county.fin_agency_id, "1000")  # 人事費

    def transfer(source: int, target: int, amount: int) -> dict:
        body = {"from_line_id": source, "to_line_id": target, "amount": amount, "reason": "業務需要"}
        response = client.post("/api/v1/transfers", json=body, headers=chief)
        return {"status": response.status_code, **response.json()}

    into_personnel = transfer(services.id, personnel.id, 1_000)
    assert into_personnel["status"] == 422 and into_personnel["code"] == "transfer_into_personnel"
    over_in = transfer(services.id, equipment.id, 1_200_001)  # 20% of 6 000 000 is 1 200 000
    assert over_in["status"] == 422 and "transfer_over_limit_in" in {e["code"] for e in over_in["errors"]}

    before = county.balance(services.id)["available"], county.balance(equipment.id)["available"]
    done = transfer(services.id, equipment.id, 1_200_000)
    assert done["status"] == 201, done
    assert county.balance(services.id)["available"] == before[0] - 1_200_000
    assert county.balance(equipment.id)["available"] == before[1] + 1_200_000
    assert county.balance(equipment.id)["transferred_in"] == 1_200_000
    assert transfer(services.id, equipment.id, 1)["code"] == "transfer_over_limit_in"

    body = {"from_line_id": services.id, "to_line_id": equipment.id, "amount": 1, "reason": "x"}
    clerk_try = client.post("/api/v1/transfers", json=body, headers=county.auth("fin-clerk"))
    assert clerk_try.status_code == 403


def test_period_close_locks_and_journal_corrections_are_reversals(county: County) -> None:
    client = county.client
    line = county.line(county.fin_agency_id, "2000")
    cert = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 300, "period": 1},
                       headers=county.auth("fin-clerk")).json()

    def close(period: int) -> dict:
        response = client.post("/api/v1/periods/close", json={
            "agency_id": county.fin_agency_id, "fiscal_year_id": county.fiscal_year_id, "period": period},
            headers=county.auth("fin-chief"))
        return {"status": response.status_code, **response.json()}

    assert close(2)["code"] == "period_earlier_open"
    assert close(1)["status"] == 201
    assert close(1)["code"] == "period_already_closed"
    locked = client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 1, "period": 1},
                         headers=county.auth("fin-clerk"))
    assert locked.status_code == 409 and locked.json()["code"] == "period_closed"

    entries = client.get(f"/api/v1/journal?agency_id={county.fin_agency_id}&fiscal_year_id="
                         f"{county.fiscal_year_id}", headers=county.auth("fin-accountant")).json()
    (original,) = [e for e in entries if e["source_type"] == "certification" and e["source_id"] == cert["id"]]
    in_closed = client.post(f"/api/v1/journal/{original['id']}/reverse", json={"period": 1},
                            headers=county.auth("fin-accountant"))
    assert in_closed.status_code == 409 and in_closed.json()["code"] == "period_closed"
    reversal = client.post(f"/api/v1/journal/{original['id']}/reverse", json={"period": 2, "reason": "誤植"},
                           headers=county.auth("fin-accountant"))
    assert reversal.status_code == 201, reversal.text
    assert reversal.json()["reversal_of_id"] == original["id"]
    assert [(ln["debit"], ln["credit"]) for ln in reversal.json()["lines"]] == [
        (ln["credit"], ln["debit"]) for ln in original["lines"]]
    twice = client.post(f"/api/v1/journal/{original['id']}/reverse", json={"period": 2},
                        headers=county.auth("fin-accountant"))
    assert twice.status_code == 409 and twice.json()["code"] == "journal_already_reversed"

    with pytest.raises(RuleViolationError) as refused, session_scope(county.engine) as session:
        session.get_one(JournalEntry, original["id"]).description = "edited"
        session.flush()
    assert refused.value.errors[0].code.value == "journal_immutable"

    unbalanced = client.post("/api/v1/journal", json={
        "agency_id": county.fin_agency_id, "fiscal_year_id": county.fiscal_year_id, "period": 2,
        "description": "調整", "lines": [{"account_code": "5101", "debit": 10},
                                         {"account_code": "1101", "credit": 9}]},
        headers=county.auth("fin-accountant"))
    assert unbalanced.status_code == 422 and unbalanced.json()["code"] == "journal_unbalanced"
    _journal_balanced(county)


def test_raw_sql_cannot_change_or_delete_posted_entries(county: County) -> None:
    line = county.line(county.fin_agency_id, "2000")
    county.client.post("/api/v1/certifications", json={"budget_line_id": line.id, "amount": 10},
                       headers=county.auth("fin-clerk"))
    for statement in ("UPDATE journal_entry SET description = 'x'", "DELETE FROM journal_line",
                      "UPDATE journal_line SET debit = debit + 1 WHERE debit > 0"):
        with pytest.raises(DBAPIError, match="immutable"), county.engine.begin() as conn:
            conn.execute(text(statement))
    _journal_balanced(county)
