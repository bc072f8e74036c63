"""`python -m tenant_app serve|migrate|seed|generate|token` (console script: tenant-app)."""

from __future__ import annotations

import argparse
import sys

from tenant_app.settings import Settings, load_settings


def _migrate(settings: Settings) -> None:
    from tenant_app.db import make_engine, session_scope
    from tenant_app.migrations import upgrade
    from tenant_app.services.chart import ensure_reference_data

    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        ensure_reference_data(session)
    engine.dispose()


def _serve(settings: Settings, workers_log_level: str) -> None:
    import uvicorn

    from tenant_app.app import create_app

    _migrate(settings)  # serve always runs migrations first: a fresh data disk just works
    # One process: the certification writer must be the only writer (see services/certify_writer.py).
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=workers_log_level,
                access_log=False)


def _seed(settings: Settings) -> None:
    from tenant_app.db import make_engine, session_scope
    from tenant_app.seed import DEMO_PASSWORD, seed_demo

    _migrate(settings)
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
    serve = commands.add_parser("serve", help="run migrations, then serve HTTP with uvicorn")
    serve.add_argument("--log-level", default="warning")
    commands.add_parser("migrate", help="bring the database schema to the current revision")
    commands.add_parser("seed", help="create the demo county (idempotent)")
    gen = commands.add_parser("generate", help="add N vouchers with a realistic spread")
    gen.add_argument("count", type=int)
    gen.add_argument("--seed", type=int, default=2026)
    token = commands.add_parser("token", help="issue an API bearer token for a user")
    token.add_argument("username")
    args = parser.parse_args(argv)

    settings = load_settings(args.settings_file)
    if args.command == "serve":
        _serve(settings, args.log_level)
    elif args.command == "migrate":
        _migrate(settings)
    elif args.command == "seed":
        _seed(settings)
    elif args.command == "generate":
        _generate(settings, args.count, args.seed)
    elif args.command == "token":
        _token(settings, args.username)
    return 0


if __name__ == "__main__":
    sys.exit(main())
