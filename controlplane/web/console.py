"""The console's pages. They call the same use cases as the API (ctx.ops) and the same auth
functions; every form carries the session's CSRF token (the sign-in form a cookie-bound one), and
what a page offers follows controlplane.roles (the use cases refuse the rest anyway).

The only script is the job page's live view: an EventSource on the API's step stream.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from controlplane import audit, auth
from controlplane.actors import Actor
from controlplane.api import errors as api_errors
from controlplane.api import schemas
from controlplane.api.deps import SESSION_COOKIE, client_address, context
from controlplane.errors import MAPPING, ErrorCode, Forbidden, InvalidInput
from controlplane.roles import Action, Role, allows
from controlplane.web.i18n import Lang, pick, translate
from inventory.jobs import JobStatus

LANG_COOKIE = "cc_lang"
LOGIN_CSRF_COOKIE = "cc_login_csrf"
TEMPLATES = Path(__file__).parent / "templates"

# Templates ship with the code: no stat of each file on every render (a dashboard row used to cost one).
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True, auto_reload=False)
# Counties on one page of the dashboard: a screenful to act on; the site cards count them all.
DASHBOARD_PAGE = 100

router = APIRouter(include_in_schema=False)
# Every form field has a default: a signed-out browser's post is sent to sign in, and a missing
# field is refused by the use case with its own message, rather than a bare 422.
Csrf = Annotated[str, Form(max_length=100)]
F = TypeVar("F", bound=Callable[..., Any])


class NotSignedIn(Exception):
    pass


def lang_of(request: Request) -> Lang:
    return pick(request.cookies.get(LANG_COOKIE))


def render(request: Request, name: str, status: int = 200, actor: Actor | None = None,
           csrf: str = "", **values: Any) -> HTMLResponse:
    lang = lang_of(request)
    html = _env.get_template(name).render(
        t=lambda text: translate(lang, text), lang=lang.value, other_lang=(Lang.EN if lang == Lang.ZH_TW
                                                                          else Lang.ZH_TW).value,
        actor=actor, csrf=csrf, path=request.url.path, can=lambda action: actor is not None and allows(
            actor.role, Action(action)), Role=Role, **values)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _signed_in(request: Request) -> tuple[Actor, str]:
    ctx = context(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    found = auth.session_actor(ctx.engine, cookie, client_address(request)) if cookie else None
    if found is None:
        raise NotSignedIn
    return found


def _check_csrf(expected: str, given: str) -> None:
    if not auth.csrf_matches(expected, given):
        raise InvalidInput("The form expired; please try again.")


def _local(path: str | None) -> str:
    """Only a path on this site may be a redirect target (no open redirect)."""
    return path if path and path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _see(path: str) -> RedirectResponse:
    return RedirectResponse(_local(path), status_code=303)


def guarded(handler: F) -> F:
    """Render what a use case refused as a page (not JSON), and send a signed-out browser to sign in."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs["request"]
        try:
            return handler(*args, **kwargs)
        except NotSignedIn:
            return _see(f"/login?next={quote(request.url.path)}")
        except Exception as error:
            placed = api_errors.classify(error)
            if placed is None:
                raise
            return error_page(request, *placed)

    return wrapper  # type: ignore[return-value]


def error_page(request: Request, code: ErrorCode, message: str) -> HTMLResponse:
    actor, csrf = None, ""
    try:
        actor, csrf = _signed_in(request)
    except Exception:  # the error page must render even without a session or a database
        actor = None
    titles = {ErrorCode.FORBIDDEN: "Not allowed.", ErrorCode.NOT_FOUND: "Not found."}
    return render(request, "error.html", MAPPING[code].http_status, actor, csrf, code=code.value,
                  title=titles.get(code, "Error"), message=message)


