"""The payment-voucher form: read what was typed into plain data, or fill the form from a voucher.

`values` always echoes what the user typed, so a refused form comes back as they left it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from tenant_app.domains import MAX_LINES, PERIOD
from tenant_app.models import Certification, PaymentVoucher
from tenant_app.rules.vouchers import VoucherLineData
from tenant_app.services.certification import today
from tenant_app.web.forms import FormError, parse_invoice_numbers, parse_money, parse_optional_int

LINE_ROWS = 3  # blank line rows on the form; enough for the common case


@dataclass
class VoucherInput:
    payee: str
    payee_account: str
    description: str
    period: int
    certification_id: int | None
    lines: list[VoucherLineData]
    einvoices: list[str] = field(default_factory=list)

    @property
    def amount(self) -> int:
        return sum(line.amount for line in self.lines)


def _blank_line() -> dict[str, str]:
    return {"budget_line_id": "", "amount": "", "description": ""}


def blank(certification: Certification | None) -> dict[str, object]:
    """A new voucher's form; against a certification its line and remaining amount are filled in."""
    lines = [_blank_line() for _ in range(LINE_ROWS)]
    if certification is not None:
        remaining = certification.amount - certification.paid_amount - certification.released_amount
        lines[0] = {"budget_line_id": str(certification.budget_line_id), "amount": f"{remaining:,}",
                    "description": certification.purpose}
    return {
        "certification_id": str(certification.id) if certification else "",
        "payee": "", "payee_account": "", "description": certification.purpose if certification else "",
        "period": str(today().month), "einvoices": "", "lines": lines,
    }


def from_voucher(voucher: PaymentVoucher) -> dict[str, object]:
    lines = [{"budget_line_id": str(ln.budget_line_id), "amount": f"{ln.amount:,}",
              "description": ln.description} for ln in voucher.lines]
    lines += [_blank_line() for _ in range(max(0, LINE_ROWS - len(lines)))]
    return {
        "certification_id": str(voucher.certification_id or ""), "payee": voucher.payee,
        "payee_account": voucher.payee_account, "description": voucher.description,
        "period": str(voucher.period), "einvoices": "\n".join(inv.number for inv in voucher.einvoices),
        "lines": lines,
    }


async def read(request: Request) -> tuple[dict[str, object], VoucherInput | None, str | None]:
    """(values as typed, parsed input or None, the form error or None)."""
    data = await request.form()

    def text(name: str) -> str:
        value = data.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    # At most MAX_LINES rows are read back, however many fields a hand-made form sends.
    sent = sum(1 for key in data if key.endswith("_budget_line_id"))
    rows = min(MAX_LINES, max(LINE_ROWS, sent))
    line_rows = [{"budget_line_id": text(f"line_{i}_budget_line_id"), "amount": text(f"line_{i}_amount"),
                  "description": text(f"line_{i}_description")} for i in range(rows)]
    values: dict[str, object] = {
        "certification_id": text("certification_id"), "payee": text("payee"),
        "payee_account": text("payee_account"), "description": text("description"),
        "period": text("period"), "einvoices": text("einvoices"), "lines": line_rows,
    }
    try:
        if sent > MAX_LINES:
            raise FormError(f"明細最多 {MAX_LINES} 列。")
        if not text("payee"):
            raise FormError("請輸入受款人。")
        lines = []
        for i, row in enumerate(line_rows):
            if not row["amount"] and not row["budget_line_id"]:
                continue
            line_id = parse_optional_int(row["budget_line_id"], f"第 {i + 1} 列預算科目")
            if line_id is None:
                raise FormError(f"第 {i + 1} 列請選擇預算科目。")
            lines.append(VoucherLineData(line_id, parse_money(row["amount"], f"第 {i + 1} 列金額"),
                                         row["description"][:255]))
        if not lines:
            raise FormError("請至少填寫一列明細。")
        parsed = VoucherInput(
            payee=text("payee")[:200], payee_account=text("payee_account")[:64],
            description=text("description"),
            period=parse_optional_int(text("period"), "期別", PERIOD) or today().month,
            certification_id=parse_optional_int(text("certification_id"), "簽證"), lines=lines,
            einvoices=parse_invoice_numbers(text("einvoices")),
        )
    except FormError as error:
        return values, None, error.message
    return values, parsed, None
