"""What each role may do (ACCOUNTING.md "Users and roles"), as data.

Routes ask for an Action, not for a list of roles, so the policy lives in one table that a test can
read whole. Agency scope is separate: an allowed action still applies only to granted agencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from tenant_app.enums import Role


class Action(StrEnum):
    VIEW = "view"  # budget lines, balances, vouchers, journal, reports
    CERTIFY = "certify"  # 簽證
    PREPARE_VOUCHER = "prepare_voucher"  # 付款憑單
    SIGN = "sign"  # 簽核 / 退回 (the step itself decides which role may sign it)
    DELEGATE = "delegate"  # 代理: grant one's own signing authority for a date range
    PAY = "pay"  # 公庫撥付
    POST_JOURNAL = "post_journal"  # 傳票過帳
    CLOSE_PERIOD = "close_period"  # 月結 / 年結
    RUN_REPORTS = "run_reports"
    MANAGE_USERS = "manage_users"  # users, grants, tokens and delegations of the county
    VIEW_AUDIT = "view_audit"  # the hash-chained audit log


ROLE_LABEL_ZH: Mapping[Role, str] = {
    Role.CLERK: "承辦人",
    Role.ACCOUNTANT: "會計",
    Role.CHIEF_ACCOUNTANT: "主辦會計",
    Role.AGENCY_HEAD: "機關首長",
    Role.COUNTY_ADMIN: "系統管理者",
    Role.AUDITOR: "稽核人員",
}

ACTION_LABEL_ZH: Mapping[Action, str] = {
    Action.VIEW: "查詢",
    Action.CERTIFY: "簽證",
    Action.PREPARE_VOUCHER: "填製付款憑單",
    Action.SIGN: "簽核",
    Action.DELEGATE: "設定代理",
    Action.PAY: "撥付",
    Action.POST_JOURNAL: "傳票過帳",
    Action.CLOSE_PERIOD: "結帳",
    Action.RUN_REPORTS: "報表",
    Action.MANAGE_USERS: "使用者管理",
    Action.VIEW_AUDIT: "稽核紀錄",
}

_READ = frozenset({Action.VIEW, Action.RUN_REPORTS})

PERMISSIONS: Mapping[Role, frozenset[Action]] = {
    # The clerk asks for certification and prepares vouchers, and signs them as preparer.
    Role.CLERK: _READ | {Action.CERTIFY, Action.PREPARE_VOUCHER, Action.SIGN},
    # The accountant works the accounting office's side: certification, journal, treasury.
    Role.ACCOUNTANT: _READ
    | {Action.CERTIFY, Action.PREPARE_VOUCHER, Action.SIGN, Action.PAY, Action.POST_JOURNAL},
    Role.CHIEF_ACCOUNTANT: _READ
    | {Action.CERTIFY, Action.SIGN, Action.DELEGATE, Action.PAY, Action.POST_JOURNAL, Action.CLOSE_PERIOD},
    Role.AGENCY_HEAD: _READ | {Action.SIGN, Action.DELEGATE},
    # The administrator manages people, not money: no access to budget data beyond reading.
    Role.COUNTY_ADMIN: frozenset({Action.MANAGE_USERS, Action.DELEGATE}),
    # Read-only by design: an auditor can change nothing.
    Role.AUDITOR: _READ | {Action.VIEW_AUDIT},
}


def allowed(roles: Iterable[Role], action: Action) -> bool:
    return any(action in PERMISSIONS.get(role, frozenset()) for role in roles)


def refusal_message(action: Action) -> str:
    return f"您的角色沒有「{ACTION_LABEL_ZH[action]}」的權限。"
