"""backup.restic without the binary: error classification from restic 0.14's own messages, time
parsing, copy reports, password-file rules and argument checks."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup import restic
from backup.restic import (
    DiskFull,
    RepositoryCorrupted,
    RepositoryExists,
    RepositoryLocked,
    RepositoryMissing,
    ResticError,
    ServerUnreachable,
    SnapshotNotFound,
    UnsafePasswordFile,
    WrongPassword,
    classify,
)

# Messages as restic 0.14 prints them (captured from the Debian binary).
LOCKED = (
    "unable to create lock in backend: repository is already locked exclusively by PID 28548 on vm by root "
    "(UID 0, GID 0)\nlock was created at 2026-12-04 13:54:13 (1.9s ago)\nstorage ID 64517232\n"
    "the `unlock` command can be used to remove stale locks"
)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Fatal: wrong password or no key found", WrongPassword),
        ("Fatal: unable to open config file: stat nope/config: no such file or directory\n"
         "Is there a repository at the following location?\nnope", RepositoryMissing),
        ("Fatal: unable to open config file: <config/> does not exist\n"
         "Is there a repository at the following location?\nrest:http://127.0.0.1:23555/nothere/",
         RepositoryMissing),
        ("Fatal: unable to open config file: client.Head: Head \"http://127.0.0.1:23999/x/config\": dial tcp "
         "127.0.0.1:23999: connect: connection refused\nIs there a repository at the following location?",
         ServerUnreachable),
        ("Fatal: create repository at repo1 failed: config file already exists", RepositoryExists),
        ("Fatal: unable to save snapshot: write small/repo/data/1f/1f8d-tmp-15: no space left on device",
         DiskFull),
        ("Pack ID does not match, want 9f98, got 0515\nFatal: repository contains errors",
         RepositoryCorrupted),
        ("invalid id \"deadbeef\": no matching ID found for prefix \"deadbeef\"", SnapshotNotFound),
        ("cannot dump file: path \"/nope\" not found in snapshot", SnapshotNotFound),
        ("Fatal: something nobody expected", ResticError),
    ],
)
def test_classify_by_restic_message(message: str, kind: type[ResticError]) -> None:
    error = classify("snapshots repo", message, 1)
    assert type(error) is kind
    # restic's own words are in the error
    assert message.splitlines()[0] in str(error)


def test_locked_error_names_the_holder() -> None:
    error = classify("forget repo", LOCKED, 1)
    assert isinstance(error, RepositoryLocked)
    assert (error.holder_pid, error.holder_host, error.exclusive) == (28548, "vm", True)


def test_parse_time_keeps_microseconds_of_nanosecond_stamps() -> None:
    assert restic.parse_time("2026-12-04T13:53:24.919217571Z") == datetime(
        2026, 12, 4, 13, 53, 24, 919217, tzinfo=UTC)
    assert restic.parse_time("2026-12-04T13:53:24+08:00").utcoffset() is not None
    with pytest.raises(ValueError):
        restic.parse_time("yesterday")


def test_parse_copy_output() -> None:
    text = (
        "\nsnapshot f0b119f6 of [/tmp/rx/f1] at 2026-12-04 13:53:24 +0000 UTC)\n"
        "  copy started, this may take a while...\n[0:00] 100.00%  2 / 2 packs copied\n\n"
        "snapshot 6da6ef1e saved\n\n"
        "snapshot d31af848 of [/db.sqlite] at 2026-12-04 13:53:25 +0000 UTC)\n"
        "skipping source snapshot d31af848, was already copied to snapshot b72afa53\n"
    )
    copied, skipped = restic.parse_copy_output(text)
    assert copied == {"f0b119f6": "6da6ef1e"}
    assert skipped == ("d31af848",)


def test_password_file_must_be_owner_only(tmp_path: Path) -> None:
    path = restic.write_password_file(tmp_path / "keys" / "pw", "s3cret")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.read_text() == "s3cret\n"
    assert restic.check_password_file(path) == path
    path.chmod(0o644)
    with pytest.raises(UnsafePasswordFile, match="0644"):
        restic.check_password_file(path)
    with pytest.raises(UnsafePasswordFile):
        restic.check_password_file(tmp_path / "missing")
    with pytest.raises(ValueError):
        restic.write_password_file(tmp_path / "two-lines", "a\nb")


def test_environment_carries_the_password_file_never_a_password(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTIC_PASSWORD", "inherited")
    monkeypatch.setenv("RESTIC_REPOSITORY", "/elsewhere")
    pw = restic.write_password_file(tmp_path / "pw", "s3cret")
    repo = restic.Repository(str(tmp_path / "repo"), pw)
    env = restic.Restic()._env(repo)
    assert "RESTIC_PASSWORD" not in env
    assert env["RESTIC_REPOSITORY"] == repo.location
    assert env["RESTIC_PASSWORD_FILE"] == str(pw)
    assert "s3cret" not in " ".join(env.values())
    argv = restic.Restic()._argv("backup", ["--tag", "x"], json_output=True)
    assert "s3cret" not in " ".join(argv) and "--no-cache" in argv


@pytest.mark.parametrize("tag", ["a,b", "", " padded"])
def test_tags_restic_would_split_are_refused(tag: str) -> None:
    with pytest.raises(ValueError):
        restic.Restic._backup_options([tag], None)


def test_snapshot_ids_are_checked_before_reaching_a_command_line() -> None:
    with pytest.raises(ValueError):
        restic._check_snapshot_id("--remove-all")
    assert restic._check_snapshot_id("latest") == "latest"
    assert restic._check_snapshot_id("0123abcd") == "0123abcd"


def test_snapshot_tag_values() -> None:
    snapshot = restic._snapshot({
        "id": "ab" * 32, "time": "2026-12-04T13:53:24.9Z", "paths": ["/x"], "tags": ["county=penghu", "db"],
        "hostname": "vm",
    })
    assert snapshot.tag_value("county") == "penghu"
    assert snapshot.tag_value("format") is None
    assert snapshot.short_id == "abababab" and snapshot.summary is None
