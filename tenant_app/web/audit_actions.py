"""Audit-log actions for changes made through the web UI that no service below records itself."""

from __future__ import annotations

from enum import StrEnum


class WebAuditAction(StrEnum):
    CERTIFIED = "certification.created"
    VOUCHER_PREPARED = "voucher.prepared"
    VOUCHER_PAID = "voucher.paid"
    JOURNAL_REVERSED = "journal.reversed"
    PERIOD_CLOSED = "period.closed"
    DELEGATION_CREATED = "delegation.created"
    DELEGATION_DELETED = "delegation.deleted"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_PASSWORD_SET = "user.password_set"
    USER_GRANTS_SET = "user.grants_set"
