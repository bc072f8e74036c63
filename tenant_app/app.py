"""The FastAPI application factory: create_app(settings) wires the database, routers and middleware."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

import tenant_app.services.journal  # noqa: F401  (registers the posted-entry immutability guard)
from tenant_app import audit, timing
from tenant_app.api import errors as api_errors
from tenant_app.api.fastpath import CertifyFastPath
from tenant_app.api.limits import RequestLimits
from tenant_app.api.naive import naive_engine
from tenant_app.api.naive import router as naive_router
from tenant_app.api.router import include_api
from tenant_app.db import make_engine, session_factory
from tenant_app.metrics import CONTENT_TYPE_LATEST, AppMetrics
from tenant_app.middleware import ForwardedMiddleware, ServerTimingMiddleware
from tenant_app.migrations import is_current
from tenant_app.reports.routes import router as reports_router
from tenant_app.services.budget import apply_all_due
from tenant_app.services.certify_writer import CertificationWriter, WriterMode
from tenant_app.settings import Settings
from tenant_app.web.router import web_router

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """Everything a request handler needs, built once per app (reachable as request.app.state.tenant)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    metrics: AppMetrics
    writer: CertificationWriter
    naive_engine: Engine | None = None  # bench/certify.py's reference path only


ALLOTMENT_ROLL_SECONDS = 3600.0


def _roll_allotments(state: AppState) -> int:
    with state.sessions() as session, session.begin():
        return apply_all_due(session)


async def _roll_allotments_forever(state: AppState) -> None:
    """Allotments of a month count as allotted-to-date once the month arrives: check now, then hourly."""
    while True:
        try:
            await run_in_threadpool(_roll_allotments, state)
        except Exception:  # a failed roll is retried next hour; it must not stop the app
            log.exception("rolling due allotments failed")
        await asyncio.sleep(ALLOTMENT_ROLL_SECONDS)


def _writer_mode(settings: Settings) -> WriterMode | None:
    return WriterMode(settings.certify_writer_mode) if settings.certify_writer_mode else None


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.tenant
    # Everything imported and built so far lives as long as the process: move it out of the
    # collector's sight, so the periodic full collections that stall requests stay short.
    gc.collect()
    gc.freeze()
    await state.writer.start()
    roll = asyncio.create_task(_roll_allotments_forever(state), name="allotment-roll")
    try:
        yield
    finally:
        roll.cancel()
        await state.writer.stop()
        if state.naive_engine is not None:
            state.naive_engine.dispose()
        state.engine.dispose()


def _healthz(request: Request) -> JSONResponse:
    state: AppState = request.app.state.tenant
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = is_current(state.engine)
    except Exception as error:  # any failure to reach the database is "unhealthy", with its reason
        return JSONResponse({"status": "error", "database": str(error)}, status_code=503)
    if not current:
        return JSONResponse({"status": "error", "migrations": "not current"}, status_code=503)
    return JSONResponse({"status": "ok", "county": state.settings.county_id})


def _metrics(request: Request) -> Response:
    return Response(request.app.state.tenant.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def build_app() -> FastAPI:
    """Routes and middleware, which are the same for every county; `bind` makes the app a county's.

    Split in two because building the routes is most of the app's start-up CPU: a county VM's
    launcher builds them before it knows its county (in the saved template), so a clone pays
    only for `bind`.
    """
    app_metrics = AppMetrics()
    app = FastAPI(title="預算會計系統", lifespan=_lifespan)
    app.state.metrics = app_metrics
    api_errors.install(app)

    # Added first so it runs inside ServerTimingMiddleware: fast-path answers are timed and counted too.
    app.add_middleware(CertifyFastPath)
    # Outside the fast path: size, JSON depth and media type are bounded before any body is parsed.
    app.add_middleware(RequestLimits)
    app.add_middleware(ServerTimingMiddleware, metrics=app_metrics)
    # Outermost: everything inside sees the client and scheme the trusted gateway reports.
    app.add_middleware(ForwardedMiddleware)
    app.add_api_route("/healthz", _healthz, methods=["GET"], tags=["ops"])
    app.add_api_route("/metrics", _metrics, methods=["GET"], tags=["ops"])

    # ---- Routers -------------------------------------------------------------------------------
    # One line per router; keep each an include, no logic here.
    # ---------------------------------------------------------------------------------------------
    include_api(app)  # /api/v1 (JSON API)
    app.include_router(web_router)  # the zh-TW web UI (log-in, pages, static CSS)
    app.include_router(reports_router)  # /api/v1/reports/{kind}?format=html|xlsx|ods
    return app


def bind(app: FastAPI, settings: Settings) -> FastAPI:
    """Give an app from `build_app` its county: settings, database engine and certification writer."""
    app_metrics: AppMetrics = app.state.metrics
    # The audit head this county's app writes is signed with its secret (tenant_app/audit.py).
    audit.anchor_key(settings.database_url, settings.secret)
    engine = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous)
    timing.instrument(engine)
    writer = CertificationWriter(engine, batch_max=settings.certify_batch_max, mode=_writer_mode(settings),
                                 on_group=app_metrics.certify_batch.observe)
    state = AppState(settings=settings, engine=engine, sessions=session_factory(engine),
                     metrics=app_metrics, writer=writer)
    if settings.enable_naive_certify:
        state.naive_engine = naive_engine(settings.database_url)
        app.include_router(naive_router)  # bench reference only
    app.title = f"{settings.county_name} 預算會計系統"
    app.state.tenant = state
    return app


def create_app(settings: Settings) -> FastAPI:
    return bind(build_app(), settings)
