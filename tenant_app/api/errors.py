"""JSON error bodies for the API: {"code", "message" (zh-TW), "message_en", "detail", "errors": [...]}."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenant_app.api.money import MONEY_ERROR_TYPE
from tenant_app.rules.errors import ErrorCode, RuleError, RuleViolationError

API_PREFIX = "/api/"

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
}


def error_body(errors: list[RuleError]) -> dict[str, Any]:
    first = errors[0]
    return {**first.as_json(), "errors": [e.as_json() for e in errors]}


def rule_response(errors: list[RuleError], status: int | None = None) -> JSONResponse:
    return JSONResponse(error_body(errors), status_code=status or STATUS_BY_CODE.get(errors[0].code, 422))


async def _rule_violation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RuleViolationError)
    if not exc.errors:
        return JSONResponse({"code": "internal", "message": "內部錯誤", "message_en": "internal error"}, 500)
    status = exc.status if exc.status != 422 else STATUS_BY_CODE.get(exc.errors[0].code, 422)
    return rule_response(exc.errors, status)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith(API_PREFIX):
        return await request_validation_exception_handler(request, exc)
    problems = jsonable_encoder(exc.errors())
    money = [p for p in problems if p.get("type") == MONEY_ERROR_TYPE]
    if money:
        where = ".".join(str(part) for part in money[0].get("loc", ()))
        error = RuleError(ErrorCode.MONEY_NOT_INTEGER, f"金額必須為整數元（欄位 {where}）",
                          f"money must be an integer number of 元 (field {where})", {"problems": problems})
    else:
        error = RuleError(ErrorCode.INVALID_INPUT, "輸入資料格式錯誤", "the request body is not valid",
                          {"problems": problems})
    return rule_response([error], 422)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if request.url.path.startswith(API_PREFIX) and isinstance(detail, dict) and "code" in detail:
        # auth.py's refusals already carry a code; lift them to the top level like every API error.
        body = {"message_en": detail.get("message", ""), "detail": {}, **detail}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RuleViolationError, _rule_violation)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(HTTPException, _http)
