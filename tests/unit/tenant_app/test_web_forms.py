"""Reading amounts, dates and e-invoice lists typed into forms."""

from __future__ import annotations

import datetime as dt

import pytest

from tenant_app.web.forms import FormError, parse_date, parse_invoice_numbers, parse_money, parse_optional_int


@pytest.mark.parametrize(("typed", "value"), [("12000", 12000), ("12,000", 12000), (" 1，234 ", 1234)])
def test_money_accepts_separators(typed: str, value: int) -> None:
    assert parse_money(typed) == value


@pytest.mark.parametrize(
    ("typed", "message"),
    [("100.5", "須為整數元，不接受小數"), ("", "請輸入金額"), ("0", "須大於零"), ("-5", "格式錯誤"),
     ("1e3", "格式錯誤")],
)
def test_money_refusals_explain(typed: str, message: str) -> None:
    with pytest.raises(FormError) as refused:
        parse_money(typed)
    assert message in refused.value.message


def test_optional_int_and_date() -> None:
    assert parse_optional_int(" ", "期別") is None
    assert parse_optional_int("7", "期別") == 7
    with pytest.raises(FormError, match="期別須為整數"):
        parse_optional_int("七", "期別")
    assert parse_date("2026-03-01", "起日") == dt.date(2026, 3, 1)
    with pytest.raises(FormError, match="YYYY-MM-DD"):
        parse_date("115/03/01", "起日")


def test_invoice_numbers_split_and_upper_cased() -> None:
    assert parse_invoice_numbers("ab12345678, CD00000001\nEF00000002、GH00000003") == [
        "AB12345678", "CD00000001", "EF00000002", "GH00000003"]
    assert parse_invoice_numbers("  ") == []
