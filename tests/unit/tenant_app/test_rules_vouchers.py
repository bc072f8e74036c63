"""Payment voucher rules: lines, e-invoices, certification remaining, editable and payable states."""

from __future__ import annotations

from tenant_app.enums import VoucherStatus
from tenant_app.rules.errors import ErrorCode, RuleError
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


def codes(errors: list[RuleError]) -> list[ErrorCode]:
    return [e.code for e in errors]


def test_einvoice_format_two_uppercase_letters_and_eight_digits() -> None:
    assert check_einvoice_format(["AB12345678", "ZZ00000000"]) == []
    bad = ["ab12345678", "AB1234567", "AB123456789", "A112345678", "AB1234567X", " AB12345678"]
    errors = check_einvoice_format(bad)
    assert len(errors) == len(bad)
    assert all(e.code is ErrorCode.EINVOICE_FORMAT for e in errors)
    assert errors[0].entry == {"einvoice": "ab12345678"}


def test_einvoice_used_once_in_the_county_and_once_on_the_voucher() -> None:
    assert check_einvoice_unique(["AB12345678"], set()) == []
    assert codes(check_einvoice_unique(["AB12345678"], {"AB12345678"})) == [ErrorCode.EINVOICE_DUPLICATE]
    assert codes(check_einvoice_unique(["AB12345678", "AB12345678"], set())) == [ErrorCode.EINVOICE_DUPLICATE]


def test_lines_must_add_up_to_the_voucher_amount() -> None:
    lines = [VoucherLineData(1, 600), VoucherLineData(2, 400)]
    assert check_lines(1_000, lines) == []
    errors = check_lines(1_001, lines)
    assert codes(errors) == [ErrorCode.VOUCHER_LINES_MISMATCH]
    assert errors[0].entry == {"amount": 1_001, "lines_total": 1_000}
    assert ErrorCode.MONEY_NOT_POSITIVE in codes(check_lines(0, []))
    assert ErrorCode.MONEY_NOT_POSITIVE in codes(check_lines(0, [VoucherLineData(1, 0)]))


def test_voucher_against_certification_spends_its_line_up_to_what_remains() -> None:
    cert = CertificationState(id=5, budget_line_id=3, amount=1_000, paid_amount=300, released_amount=200,
                              active=True)
    assert cert.remaining == 500
    assert check_against_certification(cert, 500, [VoucherLineData(3, 500)]) == []
    assert codes(check_against_certification(cert, 501, [VoucherLineData(3, 501)])) == [
        ErrorCode.CERTIFICATION_OVER_REMAINING]
    assert codes(check_against_certification(cert, 100, [VoucherLineData(4, 100)])) == [
        ErrorCode.VOUCHER_LINE_OTHER_BUDGET_LINE]
    settled = CertificationState(5, 3, 1_000, 1_000, 0, active=False)
    assert ErrorCode.CERTIFICATION_NOT_ACTIVE in codes(check_against_certification(settled, 1, [
        VoucherLineData(3, 1)]))


def test_only_unapproved_vouchers_can_be_edited() -> None:
    for status in (VoucherStatus.DRAFT, VoucherStatus.REJECTED, VoucherStatus.IN_APPROVAL):
        assert check_editable(status) == []
    for status in (VoucherStatus.APPROVED, VoucherStatus.BATCHED, VoucherStatus.PAID):
        assert codes(check_editable(status)) == [ErrorCode.VOUCHER_NOT_EDITABLE]


def test_payment_needs_approval_and_a_good_chain() -> None:
    assert check_payable(VoucherStatus.APPROVED, []) == []
    assert check_payable(VoucherStatus.BATCHED, []) == []
    assert codes(check_payable(VoucherStatus.IN_APPROVAL, [])) == [ErrorCode.VOUCHER_NOT_APPROVED]
    chain = [RuleError(ErrorCode.SIGNATURES_INVALID, "簽章不符", "bad signature")]
    assert codes(check_payable(VoucherStatus.APPROVED, chain)) == [ErrorCode.SIGNATURES_INVALID]
    assert codes(check_payable(VoucherStatus.PAID, [])) == [ErrorCode.VOUCHER_NOT_APPROVED]
