"""Reading declarations: valid files load; every kind of bad input names the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory.loader import DeclarationError, load_file, load_sample, load_text


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based number of the `nth` line containing `needle`."""
    found = [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) >= nth, f"{needle!r} not in text {nth} time(s)"
    return found[nth - 1]


def error_of(text: str) -> DeclarationError:
    with pytest.raises(DeclarationError) as caught:
        load_text(text, "counties.yaml")
    return caught.value


def test_samples_load_with_the_13_counties() -> None:
    demo = load_sample("demo.yaml")
    production = load_sample("production.yaml")
    slugs = {tenant.slug for tenant in demo.tenants}
    assert slugs == {
        "taichung",
        "taoyuan",
        "hsinchu-county",
        "changhua",
        "yunlin",
        "chiayi-county",
        "pingtung",
        "penghu",
        "kinmen",
        "lienchiang",
        "keelung",
        "hsinchu-city",
        "chiayi-city",
    }
    assert [len(t.vm_names()) for t in demo.tenants] == [1] * 13
    assert sum(len(t.vm_names()) for t in production.tenants) == 54
    keelung = next(t for t in demo.tenants if t.slug == "keelung")
    assert keelung.name == "基隆市"
    assert keelung.settings["county_name"] == "基隆市"
    assert keelung.vm_names()[0][0] == "keelung-accounting-1"


def test_vm_names_are_numbered_per_role(small_text: str) -> None:
    text = small_text.replace(
        "      - {role: database, size: small}\n",
        "      - {role: database, size: small}\n      - {role: accounting, size: medium, count: 2}\n",
    )
    keelung = load_text(text).tenants[0]
    assert [name for name, _ in keelung.vm_names()] == [
        "keelung-accounting-1",
        "keelung-database-1",
        "keelung-accounting-2",
        "keelung-accounting-3",
    ]


def test_malformed_yaml_names_file_and_line(small_text: str) -> None:
    text = small_text.replace("{name: tenant-user, kind: user}", "{name: tenant-user, kind: user")
    error = error_of(text)
    assert error.problems[0].line is not None
    assert str(error).startswith("counties.yaml:")
    assert "invalid YAML" in str(error)
    # The unclosed "{" is named with its own line, the one to fix.
    assert f"starts at line {line_of(text, 'kind: user')}" in str(error)


def test_tab_indentation_is_reported_on_its_line(small_text: str) -> None:
    text = small_text.replace("images:\n  - {name", "images:\n\t- {name")
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "\t- {name")


def test_unknown_key_lists_allowed_keys(small_text: str) -> None:
    text = small_text.replace("    site: primary\n", "    site: primary\n    sight: x\n", 1)
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "sight: x")
    message = error.problems[0].message
    assert "unknown key 'sight' in tenants[0]" in message
    assert "allowed: slug, name, site" in message


def test_wrong_type_is_refused_not_coerced(small_text: str) -> None:
    text = small_text.replace("{name: p2, vcpus: 4,", "{name: p2, vcpus: '4',")
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "name: p2")
    assert "sites[0].hosts[1].vcpus" in error.problems[0].message
    assert "'4'" in error.problems[0].message


def test_bad_enum_value(small_text: str) -> None:
    text = small_text.replace("{role: database, size: small}", "{role: web, size: small}")
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "role: web")
    assert "tenants[0].vms[1].role" in error.problems[0].message


def test_reference_to_undeclared_site_suggests_the_close_one(small_text: str) -> None:
    text = small_text.replace("    site: primary\n", "    site: primry\n", 1)
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "site: primry")
    assert "unknown site 'primry' (declared: primary, secondary); did you mean 'primary'?" in str(error)


def test_reference_to_undeclared_size(small_text: str) -> None:
    text = small_text.replace("{role: database, size: small}", "{role: database, size: huge}")
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "size: huge")
    assert "unknown size template 'huge'" in error.problems[0].message


def test_every_problem_is_reported_not_just_the_first(small_text: str) -> None:
    text = small_text.replace("    network: tenant-user\n", "    network: nope\n").replace(
        "    image: bookworm-tenant\n", "    image: nope\n"
    )
    error = error_of(text)
    assert len(error.problems) == 4  # two tenants × (network, image)
    assert [p.line for p in error.problems] == sorted(p.line or 0 for p in error.problems)


def test_duplicate_names(small_text: str) -> None:
    text = small_text.replace("slug: penghu", "slug: keelung")
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "slug: keelung", nth=2)
    assert "duplicate tenant name 'keelung' (already declared at tenants[0].slug)" in str(error)


def test_duplicate_host_across_sites(small_text: str) -> None:
    text = small_text.replace("{name: s1,", "{name: p1,")
    assert "duplicate host name 'p1'" in str(error_of(text))


def test_duplicate_yaml_key(small_text: str) -> None:
    text = small_text.replace("    site: primary\n", "    site: primary\n    site: secondary\n", 1)
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "site: secondary")
    assert "duplicate key 'site'" in str(error)


def test_missing_required_key(small_text: str) -> None:
    text = small_text.replace("    image: bookworm-tenant\n", "", 1)
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "slug: keelung")
    assert "tenants[0]: missing required key 'image'" in str(error)


def test_bridge_network_needs_a_bridge(small_text: str) -> None:
    text = small_text.replace("{name: tenant-user, kind: user}", "{name: tenant-user, kind: bridge}")
    assert "a bridge network needs 'bridge: <interface name>'" in str(error_of(text))


def test_setting_values_must_be_scalars(small_text: str) -> None:
    text = small_text.replace(
        "    site: primary\n", "    site: primary\n    settings: {fiscal_year: [1]}\n", 1
    )
    error = error_of(text)
    assert error.problems[0].line == line_of(text, "fiscal_year")
    assert "tenants[0].settings.fiscal_year: a setting must be a string, a number or true/false" in str(error)


def test_empty_file_is_refused_rather_than_removing_everything() -> None:
    assert "the file is empty" in str(error_of(""))
    assert "the file is empty" in str(error_of("# only a comment\n"))


def test_top_level_must_be_a_mapping() -> None:
    assert "top level must be a mapping" in str(error_of("- sites\n"))


def test_missing_file_is_a_declaration_error(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError, match="cannot read the file"):
        load_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize(("setting", "said"), [
    ("secret: hunter22", "setting 'secret' is set by the platform and cannot be declared"),
    ("database_url: sqlite:////tmp/x.db", "setting 'database_url' is set by the platform"),
    ("page-size: 20", "setting name 'page-size': use lower-case letters, digits and _"),
    ("PageSize: 20", "setting name 'PageSize'"),
])
def test_settings_are_plain_names_and_never_the_platforms_own(
    small_text: str, setting: str, said: str
) -> None:
    text = small_text.replace("    site: primary\n", f"    site: primary\n    settings: {{{setting}}}\n", 1)
    error = error_of(text)
    assert said in error.problems[0].message
    assert error.problems[0].line == line_of(text, "settings:")


def test_a_plain_setting_is_accepted(small_text: str) -> None:
    declared = "    site: primary\n    settings: {support_phone: '02-1234'}\n"
    text = small_text.replace("    site: primary\n", declared, 1)
    tenant = load_text(text, "counties.yaml").tenants[0]
    assert tenant.settings["support_phone"] == "02-1234"
