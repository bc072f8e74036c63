"""`countycloud inventory plan | apply | show`: output and exit codes scripts can trust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from controlplane.cli.inventory import register
from inventory import queries
from inventory.db import make_engine, session_scope
from inventory.enums import Lifecycle

runner = CliRunner()


@pytest.fixture
def app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", sqlite_url)
    cli = typer.Typer()
    register(cli)
    return cli


def test_plan_apply_plan_on_the_embedded_demo(app: typer.Typer) -> None:
    planned = runner.invoke(app, ["inventory", "plan"])
    assert planned.exit_code == 0, planned.output
    assert "39 to add, 0 to change, 0 to remove" in planned.stdout

    applied = runner.invoke(app, ["inventory", "apply", "--json"])
    assert applied.exit_code == 0, applied.output
    body = json.loads(applied.stdout)
    assert body["applied"] is True
    assert len(body["changes"]) == 39
    keelung_vm = next(c for c in body["changes"] if c["name"] == "keelung-accounting-1")
    assert {d["field"] for d in keelung_vm["diffs"]} >= {"ssh_port", "app_port"}

    again = runner.invoke(app, ["inventory", "plan", "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["changes"] == []


def test_show_json_lists_capacity_tenants_and_ports(app: typer.Typer) -> None:
    assert runner.invoke(app, ["inventory", "apply"]).exit_code == 0
    shown = runner.invoke(app, ["inventory", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.stdout)
    assert [site["name"] for site in view["sites"]] == ["primary", "secondary"]
    p1 = next(host for host in view["hosts"] if host["name"] == "p1")
    assert (p1["vcpus_total"], p1["memory_mb_total"]) == (64, 98304)  # 16 × 4.0, 65536 × 1.5
    assert len(view["tenants"]) == 13
    keelung = next(t for t in view["tenants"] if t["slug"] == "keelung")
    assert keelung["name"] == "基隆市" and 21000 <= keelung["gateway_port"] <= 21999
    assert all(vm["ssh_port"] and vm["app_port"] for vm in view["vms"])


def test_invalid_declaration_exits_2_with_file_and_line(app: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "counties.yaml"
    bad.write_text("sites:\n  - name: primary\n    role: primery\n", encoding="utf-8")
    result = runner.invoke(app, ["inventory", "apply", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:3: sites[0].role" in result.stderr
    assert "Traceback" not in result.output
    assert runner.invoke(app, ["inventory", "plan", "--json"]).exit_code == 0  # the database was not touched
    shown = json.loads(runner.invoke(app, ["inventory", "show", "--json"]).stdout)
    assert shown["sites"] == []


def test_malformed_yaml_exits_2(app: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("sites: [\n", encoding="utf-8")
    result = runner.invoke(app, ["inventory", "plan", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:" in result.stderr and "invalid YAML" in result.stderr


def test_refused_apply_exits_1_with_the_reason(app: typer.Typer, sqlite_url: str, tmp_path: Path) -> None:
    assert runner.invoke(app, ["inventory", "apply"]).exit_code == 0
    engine = make_engine(sqlite_url)
    with session_scope(engine) as session:
        queries.set_status(queries.get_vm(session, "keelung-accounting-1"), Lifecycle.ACTIVE, actor="test")
    engine.dispose()
    demo = Path(__file__).parents[3] / "inventory" / "samples" / "demo.yaml"
    text = demo.read_text(encoding="utf-8")
    start = text.index("  - slug: keelung")
    end = text.index("  - slug: hsinchu-city")
    without_keelung = tmp_path / "without-keelung.yaml"
    without_keelung.write_text(text[:start] + text[end:], encoding="utf-8")

    result = runner.invoke(app, ["inventory", "apply", str(without_keelung)])
    assert result.exit_code == 1
    assert "tenant keelung still has 1 VM(s) that are not retired" in result.stderr
    assert "Traceback" not in result.output


def test_plan_and_apply_refuse_sites_on_one_backup_port(app: typer.Typer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTYCLOUD_BACKUP_REST_PORT", "23000")
    monkeypatch.setenv("COUNTYCLOUD_BACKUP_REST_PORTS", '{"primary": 23000}')
    for command in ("plan", "apply"):
        refused = runner.invoke(app, ["inventory", command])
        assert refused.exit_code == 1, refused.output
        assert "sites primary and secondary have the same backup REST port 23000" in refused.stderr
        assert "nothing was changed" in refused.stderr and "Traceback" not in refused.output
    monkeypatch.delenv("COUNTYCLOUD_BACKUP_REST_PORTS")
    from controlplane import bootstrap

    bootstrap.settings.cache_clear()
    shown = json.loads(runner.invoke(app, ["inventory", "show", "--json"]).stdout)
    assert shown["sites"] == []  # the apply changed nothing


def test_apply_refuses_a_backup_port_in_the_gateway_range(app: typer.Typer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTYCLOUD_BACKUP_REST_PORTS", '{"secondary": 21005}')
    refused = runner.invoke(app, ["inventory", "apply"])
    assert refused.exit_code == 1
    assert "site secondary's backup REST port 21005 is in the gateway ports (21000-21999)" in refused.stderr