# ---------------------------------------------------------------- sign in and out, language


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_hex(32)
    response = render(request, "login.html", login_csrf=token, next=_local(next), problem=None)
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
def login(request: Request, username: Annotated[str, Form(max_length=100)] = "",
          password: Annotated[str, Form(max_length=1024)] = "", csrf: Csrf = "",
          next: Annotated[str, Form(max_length=500)] = "/") -> Response:
    ctx = context(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    problem, status = None, 200
    if not expected or not auth.csrf_matches(expected, csrf):
        problem, status = "The form expired; please try again.", 400
    else:
        try:
            signed = auth.sign_in(ctx.engine, username, password, client_address(request), ctx.limits)
        except auth.Throttled:
            problem, status = "Too many failed sign-ins; try again later.", 429
        except auth.AuthError:
            problem, status = "Wrong user name or password.", 401
    if problem is not None:
        token = secrets.token_hex(32)
        response: Response = render(request, "login.html", status, login_csrf=token, next=_local(next),
                                    problem=problem, username=username)
        _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
        return response
    response = _see(next)
    _set_cookie(request, response, SESSION_COOKIE, signed.cookie,
                max_age=int(ctx.limits.session_hours * 3600))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
@guarded
def logout(request: Request, csrf: Csrf = "") -> Response:
    _actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    auth.sign_out(context(request).engine, request.cookies.get(SESSION_COOKIE, ""))
    response = _see("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{code}")
def switch_language(request: Request, code: str, next: str = "/") -> Response:
    response = _see(next)
    _set_cookie(request, response, LANG_COOKIE, pick(code).value, max_age=365 * 86400, http_only=False)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int,
                http_only: bool = True) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=http_only, samesite="lax",
                        secure=context(request).cookie_secure)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# ---------------------------------------------------------------- dashboard and counties


def _health(row: dict[str, Any]) -> str:
    healthy = row.get("healthy")
    return "unknown" if healthy is None else ("healthy" if healthy else "unhealthy")


@router.get("/")
@guarded
def dashboard(request: Request, after: Annotated[str | None, Query(max_length=63)] = None) -> Response:
    actor, csrf = _signed_in(request)
    ops = context(request).ops
    sites = ops.list_sites(actor) if actor.role != Role.COUNTY else []
    # A page of counties, with health and newest job; the next page starts after its last slug.
    tenants = ops.list_tenants(actor, limit=DASHBOARD_PAGE, after=_slug(after) if after else None)
    by_site: dict[str, list[dict[str, Any]]] = {}
    for row in tenants:
        by_site.setdefault(str(row.get("site")), []).append({**row, "health": _health(row)})
    site_name = [str(s.get("site") or s.get("name")) for s in sites]
    names = site_name + sorted(set(by_site) - set(site_name))
    next_after = tenants[-1]["tenant"] if len(tenants) == DASHBOARD_PAGE else None
    return render(request, "dashboard.html", actor=actor, csrf=csrf, sites=sites, site_names=names,
                  by_site=by_site, total=len(tenants), next_after=next_after)


@router.get("/tenants/{slug}")
@guarded
def tenant_page(request: Request, slug: str) -> Response:
    actor, csrf = _signed_in(request)
    _slug(slug)
    ops = context(request).ops
    row = ops.show_tenant(actor, slug)
    history = ops.list_jobs(actor, limit=20, tenant=slug)  # its VMs' jobs too
    return render(request, "tenant.html", actor=actor, csrf=csrf, tenant={**row, "health": _health(row)},
                  jobs=history)


def _slug(slug: str) -> str:
    import re

    if not re.match(schemas.SLUG, slug):
        raise InvalidInput(f"not a county slug: {slug!r}")
    return slug


def _int(value: str, name: str) -> int | None:
    if not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name}: not a number: {value!r}") from None


@router.post("/tenants/{slug}/{operation}")
@guarded
def tenant_operation(request: Request, slug: str, operation: str, csrf: Csrf = "",
                     vcpus: Annotated[str, Form(max_length=10)] = "",
                     memory_mb: Annotated[str, Form(max_length=10)] = "",
                     purge: Annotated[str, Form(max_length=10)] = "",
                     cold: Annotated[str, Form(max_length=10)] = "") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    _slug(slug)
    ops = context(request).ops
    if operation == "create":
        ref = ops.create_tenant(actor, slug, cold=bool(cold))
    elif operation == "resize":
        body = schemas.Resize(vcpus=_int(vcpus, "vCPUs"), memory_mb=_int(memory_mb, "memory"))
        ref = ops.resize_vm(actor, slug, vcpus=body.vcpus, memory_mb=body.memory_mb)
    elif operation == "configure":
        ref = ops.configure_tenant(actor, slug)
    elif operation == "retire":
        ref = ops.retire_tenant(actor, slug, purge=bool(purge))
    else:
        raise InvalidInput(f"no operation {operation!r}")
    return _see(f"/jobs/{quote(ref.id)}")


# ---------------------------------------------------------------- jobs


