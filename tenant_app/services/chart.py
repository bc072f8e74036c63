"""Reference data every county starts with: the chart of accounts and the posting rules (data, not code)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app.enums import AccountType, EventKind, JournalKind
from tenant_app.models import Account, PostingRule

TREASURY_DEPOSIT = "1101"
FUND_BALANCE = "3101"
EXPENDITURE = "5101"
ENCUMBRANCES = "9101"
RESERVE_FOR_ENCUMBRANCES = "9201"

ACCOUNTS: tuple[tuple[str, str, str, AccountType], ...] = (
    (TREASURY_DEPOSIT, "國庫存款", "Treasury deposit", AccountType.ASSET),
    (FUND_BALANCE, "基金餘額", "Fund balance", AccountType.EQUITY),
    (EXPENDITURE, "經費支出", "Expenditure", AccountType.EXPENDITURE),
    (ENCUMBRANCES, "歲出保留數", "Encumbrances", AccountType.BUDGETARY),
    (RESERVE_FOR_ENCUMBRANCES, "歲出保留數準備", "Reserve for encumbrances", AccountType.BUDGETARY),
)

POSTING_RULES: tuple[tuple[EventKind, JournalKind, str, str, str], ...] = (
    (EventKind.CERTIFY, JournalKind.TRANSFER, ENCUMBRANCES, RESERVE_FOR_ENCUMBRANCES, "簽證保留"),
    (EventKind.RELEASE, JournalKind.TRANSFER, RESERVE_FOR_ENCUMBRANCES, ENCUMBRANCES, "簽證餘額解除保留"),
    (EventKind.SETTLE_ENCUMBRANCE, JournalKind.TRANSFER, RESERVE_FOR_ENCUMBRANCES, ENCUMBRANCES,
     "付款沖轉保留數"),
    (EventKind.PAY_CERTIFIED, JournalKind.PAYMENT, EXPENDITURE, TREASURY_DEPOSIT, "依簽證付款"),
    (EventKind.PAY_DIRECT, JournalKind.PAYMENT, EXPENDITURE, TREASURY_DEPOSIT, "逕付"),
    (EventKind.ADJUST, JournalKind.RECEIPT, TREASURY_DEPOSIT, FUND_BALANCE, "撥入經費"),
)


def ensure_reference_data(session: Session) -> None:
    """Insert missing accounts and posting rules; existing rows (possibly edited by the county) stay."""
    known_accounts = set(session.scalars(select(Account.code)))
    for code, name, name_en, kind in ACCOUNTS:
        if code not in known_accounts:
            session.add(Account(code=code, name=name, name_en=name_en, type=kind))
    session.flush()
    known_rules = set(session.scalars(select(PostingRule.event_kind)))
    for event, journal_kind, debit, credit, description in POSTING_RULES:
        if event not in known_rules:
            session.add(PostingRule(event_kind=event, journal_kind=journal_kind, debit_account=debit,
                                    credit_account=credit, description=description))
    session.flush()
