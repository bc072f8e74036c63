"""How amounts and dates look on zh-TW pages."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tenant_app.web import formatting


def test_money_has_thousands_separators() -> None:
    assert formatting.money(1234567) == "1,234,567"
    assert formatting.money(0) == "0"
    assert formatting.money(-5000) == "-5,000"
    assert formatting.money(Decimal("1234.50")) == "1,234.50"
    assert formatting.money(None) == ""


def test_roc_year_beside_gregorian() -> None:
    assert formatting.roc_year(2026) == 115
    assert formatting.year_label(2026) == "民國115年（2026）"
    assert formatting.roc_date(dt.date(2026, 1, 5)) == "115/01/05（2026-01-05）"


def test_datetimes_are_shown_in_taipei_time() -> None:
    # 23:30 UTC on 31 Dec is already 1 Jan in Taipei: the ROC date follows the county's calendar.
    moment = dt.datetime(2025, 12, 31, 23, 30, tzinfo=dt.UTC)
    assert formatting.roc_date(moment) == "115/01/01（2026-01-01） 07:30"
    assert formatting.roc_date(moment.replace(tzinfo=None)) == "115/01/01（2026-01-01） 07:30"


def test_percent_of_ratio() -> None:
    assert formatting.percent(0.1234) == "12.34%"
    assert formatting.percent(None) == ""
