"""How records are shown in API responses (plain JSON-able dicts)."""

from __future__ import annotations

from typing import Any

from tenant_app.models import BudgetLine, Certification, JournalEntry, PaymentVoucher
from tenant_app.services.certification import CertifyOutcome


def line_json(line: BudgetLine) -> dict[str, Any]:
    return {
        "id": line.id, "agency_id": line.agency_id, "fiscal_year_id": line.fiscal_year_id,
        "programme_code": line.programme_code, "programme_name": line.programme_name,
        "sub_item": line.sub_item, "object_code": line.object_code, "object_name": line.object_name,
        "is_personnel": line.is_personnel, "budget": line.budget, "amended": line.amended,
        "transferred_in": line.transferred_in, "transferred_out": line.transferred_out,
        "authorised": line.authorised, "allotted": line.allotted, "allotted_pending": line.allotted_pending,
        "certified": line.certified, "paid_on_certified": line.paid_on_certified,
        "paid_direct": line.paid_direct, "released": line.released, "available": line.available,
    }


def certification_json(cert: Certification) -> dict[str, Any]:
    return {
        "id": cert.id, "agency_id": cert.agency_id, "fiscal_year_id": cert.fiscal_year_id,
        "number": cert.number,
        "budget_line_id": cert.budget_line_id, "period": cert.period, "amount": cert.amount,
        "paid_amount": cert.paid_amount, "released_amount": cert.released_amount, "purpose": cert.purpose,
        "status": cert.status.value, "created_by_id": cert.created_by_id,
    }


def outcome_json(outcome: CertifyOutcome) -> dict[str, Any]:
    return {
        "id": outcome.certification_id, "number": outcome.number, "journal_number": outcome.journal_number,
        "budget_line_id": outcome.budget_line_id, "amount": outcome.amount,
        "available_before": outcome.available_seen, "available_after": outcome.available_after,
    }


def voucher_json(voucher: PaymentVoucher) -> dict[str, Any]:
    return {
        "id": voucher.id, "agency_id": voucher.agency_id, "fiscal_year_id": voucher.fiscal_year_id,
        "number": voucher.number, "certification_id": voucher.certification_id, "payee": voucher.payee,
        "payee_account": voucher.payee_account, "amount": voucher.amount, "period": voucher.period,
        "description": voucher.description, "status": voucher.status.value, "revision": voucher.revision,
        "preparer_id": voucher.preparer_id, "reject_reason": voucher.reject_reason,
        "paid_at": voucher.paid_at.isoformat() if voucher.paid_at else None,
        "lines": [{"budget_line_id": ln.budget_line_id, "amount": ln.amount, "description": ln.description}
                  for ln in voucher.lines],
        "einvoices": [inv.number for inv in voucher.einvoices],
        "signatures": [{"step": s.step.value, "signer_id": s.signer_id, "on_behalf_of": s.on_behalf_of_id,
                        "signed_at": s.signed_at.isoformat(), "content_hash": s.content_hash}
                       for s in voucher.signatures],
    }


def entry_json(entry: JournalEntry) -> dict[str, Any]:
    return {
        "id": entry.id, "agency_id": entry.agency_id, "fiscal_year_id": entry.fiscal_year_id,
        "kind": entry.kind.value, "number": entry.number, "period": entry.period,
        "entry_date": entry.entry_date.isoformat(), "event_kind": entry.event_kind.value,
        "source_type": entry.source_type, "source_id": entry.source_id, "description": entry.description,
        "reversal_of_id": entry.reversal_of_id,
        "lines": [{"account_code": ln.account_code, "debit": ln.debit, "credit": ln.credit,
                   "budget_line_id": ln.budget_line_id} for ln in entry.lines],
    }
