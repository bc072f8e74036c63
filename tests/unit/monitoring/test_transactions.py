from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from monitoring.transactions import TITLES, Transaction, classify
from tenant_app.app import build_app

# Routes deliberately left to OTHER: the bench-only naive certification (never on a county's VM).
UNGROUPED = {("POST", "/api/v1/naive/certifications")}


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/login", "", Transaction.LOG_IN),
    ("POST", "/login", "", Transaction.LOG_IN),
    ("GET", "/budget", "", Transaction.BUDGET_LINES),
    ("GET", "/api/v1/budget-lines/17", "", Transaction.BUDGET_LINE),
    ("GET", "/api/v1/budget-lines/17/", "", Transaction.BUDGET_LINE),
    ("POST", "/api/v1/certifications", "", Transaction.CERTIFY),
    ("POST", "/certifications", "", Transaction.CERTIFY),
    ("GET", "/certifications", "", Transaction.CERTIFICATIONS),
    ("POST", "/certifications/5/release", "", Transaction.RELEASE),
    ("POST", "/vouchers", "", Transaction.VOUCHER),
    ("GET", "/vouchers/12", "", Transaction.VOUCHERS),
    ("GET", "/reports", "?kind=execution", Transaction.REPORT),
    ("GET", "/reports/download", "?kind=execution&format=xlsx", Transaction.EXPORT),
    ("GET", "/api/v1/reports/execution", "?year=2026&format=xlsx", Transaction.EXPORT),
    ("GET", "/api/v1/reports/execution", "?year=2026&format=html", Transaction.REPORT),
    ("GET", "/api/v1/reports/execution", "", Transaction.REPORT),
    ("DELETE", "/budget", "", Transaction.OTHER),
    ("GET", "/api/v1/budget-lines/17/extra", "", Transaction.OTHER),
    ("GET", "/nowhere", "", Transaction.OTHER),
])
def test_requests_are_grouped_by_method_and_route_not_raw_url(method: str, path: str, query: str,
                                                               expected: Transaction) -> None:
    assert classify(method, path, query) is expected


def test_every_route_of_the_app_belongs_to_a_transaction() -> None:
    missing = []
    for route in build_app().routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            concrete = route.path_format.replace("{", "").replace("}", "")  # one segment per parameter
            grouped = classify(method, concrete) is not Transaction.OTHER
            if not grouped and (method, route.path_format) not in UNGROUPED:
                missing.append((method, route.path_format))
    assert not missing, f"add these routes to monitoring/transactions.py: {missing}"


def test_every_transaction_has_a_title() -> None:
    assert set(TITLES) == set(Transaction)
