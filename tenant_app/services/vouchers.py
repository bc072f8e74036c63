"""Payment vouchers (付款憑單): prepare, edit (voiding signatures), pay; and releasing certifications."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tenant_app.enums import CertificationStatus, EventKind, NumberKind, SourceType, VoucherStatus
from tenant_app.models import BudgetLine, Certification, EInvoice, PaymentVoucher, Signature, VoucherLine
from tenant_app.rules.budget import check_period, check_positive
from tenant_app.rules.certification import insufficient_balance
from tenant_app.rules.errors import ErrorCode, RuleError, RuleViolationError, fmt, refuse_if
from tenant_app.rules.vouchers import (
    CertificationState,
    VoucherLineData,
    check_against_certification,
    check_editable,
    check_einvoice_format,
    check_einvoice_unique,
    check_lines,
    check_payable,
)
from tenant_app.services.balances import add_totals, spend_available
from tenant_app.services.certification import today
from tenant_app.services.numbering import issue_numbers
from tenant_app.services.posting import Posting, load_rule_book, post


def not_found(what: str, ident: int) -> RuleViolationError:
    error = RuleError(ErrorCode.NOT_FOUND, f"查無{what} {ident}", f"{what} {ident} not found", {"id": ident})
    return RuleViolationError([error], status=404)


def _certification(session: Session, certification_id: int, *, lock: bool = False) -> Certification:
    query = select(Certification).where(Certification.id == certification_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    cert = session.execute(query).scalar_one_or_none()
    if cert is None:
        raise not_found("簽證", certification_id)
    return cert


def certification_state(cert: Certification) -> CertificationState:
    return CertificationState(cert.id, cert.budget_line_id, cert.amount, cert.paid_amount,
                              cert.released_amount, cert.status is CertificationStatus.ACTIVE)


def _check_content(session: Session, agency_id: int, certification_id: int | None, amount: int, period: int,
                   lines: Sequence[VoucherLineData], einvoices: Sequence[str],
                   voucher_id: int | None = None) -> tuple[int, list[RuleError]]:
    """Every rule on a voucher's content; returns the fiscal year id the lines belong to."""
    errors = check_positive(amount) + check_period(period) + check_lines(amount, lines)
    line_rows = session.execute(select(BudgetLine.id, BudgetLine.agency_id, BudgetLine.fiscal_year_id)
                                .where(BudgetLine.id.in_({line.budget_line_id for line in lines}))).all()
    known = {row[0]: (row[1], row[2]) for row in line_rows}
    for line in lines:
        if line.budget_line_id not in known:
            errors.append(RuleError(ErrorCode.NOT_FOUND, f"查無預算科目 {line.budget_line_id}",
                                    f"budget line {line.budget_line_id} not found",
                                    {"budget_line_id": line.budget_line_id}))
        elif known[line.budget_line_id][0] != agency_id:
            errors.append(RuleError(ErrorCode.FORBIDDEN_AGENCY, "明細之預算科目不屬於本機關",
                                    "a line's budget line belongs to another agency",
                                    {"budget_line_id": line.budget_line_id, "agency_id": agency_id}))
    years = {year for _, year in known.values()}
    if certification_id is not None:
        cert = _certification(session, certification_id)
        if cert.agency_id != agency_id:
            errors.append(RuleError(ErrorCode.FORBIDDEN_AGENCY, "簽證不屬於本機關",
                                    "the certification belongs to another agency",
                                    {"certification_id": certification_id}))
        errors += check_against_certification(certification_state(cert), amount, lines)
    used_query = select(EInvoice.number).where(EInvoice.number.in_(list(einvoices)))
    if voucher_id is not None:
        used_query = used_query.where(EInvoice.voucher_id != voucher_id)
    used = set(session.scalars(used_query))
    errors += check_einvoice_format(einvoices) + check_einvoice_unique(einvoices, used)
    if len(years) > 1:
        errors.append(RuleError(ErrorCode.INVALID_INPUT, "明細須屬同一會計年度", "lines span fiscal years"))
    return (years.pop() if len(years) == 1 else 0), errors


def create_voucher(
    session: Session, *, agency_id: int, payee: str, amount: int, period: int,
    lines: Sequence[VoucherLineData], einvoices: Sequence[str] = (), certification_id: int | None = None,
    payee_account: str = "", description: str = "", preparer_id: int,
) -> PaymentVoucher:
    year_id, errors = _check_content(session, agency_id, certification_id, amount, period, lines, einvoices)
    refuse_if(errors)
    (number,) = issue_numbers(session, agency_id, year_id, NumberKind.VOUCHER)
    voucher = PaymentVoucher(
        agency_id=agency_id, fiscal_year_id=year_id, number=number, certification_id=certification_id,
        payee=payee, payee_account=payee_account, amount=amount, period=period, description=description,
        status=VoucherStatus.DRAFT, preparer_id=preparer_id,
        lines=[VoucherLine(budget_line_id=ln.budget_line_id, amount=ln.amount, description=ln.description)
               for ln in lines],
        einvoices=[EInvoice(number=number) for number in einvoices],
    )
    session.add(voucher)
    session.flush()
    return voucher


