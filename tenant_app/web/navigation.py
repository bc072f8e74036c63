"""The menu: which pages a user's role opens, in the order money moves (ACCOUNTING.md)."""

from __future__ import annotations

from dataclasses import dataclass

from tenant_app.auth import Principal
from tenant_app.security.permissions import Action


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    active: bool = False


# (label, href, the action that makes the entry useful)
MENU: tuple[tuple[str, str, Action], ...] = (
    ("預算與餘額", "/budget", Action.VIEW),
    ("簽證", "/certifications", Action.VIEW),
    ("付款憑單", "/vouchers", Action.VIEW),
    ("公庫撥付", "/payments", Action.PAY),
    ("傳票", "/journal", Action.VIEW),
    ("結帳", "/periods", Action.CLOSE_PERIOD),
    ("報表", "/reports", Action.RUN_REPORTS),
    ("代理設定", "/delegations", Action.DELEGATE),
    ("使用者管理", "/admin/users", Action.MANAGE_USERS),
    ("稽核紀錄", "/audit", Action.VIEW_AUDIT),
)


def nav_for(principal: Principal | None, path: str) -> list[NavItem]:
    if principal is None:
        return []
    return [
        NavItem(label, href, active=path == href or path.startswith(href + "/"))
        for label, href, action in MENU
        if principal.may(action)
    ]