@router.get("/jobs")
@guarded
def jobs_page(request: Request, status: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    actor, csrf = _signed_in(request)
    wanted = JobStatus(status) if status in set(JobStatus) else None
    # A county actor's list is its county's (the use case scopes it).
    views = context(request).ops.list_jobs(actor, limit=100, status=wanted)
    return render(request, "jobs.html", actor=actor, csrf=csrf, jobs=views, wanted=wanted,
                  statuses=list(JobStatus))


@router.get("/jobs/{job_id}")
@guarded
def job_page(request: Request, job_id: str) -> Response:
    actor, csrf = _signed_in(request)
    view = context(request).ops.get_job(actor, job_id)  # a county's own jobs only (its VMs' too)
    return render(request, "job.html", actor=actor, csrf=csrf, job=view, live=view.status not in (
        JobStatus.SUCCEEDED, JobStatus.CANCELLED, JobStatus.FAILED))


@router.post("/jobs/{job_id}/{control}")
@guarded
def job_control(request: Request, job_id: str, control: str,
                csrf: Csrf = "") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    ops = context(request).ops
    if control == "resume":
        ref = ops.resume_job(actor, job_id)
        return _see(f"/jobs/{quote(ref.id)}")
    if control == "cancel":
        ops.cancel_job(actor, job_id)
        return _see(f"/jobs/{quote(job_id)}")
    raise InvalidInput(f"no job control {control!r}")


# ---------------------------------------------------------------- users and tokens


@router.get("/users")
@guarded
def users_page(request: Request) -> Response:
    actor, csrf = _signed_in(request)
    return _users(request, actor, csrf)


def _users(request: Request, actor: Actor, csrf: str, **extra: Any) -> Response:
    engine = context(request).engine
    sees_users = allows(actor.role, Action.MANAGE_USERS) or allows(actor.role, Action.READ_AUDIT)
    users = auth.list_users(engine, actor) if sees_users else []
    tokens = auth.list_tokens(engine, actor)
    return render(request, "users.html", actor=actor, csrf=csrf, users=users, tokens=tokens,
                  roles=list(Role), new_secret=extra.get("new_secret"), notice=extra.get("notice"))


@router.post("/users")
@guarded
def add_user(request: Request, csrf: Csrf = "",
             name: Annotated[str, Form(max_length=63)] = "",
             role: Annotated[str, Form(max_length=20)] = "",
             password: Annotated[str, Form(max_length=1024)] = "",
             tenant: Annotated[str, Form(max_length=63)] = "") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    if role not in set(Role):
        raise InvalidInput(f"no role {role!r}")
    auth.create_user(context(request).engine, actor, name, Role(role), tenant=tenant or None,
                     password=password)
    return _see("/users")


@router.post("/users/{name}/{change}")
@guarded
def change_user(request: Request, name: str, change: str,
                csrf: Csrf = "") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    if change not in ("disable", "enable"):
        raise InvalidInput(f"no user change {change!r}")
    auth.disable_user(context(request).engine, actor, name, disabled=change == "disable")
    return _see("/users")


@router.post("/password")
@guarded
def change_password(request: Request, csrf: Csrf = "",
                    password: Annotated[str, Form(max_length=1024)] = "") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    auth.set_password(context(request).engine, actor, actor.name, password)
    # The password change ended every session, this one too: sign in again.
    response = _see("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/tokens")
@guarded
def new_token(request: Request, csrf: Csrf = "",
              label: Annotated[str, Form(max_length=120)] = "") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    _token, secret = auth.create_token(context(request).engine, actor, actor.name, label)
    # Shown on this one page only, never stored or redirected through a URL.
    return _users(request, actor, expected, new_secret=secret)


@router.post("/tokens/{token_id}/revoke")
@guarded
def revoke_token(request: Request, token_id: str, csrf: Csrf = "") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    auth.revoke_token(context(request).engine, actor, token_id)
    return _see("/users")


# ---------------------------------------------------------------- audit


@router.get("/audit")
@guarded
def audit_page(request: Request, before: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> Response:
    actor, csrf = _signed_in(request)
    if not allows(actor.role, Action.READ_AUDIT):
        raise Forbidden("Not allowed.")
    engine = context(request).engine
    rows = audit.list_events(engine, limit=100, before_seq=before)
    report = audit.verify(engine, audit.anchor_path(engine)) if before is None else None
    return render(request, "audit.html", actor=actor, csrf=csrf, events=[audit.event_json(r) for r in rows],
                  report=report)


def install(app: FastAPI) -> None:
    app.include_router(router)


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith(("/api/", "/docs", "/openapi"))


def render_error(request: Request, code: ErrorCode, message: str, status: int) -> Response:
    response = error_page(request, code, message)
    response.status_code = status
    return response
