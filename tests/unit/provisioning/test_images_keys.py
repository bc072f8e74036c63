"""provisioning.images without building anything: the cache keys (stable, and sensitive to exactly
what they should be), finding a built image (`load`, `cached`), and the Debian mirror from apt's
sources (fake files). debootstrap is never run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from provisioning import images
from provisioning.images import ImageBuildError


@pytest.fixture
def trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A copy of the image recipe and a small stand-in for tenant_app's source."""
    recipe = tmp_path / "recipe"
    shutil.copytree(images.RECIPE_DIR, recipe)
    app = tmp_path / "tenant_app"
    (app / "services").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "app.py").write_text("APP = 'county accounting'\n")
    (app / "services" / "certify.py").write_text("def certify(): ...\n")
    monkeypatch.setattr(images, "RECIPE_DIR", recipe)
    monkeypatch.setattr(images, "TENANT_APP_DIR", app)
    return recipe, app


def test_keys_are_stable_16_hex_digits(trees: tuple[Path, Path]) -> None:
    base, image = images.base_key(), images.image_key()
    assert base == images.base_key() and image == images.image_key()
    for key in (base, image):
        assert len(key) == 16 and int(key, 16) >= 0
    assert base != image


def test_changing_the_app_changes_the_image_key_but_not_the_base(trees: tuple[Path, Path]) -> None:
    _recipe, app = trees
    base, image = images.base_key(), images.image_key()
    (app / "services" / "certify.py").write_text("def certify(): return 1\n")
    assert images.base_key() == base
    changed = images.image_key()
    assert changed != image
    (app / "services" / "certify.py").write_text("def certify(): ...\n")
    assert images.image_key() == image  # content, not modification time


def test_adding_or_renaming_an_app_file_changes_the_image_key(trees: tuple[Path, Path]) -> None:
    _recipe, app = trees
    image = images.image_key()
    (app / "services" / "certify.py").rename(app / "services" / "certify_v2.py")
    renamed = images.image_key()
    assert renamed != image
    (app / "exports.py").write_text("")
    assert images.image_key() not in (image, renamed)


def test_bytecode_caches_and_databases_do_not_change_the_image_key(trees: tuple[Path, Path]) -> None:
    _recipe, app = trees
    image = images.image_key()
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (app / "stray.pyc").write_bytes(b"\x00")
    (app / "tenant_app.db").write_bytes(b"SQLite format 3\x00")
    assert images.image_key() == image


def test_changing_the_recipe_changes_both_keys(trees: tuple[Path, Path]) -> None:
    recipe, _app = trees
    base, image = images.base_key(), images.image_key()
    files = sorted(p for p in recipe.rglob("*") if p.is_file())
    assert files, "the recipe folder holds the guest's files"
    files[0].write_bytes(files[0].read_bytes() + b"\n# changed\n")
    assert images.base_key() != base
    assert images.image_key() != image


def test_changing_the_guest_package_list_changes_the_base_key(
    trees: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = images.base_key()
    monkeypatch.setattr(images, "GUEST_PACKAGES", (*images.GUEST_PACKAGES, "curl"))
    assert images.base_key() != base


# --- finding a built image ---------------------------------------------------------------------------

def _built(cache: Path, key: str) -> Path:
    folder = images.image_dir(cache, key)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"key": key, "base_key": "b" * 16, "built_s": 20.0}))
    return folder


def test_load_finds_a_built_image_by_key(tmp_path: Path) -> None:
    folder = _built(tmp_path, "a" * 16)
    image = images.load(tmp_path, "a" * 16)
    assert image is not None
    assert (image.key, image.disk, image.kernel, image.initrd) == (
        "a" * 16, folder / "golden.qcow2", folder / "vmlinuz", folder / "initrd.img")
    assert "root=/dev/vda" in image.cmdline


def test_load_of_an_unbuilt_or_half_built_image_is_none(tmp_path: Path) -> None:
    assert images.load(tmp_path, "a" * 16) is None
    images.image_dir(tmp_path, "c" * 16).mkdir(parents=True)  # a crashed build: no manifest
    assert images.load(tmp_path, "c" * 16) is None


def test_cached_is_the_image_of_the_current_key_only(trees: tuple[Path, Path], tmp_path: Path) -> None:
    _recipe, app = trees
    cache = tmp_path / "cache"
    assert images.cached(cache) is None
    _built(cache, images.image_key())
    current = images.cached(cache)
    assert current is not None and current.key == images.image_key()
    (app / "app.py").write_text("APP = 'changed'\n")
    assert images.cached(cache) is None  # the app changed: the built image is stale
    assert images.load(cache, current.key) == current  # but a job that pinned it still finds it


# --- the Debian mirror -------------------------------------------------------------------------------

@pytest.fixture
def apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Fake apt source files in place of /etc/apt/sources.list.d/debian.sources and /etc/apt/sources.list."""
    deb822 = tmp_path / "debian.sources"
    legacy = tmp_path / "sources.list"
    real_path = Path
    mapping = {"/etc/apt/sources.list.d/debian.sources": deb822, "/etc/apt/sources.list": legacy}

    def fake_path(*parts: str) -> Path:
        joined = str(real_path(*parts))
        return mapping.get(joined, real_path(joined))

    monkeypatch.setattr(images, "Path", fake_path)
    return deb822, legacy


DEB822 = """\
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
"""


def test_mirror_from_deb822_sources_skips_security(apt: tuple[Path, Path]) -> None:
    deb822, _legacy = apt
    deb822.write_text(DEB822)
    assert images.debian_mirror() == "http://mirror.example.org/debian"


def test_mirror_from_a_legacy_sources_list(apt: tuple[Path, Path]) -> None:
    _deb822, legacy = apt
    legacy.write_text(
        "# deb http://old.example.org/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb http://ftp.tw.debian.org/debian bookworm main contrib\n"
    )
    assert images.debian_mirror() == "http://ftp.tw.debian.org/debian"


@pytest.mark.parametrize("options", ["[signed-by=/usr/share/keyrings/debian.gpg]",
                                     "[arch=amd64 signed-by=/usr/share/keyrings/debian.gpg]"])
def test_legacy_line_with_options_gives_the_uri_not_the_options(apt: tuple[Path, Path], options: str) -> None:
    _deb822, legacy = apt
    legacy.write_text(f"deb {options} http://ftp.tw.debian.org/debian bookworm main\n")
    assert images.debian_mirror() == "http://ftp.tw.debian.org/debian"


def test_deb822_without_a_mirror_falls_back_to_the_legacy_list(apt: tuple[Path, Path]) -> None:
    deb822, legacy = apt
    deb822.write_text("Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n")
    legacy.write_text("deb http://ftp.tw.debian.org/debian bookworm main\n")
    assert images.debian_mirror() == "http://ftp.tw.debian.org/debian"


def test_no_mirror_at_all_is_a_clear_build_error(apt: tuple[Path, Path]) -> None:
    _deb822, legacy = apt
    legacy.write_text("deb http://ftp.tw.debian.org/debian trixie main\n")  # another suite only
    with pytest.raises(ImageBuildError, match="no Debian mirror found"):
        images.debian_mirror()
    legacy.unlink()
    with pytest.raises(ImageBuildError, match="cannot debootstrap"):
        images.debian_mirror()
