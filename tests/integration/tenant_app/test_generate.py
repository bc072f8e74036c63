"""The voucher generator leaves a consistent county: balances >= 0, journal balanced and reconciled
with the lines' totals, gapless numbers, unique e-invoices; on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from tenant_app.db import make_engine, session_scope
from tenant_app.generate import generate
from tenant_app.migrations import upgrade
from tenant_app.models import BudgetLine, Certification, EInvoice, JournalLine, PaymentVoucher
from tenant_app.rules.journal import check_gapless
from tenant_app.seed import seed_demo
from tenant_app.services.chart import ENCUMBRANCES, EXPENDITURE
from tenant_app.settings import Settings


def test_generated_vouchers_are_consistent(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        seed_demo(session, Settings(database_url=db_url))
    summary = generate(engine, 600, seed=7)
    assert summary.vouchers == 600
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(PaymentVoucher)) == 600
        for line in session.scalars(select(BudgetLine)):
            assert line.available >= 0
            certified = session.scalar(select(func.coalesce(func.sum(Certification.amount), 0))
                                       .where(Certification.budget_line_id == line.id))
            assert certified == line.certified
            net = dict(session.execute(
                select(JournalLine.account_code, func.sum(JournalLine.debit - JournalLine.credit))
                .where(JournalLine.budget_line_id == line.id).group_by(JournalLine.account_code)).all())
            assert net.get(EXPENDITURE, 0) == line.paid_on_certified + line.paid_direct
            assert net.get(ENCUMBRANCES, 0) == line.certified - line.paid_on_certified - line.released
        totals = select(func.sum(JournalLine.debit), func.sum(JournalLine.credit))
        debit, credit = session.execute(totals).one()
        assert debit == credit > 0
        for agency_id in session.scalars(select(PaymentVoucher.agency_id).distinct()):
            numbers = list(session.scalars(select(PaymentVoucher.number)
                                           .where(PaymentVoucher.agency_id == agency_id)))
            assert check_gapless(numbers) == []
        invoices = list(session.scalars(select(EInvoice.number)))
        assert len(invoices) == len(set(invoices)) > 0
    engine.dispose()
