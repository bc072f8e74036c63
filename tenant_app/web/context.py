"""One web request as the pages see it: who is logged in, which agency they work for, and how to answer.

Pages take a `Page` from a dependency (`page`, `user_page`, `form_page`), and answer with
`page.render(...)` or `page.redirect(...)`, which also write the signed session cookie. Refusals are
exceptions (`LoginRequired`, `WebRefusal`, the services' `RuleViolationError`) that `WebRoute`
turns into a zh-TW page, so a page body only describes the success path and its own form errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import Depends, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app.auth import Principal, get_db, load_principal
from tenant_app.models import Agency, FiscalYear, UserSession
from tenant_app.reports.reading import snapshot_session
from tenant_app.rules.errors import RuleError, RuleViolationError
from tenant_app.security import session_store
from tenant_app.security.csrf import CSRF_FIELD, CSRF_REFUSED_MESSAGE, csrf_valid
from tenant_app.security.permissions import ROLE_LABEL_ZH, Action, refusal_message
from tenant_app.security.ratelimit import LoginRateLimiter
from tenant_app.security.sessions import COOKIE_NAME, CookieState, FlashKind, SessionCodec
from tenant_app.settings import Settings
from tenant_app.web.navigation import nav_for
from tenant_app.web.templating import templates

# No scripts at all and nothing from elsewhere: an injected <script> or a framing page gets nowhere.
# Inline style attributes stay allowed (the report fragment aligns numbers with them).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show balances and names: never from a shared cache
}


class LoginRequired(Exception):
    """The page needs a logged-in user; answered with a redirect to the log-in page."""


class AgencyRequired(Exception):
    """The page works on one agency and none is chosen yet; answered with the home page's chooser."""


class WebRefusal(Exception):
    """A request refused with a message the user can act on (zh-TW), shown on an error page."""

    def __init__(self, message: str, status_code: int = status.HTTP_403_FORBIDDEN,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.headers = dict(headers or {})


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.tenant.settings
    return settings


def codec_for(request: Request) -> SessionCodec:
    return SessionCodec(_settings(request).secret)


def login_limiter(request: Request) -> LoginRateLimiter:
    """One limiter per application instance (kept on app.state, created on first use)."""
    limiter: LoginRateLimiter | None = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        limiter = LoginRateLimiter()
        request.app.state.login_limiter = limiter
    return limiter


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass
class Page:
    request: Request
    db: Session
    settings: Settings
    cookie: CookieState
    csrf_token: str = ""
    session_row: UserSession | None = None
    principal: Principal | None = None
    agencies: list[Agency] = field(default_factory=list)
    agency: Agency | None = None
    fiscal_year: FiscalYear | None = None

    # --------------------------------------------------------------------------------- identity

    @property
    def user(self) -> Principal:
        if self.principal is None:
            raise LoginRequired()
        return self.principal

    def require(self, action: Action) -> Principal:
        """The user, if their role allows `action`; a 403 page otherwise."""
        user = self.user
        if not user.may(action):
            raise WebRefusal(refusal_message(action))
        return user

    def require_agency(self) -> Agency:
        """The agency chosen for this session; without one, back to the home page to choose."""
        if self.agency is None:
            raise AgencyRequired()
        return self.agency

    def require_fiscal_year(self) -> FiscalYear:
        if self.fiscal_year is None:
            raise WebRefusal("尚未建立會計年度，請洽系統管理者。", status.HTTP_409_CONFLICT)
        return self.fiscal_year

    def check_agency(self, agency_id: int) -> None:
        """Refuse a record of an agency not granted to the user (e.g. a guessed voucher URL)."""
        if not self.user.sees_agency(agency_id):
            raise WebRefusal("您沒有此機關的權限。")

    # --------------------------------------------------------------------------------- answers

    def _finish(self, response: Response) -> Response:
        """Write the session cookie and the headers every page carries."""
        response.headers.update(SECURITY_HEADERS)
        response.set_cookie(
            COOKIE_NAME,
            codec_for(self.request).dumps(self.cookie),
            max_age=codec_for(self.request).max_age_s,
            httponly=True,  # scripts never need it
            samesite="lax",  # a second wall behind the CSRF token for cross-site POSTs
            path="/",
        )
        return response

    def render(self, template: str, status_code: int = 200, **context: Any) -> Response:
        flash, flash_kind = self.cookie.pop_flash()
        base = {
            "page": self,
            "county_name": self.settings.county_name,
            "csrf_field": CSRF_FIELD,
            "csrf_token": self.csrf_token,
            "flash": flash,
            "flash_kind": flash_kind.value,
            "nav": nav_for(self.principal, self.request.url.path),
            "role_label": ROLE_LABEL_ZH.get(self.principal.role, "") if self.principal else "",
            "now": dt.datetime.now(dt.UTC).astimezone(),
        }
        clash = base.keys() & context.keys()
        if clash:  # a page variable silently replacing the layout's would show wrong data
            raise ValueError(f"template context overrides layout variables: {sorted(clash)}")
        response = templates.TemplateResponse(self.request, template, {**base, **context},
                                              status_code=status_code)
        return self._finish(response)

    def redirect(self, url: str, flash: str | None = None, kind: FlashKind = FlashKind.OK) -> Response:
        if flash:
            self.cookie.set_flash(flash, kind)
        return self._finish(RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER))


