"""JSON error bodies for the API: {"code", "message" (zh-TW), "message_en", "detail", "errors": [...]}.

Every refusal carries a stable `code`, and every body is bounded: strings in it are cut to
`MAX_STRING` characters, lists to `MAX_ITEMS`, and a body still above `MAX_ERROR_BODY` bytes keeps
only its code and messages, so a 1 MB field is never echoed back. Non-finite floats (a NaN sent
as money) are shown as text, so the 422 itself always serialises.

Last resorts, for what the edge domains (tenant_app/domains.py) and the services' own checks did
not catch: a database constraint (IntegrityError) answers 409/422 with a code named after the
constraint, DataError and OverflowError answer 422. None of them is a 500.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenant_app.rules.errors import ErrorCode, RuleError, RuleViolationError

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
MAX_ERROR_BODY = 4096  # bytes of JSON
MAX_STRING = 200  # characters of any one string in an error body
MAX_ITEMS = 10  # entries of any one list in an error body
_MAX_NESTING = 6

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN_AGENCY: 403,
    ErrorCode.FORBIDDEN_ROLE: 403,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.INSUFFICIENT_BALANCE: 409,
    ErrorCode.PERIOD_CLOSED: 409,
    ErrorCode.PERIOD_ALREADY_CLOSED: 409,
    ErrorCode.JOURNAL_IMMUTABLE: 409,
    ErrorCode.JOURNAL_ALREADY_REVERSED: 409,
    ErrorCode.EINVOICE_DUPLICATE: 409,
    ErrorCode.DUPLICATE: 409,
    ErrorCode.CONSTRAINT_VIOLATED: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.MALFORMED_JSON: 400,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
}

_CODE_BY_HTTP_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.MALFORMED_JSON, 401: ErrorCode.UNAUTHENTICATED, 403: ErrorCode.FORBIDDEN_ROLE,
    404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}
_KNOWN_CODES = frozenset(code.value for code in ErrorCode)


# ---- bounding ------------------------------------------------------------------------------------


def bounded(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy with every string, list and nesting level cut to the error-body limits."""
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING else value[:MAX_STRING] + f"…(+{len(value) - MAX_STRING})"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= _MAX_NESTING:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        return {bounded(str(k)): bounded(v, depth + 1) for k, v in items[:MAX_ITEMS * 4]}
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        cut = [bounded(v, depth + 1) for v in items[:MAX_ITEMS]]
        return [*cut, f"…(+{len(items) - MAX_ITEMS})"] if len(items) > MAX_ITEMS else cut
    return bounded(repr(value), depth)


def _size(body: dict[str, Any]) -> int:
    return len(JSONResponse(body).body)


def error_body(errors: list[RuleError]) -> dict[str, Any]:
    first = errors[0]
    body: dict[str, Any] = bounded({**first.as_json(), "errors": [e.as_json() for e in errors]})
    if _size(body) > MAX_ERROR_BODY:
        # Keep what identifies the refusal; the figures are what made it too large.
        body = bounded({**first.as_json(), "detail": {}, "errors": [{**first.as_json(), "detail": {}}]})
    return body


def rule_response(errors: list[RuleError], status: int | None = None,
                  headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(errors), status_code=status or STATUS_BY_CODE.get(errors[0].code, 422),
                        headers=headers)


def refusal(code: ErrorCode, message_zh: str, message_en: str, status: int | None = None,
            **detail: Any) -> JSONResponse:
    return rule_response([RuleError(code, message_zh, message_en, detail)], status)


# ---- request validation --------------------------------------------------------------------------


def _problem(raw: dict[str, Any]) -> dict[str, Any]:
    """One pydantic problem without its (possibly huge) input: type, where, message, a preview."""
    value = raw.get("input")
    preview = value if isinstance(value, str) else repr(value)
    problem = {"type": raw.get("type", ""), "loc": [str(part) for part in raw.get("loc", ())],
               "msg": str(raw.get("msg", "")), "input": preview[:64]}
    ctx = raw.get("ctx") or {}
    for key in ("low", "high", "ge", "le", "max_length", "min_length"):
        if key in ctx and isinstance(ctx[key], int | str):
            problem[key] = ctx[key]
    return problem


def validation_error(raw_problems: list[dict[str, Any]]) -> RuleError:
    """The refusal for a body, path or query that failed validation, with its first known code."""
    problems = [_problem(p) for p in raw_problems[:MAX_ITEMS]]
    if any(p["type"] == "json_invalid" for p in problems):
        return RuleError(ErrorCode.MALFORMED_JSON, "請求內容不是有效的 JSON",
                         "the request body is not valid JSON", {"problems": problems})
    coded = next((p for p in problems if p["type"] in _KNOWN_CODES), None)
    if coded is None:
        return RuleError(ErrorCode.INVALID_INPUT, "輸入資料格式錯誤", "the request is not valid",
                         {"problems": problems})
    code = ErrorCode(coded["type"])
    where = ".".join(coded["loc"])
    if code is ErrorCode.MONEY_NOT_INTEGER:
        return RuleError(code, f"金額必須為整數元（欄位 {where}）",
                         f"money must be an integer number of 元 (field {where})", {"problems": problems})
    return RuleError(code, f"欄位 {where}：{coded['msg']}", f"field {where}: {coded['msg']}",
                     {"problems": problems})


