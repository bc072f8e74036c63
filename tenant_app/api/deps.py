"""An async variant of auth.require_action for the certification hot path.

auth.py's dependencies are plain functions, which FastAPI runs on the threadpool: two thread hops per
request. Here a cached token (auth.PRINCIPAL_CACHE) is resolved on the event loop; only a cache miss
goes to auth.current_api_user on a thread. The rules (token, role, cache) stay auth.py's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from fastapi import Request, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tenant_app import auth
from tenant_app.reports.reading import snapshot_session
from tenant_app.security import tokens
from tenant_app.security.permissions import Action, refusal_message


def require_action_async(action: Action) -> Callable[[Request], Awaitable[auth.Principal]]:
    async def dependency(request: Request) -> auth.Principal:
        raw = tokens.parse_bearer(request.headers.get("authorization"))
        principal = auth.PRINCIPAL_CACHE.get(tokens.token_digest(raw)) if raw else None
        if principal is None:
            principal = await run_in_threadpool(auth.current_api_user, request)
        if not principal.may(action):
            raise auth.auth_error(status.HTTP_403_FORBIDDEN, auth.AuthErrorCode.FORBIDDEN_ROLE,
                                  refusal_message(action), action=action.value, role=principal.role.value)
        request.state.principal = principal
        return principal

    return dependency


def get_reader(request: Request) -> Iterator[Session]:
    """A read-only snapshot session for GET routes (reports.reading): on SQLite it takes no write
    lock, so reads never queue behind the certification writer, nor hold it up."""
    with snapshot_session(request.app.state.tenant.engine) as session:
        yield session
