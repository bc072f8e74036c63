"""使用者管理 (county administrator): users, roles, agency grants, passwords and API tokens.

Rules and audit entries live in tenant_app.security.user_admin and tenant_app.auth; these routes
only read forms and show results. A new API token is shown once and never again.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Form, Response, status
from sqlalchemy import select

from tenant_app.auth import issue_api_token, revoke_api_token
from tenant_app.domains import ID, TOKEN_DAYS, DomainError, IdParam
from tenant_app.enums import Role
from tenant_app.models import Agency, ApiToken, User
from tenant_app.security.permissions import Action
from tenant_app.security.user_admin import AdminRefusal, create_user, set_password, update_user
from tenant_app.web.context import Page, WebRefusal, WebRoute, form_page, user_page
from tenant_app.web.forms import FormError, parse_optional_int

router = APIRouter(route_class=WebRoute, include_in_schema=False)

TOKEN_DAYS_DEFAULT = 90  # a token that is never rotated is a standing risk; 90 days is a habit


def _agencies(current: Page) -> list[Agency]:
    return list(current.db.scalars(select(Agency).order_by(Agency.code)))


async def _agency_ids(current: Page) -> list[int]:
    form = await current.request.form()
    ids = []
    for value in form.getlist("agency_ids"):
        try:  # "²".isdigit() is true but int("²") fails: read ids through their domain
            ids.append(ID.from_text(value))
        except DomainError:
            continue  # a box that is not an agency id is no grant, as before
    return ids


def _role(raw: str) -> Role:
    try:
        return Role(raw)
    except ValueError as error:
        raise WebRefusal("角色不正確。", status.HTTP_422_UNPROCESSABLE_CONTENT) from error


@router.get("/admin/users")
def users(current: Page = Depends(user_page)) -> Response:
    current.require(Action.MANAGE_USERS)
    rows = current.db.scalars(select(User).order_by(User.username)).all()
    agency_names = {a.id: a.name for a in _agencies(current)}
    return current.render("admin_users.html", users=rows, agency_names=agency_names,
                          roles=list(Role), agencies=_agencies(current), form_error=None, form={})


@router.post("/admin/users")
async def create(
    username: str = Form(""), display_name: str = Form(""), role: str = Form(""), password: str = Form(""),
    current: Page = Depends(form_page),
) -> Response:
    admin = current.require(Action.MANAGE_USERS)
    try:
        user = create_user(current.db, actor=admin.username, username=username, display_name=display_name,
                           role=_role(role), password=password, agency_ids=await _agency_ids(current))
    except AdminRefusal as error:
        current.db.rollback()
        rows = current.db.scalars(select(User).order_by(User.username)).all()
        return current.render(
            "admin_users.html", status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, users=rows,
            agency_names={a.id: a.name for a in _agencies(current)},
            roles=list(Role), agencies=_agencies(current), form_error=error.message,
            form={"username": username, "display_name": display_name, "role": role})
    current.db.commit()
    return current.redirect(f"/admin/users/{user.id}", f"已建立使用者 {user.username}。")


def _render_user(current: Page, user: User, status_code: int = 200, error: str | None = None,
                 new_token: str | None = None) -> Response:
    tokens = current.db.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                .order_by(ApiToken.created_at.desc())).all()
    return current.render(
        "admin_user.html", status_code=status_code, user=user, roles=list(Role),
        agencies=_agencies(current), granted={g.agency_id for g in user.grants}, tokens=tokens,
        form_error=error, new_token=new_token, token_days=TOKEN_DAYS_DEFAULT,
    )


def _user(current: Page, user_id: int) -> User:
    user = current.db.get(User, user_id)
    if user is None:
        raise WebRefusal("查無此使用者。", status.HTTP_404_NOT_FOUND)
    return user


@router.get("/admin/users/{user_id}")
def user_detail(user_id: IdParam, current: Page = Depends(user_page)) -> Response:
    current.require(Action.MANAGE_USERS)
    return _render_user(current, _user(current, user_id))


@router.post("/admin/users/{user_id}")
async def user_update(
    user_id: IdParam, display_name: str = Form(""), role: str = Form(""), active: str = Form(""),
    current: Page = Depends(form_page),
) -> Response:
    admin = current.require(Action.MANAGE_USERS)
    if user_id == admin.user_id and (not active or _role(role) is not Role.COUNTY_ADMIN):
        # Otherwise the last administrator could lock the county out of its own user management.
        raise WebRefusal("不能停用自己或取消自己的管理者角色。", status.HTTP_409_CONFLICT)
    try:
        update_user(current.db, user_id, actor=admin.username, display_name=display_name, role=_role(role),
                    active=bool(active), agency_ids=await _agency_ids(current))
    except AdminRefusal as error:
        current.db.rollback()
        return _render_user(current, _user(current, user_id), status.HTTP_422_UNPROCESSABLE_CONTENT,
                            error.message)
    current.db.commit()
    return current.redirect(f"/admin/users/{user_id}", "使用者資料已更新。")


@router.post("/admin/users/{user_id}/password")
def user_password(user_id: IdParam, password: str = Form(""), current: Page = Depends(form_page)) -> Response:
    admin = current.require(Action.MANAGE_USERS)
    try:
        set_password(current.db, user_id, password, actor=admin.username)
    except AdminRefusal as error:
        current.db.rollback()
        return _render_user(current, _user(current, user_id), status.HTTP_422_UNPROCESSABLE_CONTENT,
                            error.message)
    current.db.commit()
    return current.redirect(f"/admin/users/{user_id}", "密碼已重設，該使用者需重新登入。")


@router.post("/admin/users/{user_id}/tokens")
def token_issue(user_id: IdParam, name: str = Form(""), days: str = Form(""),
                current: Page = Depends(form_page)) -> Response:
    admin = current.require(Action.MANAGE_USERS)
    user = _user(current, user_id)
    try:
        lifetime = parse_optional_int(days, "有效天數", TOKEN_DAYS)
    except FormError as error:
        return _render_user(current, user, status.HTTP_422_UNPROCESSABLE_CONTENT, error.message)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=lifetime) if lifetime else None
    raw, _ = issue_api_token(current.db, user.id, actor=admin.username, name=name.strip()[:100],
                             expires_at=expires)
    current.db.commit()
    # Rendered, not redirected: the raw token must not travel in a URL or a cookie.
    return _render_user(current, user, new_token=raw)


@router.post("/admin/tokens/{token_id}/revoke")
def token_revoke(token_id: IdParam, current: Page = Depends(form_page)) -> Response:
    admin = current.require(Action.MANAGE_USERS)
    token = current.db.get(ApiToken, token_id)
    if token is None:
        raise WebRefusal("查無此權杖。", status.HTTP_404_NOT_FOUND)
    revoke_api_token(current.db, token_id, actor=admin.username)
    current.db.commit()
    return current.redirect(f"/admin/users/{token.user_id}", "權杖已撤銷。")
