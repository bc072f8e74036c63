"""Audit-log actions for changes only the web UI makes (people and delegations).

Money changes use tenant_app.enums.AuditAction, the same names the JSON API writes, so the audit
log reads the same whichever door a change came through.
"""

from __future__ import annotations

from enum import StrEnum


class WebAuditAction(StrEnum):
    DELEGATION_CREATED = "delegation.created"
    DELEGATION_DELETED = "delegation.deleted"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_PASSWORD_SET = "user.password_set"
    USER_GRANTS_SET = "user.grants_set"
