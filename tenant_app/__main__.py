"""`python -m tenant_app serve|migrate|seed|generate|token` (console script: tenant-app)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tenant_app.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def migrate(settings: Settings) -> None:
    from tenant_app.db import make_engine, session_scope
    from tenant_app.migrations import upgrade
    from tenant_app.services.chart import ensure_reference_data

    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        ensure_reference_data(session)
    engine.dispose()


def serve(settings: Settings, log_level: str = "warning", *, app: FastAPI | None = None,
          migrated: bool = False) -> None:
    """Migrate (a fresh data disk just works), then serve; one process, because the certification
    writer must be the only writer (see services/certify_writer.py).

    A county VM's launcher passes an app it built before activation (`build_app`) and says whether
    the database is a fresh copy of the image's migrated one, which needs no migration check.
    """
    import uvicorn

    from tenant_app.app import bind, build_app

    if not migrated:
        migrate(settings)
    # proxy_headers=False: uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; the app
    # decides whom to believe itself (settings.trusted_proxies, security/proxies.py).
    uvicorn.run(bind(app or build_app(), settings), host=settings.host, port=settings.port,
                log_level=log_level, access_log=False, proxy_headers=False)


def _seed(settings: Settings) -> None:
    from tenant_app.db import make_engine, session_scope
    from tenant_app.seed import DEMO_PASSWORD, seed_demo

    migrate(settings)
    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        result = seed_demo(session, settings)
    print(("created" if result.created else "already present") + f": {len(result.agency_ids)} agencies, "
          f"{len(result.line_ids)} budget lines; demo users share the password {DEMO_PASSWORD!r}")


def _generate(settings: Settings, vouchers: int, seed: int) -> None:
    import time

    from tenant_app.db import make_engine
    from tenant_app.generate import generate

    _seed(settings)
    engine = make_engine(settings.database_url)
    started = time.perf_counter()
    summary = generate(engine, vouchers, seed=seed)
    print(f"generated {summary.vouchers} vouchers ({summary.certifications} certifications, "
          f"{summary.journal_entries} journal entries) in {time.perf_counter() - started:.2f} s")


def _token(settings: Settings, username: str) -> None:
    from sqlalchemy import select

    from tenant_app.auth import issue_api_token
    from tenant_app.db import make_engine, session_scope
    from tenant_app.models import User

    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        raw, _ = issue_api_token(session, user.id, actor="cli", name="cli")
    print(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tenant-app", description="County budget-accounting application")
    parser.add_argument("--settings-file", help="KEY=VALUE file (default: $TENANT_APP_SETTINGS_FILE)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="run migrations, then serve HTTP with uvicorn")
    serve_command.add_argument("--log-level", default="warning")
    commands.add_parser("migrate", help="bring the database schema to the current revision")
    commands.add_parser("seed", help="create the demo county (idempotent)")
    gen = commands.add_parser("generate", help="add N vouchers with a realistic spread")
    gen.add_argument("count", type=int)
    gen.add_argument("--seed", type=int, default=2026)
    commands.add_parser("probe-account",
                        help="create or refresh the platform's probe account; prints it as JSON")
    token = commands.add_parser("token", help="issue an API bearer token for a user")
    token.add_argument("username")
    args = parser.parse_args(argv)

    settings = load_settings(args.settings_file)
    from tenant_app import audit

    # Every command that may append to the audit log signs its head as the county's app does.
    audit.anchor_key(settings.database_url, settings.secret)
    if args.command == "serve":
        serve(settings, args.log_level)
    elif args.command == "migrate":
        migrate(settings)
    elif args.command == "seed":
        _seed(settings)
    elif args.command == "generate":
        _generate(settings, args.count, args.seed)
    elif args.command == "probe-account":
        from tenant_app import probe_account

        probe_account.main(settings)
    elif args.command == "token":
        _token(settings, args.username)
    return 0


if __name__ == "__main__":
    sys.exit(main())
