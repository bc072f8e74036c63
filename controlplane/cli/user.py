"""`countycloud user add|list|passwd|disable|enable` and `countycloud token create|list|revoke`.

The CLI acts as the OS user (controlplane.actors.cli_actor), audited as such. A password is read
from the terminal (twice), from stdin with --password-stdin, or generated with --generate and shown
once; a token's secret is shown once, when it is created.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from controlplane import auth
from controlplane.actors import cli_actor
from controlplane.cli.common import console, errors
from controlplane.errors import MAPPING, ControlPlaneError
from controlplane.roles import Role

user_app = typer.Typer(no_args_is_help=True, help="Console and API users.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens (Bearer), shown once.")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")]
Generate = Annotated[bool, typer.Option("--generate", help="Generate a password and print it once.")]


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")


def _engine() -> Engine:
    from controlplane import audit, bootstrap

    audit.configure(bootstrap.settings().state_dir)
    return bootstrap.engine()


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ControlPlaneError as error:
        errors.print(str(error), markup=False, highlight=False)
        raise typer.Exit(int(MAPPING[error.code].exit_code)) from None


def _password(from_stdin: bool, generate: bool) -> tuple[str, bool]:
    if generate:
        return secrets.token_urlsafe(15), True
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return typer.prompt("password", hide_input=True, confirmation_prompt=True), False


@user_app.command("add")
def add_command(
    name: str,
    role: Annotated[Role, typer.Option(help="What the user may do.")],
    tenant: Annotated[str | None, typer.Option(help="The one county a county user sees.")] = None,
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
) -> None:
    """Add a user who signs in to the console (and may hold API tokens)."""
    with _errors():
        password, generated = _password(password_stdin, generate)
        user = auth.create_user(_engine(), cli_actor(), name, role, tenant=tenant, password=password)
    console.print(f"user {user.name} added ({user.role.value}"
                  + (f", county {user.tenant}" if user.tenant else "") + ")", markup=False)
    if generated:
        console.print(f"password (shown once): {password}", markup=False)


@user_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    with _errors():
        users = auth.list_users(_engine(), cli_actor())
    if as_json:
        console.print_json(json.dumps([u.to_json() for u in users]))
        return
    table = Table("name", "role", "county", "state", "created")
    for u in users:
        table.add_row(escape(u.name), u.role.value, escape(u.tenant or ""),
                      "disabled" if u.disabled else "active", u.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@user_app.command("passwd")
def passwd_command(name: str, password_stdin: PasswordStdin = False, generate: Generate = False) -> None:
    """Set a user's password (its console sessions end)."""
    with _errors():
        password, generated = _password(password_stdin, generate)
        auth.set_password(_engine(), cli_actor(), name, password)
    console.print(f"password of {name} set", markup=False)
    if generated:
        console.print(f"password (shown once): {password}", markup=False)


@user_app.command("disable")
def disable_command(name: str) -> None:
    """The user can no longer sign in; its sessions and tokens stop working at once."""
    with _errors():
        auth.disable_user(_engine(), cli_actor(), name)
    console.print(f"user {name} disabled", markup=False)


@user_app.command("enable")
def enable_command(name: str) -> None:
    with _errors():
        auth.disable_user(_engine(), cli_actor(), name, disabled=False)
    console.print(f"user {name} enabled", markup=False)


@token_app.command("create")
def token_create_command(
    user: Annotated[str, typer.Option(help="The user the token acts as.")],
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """A new API token; its secret is printed once (use it as `Authorization: Bearer ...`)."""
    with _errors():
        token, secret = auth.create_token(_engine(), cli_actor(), user, label)
    errors.print(f"token {token.id} for {token.user} (shown once, keep it now):", markup=False)
    console.print(secret, markup=False)


@token_app.command("list")
def token_list_command(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
    as_json: JsonOption = False,
) -> None:
    with _errors():
        tokens = auth.list_tokens(_engine(), cli_actor(), user)
    if as_json:
        console.print_json(json.dumps([t.to_json() for t in tokens]))
        return
    table = Table("id", "user", "label", "created", "last used", "state")
    for t in tokens:
        table.add_row(t.id, escape(t.user), escape(t.label), t.created_at.strftime("%Y-%m-%d %H:%M"),
                      t.last_used_at.strftime("%Y-%m-%d %H:%M") if t.last_used_at else "",
                      "revoked" if t.revoked_at else "active")
    console.print(table)


@token_app.command("revoke")
def token_revoke_command(token_id: str) -> None:
    with _errors():
        auth.revoke_token(_engine(), cli_actor(), token_id)
    console.print(f"token {token_id} revoked", markup=False)
