"""The one shape every report takes before rendering: a header, typed columns, rows and totals.

Rows are an iterable, not a list, so a year's ledger streams from the database cursor straight
into the XLSX/ODS writer without being held in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

ROC_EPOCH = 1911  # 民國元年 = 1912
COUNTY_TZ = ZoneInfo("Asia/Taipei")
YEAR_END_PERIOD = 13  # 第13期: year-end adjustments

Cell = int | str | float | Decimal | dt.date | None


class ColumnKind(StrEnum):
    TEXT = "text"
    MONEY = "money"  # integer 元, thousands separators, right-aligned
    RATE = "rate"  # a ratio shown as a percentage with two places
    DATE = "date"
    COUNT = "count"


class Subtotal(tuple[Cell, ...]):
    """A row that sums the rows above it (小計): shown bold in every format, never summed again."""

    __slots__ = ()


def is_subtotal(row: Sequence[Cell]) -> bool:
    return isinstance(row, Subtotal)


@dataclass(frozen=True)
class Column:
    key: str
    label_zh: str
    label_en: str
    kind: ColumnKind = ColumnKind.TEXT
    width: int = 14  # characters, for spreadsheets


@dataclass(frozen=True)
class ReportHeader:
    county_name: str
    title_zh: str
    title_en: str
    fiscal_year: int  # Gregorian
    period: int  # 1..13, cumulative from period 1
    printed_at: dt.datetime  # timezone-aware
    agency_name: str = ""

    @property
    def roc_year(self) -> int:
        return self.fiscal_year - ROC_EPOCH

    def year_text(self) -> str:
        return f"民國{self.roc_year}年度（{self.fiscal_year}）"

    def period_text(self) -> str:
        if self.period >= YEAR_END_PERIOD:
            return "截至第13期（年度調整期）"
        return f"截至第{self.period}期（1-{self.period}月累計）"

    def printed_text(self) -> str:
        local = self.printed_at.astimezone(COUNTY_TZ)
        return (
            f"列印時間：{local.year - ROC_EPOCH}/{local:%m/%d %H:%M}"
            f"（{local:%Y-%m-%d %H:%M} 臺北時間）"
        )

    def lines(self) -> list[str]:
        """The header as printed above the table in every format."""
        first = f"{self.county_name} {self.title_zh}"
        if self.agency_name:
            first += f"　{self.agency_name}"
        return [first, f"{self.year_text()}　{self.period_text()}", self.printed_text()]


@dataclass
class Sheet:
    header: ReportHeader
    columns: Sequence[Column]
    rows: Iterable[Sequence[Cell]]
    totals: Sequence[Cell] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """A sheet/tab name: spreadsheet programs allow at most 31 characters."""
        return self.header.title_zh[:31]


def format_cell(value: Cell, kind: ColumnKind) -> str:
    """The text a cell shows on screen (and as the visible text of an ODS cell)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.date):
        return f"{value.year - ROC_EPOCH}/{value:%m/%d}"
    if kind is ColumnKind.RATE:
        return f"{float(value) * 100:.2f}%"
    if kind is ColumnKind.MONEY or kind is ColumnKind.COUNT:
        return f"{int(value):,}"
    return str(value)


# What a spreadsheet program evaluates when it is the first character of a cell typed or pasted in:
# a formula (=), an implicit formula (+, -, @ in Excel and LibreOffice), or a tab/CR that CSV-style
# imports split on before reading the rest as a formula (OWASP "CSV injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def is_formula_like(text: str) -> bool:
    """True for text a spreadsheet could read as a formula: writers must mark it as text, not a value."""
    return text.startswith(FORMULA_TRIGGERS)


def is_numeric(kind: ColumnKind) -> bool:
    return kind in (ColumnKind.MONEY, ColumnKind.RATE, ColumnKind.COUNT)
