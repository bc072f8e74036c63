"""How numbers and dates look on zh-TW pages: thousands separators, ROC year beside the Gregorian one."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

ROC_EPOCH = 1911  # 民國元年 = 1912
# Times are stored in UTC; a county office reads them in its own time (same zone as signing.py).
COUNTY_TZ = ZoneInfo("Asia/Taipei")


def money(value: int | Decimal | None) -> str:
    """Integer 元 with thousands separators; Decimal amounts keep their two places."""
    if value is None:
        return ""
    if isinstance(value, Decimal) and value != value.to_integral_value():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def roc_year(year: int) -> int:
    return year - ROC_EPOCH


def year_label(year: int) -> str:
    """'民國115年（2026）': what a county's finance office prints on every page and report."""
    return f"民國{roc_year(year)}年（{year}）"


def roc_date(value: dt.date | dt.datetime | None) -> str:
    """'115/11/28（2026-11-28）'; datetimes also show the county's local time of day."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
        value = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(COUNTY_TZ)
    day = value.date() if isinstance(value, dt.datetime) else value
    text = f"{roc_year(day.year)}/{day.month:02d}/{day.day:02d}（{day.isoformat()}）"
    if isinstance(value, dt.datetime):
        text += f" {value:%H:%M}"
    return text


def percent(ratio: float | Decimal | None) -> str:
    """A ratio (0.1234) as '12.34%'."""
    if ratio is None:
        return ""
    return f"{float(ratio) * 100:.2f}%"
