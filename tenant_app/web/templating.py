"""The Jinja2 environment of the web UI: local templates, autoescaping, zh-TW number and date filters."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from tenant_app.security.permissions import ROLE_LABEL_ZH
from tenant_app.web import formatting

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


# How the figures attached to a refusal (RuleError.entry) are labelled on screen.
ENTRY_LABELS = {
    "available": "可用餘額（系統所見）",
    "requested": "申請金額",
    "amount": "金額",
    "budget_line_id": "預算科目編號",
    "limit": "上限",
    "remaining": "尚餘",
    "period": "期別",
    "voucher_id": "付款憑單編號",
    "certification_id": "簽證編號",
    "number": "號碼",
    "numbers": "號碼",
}


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(("html",)),
        # A typo in a template variable is a failed test, not a silently empty cell.
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = formatting.money
    env.filters["roc_date"] = formatting.roc_date
    env.filters["year_label"] = formatting.year_label
    env.filters["percent"] = formatting.percent
    env.globals["entry_labels"] = ENTRY_LABELS
    env.globals["role_labels"] = ROLE_LABEL_ZH
    return env


templates = Jinja2Templates(env=_environment())
