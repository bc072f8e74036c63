"""Every error leaves the API as `{"code": <ErrorCode>, "message": ...}` with the HTTP status of
controlplane.errors.MAPPING: the use cases' errors, other packages' errors (through
controlplane.errors.classify), request validation (422 invalid_input) and the framework's own
(unknown route, wrong method, body too large)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from controlplane import errors
from controlplane.errors import MAPPING, ControlPlaneError, ErrorCode

log = logging.getLogger("countycloud.api")

# The framework's own refusals, by status.
HTTP_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID, 401: ErrorCode.UNAUTHENTICATED, 403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND, 405: ErrorCode.INVALID, 406: ErrorCode.INVALID, 409: ErrorCode.CONFLICT,
    413: ErrorCode.INVALID, 415: ErrorCode.INVALID, 422: ErrorCode.INVALID, 429: ErrorCode.THROTTLED,
}


def error_body(code: ErrorCode, message: str) -> dict[str, str]:
    return {"code": code.value, "message": message}


def error_response(code: ErrorCode, message: str, status: int | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status or MAPPING[code].http_status)


def classify(error: Exception) -> tuple[ErrorCode, str] | None:
    """The code of an error from any package, or None for a bug (controlplane.errors.classify when
    the use-case layer provides it; the job runner's and the inventory's own errors otherwise)."""
    if isinstance(error, ControlPlaneError):
        return error.code, str(error)
    shared = getattr(errors, "classify", None)
    if shared is not None:
        try:
            result = shared(error)
        except Exception:  # a classifier that cannot place it: treat as a bug below
            result = None
        if result is not None:
            code, message = result
            if code is not None:
                return ErrorCode(code), str(message)
    from sqlalchemy.exc import SQLAlchemyError

    from controlplane import jobs
    from inventory.queries import NotFound

    if isinstance(error, jobs.JobNotFound | NotFound):
        return ErrorCode.NOT_FOUND, str(error)
    if isinstance(error, jobs.JobConflict):
        return ErrorCode.CONFLICT, str(error)
    if isinstance(error, jobs.JobError):
        return ErrorCode.FAILED, str(error)
    if isinstance(error, SQLAlchemyError):
        return ErrorCode.UNAVAILABLE, "the platform database failed; see the service's log"
    return None


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


# A page instead of JSON for the console's paths: (request, code, message, status) -> response.
HtmlErrors = Callable[[Request, ErrorCode, str, int], Response]


def install(app: FastAPI, *, html: HtmlErrors | None = None,
            wants_html: Callable[[Request], bool] = lambda _request: False) -> None:
    def answer(request: Request, code: ErrorCode, message: str, status: int | None = None) -> Response:
        status = status or MAPPING[code].http_status
        if html is not None and wants_html(request):
            return html(request, code, message, status)
        return error_response(code, message, status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        return answer(request, ErrorCode.INVALID, _validation_message(error))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> Response:
        code = HTTP_CODES.get(error.status_code, ErrorCode.INVALID if error.status_code < 500
                              else ErrorCode.FAILED)
        detail: Any = error.detail
        message = detail if isinstance(detail, str) else str(detail)
        # A body that is not even JSON is bad input like any other: 422, as validation errors are.
        status = MAPPING[ErrorCode.INVALID].http_status if error.status_code == 400 else error.status_code
        response = answer(request, code, message, status)
        if error.headers:
            response.headers.update(error.headers)
        return response

    async def _placed(request: Request, error: Exception) -> Response:
        placed = classify(error)
        if placed is None:
            log.error("unexpected error", exc_info=error)
            return error_response(ErrorCode.FAILED, f"internal error ({type(error).__name__}); "
                                  "see the service's log", 500)
        code, message = placed
        response = answer(request, code, message)
        if code == ErrorCode.UNAUTHENTICATED:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    # Handlers for the known error bases answer without the traceback Starlette prints for the
    # catch-all; the catch-all still classifies (a package's error base added later lands there).
    for base in known_bases():
        app.add_exception_handler(base, _placed)
    app.add_exception_handler(Exception, _placed)


def known_bases() -> list[type[Exception]]:
    from importlib import import_module

    from sqlalchemy.exc import SQLAlchemyError

    from controlplane import jobs
    from inventory.queries import NotFound

    bases: list[type[Exception]] = [ControlPlaneError, jobs.JobError, NotFound, SQLAlchemyError]
    # Each package's error base, where the package has one (issue 11's refactoring adds them).
    for module, name in (("inventory.errors", "InventoryError"),
                         ("provisioning.errors", "ProvisioningError")):
        try:
            base = getattr(import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(base, type) and issubclass(base, Exception):
            bases.append(base)
    return bases