def get_voucher(session: Session, voucher_id: int, *, lock: bool = False) -> PaymentVoucher:
    query = select(PaymentVoucher).where(PaymentVoucher.id == voucher_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    voucher = session.execute(query).scalar_one_or_none()
    if voucher is None:
        raise not_found("付款憑單", voucher_id)
    return voucher


def edit_voucher(
    session: Session, voucher_id: int, *, payee: str, amount: int, period: int,
    lines: Sequence[VoucherLineData], einvoices: Sequence[str] = (), payee_account: str = "",
    description: str = "",
) -> PaymentVoucher:
    """Change a voucher's content: every signature over the old content is void, approval restarts."""
    voucher = get_voucher(session, voucher_id, lock=True)
    refuse_if(check_editable(voucher.status))
    _, errors = _check_content(session, voucher.agency_id, voucher.certification_id, amount, period, lines,
                               einvoices, voucher_id=voucher.id)
    refuse_if(errors)
    session.execute(delete(Signature).where(Signature.voucher_id == voucher.id))
    session.execute(delete(EInvoice).where(EInvoice.voucher_id == voucher.id))
    session.execute(delete(VoucherLine).where(VoucherLine.voucher_id == voucher.id))
    session.expire(voucher, ["lines", "einvoices", "signatures"])
    voucher.payee, voucher.amount, voucher.period = payee, amount, period
    voucher.payee_account, voucher.description = payee_account, description
    voucher.revision += 1
    voucher.status = VoucherStatus.DRAFT
    voucher.reject_reason = None
    session.add_all([VoucherLine(voucher_id=voucher.id, budget_line_id=ln.budget_line_id, amount=ln.amount,
                                 description=ln.description) for ln in lines])
    session.add_all([EInvoice(voucher_id=voucher.id, number=number) for number in einvoices])
    session.flush()
    session.refresh(voucher)
    return voucher


def pay_voucher(session: Session, voucher_id: int, chain_errors: Sequence[RuleError], *,
                user_id: int | None, on: dt.date | None = None) -> PaymentVoucher:
    """Pay an approved voucher whose signature chain verifies (`chain_errors` from approvals.verify).

    Against a certification the encumbrance is settled; a direct payment consumes available
    balance through the same conditional update as certification.
    """
    voucher = get_voucher(session, voucher_id, lock=True)
    refuse_if(check_payable(voucher.status, chain_errors))
    day = on or today()
    book = load_rule_book(session)
    postings: list[Posting] = []
    if voucher.certification_id is not None:
        cert = _certification(session, voucher.certification_id, lock=True)
        paid_lines = [VoucherLineData(ln.budget_line_id, ln.amount) for ln in voucher.lines]
        refuse_if(check_against_certification(certification_state(cert), voucher.amount, paid_lines))
        cert.paid_amount += voucher.amount
        if cert.paid_amount + cert.released_amount == cert.amount:
            cert.status = CertificationStatus.SETTLED
        for line in voucher.lines:
            add_totals(session, line.budget_line_id, paid_on_certified=line.amount)
            for event in (EventKind.PAY_CERTIFIED, EventKind.SETTLE_ENCUMBRANCE):
                postings.append(Posting(event, voucher.period, day, SourceType.VOUCHER, voucher.id,
                                        f"付款憑單 {voucher.number}", line.amount, line.budget_line_id))
    else:
        for line in voucher.lines:
            if not spend_available(session, line.budget_line_id, line.amount, paid_direct=line.amount):
                seen = session.get_one(BudgetLine, line.budget_line_id, populate_existing=True).available
                refuse_if([insufficient_balance(line.budget_line_id, seen, line.amount)])
            postings.append(Posting(EventKind.PAY_DIRECT, voucher.period, day, SourceType.VOUCHER, voucher.id,
                                    f"付款憑單 {voucher.number}", line.amount, line.budget_line_id))
    post(session, book, voucher.agency_id, voucher.fiscal_year_id, postings, posted_by=user_id)
    voucher.status = VoucherStatus.PAID
    voucher.paid_at = dt.datetime.now(dt.UTC)
    session.flush()
    return voucher


def release_certification(session: Session, certification_id: int, amount: int | None = None, *,
                          user_id: int | None, on: dt.date | None = None) -> Certification:
    """Give back an encumbrance (all that remains, or `amount` of it) to the line's available balance."""
    cert = _certification(session, certification_id, lock=True)
    state = certification_state(cert)
    to_release = state.remaining if amount is None else amount
    errors = check_positive(to_release)
    if not state.active or to_release > state.remaining:
        errors.append(RuleError(ErrorCode.CERTIFICATION_OVER_REMAINING,
                                f"解除保留 {fmt(to_release)} 元超過簽證餘額 {fmt(state.remaining)} 元",
                                f"release of {to_release} exceeds the certification's remaining "
                                f"{state.remaining}",
                                {"certification_id": cert.id, "remaining": state.remaining}))
    refuse_if(errors)
    cert.released_amount += to_release
    if cert.paid_amount + cert.released_amount == cert.amount:
        cert.status = CertificationStatus.SETTLED
    add_totals(session, cert.budget_line_id, released=to_release)
    post(session, load_rule_book(session), cert.agency_id, cert.fiscal_year_id,
         [Posting(EventKind.RELEASE, cert.period, on or today(), SourceType.CERTIFICATION, cert.id,
                  f"簽證 {cert.number} 解除保留", to_release, cert.budget_line_id)], posted_by=user_id)
    session.flush()
    return cert
