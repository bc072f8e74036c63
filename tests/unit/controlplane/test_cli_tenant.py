"""`countycloud tenant | site | template` through typer's CliRunner, on a tmp state folder where no site
daemon runs: JSON output, exit codes scripts can trust (2 = unknown name, 1 = refused), and no
traceback for any user mistake."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from controlplane import bootstrap, jobs
from controlplane.cli import tenant
from tests.unit.controlplane.conftest import GATEWAY_PORTS, GUEST_PORTS

runner = CliRunner()
COUNTIES = 13


def invoke(cli: typer.Typer, *argv: str) -> Result:
    result = runner.invoke(cli, list(argv))
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    # A user error ends in typer.Exit (SystemExit), never in an escaped exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- tenant ------------------------------------------------------------------------------------------

def test_create_of_an_unknown_county_exits_2_naming_close_matches(applied: Path, cli: typer.Typer) -> None:
    result = invoke(cli, "tenant", "create", "keelungg")
    assert result.exit_code == 2
    assert "no tenant 'keelungg'; did you mean 'keelung'?" in result.stderr


def test_create_nosuch_exits_2_listing_the_counties(applied: Path, cli: typer.Typer) -> None:
    result = invoke(cli, "tenant", "create", "nosuch")
    assert result.exit_code == 2
    assert "no tenant 'nosuch'" in result.stderr
    assert "keelung" in result.stderr and "penghu" in result.stderr
    assert not (applied / "jobs").exists()  # no job was started


def test_create_on_an_empty_inventory_says_to_apply_first(state: Path, cli: typer.Typer) -> None:
    result = invoke(cli, "tenant", "create", "keelung")
    assert result.exit_code == 2
    assert "the inventory has none (apply a declaration first)" in result.stderr


def test_show_json_of_an_applied_county_not_yet_provisioned(applied: Path, cli: typer.Typer) -> None:
    shown = as_json(invoke(cli, "tenant", "show", "keelung", "--json"))
    port = int(shown["address"].removeprefix("http://127.0.0.1:").rstrip("/"))
    assert GATEWAY_PORTS[0] <= port <= GATEWAY_PORTS[1]
    assert {k: shown[k] for k in ("tenant", "name", "status", "site", "healthy")} == {
        "tenant": "keelung", "name": "基隆市", "status": "planned", "site": "primary", "healthy": False}
    [vm] = shown["vms"]
    assert {k: vm[k] for k in ("name", "role", "status", "vcpus", "memory_mb", "host")} == {
        "name": "keelung-accounting-1", "role": "accounting", "status": "planned", "vcpus": 1,
        "memory_mb": 1024, "host": None}
    assert GUEST_PORTS[0] <= vm["ssh_port"] <= GUEST_PORTS[1]
    assert GUEST_PORTS[0] <= vm["app_port"] <= GUEST_PORTS[1]
    assert vm["ssh_port"] != vm["app_port"]


def test_show_as_a_table_names_the_county_its_address_and_ports(applied: Path, cli: typer.Typer) -> None:
    shown = as_json(invoke(cli, "tenant", "show", "keelung", "--json"))
    result = invoke(cli, "tenant", "show", "keelung")
    assert result.exit_code == 0
    assert "基隆市 (keelung) — planned at site primary" in result.stdout
    assert f"address: {shown['address']}  healthy: False" in result.stdout
    # The table (wrapped at the test console's width) shows the VM's forwarded ports.
    assert f"│ {shown['vms'][0]['ssh_port']} │ {shown['vms'][0]['app_port']} │" in result.stdout


def test_show_of_an_unknown_county_exits_2(applied: Path, cli: typer.Typer) -> None:
    result = invoke(cli, "tenant", "show", "penghuu", "--json")
    assert result.exit_code == 2
    assert "did you mean 'penghu'" in result.stderr
    assert result.stdout == ""  # nothing a script could mistake for JSON


def test_list_json_has_every_declared_county(applied: Path, cli: typer.Typer) -> None:
    rows = as_json(invoke(cli, "tenant", "list", "--json"))
    assert len(rows) == COUNTIES
    assert [row["tenant"] for row in rows] == sorted(row["tenant"] for row in rows)
    assert {row["status"] for row in rows} == {"planned"}
    assert {row["site"] for row in rows} == {"primary"}
    by_slug = {row["tenant"]: row for row in rows}
    assert by_slug["lienchiang"]["name"] == "連江縣"
    assert all(len(row["vms"]) == 1 for row in rows)
    addresses = [row["address"] for row in rows]
    assert len(set(addresses)) == COUNTIES  # every county its own address


def test_list_json_of_an_empty_inventory(state: Path, cli: typer.Typer) -> None:
    assert as_json(invoke(cli, "tenant", "list", "--json")) == []


@pytest.mark.parametrize("argv", [
    ["tenant", "retire", "nosuch"],
    ["tenant", "resize", "nosuch", "--vcpus", "2", "--memory", "2048"],
    ["tenant", "exec", "nosuch", "--", "uptime"],
    ["tenant", "resize", "keelung", "--vm", "nosuch-vm", "--vcpus", "2", "--memory", "2048"],
])
def test_other_tenant_commands_on_unknown_names_exit_2(
    applied: Path, cli: typer.Typer, argv: list[str]
) -> None:
    result = invoke(cli, *argv)
    assert result.exit_code == 2
    assert "no tenant 'nosuch'" in result.stderr or "no VM 'nosuch-vm'" in result.stderr


def test_create_with_the_site_down_fails_its_check_step_with_exit_1(applied: Path, cli: typer.Typer) -> None:
    result = invoke(cli, "tenant", "create", "keelung")
    assert result.exit_code == 1
    assert "site primary is down; start it with `countycloud site start primary`" in result.stderr
    assert "rerun the same command" in result.stderr
    shown = as_json(invoke(cli, "tenant", "show", "keelung", "--json"))
    assert shown["status"] == "planned" and shown["vms"][0]["host"] is None  # nothing was made


def test_create_of_several_with_one_unknown_starts_none(applied: Path, cli: typer.Typer) -> None:
    result = invoke(cli, "tenant", "create", "keelung", "penghu", "nosuch")
    assert result.exit_code == 2
    assert "no tenant 'nosuch'" in result.stderr
    assert not (applied / "jobs").exists()


def test_create_of_several_runs_a_job_each_and_names_those_to_finish(applied: Path, cli: typer.Typer) -> None:
    result = invoke(cli, "tenant", "create", "keelung", "penghu", "keelung")  # a repeated name counts once
    assert result.exit_code == 1
    assert result.stdout.startswith("provisioning 2 counties at once: keelung, penghu")
    for county in ("keelung", "penghu"):
        assert f"{county}: job provision-{county}-" in result.stderr
    assert "site primary is down" in result.stderr
    assert "rerun the same command: 0 done, 2 to finish (keelung, penghu)" in result.stderr
    assert sorted(path.name.split("-")[1] for path in (applied / "jobs").iterdir()) == ["keelung", "penghu"]


def test_retire_of_several_starts_none_for_an_unknown_one_else_runs_a_job_each(applied: Path,
                                                                            cli: typer.Typer) -> None:
    refused = invoke(cli, "tenant", "retire", "keelung", "nosuch", "--purge")
    assert refused.exit_code == 2 and "no tenant 'nosuch'" in refused.stderr
    assert not (applied / "jobs").exists()
    result = invoke(cli, "tenant", "retire", "keelung", "penghu", "keelung")
    assert result.exit_code == 1
    for county in ("keelung", "penghu"):
        assert f"{county}: job retire-{county}-" in result.stderr
    assert "site primary is down; start it to retire keelung" in result.stderr
    assert "rerun the same command: 0 done, 2 to finish (keelung, penghu)" in result.stderr
    assert sorted(path.name.split("-")[1] for path in (applied / "jobs").iterdir()) == ["keelung", "penghu"]


# --- site --------------------------------------------------------------------------------------------

def test_site_list_json_with_no_daemons_running(applied: Path, cli: typer.Typer) -> None:
    rows = as_json(invoke(cli, "site", "list", "--json"))
    assert [row["site"] for row in rows] == ["primary", "secondary"]
    assert {row["state"] for row in rows} == {"down"}
    assert all(row["domains"] == [] for row in rows)
    assert rows[0]["uri"] == f"qemu:///system?socket={applied / 'sites' / 'primary' / 'run' / 'libvirt-sock'}"


def test_site_list_before_any_inventory_shows_the_default_sites(state: Path, cli: typer.Typer) -> None:
    rows = as_json(invoke(cli, "site", "list", "--json"))
    assert [(row["site"], row["state"]) for row in rows] == [("primary", "down"), ("secondary", "down")]


@pytest.mark.parametrize("action", ["start", "stop"])
def test_site_start_or_stop_of_an_unknown_site_exits_2(applied: Path, cli: typer.Typer, action: str) -> None:
    result = invoke(cli, "site", action, "nosuch")
    assert result.exit_code == 2
    assert "unknown site 'nosuch'; sites: primary, secondary" in result.stderr
    assert not (applied / "sites" / "nosuch").exists()


def test_site_stop_json_says_when_the_outage_began(applied: Path, cli: typer.Typer) -> None:
    """A failover's RTO counts from the kill, not from this command's start (its imports take 1-2 s)."""
    before = time.time()
    stopped = as_json(invoke(cli, "site", "stop", "primary", "--json"))
    assert stopped["site"] == "primary" and stopped["state"] == "down" and stopped["killed"] == 0
    assert before <= stopped["at"] <= time.time()


# --- template ----------------------------------------------------------------------------------------

def test_template_list_json_is_empty_before_any_build(applied: Path, cli: typer.Typer) -> None:
    assert as_json(invoke(cli, "template", "list", "--json")) == []


@pytest.mark.parametrize("argv", [["template", "build", "nosuch"], ["template", "remove", "nosuch", "abc"]])
def test_template_commands_on_an_unknown_site_exit_2(
    applied: Path, cli: typer.Typer, argv: list[str]
) -> None:
    result = invoke(cli, *argv)
    assert result.exit_code == 2
    assert "unknown site 'nosuch'" in result.stderr


@pytest.mark.parametrize("argv", [
    ("tenant", "resize", "keelung", "--vcpus", "2", "--memory", "768"),
    ("tenant", "exec", "keelung", "--", "uptime"),
])
def test_commands_on_a_county_not_yet_provisioned_are_refused_before_any_job(
    applied: Path, cli: typer.Typer, argv: tuple[str, ...]
) -> None:
    result = invoke(cli, *argv)
    assert result.exit_code == 1
    assert "keelung-accounting-1 is planned; provision it first" in result.output
    assert "Traceback" not in result.output

    assert jobs.list_jobs(bootstrap.engine()) == [], "no job was started"


def test_exec_quotes_each_argument_for_the_guest_shell() -> None:
    """Issue 14, item 10: `tenant exec keelung -- sh -c 'echo a; echo b'` ran `sh -c echo`."""
    import shlex

    argv = ["sh", "-c", "echo a; echo b"]
    line = tenant.guest_command(argv)
    assert shlex.split(line) == argv
    assert tenant.guest_command(["printf", "%s\n", "it's $HOME"]) == "printf '%s\n' 'it'\"'\"'s $HOME'"


def test_resize_with_neither_size_exits_2_before_any_job(applied: Path, cli: typer.Typer) -> None:
    result = invoke(cli, "tenant", "resize", "keelung")
    assert result.exit_code == 2
    assert "give --vcpus, --memory or both" in result.stderr

    assert jobs.list_jobs(bootstrap.engine()) == []


def test_a_county_running_away_from_home_keeps_plan_and_apply_working(applied: Path,
                                                                      cli: typer.Typer) -> None:
    """Issue 15: a failover records where a county runs apart from its declared home, so the YAML is
    not edited and `inventory plan` still shows nothing to change, only where it runs."""
    from inventory import queries
    from inventory.db import session_scope

    with session_scope(bootstrap.engine()) as session:
        tenant = queries.get_tenant(session, "keelung")
        queries.set_running_site(tenant, queries.get_site(session, "secondary"), actor="test")
    planned = json.loads(invoke(cli, "inventory", "plan", "--json").stdout)
    assert planned["changes"] == []
    assert planned["running_elsewhere"] == {"keelung": {"home": "primary", "running_at": "secondary"}}
    assert "keelung: running at secondary after failover" in invoke(cli, "inventory", "plan").stdout
    assert as_json(invoke(cli, "inventory", "apply", "--json"))["changes"] == []
    shown = as_json(invoke(cli, "tenant", "show", "keelung", "--json"))
    assert (shown["site"], shown["running_site"]) == ("primary", "secondary")
    with session_scope(bootstrap.engine()) as session:
        queries.set_running_site(queries.get_tenant(session, "keelung"), None, actor="test")  # failback
    assert json.loads(invoke(cli, "inventory", "plan", "--json").stdout)["running_elsewhere"] == {}
