"""The county administrator's changes to people: users, roles, agency grants, passwords, delegations.

Each function validates first, writes, appends an audit entry in the same transaction and returns;
refusals are FormError-like `AdminRefusal`s with a zh-TW message. Changes that narrow someone's
authority (deactivation, role change, grant removal) end their sessions and forget cached tokens at
once, so nothing they could do a minute ago keeps working.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tenant_app import audit
from tenant_app.auth import forget_cached_principals, normalise_username
from tenant_app.enums import Role
from tenant_app.models import Agency, Delegation, Signature, User, UserAgency
from tenant_app.security import passwords, session_store

MIN_PASSWORD_LENGTH = 10
NON_SIGNING_ROLES = frozenset({Role.AUDITOR, Role.COUNTY_ADMIN})
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")


class AdminAuditAction(StrEnum):
    """Audit-log actions of people administration (money changes use tenant_app.enums.AuditAction)."""

    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_PASSWORD_SET = "user.password_set"
    DELEGATION_CREATED = "delegation.created"
    DELEGATION_DELETED = "delegation.deleted"


class AdminRefusal(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AdminRefusal(f"密碼至少需 {MIN_PASSWORD_LENGTH} 個字元。")


def _check_agencies(db: Session, agency_ids: Collection[int]) -> list[int]:
    known = set(db.scalars(select(Agency.id).where(Agency.id.in_(list(agency_ids)))))
    unknown = set(agency_ids) - known
    if unknown:
        raise AdminRefusal(f"查無機關：{', '.join(str(i) for i in sorted(unknown))}")
    return sorted(known)


def _set_grants(db: Session, user: User, agency_ids: list[int]) -> None:
    db.execute(delete(UserAgency).where(UserAgency.user_id == user.id))
    db.add_all([UserAgency(user_id=user.id, agency_id=a) for a in agency_ids])


def create_user(db: Session, *, actor: str, username: str, display_name: str, role: Role, password: str,
                agency_ids: Collection[int]) -> User:
    name = normalise_username(username)
    if not USERNAME_RE.fullmatch(name):
        raise AdminRefusal("帳號限用小寫英數字與 . _ -，長度 2 至 64。")
    if not display_name.strip():
        raise AdminRefusal("請填寫姓名。")
    _check_password(password)
    if db.scalars(select(User.id).where(User.username == name)).first() is not None:
        raise AdminRefusal(f"帳號 {name} 已存在。")
    grants = _check_agencies(db, agency_ids)
    user = User(username=name, display_name=display_name.strip()[:100], role=role,
                password_hash=passwords.hash_password(password), active=True)
    db.add(user)
    db.flush()
    _set_grants(db, user, grants)
    audit.append(db, actor, AdminAuditAction.USER_CREATED,
                 {"user_id": user.id, "username": name, "role": role.value, "agency_ids": grants})
    return user


def update_user(db: Session, user_id: int, *, actor: str, display_name: str, role: Role, active: bool,
                agency_ids: Collection[int]) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise AdminRefusal("查無此使用者。")
    if not display_name.strip():
        raise AdminRefusal("請填寫姓名。")
    grants = _check_agencies(db, agency_ids)
    old_grants = sorted(g.agency_id for g in user.grants)
    before = {"role": user.role.value, "active": user.active, "agency_ids": old_grants}
    narrowed = role != user.role or (user.active and not active) or not set(old_grants) <= set(grants)
    user.display_name, user.role, user.active = display_name.strip()[:100], role, active
    _set_grants(db, user, grants)
    if narrowed:
        session_store.end_all_for_user(db, user.id)
    forget_cached_principals()
    audit.append(db, actor, AdminAuditAction.USER_UPDATED,
                 {"user_id": user.id, "before": before,
                  "after": {"role": role.value, "active": active, "agency_ids": grants}})
    db.flush()
    db.expire(user, ["grants"])
    return user


def set_password(db: Session, user_id: int, password: str, *, actor: str) -> None:
    user = db.get(User, user_id)
    if user is None:
        raise AdminRefusal("查無此使用者。")
    _check_password(password)
    user.password_hash = passwords.hash_password(password)
    session_store.end_all_for_user(db, user.id)  # a reset password logs the old holder out
    audit.append(db, actor, AdminAuditAction.USER_PASSWORD_SET, {"user_id": user.id})


def create_delegation(db: Session, *, actor: str, principal_id: int, delegate_id: int, valid_from: dt.date,
                      valid_to: dt.date, reason: str, created_by_id: int, today: dt.date) -> Delegation:
    """代理: `delegate_id` may sign in `principal_id`'s place on the days from `valid_from` to `valid_to`."""
    if principal_id == delegate_id:
        raise AdminRefusal("不能指定自己為代理人。")
    if valid_to < valid_from:
        raise AdminRefusal("代理迄日不得早於起日。")
    if valid_to < today:
        raise AdminRefusal("代理期間已經過去。")
    people = {u.id: u for u in db.scalars(select(User).where(User.id.in_([principal_id, delegate_id])))}
    if principal_id not in people or delegate_id not in people:
        raise AdminRefusal("查無此使用者。")
    if not people[delegate_id].active:
        raise AdminRefusal("代理人帳號已停用。")
    if people[delegate_id].role in NON_SIGNING_ROLES:
        # The auditor must stay read-only and the administrator manages people, not money.
        raise AdminRefusal("稽核人員與系統管理者不能擔任簽核代理人。")
    row = Delegation(principal_id=principal_id, delegate_id=delegate_id, valid_from=valid_from,
                     valid_to=valid_to, reason=reason.strip()[:255], created_by_id=created_by_id)
    db.add(row)
    db.flush()
    audit.append(db, actor, AdminAuditAction.DELEGATION_CREATED,
                 {"delegation_id": row.id, "principal_id": principal_id, "delegate_id": delegate_id,
                  "valid_from": valid_from, "valid_to": valid_to, "reason": row.reason})
    return row


def delete_delegation(db: Session, delegation_id: int, *, actor: str, today: dt.date) -> None:
    """Only a delegation that has not begun can be withdrawn: a used one must stay, because the
    chain verification of every voucher signed under it reads it again."""
    row = db.get(Delegation, delegation_id)
    if row is None:
        raise AdminRefusal("查無此代理設定。")
    used = db.scalars(select(Signature.id).where(Signature.delegation_id == row.id)).first() is not None
    if row.valid_from <= today or used:
        raise AdminRefusal("代理期間已開始，紀錄須保留以供簽章驗證，不能刪除。")
    db.delete(row)
    audit.append(db, actor, AdminAuditAction.DELEGATION_DELETED, {"delegation_id": delegation_id})
