"""Reading what users type into forms: amounts in integer 元, dates, lists of e-invoice numbers.

A form error is raised as FormError with a zh-TW message; the page re-renders the form with it.
Floats are refused here (ACCOUNTING.md: money is integer 元), and thousands separators typed by
habit ("12,000") are accepted. Every number is checked against its declared domain
(tenant_app/domains.py), the same ranges the JSON API enforces.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import TypeVar

from tenant_app.domains import AMOUNT, ID, DomainError, IntDomain

E = TypeVar("E", bound=StrEnum)
_SHOWN = 40  # characters of a refused value repeated in its message


class FormError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_INTEGER = re.compile(r"[0-9]{1,20}")


def _shown(raw: str) -> str:
    text = raw.strip()
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _in_domain(value: int, domain: IntDomain, label: str) -> int:
    try:
        return domain.check(value)
    except DomainError as error:
        raise FormError(f"{label}：{error.message_zh}。") from error


def parse_money(raw: str, label: str = "金額") -> int:
    text = raw.strip().replace(",", "").replace("，", "").replace(" ", "")
    if not text:
        raise FormError(f"請輸入{label}。")
    if not _INTEGER.fullmatch(text):
        if re.fullmatch(r"[0-9]{0,20}\.[0-9]{1,20}", text):
            raise FormError(f"{label}須為整數元，不接受小數（{_shown(raw)}）。")
        raise FormError(f"{label}格式錯誤：{_shown(raw)}")
    value = int(text)
    if value <= 0:
        raise FormError(f"{label}須大於零。")
    return _in_domain(value, AMOUNT, label)


def parse_optional_int(raw: str, label: str, domain: IntDomain = ID) -> int | None:
    """A whole number typed into a field, in its domain (ids unless told); '' is None."""
    text = raw.strip()
    if not text:
        return None
    if not _INTEGER.fullmatch(text):
        raise FormError(f"{label}須為整數：{_shown(text)}")
    return _in_domain(int(text), domain, label)


def parse_date(raw: str, label: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw.strip())
    except ValueError as error:
        raise FormError(f"{label}格式錯誤，請用 YYYY-MM-DD：{raw.strip()}") from error


def parse_invoice_numbers(raw: str) -> list[str]:
    """E-invoice numbers separated by commas, spaces or new lines; upper-cased, order kept."""
    return [part.upper() for part in re.split(r"[\s,，、]+", raw.strip()) if part]


def parse_choice(raw: str | None, choices: type[E], label: str) -> E | None:
    """A filter's select: '' (全部) is no filter; anything else must be one of the enum's values."""
    if not raw:
        return None
    try:
        return choices(raw)
    except ValueError as error:
        raise FormError(f"{label}不正確：{raw}") from error
