"""Which transaction a request belongs to: a table of (method, route pattern) rows, not raw URLs.

A county's users do a handful of things (log in, look at budget lines, 簽證, vouchers, reports,
exports); timings are kept per transaction so a chart has a few lines, not one per URL. The table is
data: a route the app adds later falls into OTHER until a row names it. Patterns use the app's own
route templates (`{name}` stands for one path segment), so a line here reads like the app's routes.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs


class Transaction(enum.StrEnum):
    LOG_IN = "log_in"
    LOG_OUT = "log_out"
    HOME = "home"
    BUDGET_LINES = "budget_lines"
    BUDGET_LINE = "budget_line"
    BUDGET_CHANGE = "budget_change"
    CERTIFY = "certify"
    CERTIFICATIONS = "certifications"
    RELEASE = "release"
    VOUCHERS = "vouchers"
    VOUCHER = "voucher"
    PAYMENT = "payment"
    JOURNAL = "journal"
    PERIOD_CLOSE = "period_close"
    REPORT = "report"
    EXPORT = "export"
    AUDIT = "audit"
    ADMIN = "admin"
    STATIC = "static"
    HEALTH = "health"
    OTHER = "other"


# What an admin reads on the console.
TITLES: Mapping[Transaction, str] = {
    Transaction.LOG_IN: "登入",
    Transaction.LOG_OUT: "登出",
    Transaction.HOME: "首頁",
    Transaction.BUDGET_LINES: "預算科目列表",
    Transaction.BUDGET_LINE: "預算科目",
    Transaction.BUDGET_CHANGE: "分配/追加/流用",
    Transaction.CERTIFY: "簽證",
    Transaction.CERTIFICATIONS: "簽證查詢",
    Transaction.RELEASE: "解除保留",
    Transaction.VOUCHERS: "傳票查詢",
    Transaction.VOUCHER: "傳票",
    Transaction.PAYMENT: "付款",
    Transaction.JOURNAL: "分錄",
    Transaction.PERIOD_CLOSE: "關帳",
    Transaction.REPORT: "報表",
    Transaction.EXPORT: "匯出 (XLSX/ODS)",
    Transaction.AUDIT: "稽核紀錄",
    Transaction.ADMIN: "管理",
    Transaction.STATIC: "靜態檔案",
    Transaction.HEALTH: "健康檢查",
    Transaction.OTHER: "其他",
}

_EXPORT_FORMATS = frozenset({"xlsx", "ods"})


@dataclass(frozen=True)
class Route:
    """One row: `methods` on `pattern` (an app route template) is `transaction`.

    `query` narrows a row to requests whose query string has one of the given values for a name
    (the report route is a report in HTML and an export with ?format=xlsx).
    """

    methods: frozenset[str]
    pattern: str
    transaction: Transaction
    query: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _r(methods: str, pattern: str, transaction: Transaction,
       query: Mapping[str, frozenset[str]] | None = None) -> Route:
    return Route(frozenset(methods.split()), pattern, transaction, dict(query or {}))


# First match wins: rows with a query condition come before the row without it.
ROUTES: Sequence[Route] = (
    # --- session (web UI)
    _r("GET POST", "/login", Transaction.LOG_IN),
    _r("POST", "/logout", Transaction.LOG_OUT),
    _r("GET", "/", Transaction.HOME),
    _r("POST", "/agency", Transaction.HOME),
    _r("GET POST", "/account", Transaction.ADMIN),
    _r("POST", "/account/password", Transaction.ADMIN),
    # --- budget
    _r("GET", "/budget", Transaction.BUDGET_LINES),
    _r("POST", "/budget/transfer", Transaction.BUDGET_CHANGE),
    _r("GET", "/api/v1/budget-lines", Transaction.BUDGET_LINES),
    _r("GET", "/api/v1/budget-lines/{budget_line_id}", Transaction.BUDGET_LINE),
    _r("POST", "/api/v1/budget-lines/{budget_line_id}/allotments", Transaction.BUDGET_CHANGE),
    _r("POST", "/api/v1/budget-lines/{budget_line_id}/amendments", Transaction.BUDGET_CHANGE),
    _r("POST", "/api/v1/transfers", Transaction.BUDGET_CHANGE),
    # --- 簽證
    _r("GET", "/certifications", Transaction.CERTIFICATIONS),
    _r("POST", "/certifications", Transaction.CERTIFY),
    _r("POST", "/certifications/{certification_id}/release", Transaction.RELEASE),
    _r("GET", "/api/v1/certifications", Transaction.CERTIFICATIONS),
    _r("POST", "/api/v1/certifications", Transaction.CERTIFY),
    _r("POST", "/api/v1/certifications/{certification_id}/release", Transaction.RELEASE),
    # --- vouchers and payments
    _r("GET", "/vouchers", Transaction.VOUCHERS),
    _r("GET", "/vouchers/new", Transaction.VOUCHER),
    _r("POST", "/vouchers", Transaction.VOUCHER),
    _r("GET POST", "/vouchers/{voucher_id}/edit", Transaction.VOUCHER),
    _r("GET", "/vouchers/{voucher_id}", Transaction.VOUCHERS),
    _r("POST", "/vouchers/{voucher_id}/sign", Transaction.VOUCHER),
    _r("POST", "/vouchers/{voucher_id}/reject", Transaction.VOUCHER),
    _r("POST", "/vouchers/{voucher_id}/pay", Transaction.PAYMENT),
    _r("GET", "/payments", Transaction.PAYMENT),
    _r("POST", "/payments/batch", Transaction.PAYMENT),
    _r("POST", "/api/v1/vouchers", Transaction.VOUCHER),
    _r("GET", "/api/v1/vouchers/{voucher_id}", Transaction.VOUCHERS),
    _r("PUT", "/api/v1/vouchers/{voucher_id}", Transaction.VOUCHER),
    _r("POST", "/api/v1/vouchers/{voucher_id}/sign", Transaction.VOUCHER),
    _r("POST", "/api/v1/vouchers/{voucher_id}/reject", Transaction.VOUCHER),
    _r("POST", "/api/v1/vouchers/{voucher_id}/pay", Transaction.PAYMENT),
    # --- journal and periods
    _r("GET POST", "/journal", Transaction.JOURNAL),
    _r("POST", "/journal/{entry_id}/reverse", Transaction.JOURNAL),
    _r("GET POST", "/api/v1/journal", Transaction.JOURNAL),
    _r("POST", "/api/v1/journal/{entry_id}/reverse", Transaction.JOURNAL),
    _r("GET", "/periods", Transaction.PERIOD_CLOSE),
    _r("POST", "/periods/close", Transaction.PERIOD_CLOSE),
    _r("POST", "/api/v1/periods/close", Transaction.PERIOD_CLOSE),
    # --- reports and exports
    _r("GET", "/reports", Transaction.REPORT),
    _r("GET", "/reports/download", Transaction.EXPORT),
    _r("GET", "/api/v1/reports/{kind}", Transaction.EXPORT, {"format": _EXPORT_FORMATS}),
    _r("GET", "/api/v1/reports/{kind}", Transaction.REPORT),
    # --- oversight and administration
    _r("GET", "/audit", Transaction.AUDIT),
    _r("GET POST", "/admin/users", Transaction.ADMIN),
    _r("GET POST", "/admin/users/{user_id}", Transaction.ADMIN),
    _r("POST", "/admin/users/{user_id}/password", Transaction.ADMIN),
    _r("POST", "/admin/users/{user_id}/tokens", Transaction.ADMIN),
    _r("POST", "/admin/tokens/{token_id}/revoke", Transaction.ADMIN),
    _r("GET POST", "/delegations", Transaction.ADMIN),
    _r("POST", "/delegations/{delegation_id}/delete", Transaction.ADMIN),
    # --- plumbing
    _r("GET", "/static/{name}", Transaction.STATIC),
    _r("GET HEAD", "/healthz", Transaction.HEALTH),
    _r("GET", "/metrics", Transaction.HEALTH),
)

_SEGMENT = re.compile(r"\{[^/{}]+\}")


def _compile(pattern: str) -> re.Pattern[str]:
    parts = _SEGMENT.split(pattern)
    return re.compile("^" + "[^/]+".join(re.escape(part) for part in parts) + "/?$")


@dataclass(frozen=True)
class _Compiled:
    route: Route
    regex: re.Pattern[str]


class TransactionTable:
    """The table, compiled once; `classify` is what the gateway log parser calls per line.

    Answers are cached (a county's users ask for the same few URLs over and over); the cache is
    bounded, so ids in paths cannot grow it.
    """

    def __init__(self, routes: Sequence[Route] = ROUTES, cache_size: int = 8192) -> None:
        self._rows = tuple(_Compiled(route, _compile(route.pattern)) for route in routes)
        self.classify = functools.lru_cache(maxsize=cache_size)(self._classify)  # type: ignore[method-assign]

    def classify(self, method: str, path: str, query: str = "") -> Transaction:
        return self._classify(method, path, query)

    def _classify(self, method: str, path: str, query: str = "") -> Transaction:
        path = path.split("?", 1)[0] or "/"
        params: dict[str, list[str]] | None = None
        method = method.upper()
        for row in self._rows:
            if method not in row.route.methods or not row.regex.match(path):
                continue
            if row.route.query:
                if params is None:
                    params = parse_qs(query.lstrip("?"))
                if not all(set(params.get(name, ())) & wanted for name, wanted in row.route.query.items()):
                    continue
            return row.route.transaction
        return Transaction.OTHER


DEFAULT_TABLE = TransactionTable()


def classify(method: str, path: str, query: str = "") -> Transaction:
    return DEFAULT_TABLE.classify(method, path, query)
