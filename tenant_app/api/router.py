"""/api/v1: every JSON route of the application."""

from __future__ import annotations

from fastapi import APIRouter

from tenant_app.api import budget, certifications, journal, vouchers

API_V1 = "/api/v1"

router = APIRouter(prefix=API_V1)
router.include_router(budget.router)
router.include_router(certifications.router)
router.include_router(vouchers.router)
router.include_router(journal.router)
