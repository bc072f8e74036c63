"""/api/v1: every JSON route of the application."""

from __future__ import annotations

from fastapi import FastAPI

from tenant_app.api import API_V1, budget, certifications, journal, vouchers

__all__ = ["API_V1", "include_api"]

ROUTERS = (budget.router, certifications.router, vouchers.router, journal.router)


def include_api(app: FastAPI) -> None:
    # Each router carries the /api/v1 prefix itself, so a route's template (and its metrics
    # label) is the full path.
    for router in ROUTERS:
        app.include_router(router)
