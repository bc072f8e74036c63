"""代理設定: who may sign in whose place, for which days. Shown on every voucher signed under it.

Chief accountants and agency heads name their own delegates; the county administrator may set
one for anybody. Only a delegation that has not begun can be withdrawn (see user_admin).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response, status
from sqlalchemy import or_, select

from tenant_app.domains import IdParam
from tenant_app.enums import Role
from tenant_app.models import Delegation, User, UserAgency
from tenant_app.security.permissions import Action
from tenant_app.security.user_admin import (
    NON_SIGNING_ROLES,
    AdminRefusal,
    create_delegation,
    delete_delegation,
)
from tenant_app.services.certification import today
from tenant_app.web.context import Page, WebRefusal, WebRoute, form_page, user_page
from tenant_app.web.forms import FormError, parse_date

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _is_admin(current: Page) -> bool:
    return current.user.may(Action.MANAGE_USERS)


def _candidates(current: Page) -> list[User]:
    """People who may be picked: active colleagues sharing an agency (anyone, for the administrator),
    never an auditor or an administrator."""
    query = (select(User).where(User.active.is_(True), User.role.not_in(NON_SIGNING_ROLES))
             .order_by(User.username))
    if not _is_admin(current):
        colleagues = select(UserAgency.user_id).where(UserAgency.agency_id.in_(current.user.agency_ids))
        query = query.where(User.id.in_(colleagues), User.id != current.user.user_id)
    return list(current.db.scalars(query))


def _render(current: Page, status_code: int = 200, error: str | None = None) -> Response:
    query = select(Delegation).order_by(Delegation.valid_from.desc(), Delegation.id.desc())
    if not _is_admin(current):
        me = current.user.user_id
        query = query.where(or_(Delegation.principal_id == me, Delegation.delegate_id == me))
    rows = current.db.scalars(query.limit(200)).all()
    ids = {i for d in rows for i in (d.principal_id, d.delegate_id)}
    people = {u.id: u for u in current.db.scalars(select(User).where(User.id.in_(ids)))}
    return current.render(
        "delegations.html", status_code=status_code, delegations=rows, people=people,
        candidates=_candidates(current), is_admin=_is_admin(current),
        today=today(), form_error=error, signer_roles={Role.CHIEF_ACCOUNTANT, Role.AGENCY_HEAD},
    )


@router.get("/delegations")
def delegations(current: Page = Depends(user_page)) -> Response:
    current.require(Action.DELEGATE)
    return _render(current)


@router.post("/delegations")
def create(
    delegate_id: Annotated[IdParam, Form()], valid_from: str = Form(""), valid_to: str = Form(""),
    reason: str = Form(""), principal_id: Annotated[IdParam | None, Form()] = None,
    current: Page = Depends(form_page),
) -> Response:
    user = current.require(Action.DELEGATE)
    # Only the administrator names someone else as the principal; everyone else delegates for themselves.
    principal = principal_id if (principal_id and _is_admin(current)) else user.user_id
    if not _is_admin(current) and delegate_id not in {u.id for u in _candidates(current)}:
        raise WebRefusal("代理人須為同機關之在職人員。")
    try:
        start, end = parse_date(valid_from, "代理起日"), parse_date(valid_to, "代理迄日")
        create_delegation(current.db, actor=user.username, principal_id=principal, delegate_id=delegate_id,
                          valid_from=start, valid_to=end, reason=reason, created_by_id=user.user_id,
                          today=today())
    except (FormError, AdminRefusal) as error:
        current.db.rollback()
        return _render(current, status.HTTP_422_UNPROCESSABLE_CONTENT, error=error.message)
    current.db.commit()
    return current.redirect("/delegations", "代理設定已建立。")


@router.post("/delegations/{delegation_id}/delete")
def delete(delegation_id: IdParam, current: Page = Depends(form_page)) -> Response:
    user = current.require(Action.DELEGATE)
    row = current.db.get(Delegation, delegation_id)
    if row is None or not (_is_admin(current) or row.principal_id == user.user_id):
        raise WebRefusal("您不能刪除此代理設定。")
    try:
        delete_delegation(current.db, delegation_id, actor=user.username, today=today())
    except AdminRefusal as error:
        current.db.rollback()
        return _render(current, status.HTTP_409_CONFLICT, error=error.message)
    current.db.commit()
    return current.redirect("/delegations", "代理設定已刪除。")
