"""Property: any sequence of certify / pay / pay-direct / release / transfer, refused or not, keeps
every available balance >= 0, every journal entry balanced, and the ledger reconciled with the lines'
running totals (open encumbrance and expenditure per line). Refusals write nothing."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tenant_app.db import Base, make_engine, session_scope
from tenant_app.enums import CertificationStatus, VoucherStatus
from tenant_app.models import Agency, BudgetLine, Certification, FiscalYear, JournalLine, User
from tenant_app.rules.errors import RuleViolationError
from tenant_app.rules.vouchers import VoucherLineData
from tenant_app.services import budget, vouchers
from tenant_app.services.certification import CertifyRequest, commit_group
from tenant_app.services.chart import ENCUMBRANCES, EXPENDITURE, ensure_reference_data
from tenant_app.services.posting import load_rule_book

DAY = dt.date(2026, 6, 15)
LINES = 3  # two ordinary lines and one personnel line, one programme

amounts = st.integers(min_value=1, max_value=60_000)
operations = st.lists(st.one_of(
    st.tuples(st.just("certify"), st.integers(0, LINES - 1), amounts),
    st.tuples(st.just("pay"), st.integers(0, 9), amounts),
    st.tuples(st.just("pay_direct"), st.integers(0, LINES - 1), amounts),
    st.tuples(st.just("release"), st.integers(0, 9), amounts),
    st.tuples(st.just("transfer"), st.tuples(st.integers(0, LINES - 1), st.integers(0, LINES - 1)), amounts),
), min_size=1, max_size=25)


@contextmanager
def small_county() -> Iterator[tuple[Engine, list[int], int]]:
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'p.db'}")
        Base.metadata.create_all(engine)
        with session_scope(engine) as session:
            ensure_reference_data(session)
            year = FiscalYear(year=DAY.year)
            agency = Agency(code="A", name="測試機關")
            user = User(username="u", display_name="u", password_hash="x", role="accountant")
            session.add_all([year, agency, user])
            session.flush()
            lines = [BudgetLine(agency_id=agency.id, fiscal_year_id=year.id, programme_code="01",
                                programme_name="p", sub_item="s", object_code=f"{i}000", object_name="o",
                                is_personnel=(i == LINES - 1), budget=200_000) for i in range(LINES)]
            session.add_all(lines)
            session.flush()
            for line in lines:
                budget.allot(session, line.id, 1, 150_000, on=DAY)
            line_ids, user_id = [line.id for line in lines], user.id
        try:
            yield engine, line_ids, user_id
        finally:
            engine.dispose()


def _approved_voucher(session: Session, line_id: int, amount: int, cert_id: int | None, user_id: int) -> int:
    voucher = vouchers.create_voucher(session, agency_id=1, payee="p", amount=amount, period=DAY.month,
                                      lines=[VoucherLineData(line_id, amount)], certification_id=cert_id,
                                      preparer_id=user_id)
    voucher.status = VoucherStatus.APPROVED  # the signature chain is tested elsewhere; here: money
    session.flush()
    return voucher.id


def _apply(session: Session, op: tuple, line_ids: list[int], user_id: int) -> None:
    kind, target, amount = op
    certs = session.scalars(select(Certification).where(Certification.status == CertificationStatus.ACTIVE)
                            .order_by(Certification.id)).all()
    if kind == "certify":
        commit_group(session.connection(), load_rule_book(session),
                     [CertifyRequest(line_ids[target], amount, user_id, entry_date=DAY, period=DAY.month)])
    elif kind == "pay_direct":
        vid = _approved_voucher(session, line_ids[target], amount, None, user_id)
        vouchers.pay_voucher(session, vid, [], user_id=user_id, on=DAY)
    elif kind in ("pay", "release") and certs:
        cert = certs[target % len(certs)]
        if kind == "release":
            vouchers.release_certification(session, cert.id, amount, user_id=user_id, on=DAY)
        else:
            vid = _approved_voucher(session, cert.budget_line_id, amount, cert.id, user_id)
            vouchers.pay_voucher(session, vid, [], user_id=user_id, on=DAY)
    elif kind == "transfer":
        source, dest = target
        budget.transfer(session, line_ids[source], line_ids[dest], amount, "r", user_id=user_id)


def _net(session: Session, account: str, line_id: int) -> int:
    query = (select(func.coalesce(func.sum(JournalLine.debit - JournalLine.credit), 0))
             .where(JournalLine.account_code == account, JournalLine.budget_line_id == line_id))
    return int(session.scalar(query) or 0)


def _check_invariants(session: Session, line_ids: list[int]) -> None:
    for line in session.scalars(select(BudgetLine).where(BudgetLine.id.in_(line_ids))):
        session.refresh(line)
        assert line.available >= 0
        assert line.paid_on_certified + line.released <= line.certified
        assert line.allotted + line.allotted_pending <= line.authorised
        totals = session.execute(select(func.coalesce(func.sum(Certification.amount), 0),
                                        func.coalesce(func.sum(Certification.paid_amount), 0),
                                        func.coalesce(func.sum(Certification.released_amount), 0))
                                 .where(Certification.budget_line_id == line.id)).one()
        assert (line.certified, line.paid_on_certified, line.released) == tuple(totals)
        # The ledger agrees with the running totals: open encumbrance and expenditure per line.
        assert _net(session, ENCUMBRANCES, line.id) == line.certified - line.paid_on_certified - line.released
        assert _net(session, EXPENDITURE, line.id) == line.paid_on_certified + line.paid_direct
    unbalanced = session.execute(select(JournalLine.entry_id).group_by(JournalLine.entry_id)
                                 .having(func.sum(JournalLine.debit) != func.sum(JournalLine.credit))).all()
    assert unbalanced == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_any_sequence_keeps_balances_non_negative_and_the_journal_balanced(ops: list[tuple]) -> None:
    with small_county() as (engine, line_ids, user_id), session_scope(engine) as session:
        for op in ops:
            savepoint = session.begin_nested()
            try:
                _apply(session, op, line_ids, user_id)
                savepoint.commit()
            except RuleViolationError:
                savepoint.rollback()  # a refusal must leave nothing behind
            _check_invariants(session, line_ids)
