"""Log in, log out, choose the agency to work for, and the home page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response, status

from tenant_app import audit
from tenant_app.auth import AuthAuditAction, LoginOutcome, authenticate
from tenant_app.domains import IdParam
from tenant_app.security import session_store
from tenant_app.security.sessions import FlashKind
from tenant_app.web.context import (
    Page,
    WebRefusal,
    WebRoute,
    anonymous_form_page,
    client_of,
    form_page,
    login_limiter,
    page,
    user_page,
)

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _safe_next(target: str) -> str:
    # Only local paths: an open redirect would let a phishing link bounce through our log-in.
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login")
def login_form(next: str = "/", current: Page = Depends(page)) -> Response:
    if current.principal is not None:
        return current.redirect(_safe_next(next))
    return current.render("login.html", error=None, username="", next=_safe_next(next))


@router.post("/login")
def login(
    username: str = Form(""),
    password: str = Form(""),
    next: str = Form("/"),
    current: Page = Depends(anonymous_form_page),
) -> Response:
    limiter = login_limiter(current.request)
    current.db.commit()  # keep what loading the page did (an expired session removed): nothing pending
    result = authenticate(current.db, username, password, client_of(current.request), limiter)
    if result.outcome is LoginOutcome.THROTTLED:
        response = current.render("login.html", status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                                  error=result.message, username=username, next=_safe_next(next))
        response.headers["Retry-After"] = str(result.retry_after_s)
        return response
    if result.outcome is not LoginOutcome.OK or result.user is None:
        current.db.commit()  # keep the audit entry of the failed attempt
        return current.render("login.html", status_code=status.HTTP_401_UNAUTHORIZED,
                              error=result.message, username=username, next=_safe_next(next))
    if current.cookie.session_id:  # logging in over an old session: end it, never reuse its id
        session_store.end(current.db, current.cookie.session_id)
    raw_id, row = session_store.create(current.db, result.user.id)
    if len(result.user.grants) == 1:  # one agency: nothing to choose
        row.agency_id = result.user.grants[0].agency_id
    current.db.commit()
    current.cookie.session_id = raw_id
    return current.redirect(_safe_next(next), f"歡迎，{result.user.display_name}。")


@router.post("/logout")
def logout(current: Page = Depends(form_page)) -> Response:
    audit.append(current.db, current.user.username, AuthAuditAction.LOGOUT, {})
    session_store.end(current.db, current.cookie.session_id)
    current.db.commit()
    current.cookie.session_id = None
    return current.redirect("/login", "您已登出。", FlashKind.INFO)


@router.get("/")
def home(current: Page = Depends(user_page)) -> Response:
    return current.render("home.html")


@router.post("/agency")
def choose_agency(agency_id: Annotated[IdParam, Form()], current: Page = Depends(form_page)) -> Response:
    agency = next((a for a in current.agencies if a.id == agency_id), None)
    if agency is None or current.session_row is None:
        raise WebRefusal("您沒有此機關的權限。")
    current.session_row.agency_id = agency.id
    current.db.commit()
    return current.redirect("/budget", f"已切換至「{agency.name}」。")
