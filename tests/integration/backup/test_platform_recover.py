"""`countycloud platform backup` then `platform recover` (docs/dr.md "The control plane's own
survival"), with real restic and the REST server, on SQLite and PostgreSQL: a platform database with
counties, a fence-ledger row and audit events is copied offsite, lost with the primary's
repository, and recovered from the offsite copy alone; every hostile input is one line, a non-zero
exit and nothing changed; a live database is never overwritten; a recovery cut short finishes on
the next run."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from backup import repository
from backup.restic import Restic, write_password_file
from controlplane import audit, bootstrap, platform_ops, platform_recovery_audit, platform_target
from controlplane.actors import cli_actor
from controlplane.cli import platform as platform_cli
from controlplane.errors import ControlPlaneError
from controlplane.platform_recovery_plan import Next, TargetKind
from inventory.db import make_engine, migrate, session_scope
from inventory.declare import apply
from inventory.loader import load_text
from provisioning import fencing
from tests.integration.backup.conftest import Sites
from tests.integration.backup.test_platform_db import DECLARATION, counties_and_secrets
from tests.support import postgres

pytestmark = pytest.mark.skipif(shutil.which("restic") is None or shutil.which("rclone") is None,
                                reason="restic and rclone are installed by scripts/host-setup.sh")

runner = CliRunner()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    platform_cli.register(app)
    return app


def invoke(cli: typer.Typer, *argv: str) -> Result:
    result = runner.invoke(cli, list(argv))
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def refused(cli: typer.Typer, *argv: str) -> str:
    """The command's one-line error (exit code not 0)."""
    result = invoke(cli, "platform", "recover", *argv)
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


