"""The menu follows the role table: nobody is offered a page their role would refuse."""

from __future__ import annotations

from tenant_app.auth import Principal
from tenant_app.enums import Role
from tenant_app.web.navigation import nav_for


def _labels(role: Role, path: str = "/") -> list[str]:
    return [item.label for item in nav_for(Principal(1, "u", "U", role, frozenset({1})), path)]


def test_menus_per_role() -> None:
    assert _labels(Role.CLERK) == ["預算與餘額", "簽證", "付款憑單", "傳票", "報表"]
    assert _labels(Role.AUDITOR) == ["預算與餘額", "簽證", "付款憑單", "傳票", "報表", "稽核紀錄"]
    assert _labels(Role.COUNTY_ADMIN) == ["代理設定", "使用者管理"]
    assert "結帳" in _labels(Role.CHIEF_ACCOUNTANT) and "公庫撥付" in _labels(Role.ACCOUNTANT)
    assert "公庫撥付" not in _labels(Role.AGENCY_HEAD)


def test_active_entry_follows_the_path_and_anonymous_gets_no_menu() -> None:
    items = nav_for(Principal(1, "u", "U", Role.CLERK, frozenset()), "/vouchers/12")
    assert [i.label for i in items if i.active] == ["付款憑單"]
    assert nav_for(None, "/") == []
