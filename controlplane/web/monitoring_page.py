"""The county's monitoring page in the console: per transaction and hour, the stacked network /
gateway queue / app / database time (SVG drawn here, monitoring.charts), the last hour's table,
host and VM usage, and the advice with its one "apply" action (the resize job through the use-case
layer) and the before/after figures of what was applied.

Reads the platform database (monitoring.storage) for timings; usage and advice need the running
service's monitor (controlplane.monitor), and the page says so when there is none.
"""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from controlplane import monitor
from controlplane.api.deps import context
from controlplane.errors import InvalidInput
from controlplane.web.console import _check_csrf, _see, _signed_in, _slug, guarded, render
from monitoring import charts, storage
from monitoring.advice import Advice, evaluate, figures
from monitoring.rollups import HOUR_S, hour_of
from monitoring.timings import Source
from monitoring.transactions import TITLES, Transaction

router = APIRouter(include_in_schema=False)
MAX_DAYS = 30


def _advice(slug: str, vms: list[dict[str, Any]], now: float) -> list[Advice]:
    running = monitor.current()
    if running is None:
        return []
    found: list[Advice] = []
    for vm in vms:
        facts = running.engine.facts(slug, vm["name"], int(vm["vcpus"]), int(vm["memory_mb"]))
        found += evaluate(facts, now)
    return found


def _usage(site: str, vms: list[dict[str, Any]], since: float, until: float) -> dict[str, Any]:
    running = monitor.current()
    if running is None:
        return {}
    host = running.engine.host_series.get(site, [])
    host_svg = charts.usage_lines({"CPU": [(at, u.cpu_pct) for at, u in host],
                                   "memory": [(at, u.memory_used_pct) for at, u in host],
                                   "disk": [(at, u.disk_used_pct) for at, u in host]},
                                  since, until, f"host usage at site {site}")
    vm_series = {vm["name"]: running.engine.vm_usage_series.get(vm["name"], []) for vm in vms}
    vm_svg = charts.usage_lines({f"{name} CPU": [(at, u.cpu_pct) for at, u in points]
                                 for name, points in vm_series.items()}, since, until, "VM CPU")
    latest = {name: points[-1][1] for name, points in vm_series.items() if points}
    return {"host_svg": Markup(host_svg), "vm_svg": Markup(vm_svg), "host": host[-1][1] if host else None,
            "vms": latest}


@router.get("/tenants/{slug}/monitoring")
@guarded
def monitoring_page(request: Request, slug: str,
                    days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 1,
                    transaction: Annotated[str | None, Query(max_length=40)] = None,
                    source: Annotated[str, Query(max_length=20)] = Source.REAL_USER.value) -> Response:
    actor, csrf = _signed_in(request)
    ctx = context(request)
    tenant = ctx.ops.show_tenant(actor, _slug(slug))
    chosen_source = Source(source) if source in set(Source) else Source.REAL_USER
    now = time.time()
    until = hour_of(now) + HOUR_S
    since = until - days * 24 * HOUR_S
    # Each transaction's latest hour (this one, or the one before when this one has no answers yet).
    latest = {str(row["transaction"]): row
              for row in storage.summaries(ctx.engine, slug, chosen_source, hour_of(now) - HOUR_S, until)}
    last_hour = [latest[key] for key in sorted(latest)]
    present = [Transaction(t) for t in dict.fromkeys(str(row["transaction"]) for row in last_hour)]
    wanted = (Transaction(transaction) if transaction in set(Transaction)
              else Transaction.CERTIFY if Transaction.CERTIFY in present or not present else present[0])
    bars = storage.chart_bars(ctx.engine, slug, chosen_source, wanted, since, until)
    title = f"{tenant['name']} {TITLES[wanted]} ({wanted.value}), {chosen_source.value}, {days} d"
    advice = _advice(slug, tenant.get("vms", []), now)
    return render(request, "monitoring.html", actor=actor, csrf=csrf, tenant=tenant, days=days,
                  source=chosen_source.value, sources=[s.value for s in Source], transaction=wanted.value,
                  transactions=[(t.value, TITLES[t]) for t in Transaction], chart=Markup(
                      charts.stacked_hours_of(bars, since, until, title)), hours_with_data=len(bars),
                  last_hour=[{**row, "title": TITLES[Transaction(str(row["transaction"]))]}
                             for row in last_hour],
                  usage=_usage(str(tenant.get("site") or ""), tenant.get("vms", []), now - 24 * HOUR_S,
                               now),
                  running=monitor.current() is not None, advice=advice,
                  applied=storage.applied(ctx.engine, slug))


@router.post("/tenants/{slug}/advice/apply")
@guarded
def apply_advice(request: Request, slug: str, csrf: Annotated[str, Form(max_length=100)] = "",
                 vm: Annotated[str, Form(max_length=63)] = "",
                 rule: Annotated[str, Form(max_length=64)] = "") -> Response:
    """Apply advice that holds now: the resize job it proposes, the hour before kept with it."""
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    ctx = context(request)
    tenant = ctx.ops.show_tenant(actor, _slug(slug))
    vms = {v["name"]: v for v in tenant.get("vms", [])}
    now = time.time()
    advice = next((a for a in _advice(slug, list(vms.values()), now) if a.vm == vm and a.rule == rule), None)
    if advice is None or vm not in vms:
        raise InvalidInput("That advice no longer holds; the page shows what holds now.")
    current_vcpus, current_memory = int(vms[vm]["vcpus"]), int(vms[vm]["memory_mb"])
    vcpus, memory_mb = advice.resize(current_vcpus, current_memory)
    ref = ctx.ops.resize_vm(actor, slug, vcpus=vcpus, memory_mb=memory_mb, vm=vm)
    running = monitor.current()
    history = running.engine.history(slug) if running is not None else None
    before = figures(history, slug, now - HOUR_S, now) if history is not None else {}
    storage.record_applied(ctx.engine, county=slug, vm=vm, rule=rule, message=advice.message,
                           change=f"{current_vcpus} -> {vcpus} vCPUs, {current_memory} -> {memory_mb} MiB",
                           job_id=ref.id, actor=actor.name, applied_at=now, before=before)
    return _see(f"/jobs/{quote(ref.id)}")


def install(app: FastAPI) -> None:
    app.include_router(router)