async def _validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    error = validation_error(list(exc.errors()))
    return rule_response([error], STATUS_BY_CODE.get(error.code, 422))


async def _rule_violation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RuleViolationError)
    if not exc.errors:
        return JSONResponse({"code": "internal", "message": "內部錯誤", "message_en": "internal error"}, 500)
    status = exc.status if exc.status != 422 else STATUS_BY_CODE.get(exc.errors[0].code, 422)
    return rule_response(exc.errors, status)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    headers = getattr(exc, "headers", None)
    if isinstance(detail, dict) and "code" in detail:
        # auth.py's refusals already carry a code; lift them to the top level like every API error.
        body = bounded({"message_en": detail.get("message", ""), "detail": {}, **detail})
        return JSONResponse(body, status_code=exc.status_code, headers=headers)
    if not request.url.path.startswith(API_PREFIX):
        return await http_exception_handler(request, exc)
    code = _CODE_BY_HTTP_STATUS.get(exc.status_code, ErrorCode.INVALID_INPUT)
    text = str(detail) if detail else code.value
    if exc.status_code >= 500:
        return JSONResponse(bounded({"code": "internal", "message": "內部錯誤", "message_en": text}),
                            status_code=exc.status_code, headers=headers)
    return rule_response([RuleError(code, text, text, {"path": request.url.path})], exc.status_code, headers)


# ---- what the database refused -------------------------------------------------------------------

# CHECK constraints whose refusal has a code of its own (names from models.py; PostgreSQL may
# prefix them with the table, so they are matched as suffixes).
_CHECK_CODES: dict[str, tuple[ErrorCode, int]] = {
    "period_range": (ErrorCode.PERIOD_OUT_OF_RANGE, 422),
    "available_not_negative": (ErrorCode.INSUFFICIENT_BALANCE, 409),
    "amount_positive": (ErrorCode.MONEY_NOT_POSITIVE, 422),
    "one_sided_positive": (ErrorCode.JOURNAL_LINE_ONE_SIDED, 422),
}
_SQLSTATE = {"23503": "foreign_key", "23505": "unique", "23514": "check", "23502": "not_null"}


def constraint_refusal(exc: IntegrityError) -> tuple[RuleError, int]:
    """The code and status for a constraint the database enforced, from either database's error."""
    orig = exc.orig
    message = str(orig)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    diag = getattr(orig, "diag", None)
    constraint = str(getattr(diag, "constraint_name", None) or getattr(orig, "constraint_name", None) or "")
    kind = _SQLSTATE.get(str(sqlstate), "")
    lowered = message.lower()
    if not kind:  # SQLite names the kind in its message: "CHECK constraint failed: period_range"
        for name, marker in (("foreign_key", "foreign key"), ("unique", "unique"), ("check", "check"),
                             ("not_null", "not null")):
            if marker in lowered:
                kind = name
                break
        if kind == "check" and ":" in message:
            constraint = message.rsplit(":", 1)[1].strip()
    entry = {"constraint": constraint[:64], "kind": kind or "unknown"}
    if kind == "foreign_key":
        return RuleError(ErrorCode.REFERENCE_NOT_FOUND, "引用的資料不存在（例如科目、年度或預算科目）",
                         "a referenced record does not exist (account, fiscal year, budget line, ...)",
                         entry), 422
    if kind == "unique":
        return RuleError(ErrorCode.DUPLICATE, "資料重複", "this record already exists", entry), 409
    for suffix, (code, status) in _CHECK_CODES.items():
        if constraint.endswith(suffix):
            error = RuleError(code, f"資料庫拒絕：{suffix}", f"refused by the database: {suffix}", entry)
            return error, status
    return RuleError(ErrorCode.CONSTRAINT_VIOLATED, "資料不符合資料庫的限制條件",
                     "the database refused the change (a constraint)", entry), 409


async def _integrity(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IntegrityError)
    log.warning("constraint refused a request: %s", str(exc.orig)[:300])
    error, status = constraint_refusal(exc)
    return rule_response([error], status)


async def _data(_request: Request, exc: Exception) -> Response:
    log.warning("database refused a value: %s", str(exc)[:300])
    return rule_response([RuleError(ErrorCode.NUMBER_OUT_OF_RANGE, "數值超出資料庫可儲存的範圍",
                                    "a value is outside what the database can store")], 422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RuleViolationError, _rule_violation)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(DataError, _data)
    app.add_exception_handler(OverflowError, _data)