def _load(request: Request, db: Session, *, writable: bool) -> Page:
    settings = _settings(request)
    cookie = codec_for(request).loads(request.cookies.get(COOKIE_NAME))
    page = Page(request=request, db=db, settings=settings, cookie=cookie, csrf_token=cookie.anon_csrf)
    row = session_store.load(db, cookie.session_id, purge=writable)
    principal = load_principal(db, row.user_id) if row else None
    if row is None or principal is None:
        cookie.session_id = None  # stale, expired or deactivated: continue as anonymous
    else:
        page.session_row, page.principal, page.csrf_token = row, principal, row.csrf_token
        page.agencies = list(
            db.scalars(select(Agency).where(Agency.id.in_(principal.agency_ids)).order_by(Agency.code))
        )
        # A grant revoked since the agency was chosen drops the choice.
        page.agency = next((a for a in page.agencies if a.id == row.agency_id), None)
        page.fiscal_year = db.scalars(select(FiscalYear).order_by(FiscalYear.year.desc()).limit(1)).first()
        # Detached from the session: the layout still renders them after a refusal rolled it back.
        for obj in (*page.agencies, page.fiscal_year):
            if obj is not None:
                db.expunge(obj)
    request.state.page = page
    return page


READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


def page(request: Request, db: Session = Depends(get_db)) -> Iterator[Page]:
    """The request's page context, logged in or not.

    A GET only reads, so it reads from B's snapshot session (SQLite: a DEFERRED, query-only
    transaction): browsing pages never takes the write lock the certification writer needs. A POST
    gets the ordinary session (`db`, which stays unused, and so without a transaction, on a GET).
    """
    if request.method in READ_ONLY_METHODS:
        with snapshot_session(request.app.state.tenant.engine) as reader:
            yield _load(request, reader, writable=False)
        return
    yield _load(request, db, writable=True)


def user_page(current: Page = Depends(page)) -> Page:
    """The page context of a logged-in user; anonymous visitors are sent to the log-in page."""
    if current.principal is None:
        raise LoginRequired()
    return current


async def _check_csrf(request: Request, current: Page) -> None:
    form = await request.form()  # Starlette caches the parsed form for the route's Form() parameters
    submitted = form.get(CSRF_FIELD)
    if not csrf_valid(current.csrf_token, submitted if isinstance(submitted, str) else None):
        raise WebRefusal(CSRF_REFUSED_MESSAGE, status.HTTP_403_FORBIDDEN)


async def anonymous_form_page(request: Request, current: Page = Depends(page)) -> Page:
    """A POSTed form that needs no log-in (the log-in form itself), CSRF-checked."""
    await _check_csrf(request, current)
    return current


async def form_page(request: Request, current: Page = Depends(user_page)) -> Page:
    """A POSTed form of a logged-in user: refused unless its CSRF token matches the session's."""
    await _check_csrf(request, current)
    return current


# ------------------------------------------------------------------------------ refusals as pages


def _error_page(request: Request, message: str, status_code: int, errors: list[RuleError] | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
    current: Page | None = getattr(request.state, "page", None)
    if current is not None:
        response = current.render("error.html", status_code=status_code, message=message, errors=errors or [])
    else:
        response = templates.TemplateResponse(
            request, "error_bare.html", {"message": message}, status_code=status_code
        )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


class WebRoute(APIRoute):
    """Routes of the web UI: refusals become zh-TW pages, a missing log-in a redirect to it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = "/login"
                if request.method == "GET" and request.url.path not in ("/", "/login"):
                    target += "?next=" + quote(request.url.path)
                return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
            except AgencyRequired:
                current: Page | None = getattr(request.state, "page", None)
                if current is None:
                    return RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
                return current.redirect("/", "請先選擇要作業的機關。", FlashKind.INFO)
            except WebRefusal as refusal:
                return _error_page(request, refusal.message, refusal.status_code, headers=refusal.headers)
            except RequestValidationError:
                # A hand-edited URL or a form missing a field: a page, not the API's JSON error.
                return _error_page(request, "表單資料不完整或格式錯誤，請回上一頁重新填寫。",
                                   status.HTTP_422_UNPROCESSABLE_CONTENT)
            except RuleViolationError as violation:
                # A service refused and get_db rolled back: nothing was written. Show every reason
                # with its figures (balance seen, amount asked, ...).
                return _error_page(request, "此操作未執行：", violation.status, errors=violation.errors)

        return route

