"""A report as an HTML table fragment (Jinja2), for the web UI to place inside its own page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from tenant_app.reports.sheet import Cell, Column, Sheet, format_cell, is_numeric, is_subtotal

_ENV = Environment(
    loader=PackageLoader("tenant_app.reports", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class _HeadCell:
    label: str
    numeric: bool


@dataclass(frozen=True)
class _Cell:
    text: str
    raw: str
    numeric: bool


@dataclass(frozen=True)
class _Row:
    cells: list[_Cell]
    subtotal: bool


def _cells(row: Sequence[Cell], columns: Sequence[Column]) -> list[_Cell]:
    return [
        _Cell(
            format_cell(value, col.kind),
            "" if value is None else str(value),
            is_numeric(col.kind) and value is not None and not isinstance(value, str),
        )
        for value, col in zip(row, columns, strict=True)
    ]


def render(sheet: Sheet) -> str:
    template = _ENV.get_template("report_table.html.j2")
    return template.render(
        header_lines=sheet.header.lines(),
        columns=[_HeadCell(c.label_zh, is_numeric(c.kind)) for c in sheet.columns],
        rows=(_Row(_cells(r, sheet.columns), is_subtotal(r)) for r in sheet.rows),
        totals=_cells(sheet.totals, sheet.columns) if sheet.totals is not None else None,
        notes=sheet.notes,
    )
