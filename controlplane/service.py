"""The service's one process: the REST API, the console and the job workers, on 127.0.0.1.

`build_app` assembles the ASGI app from a ServiceContext (tests build it with their own database and
a fake use-case backend); `context_from_settings` wires the real one.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import anyio
from fastapi import FastAPI

from controlplane import audit, auth, metrics
from controlplane.api import backup_routes
from controlplane.api import errors as api_errors
from controlplane.api.deps import Operations, ServiceContext
from controlplane.api.limits import BodyLimit
from controlplane.api.routes import router as api_router
from controlplane.settings import Settings
from controlplane.web import backup_pages, console, monitoring_page

log = logging.getLogger("countycloud.service")

# Bodies above this are refused with 413 before they are read (an inventory declaration of every
# county is ~10 KiB; the largest field accepted, the YAML text, is 512 KiB).
MAX_BODY_BYTES = 1024 * 1024

Hook = Callable[[ServiceContext], None]


def build_app(ctx: ServiceContext, *, on_start: Hook | None = None, on_stop: Hook | None = None) -> FastAPI:
    """The API (/api/v1, OpenAPI at /docs) and the console (/), sharing one context.

    `on_start`/`on_stop` run in the app's lifespan: the service starts the job workers there.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # In a thread: DBOS refuses its blocking calls where an event loop runs.
        if on_start is not None:
            await anyio.to_thread.run_sync(on_start, ctx)
        try:
            yield
        finally:
            if on_stop is not None:
                await anyio.to_thread.run_sync(on_stop, ctx)

    app = FastAPI(
        title="CountyCloud control plane", version="1",
        description="Sites, hosts, counties, VMs and their jobs. Authenticate with "
                    "`Authorization: Bearer <token>` (`countycloud token create`). Every error is "
                    '`{"code": ..., "message": ...}`.',
        docs_url="/docs", redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.state.ctx = ctx
    api_errors.install(app, html=console.render_error, wants_html=console.wants_html)
    app.include_router(api_router)
    metrics.install(app)
    backup_routes.install(app)  # issue 12: /api/v1/tenants/{slug}/restore-points ... and the page
    backup_pages.install(app)
    from controlplane.api.dr_routes import router as dr_router  # disaster recovery (issue 15)

    app.include_router(dr_router)
    from dr.metrics import registry as dr_metrics  # last RTO / RPO per county

    metrics.add_registry(dr_metrics(ctx.state_dir))
    console.install(app)
    monitoring_page.install(app)
    from controlplane.web.dr_console import router as dr_console_router

    app.include_router(dr_console_router)
    return app


def operations(module: str = "controlplane.operations") -> Operations:
    """The use-case layer (controlplane.operations), loaded when the service starts."""
    return cast(Operations, importlib.import_module(module))


def context_from_settings(settings: Settings) -> ServiceContext:
    from controlplane import bootstrap

    audit.configure(settings.state_dir)
    limits = auth.Limits(
        max_failures_per_user=settings.login_max_failures_per_user,
        max_failures_per_address=settings.login_max_failures_per_address,
        window_s=settings.login_window_s, session_hours=settings.session_hours,
    )
    return ServiceContext(engine=bootstrap.engine(), ops=operations(settings.service_operations),
                          state_dir=settings.state_dir,
                          limits=limits, cookie_secure=settings.cookie_secure)


_workers_stop = threading.Event()


def start_workers(ctx: ServiceContext) -> None:
    """The job workers run in this process beside the API: every job kind's builder registered (so a
    taken-over job can be rebuilt here), listening to every site's queue."""
    from controlplane import bootstrap, workers

    bootstrap.register_job_builders()
    if bootstrap.settings().monitoring:
        from controlplane import monitor

        monitor.start(ctx.engine, bootstrap.platform(), bootstrap.site_names(),
                      interval_s=bootstrap.settings().monitoring_probe_interval_s)
    _workers_stop.clear()
    if bootstrap.settings().backup_schedule:  # issue 12: rounds, offsite, prune, verify; /metrics
        from controlplane import backup_metrics, backup_schedule

        backup_schedule.register()
        backup_metrics.start()
    workers.run_workers(ctx.engine, _workers_stop, sites=bootstrap.site_names())
    if bootstrap.settings().dr_watch:  # issue 15: the site watch (and the automatic failover, if set)
        from controlplane import site_watch

        site_watch.start_from_settings(ctx.engine, bootstrap.settings())


def stop_workers(_ctx: ServiceContext) -> None:
    from controlplane import backup_metrics, jobs, monitor, site_watch

    site_watch.stop()
    monitor.stop()
    backup_metrics.stop()
    _workers_stop.set()
    jobs.shutdown()


def first_admin(ctx: ServiceContext) -> Path | None:
    """On the very first start, the `admin` user and the 0600 file holding its password."""
    return auth.ensure_admin(ctx.engine, ctx.state_dir)