class Platform:
    """A platform database in a state folder whose two sites' repositories `sites` made."""

    def __init__(self, sites: Sites, url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.sites, self.url, self.tmp_path = sites, url, tmp_path
        self.monkeypatch = monkeypatch
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("COUNTYCLOUD_STATE_DIR", str(sites.state_dir))
        monkeypatch.setenv("COUNTYCLOUD_BACKUP_REST_PORT", str(sites.port))
        self.use(url)

    def use(self, url: str) -> None:
        self.url = url
        self.monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", url)
        for cached in (bootstrap.settings, bootstrap.engine, bootstrap.platform):
            if cached is bootstrap.engine and cached.cache_info().currsize:
                cached().dispose()
            cached.cache_clear()

    def fill(self) -> None:
        migrate(self.url)
        engine = make_engine(self.url)
        try:
            with session_scope(engine) as session:
                apply(session, load_text(DECLARATION))
            fencing.record(_Home(engine, self.sites.state_dir),
                           fencing.FencedCopy(site="primary", vm="keelung-accounting", uuid="u-1",
                                              how=fencing.FenceHow.MARKED, at=time.time(), job="failover-x"))
        finally:
            engine.dispose()

    def fenced(self) -> list[tuple[str, str]]:
        engine = make_engine(self.url)
        try:
            return [(copy.site, copy.vm) for copy in fencing.fenced(_Home(engine, self.sites.state_dir))]
        finally:
            engine.dispose()

    def audit_ok(self) -> audit.VerifyReport:
        engine = make_engine(self.url)
        try:
            return audit.verify(engine, audit.anchor_path(engine))
        finally:
            engine.dispose()


class _Home:
    def __init__(self, engine: Any, state_dir: Path) -> None:
        self.engine, self.state_dir = engine, state_dir


@pytest.fixture
def platform(db_url: str, sites: Sites, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> Iterator[Platform]:
    made = Platform(sites, db_url, monkeypatch, tmp_path)
    made.fill()
    yield made
    recovered = made.url
    made.use(db_url)  # the fixture's database is dropped by db_url; a recovered PostgreSQL one here
    if recovered != db_url and not recovered.startswith("sqlite"):
        postgres.drop_database(recovered)


def lose(platform: Platform) -> str:
    """The primary's repository and the database gone; the URL a new control plane is configured with
    (SQLite: the same file, missing; PostgreSQL: a new, empty database)."""
    platform.use(platform.url)  # this process's connections closed first, as a lost process's are
    shutil.rmtree(Path(platform.sites.pair.primary.location))
    if platform.url.startswith("sqlite"):
        path = Path(str(make_url(platform.url).database))
        lost = path.parent / "lost"
        lost.mkdir()
        path.rename(lost / path.name)
        return platform.url
    return postgres.fresh_database("recovered")


def untouched(platform: Platform) -> None:
    """The configured database is as the lost control plane left it: missing, or empty."""
    target = platform_target.inspect_target(platform.url)
    assert target.kind in (TargetKind.MISSING, TargetKind.EMPTY), target


def test_recovered_from_the_offsite_copy_with_counties_ledger_and_audit(
        platform: Platform, cli: typer.Typer, tmp_path: Path) -> None:
    before = counties_and_secrets(platform.url)
    copied = invoke(cli, "platform", "backup", "--json")
    assert copied.exit_code == 0, copied.output
    taken = json.loads(copied.stdout)
    assert taken["offsite_error"] is None and taken["offsite"] == "secondary"

    # A live database is never overwritten, whatever the copy.
    assert "holds a platform database in use (2 counties)" in refused(cli)

    platform.use(lose(platform))
    if platform.url.startswith("sqlite"):
        # The lost database's write-ahead log left behind would be replayed into the restored file.
        wal = Path(str(make_url(platform.url).database) + "-wal")
        wal.write_bytes(b"stale")
        assert "files of the database that was there remain" in refused(cli)
        wal.unlink()

    # Hostile input: each one line, exit != 0, nothing changed.
    assert "no platform database snapshot deadbeefcafe" in refused(cli, "--snapshot", "deadbeefcafe")
    wrong = tmp_path / "wrong-password"
    write_password_file(wrong, "not-the-password")
    secondary_password = repository.site_backup(platform.sites.state_dir, "secondary").password_file
    assert "differs from" in refused(cli, "--password-file", str(wrong))
    kept_aside = secondary_password.with_name("password.aside")
    secondary_password.rename(kept_aside)
    assert "does not open the repository" in refused(cli, "--password-file", str(wrong))
    assert "kept in the DR safe" in refused(cli)
    kept_aside.rename(secondary_password)
    assert "no restic repository at" in refused(cli, "--site", "tertiary")
    empty = repository.ensure_local(Restic(cache_dir=None), platform.sites.state_dir, "tertiary")
    assert "no platform database snapshot in the repository" in refused(cli, "--site", "tertiary")
    assert Path(empty.location).is_dir()
    untouched(platform)

    # Another command ran first at the DR site (each migrates the database it is given): the
    # platform's tables, nothing in them. A SQLite file is replaced whole; a PostgreSQL database is
    # left to the operator to drop.
    migrate(platform.url)
    if not platform.url.startswith("sqlite"):
        assert "has the platform's tables and nothing in them" in refused(cli)
        postgres.drop_database(platform.url)
        postgres.create_database(postgres.database_name(platform.url))

    recovered = invoke(cli, "platform", "recover", "--json")
    assert recovered.exit_code == 0, recovered.output + recovered.stderr
    found = json.loads(recovered.stdout)
    # The offsite copy of the snapshot taken at the primary (restic copy names its original).
    assert found["done"] == "restored" and found["original_id"].startswith(taken["snapshot_id"])
    assert found["site"] == "secondary" and found["age_s"] >= 0
    assert [(c["slug"], c["home"], c["runs_at"]) for c in found["holding"]["counties"]] == [
        ("keelung", "primary", "primary"), ("penghu", "primary", "primary")]
    fenced = [(copy["site"], copy["vm"]) for copy in found["holding"]["fenced"]]
    assert fenced == [("primary", "keelung-accounting")]
    assert {site["site"] for site in found["holding"]["sites"]} == {"primary", "secondary"}
    needs = {need["what"]: need["present"] for need in found["needs"]}
    assert needs["secondary's repository password"] and needs["secondary's repository"]

    assert counties_and_secrets(platform.url) == before
    assert platform.fenced() == [("primary", "keelung-accounting")]
    checked = platform.audit_ok()
    assert checked.ok, checked.problems
    newest = audit.list_events(make_engine(platform.url), limit=1)[0]
    assert (newest.action == platform_recovery_audit.RECOVER_ACTION
            and newest.detail["snapshot"] == found["snapshot_id"])

    # Again: the database is that recovery, unused since: nothing done, success.
    again = invoke(cli, "platform", "recover", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["done"] == "already recovered"
    assert "holds a platform database in use" in refused(cli, "--snapshot", "0123456789ab")

    # Once the recovered control plane has changed anything, it is live: refused, unchanged.
    engine = make_engine(platform.url)
    try:
        with session_scope(engine) as session:
            audit.record(session, cli_actor(), "test.change", "keelung")
    finally:
        engine.dispose()
    assert "holds a platform database in use (2 counties)" in refused(cli)
    assert counties_and_secrets(platform.url) == before
    assert audit.list_events(make_engine(platform.url), limit=1)[0].action == "test.change"


def test_a_recovery_cut_short_leaves_nothing_half_written_and_finishes_on_the_next_run(
        platform: Platform, cli: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    before = counties_and_secrets(platform.url)
    assert invoke(cli, "platform", "backup").exit_code == 0
    platform.use(lose(platform))

    class Killed(BaseException):
        """Stands in for the process dying: no handler of ours catches it."""

    def dies(*_args: Any, **_kwargs: Any) -> None:
        raise Killed

    # Dies after the restore, before its audit event.
    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(platform_recovery_audit, "record", dies)
        platform_ops.recover(cli_actor())
    if platform.url.startswith("sqlite"):
        untouched(platform)  # the restore was staged: nothing under the database's name
        path = Path(str(make_url(platform.url).database))
        assert [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")] == []
    else:
        # One pg_restore transaction is in: the rerun knows it as its own and finishes it.
        assert platform_target.inspect_target(platform.url).kind is TargetKind.HOLDS
    platform.use(platform.url)
    rerun = invoke(cli, "platform", "recover", "--json")
    assert rerun.exit_code == 0, rerun.output + rerun.stderr
    finished = "restored" if platform.url.startswith("sqlite") else "finished"
    assert json.loads(rerun.stdout)["done"] == finished
    assert counties_and_secrets(platform.url) == before
    assert platform.audit_ok().ok


def test_the_failover_password_is_installed_from_the_dr_safe(
        platform: Platform, cli: typer.Typer, tmp_path: Path) -> None:
    assert invoke(cli, "platform", "backup").exit_code == 0
    platform.use(lose(platform))
    site_password = repository.site_backup(platform.sites.state_dir, "secondary").password_file
    safe = tmp_path / "from-the-dr-safe"
    safe.write_bytes(site_password.read_bytes())
    safe.chmod(0o600)
    site_password.unlink()  # lost with the control plane's state folder

    found = platform_ops.recover(cli_actor(), password_file=safe)
    assert found.done is Next.RESTORE
    assert found.password_installed == str(site_password)
    assert site_password.read_bytes() == safe.read_bytes() and site_password.stat().st_mode & 0o077 == 0


def test_a_wrong_backend_for_the_copy_is_refused(platform: Platform, cli: typer.Typer,
                                                 tmp_path: Path) -> None:
    assert invoke(cli, "platform", "backup").exit_code == 0
    other = (postgres.fresh_database("other") if platform.url.startswith("sqlite")
             else f"sqlite:///{tmp_path / 'other.db'}")
    platform.use(other)
    try:
        with pytest.raises(ControlPlaneError, match=r"holds a [\w-]+ copy"):
            platform_ops.recover(cli_actor())
        untouched(platform)
    finally:
        if not other.startswith("sqlite"):
            postgres.drop_database(other)
