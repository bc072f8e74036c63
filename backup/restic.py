"""The restic edge: the only module that runs the restic binary.

A small typed wrapper over `restic --json` as Debian ships it (0.14). Every call has a timeout;
every failure raises a ResticError subclass carrying restic's own message. Passwords reach restic
only as 0600 password files (RESTIC_PASSWORD_FILE / --from-password-file): never on a command line,
in the environment as a value, or in a log. No global state: a `Restic` value holds the settings and
each call builds its own environment.

What 0.14 does and does not give (checked against the binary): `--json` on backup, snapshots,
forget, stats and ls; plain text on init, copy, check, restore, unlock and prune; no exit codes per
failure kind (those came in 0.17), so failures are told apart by restic's message; snapshots carry
no summary (0.17), so `Snapshot.summary` is None on 0.14. A lock is stale for restic when it is older
than 30 minutes, or was made on this host by a process that no longer exists (`unlock` without
--remove-all removes only those); a running restic refreshes its lock every 5 minutes, so a live
process's lock never looks stale. 0.14 does not skip stale locks by itself: they block until unlocked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from backup.policy import Retention

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0
# After SIGINT restic removes its lock and exits; a process that ignores it this long is killed.
_INTERRUPT_GRACE_S = 10.0
_CHUNK = 1 << 20
_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{8,64}$")


# ---------------------------------------------------------------------------------------------- errors


class ResticError(RuntimeError):
    """restic failed. `message` is restic's own (its stderr, progress lines removed)."""

    def __init__(self, command: str, message: str, returncode: int | None = None) -> None:
        self.command = command
        self.message = message
        self.returncode = returncode
        super().__init__(f"restic {command}: {message}" if message else f"restic {command} failed")


class WrongPassword(ResticError):
    """The password file does not open the repository (or the repository has no key)."""


class RepositoryMissing(ResticError):
    """No repository at the location (no config file there)."""


class RepositoryExists(ResticError):
    """`init` on a location that already holds a repository."""


class ServerUnreachable(ResticError):
    """The REST server did not answer (connection refused, reset, timed out)."""


class RepositoryLocked(ResticError):
    """Another restic process holds a conflicting lock; the holder is parsed from restic's message."""

    def __init__(self, command: str, message: str, returncode: int | None = None) -> None:
        super().__init__(command, message, returncode)
        holder = re.search(r"locked (exclusively )?by PID (\d+) on (\S+)", message)
        self.exclusive = bool(holder and holder.group(1))
        self.holder_pid = int(holder.group(2)) if holder else None
        self.holder_host = holder.group(3) if holder else None


class DiskFull(ResticError):
    """The repository's (or the restore target's) filesystem has no space left."""


class RepositoryCorrupted(ResticError):
    """restic found data that does not match its hash or does not decrypt."""


class SnapshotNotFound(ResticError):
    """No snapshot (or no file in it) matches what was asked for."""


class ResticTimeout(ResticError):
    """The command ran past its timeout and was interrupted (SIGINT, then SIGKILL)."""


class SourceFailed(ResticError):
    """The program whose output was being backed up failed; no snapshot was saved."""


class UnsafePasswordFile(ValueError):
    """A password file is missing, not a regular file, or readable by group or others."""


# Most specific first: a REST server that is down also makes restic say "Is there a repository".
_CLASSIFY: tuple[tuple[re.Pattern[str], type[ResticError]], ...] = (
    (re.compile(r"wrong password or no key found"), WrongPassword),
    (re.compile(r"no space left on device"), DiskFull),
    (re.compile(r"connection refused|connection reset|dial tcp|no route to host|i/o timeout"),
     ServerUnreachable),
    (re.compile(r"repository is already locked"), RepositoryLocked),
    (re.compile(r"config file already exists"), RepositoryExists),
    (re.compile(r"unable to open config file|does not exist|Is there a repository"), RepositoryMissing),
    (re.compile(r"no matching ID found|no snapshot found|not found in snapshot|unable to find snapshot"),
     SnapshotNotFound),
    (re.compile(r"repository contains errors|Pack ID does not match|ciphertext verification failed|"
                r"invalid data returned|unexpected EOF|wrong data returned|decrypting blob .* failed"),
     RepositoryCorrupted),
)


def classify(command: str, message: str, returncode: int | None) -> ResticError:
    """The ResticError subclass for restic's message (plain ResticError when none matches)."""
    for pattern, kind in _CLASSIFY:
        if pattern.search(message):
            return kind(command, message, returncode)
    return ResticError(command, message, returncode)


def _clean_stderr(stderr: str) -> str:
    """restic's message without progress redraws and chatter about its cache."""
    lines = []
    for raw in stderr.splitlines():
        line = raw.replace("\x1b[2K", "").strip()
        if not line or line.startswith(("using temporary cache", "[0:")):
            continue
        lines.append(line)
    return "\n".join(lines[-40:])


# ------------------------------------------------------------------------------------ data and results


@dataclass(frozen=True)
class Repository:
    """A restic repository: a local path or `rest:http://127.0.0.1:PORT/NAME`, and its password file.

    The location names no secret (REST repositories here carry no credentials in their URL), so it
    may appear on command lines and in logs.
    """

    location: str
    password_file: Path

    def __str__(self) -> str:
        return self.location


@dataclass(frozen=True)
class SnapshotSummary:
    """What restic 0.17+ records in a snapshot about its backup; absent on 0.14."""

    data_added: int
    total_bytes_processed: int


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]
    # For a copy: the id of the snapshot it was copied from (restic's `original`).
    original: str | None = None
    summary: SnapshotSummary | None = None

    def tag_value(self, key: str) -> str | None:
        """The value of a `key=value` tag (restic tags are plain strings; we give them structure)."""
        prefix = f"{key}="
        return next((tag[len(prefix):] for tag in self.tags if tag.startswith(prefix)), None)


@dataclass(frozen=True)
class BackupResult:
    snapshot_id: str
    data_added: int
    total_bytes_processed: int
    files_new: int
    files_changed: int
    duration_s: float  # restic's own figure
    wall_s: float  # the whole command, key derivation included


@dataclass(frozen=True)
class CopyResult:
    # source short id -> new short id in the destination, for snapshots copied by this call
    copied: dict[str, str]
    # source short ids that the destination already held
    skipped: tuple[str, ...]
    wall_s: float


@dataclass(frozen=True)
class ForgetResult:
    kept: tuple[str, ...]
    removed: tuple[str, ...]
    pruned: bool
    wall_s: float


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    # restic's findings, one per line, and the packs it named as damaged
    errors: tuple[str, ...]
    damaged_packs: tuple[str, ...]
    read_data_subset: str | None
    wall_s: float


@dataclass(frozen=True)
class RestoreResult:
    snapshot_id: str
    target: Path
    wall_s: float


@dataclass(frozen=True)
class DumpResult:
    snapshot_id: str
    path: str
    target: Path
    bytes: int
    wall_s: float


class StatsMode(StrEnum):
    RESTORE_SIZE = "restore-size"
    FILES_BY_CONTENTS = "files-by-contents"
    RAW_DATA = "raw-data"
    BLOBS_PER_FILE = "blobs-per-file"


@dataclass(frozen=True)
class RepositoryStats:
    total_size: int
    total_file_count: int
    snapshots_count: int
    total_blob_count: int | None = None


@dataclass(frozen=True)
class LockInfo:
    id: str
    time: datetime
    exclusive: bool
    hostname: str
    pid: int


@dataclass(frozen=True)
class UnlockResult:
    removed: tuple[str, ...]  # lock ids restic removed (stale ones only)
    remaining: tuple[LockInfo, ...]  # locks still held by live processes


@dataclass(frozen=True)
class _Completed:
    stdout: bytes
    stderr: str
    returncode: int
    wall_s: float


# -------------------------------------------------------------------------------------------- helpers


def check_password_file(path: Path) -> Path:
    """The password file, if it is a regular file readable by its owner only (0600 or stricter)."""
    try:
        info = path.stat()
    except OSError as error:
        raise UnsafePasswordFile(f"password file {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePasswordFile(f"password file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise UnsafePasswordFile(
            f"password file {path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be 0600 (owner only)")
    return path


def write_password_file(path: Path, password: str) -> Path:
    """Write a password file created 0600 (never world-readable, not even for an instant)."""
    if "\n" in password:
        raise ValueError("a restic password is one line")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    os.replace(tmp, path)
    return path


def parse_time(value: str) -> datetime:
    """restic's RFC 3339 times carry nanoseconds; Python's parser takes at most microseconds."""
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        raise ValueError(f"not a restic time: {value!r}")
    head, fraction, zone = match.groups()
    fraction = (fraction or ".0")[:7]
    return datetime.fromisoformat(head + fraction + ("+00:00" if zone == "Z" else zone))


def restic_time(when: datetime) -> str:
    """A time as `backup --time` takes it: the local time of day to the second (restic 0.14 parses
    it in its own time zone, which is this process's: restic inherits the environment)."""
    if when.tzinfo is None:
        raise ValueError("a snapshot time must be timezone-aware")
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _snapshot(data: dict[str, Any]) -> Snapshot:
    summary = data.get("summary")
    return Snapshot(
        id=data["id"],
        short_id=data.get("short_id") or data["id"][:8],
        time=parse_time(data["time"]),
        hostname=data.get("hostname", ""),
        paths=tuple(data.get("paths") or ()),
        tags=tuple(data.get("tags") or ()),
        original=data.get("original"),
        summary=SnapshotSummary(int(summary.get("data_added", 0)),
                                int(summary.get("total_bytes_processed", 0)))
        if isinstance(summary, dict) else None,
    )


def _json_lines(stdout: bytes) -> list[dict[str, Any]]:
    messages = []
    for line in stdout.decode(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                messages.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return messages


def _json_document(stdout: bytes) -> Any:
    """The first whole JSON document in restic's output (forget --prune prints text after it)."""
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith(("[", "{")):
            return json.loads(line)
    raise ValueError("restic printed no JSON")


def parse_copy_output(text: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """restic 0.14's copy report (text only): which source snapshots became which new ones, and
    which were skipped as already copied."""
    copied: dict[str, str] = {}
    skipped: list[str] = []
    current: str | None = None
    for line in text.splitlines():
        if match := re.match(r"snapshot ([0-9a-f]+) of ", line):
            current = match.group(1)
        elif match := re.match(r"skipping source snapshot ([0-9a-f]+)", line):
            skipped.append(match.group(1))
        elif (match := re.match(r"snapshot ([0-9a-f]+) saved", line)) and current:
            copied[current] = match.group(1)
            current = None
    return copied, tuple(skipped)


def _check_tags(tags: Iterable[str]) -> list[str]:
    checked = []
    for tag in tags:
        # restic splits --tag values on commas
        if not tag or "," in tag or tag != tag.strip():
            raise ValueError(f"invalid restic tag {tag!r}: no commas, no surrounding spaces")
        checked.append(tag)
    return checked


def _check_snapshot_id(snapshot_id: str) -> str:
    if snapshot_id != "latest" and not _SNAPSHOT_ID.match(snapshot_id):
        raise ValueError(f"not a snapshot id: {snapshot_id!r}")
    return snapshot_id


def _offset(fd: int) -> int | None:
    """The position of a seekable descriptor (a file), None for a pipe."""
    try:
        return os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return None


def _process_exists(pid: int) -> bool:
    """Whether a process with this pid exists (what restic itself tests, with signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------- runner


@dataclass(frozen=True)
class Restic:
    """How to run restic. `cache_dir` None runs without a local cache (--no-cache)."""

    cache_dir: Path | None = None
    binary: str = "restic"
    timeout_s: float = DEFAULT_TIMEOUT_S
    # Remove a stale lock (holder gone on this host) and retry once when a command meets one.
    clear_stale_locks: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)

    # -- plumbing

    def _env(self, repo: Repository) -> dict[str, str]:
        # Only what restic needs: an inherited RESTIC_PASSWORD or RESTIC_REPOSITORY must not take over.
        env = {key: value for key, value in os.environ.items() if not key.startswith("RESTIC_")}
        env.update(self.extra_env)
        env["RESTIC_PASSWORD_FILE"] = str(check_password_file(repo.password_file))
        env["RESTIC_REPOSITORY"] = repo.location
        if self.cache_dir is not None:
            env["RESTIC_CACHE_DIR"] = str(self.cache_dir)
        return env

    def _argv(self, command: str, args: Sequence[str], json_output: bool) -> list[str]:
        argv = [self.binary, command, "--quiet"]
        if json_output:
            argv.append("--json")
        if self.cache_dir is None:
            argv.append("--no-cache")
        return argv + list(args)

    def _run(
        self,
        repo: Repository,
        command: str,
        args: Sequence[str] = (),
        *,
        json_output: bool = False,
        stdin: IO[bytes] | int | None = None,
        stdout: IO[bytes] | int | None = None,
        timeout_s: float | None = None,
        accept: Iterable[int] = (0,),
    ) -> _Completed:
        argv = self._argv(command, args, json_output)
        try:
            return self._once(repo, command, argv, stdin, stdout, timeout_s, accept)
        except RepositoryLocked as locked:
            if not (self.clear_stale_locks and stdin is None and self._remove_if_stale(repo, locked)):
                raise
            return self._once(repo, command, argv, stdin, stdout, timeout_s, accept)

    def _once(
        self,
        repo: Repository,
        command: str,
        argv: list[str],
        stdin: IO[bytes] | int | None,
        stdout: IO[bytes] | int | None,
        timeout_s: float | None,
        accept: Iterable[int],
    ) -> _Completed:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        log.debug("restic %s on %s: %s", command, repo.location, argv)
        process = subprocess.Popen(
            argv, env=self._env(repo), stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _interrupt(process)
            out, err = process.communicate()
            raise ResticTimeout(
                f"{command} {repo.location}",
                f"no result within {timeout:.0f} s; interrupted. "
                f"{_clean_stderr(err.decode(errors='replace'))}",
                process.returncode) from None
        wall = time.monotonic() - started
        message = _clean_stderr(err.decode(errors="replace"))
        log.debug("restic %s on %s: exit %s in %.2f s", command, repo.location, process.returncode, wall)
        if process.returncode not in accept:
            raise classify(f"{command} {repo.location}", message, process.returncode)
        return _Completed(out or b"", message, process.returncode, wall)

    def _remove_if_stale(self, repo: Repository, locked: RepositoryLocked,
                         *others: Repository) -> bool:
        """Unlock when the holder named in the error is a process of this host that is gone.

        restic's message does not say which repository held the lock when a command opens two
        (copy, init --from-repo): each is unlocked, which removes stale locks only."""
        if locked.holder_pid is None or locked.holder_host != socket.gethostname():
            return False
        if _process_exists(locked.holder_pid):
            return False
        for each in (repo, *others):
            log.info("restic: removing stale locks (gone process %s) on %s", locked.holder_pid, each)
            self.unlock(each)
        return True

    # -- commands

    def version(self) -> str:
        result = subprocess.run([self.binary, "version"], capture_output=True, text=True, check=True,
                                timeout=self.timeout_s)
        match = re.search(r"restic (\d+\.\d+\.\d+)", result.stdout)
        if not match:
            raise ResticError("version", result.stdout.strip())
        return match.group(1)

    def init(self, repo: Repository, *, chunker_params_from: Repository | None = None,
             timeout_s: float | None = None) -> str:
        """Create the repository; returns restic's id for it. With `chunker_params_from`, the new
        repository takes that one's chunker parameters, so copies between them deduplicate."""
        args: list[str] = []
        if chunker_params_from is not None:
            args += ["--from-repo", chunker_params_from.location,
                     "--from-password-file", str(check_password_file(chunker_params_from.password_file)),
                     "--copy-chunker-params"]
        # init prints nothing under --quiet: run it without, to read the id.
        argv = [self.binary, "init", *args] + (["--no-cache"] if self.cache_dir is None else [])
        done = self._once(repo, "init", argv, None, None, timeout_s, (0,))
        match = re.search(r"created restic repository (\w+)", done.stdout.decode(errors="replace"))
        return match.group(1) if match else ""

    def is_initialized(self, repo: Repository, *, timeout_s: float | None = None) -> bool:
        try:
            self._run(repo, "cat", ["config"], timeout_s=timeout_s)
        except RepositoryMissing:
            return False
        return True

    def backup_paths(
        self, repo: Repository, paths: Sequence[Path], *, tags: Iterable[str] = (), host: str | None = None,
        timeout_s: float | None = None,
    ) -> BackupResult:
        args = [*self._backup_options(tags, host), "--", *(str(path) for path in paths)]
        done = self._run(repo, "backup", args, json_output=True, timeout_s=timeout_s)
        return _backup_result(done)

    def backup_stdin(
        self, repo: Repository, source: IO[bytes] | int, *, filename: str, tags: Iterable[str] = (),
        host: str | None = None, taken_at: datetime | None = None, timeout_s: float | None = None,
    ) -> BackupResult:
        """Back up what `source` (an open file or pipe) yields until EOF as one file, `filename`.
        `taken_at`: the snapshot's time (restic's --time, whole seconds) instead of restic's start."""
        args = [*self._backup_options(tags, host, taken_at), "--stdin", "--stdin-filename", filename]
        argv = self._argv("backup", args, json_output=True)
        fd = source if isinstance(source, int) else source.fileno()
        start = _offset(fd)
        try:
            done = self._once(repo, "backup", argv, source, None, timeout_s, (0,))
        except RepositoryLocked as locked:
            # restic refused before reading; a file (not a pipe) can be read again from where it was.
            if start is None or not (self.clear_stale_locks and self._remove_if_stale(repo, locked)):
                raise
            os.lseek(fd, start, os.SEEK_SET)
            done = self._once(repo, "backup", argv, source, None, timeout_s, (0,))
        return _backup_result(done)

    def backup_command(
        self, repo: Repository, producer: Sequence[str], *, filename: str, tags: Iterable[str] = (),
        host: str | None = None, env: dict[str, str] | None = None, timeout_s: float | None = None,
    ) -> BackupResult:
        """Stream a program's output (pg_dump, sqlite3 .backup ...) into `restic backup --stdin`.

        restic 0.14 saves a snapshot of whatever arrived before EOF, so a producer that fails half
        way would leave a truncated "restore point". The output is relayed here instead of piped
        straight through: when the producer exits non-zero, restic is interrupted (SIGINT: it
        removes its lock and saves no snapshot) before it sees EOF, and SourceFailed is raised.
        """
        try:
            return self._backup_command_once(repo, producer, filename, tags, host, env, timeout_s)
        except RepositoryLocked as locked:
            # restic refused before reading anything; the producer was stopped: run both again.
            if not (self.clear_stale_locks and self._remove_if_stale(repo, locked)):
                raise
            return self._backup_command_once(repo, producer, filename, tags, host, env, timeout_s)

    def _backup_command_once(
        self, repo: Repository, producer: Sequence[str], filename: str, tags: Iterable[str],
        host: str | None, env: dict[str, str] | None, timeout_s: float | None,
    ) -> BackupResult:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        args = [*self._backup_options(tags, host), "--stdin", "--stdin-filename", filename]
        argv = self._argv("backup", args, json_output=True)
        started = time.monotonic()
        log.debug("restic backup on %s from %s: %s", repo.location, producer[0], argv)
        source = subprocess.Popen(list(producer), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        restic = subprocess.Popen(argv, env=self._env(repo), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert source.stdout is not None and restic.stdin is not None
        # Every other pipe is drained by a thread of its own: none may fill up and stall the relay.
        source_err = _Drain(source.stderr)
        restic_out, restic_err = _Drain(restic.stdout), _Drain(restic.stderr)
        failed_source = False
        try:
            while chunk := source.stdout.read(_CHUNK):
                if time.monotonic() - started > timeout:
                    raise TimeoutError
                restic.stdin.write(chunk)
            if source.wait(timeout=max(1.0, timeout - (time.monotonic() - started))) != 0:
                failed_source = True
                _interrupt(restic)
        except (TimeoutError, subprocess.TimeoutExpired):
            source.kill()
            source.wait()
            _interrupt(restic)
            raise ResticTimeout(f"backup {repo.location}", f"no result within {timeout:.0f} s; interrupted",
                                restic.returncode) from None
        except BrokenPipeError:
            source.kill()  # restic stopped reading: its own message says why (below)
            source.wait()
        finally:
            with contextlib.suppress(BrokenPipeError):
                restic.stdin.close()
        try:
            restic.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            _interrupt(restic)
            raise ResticTimeout(f"backup {repo.location}", f"no result within {timeout:.0f} s; interrupted",
                                restic.returncode) from None
        wall = time.monotonic() - started
        if failed_source:
            raise SourceFailed(
                f"backup {repo.location}",
                f"{producer[0]} exited {source.returncode}: "
                f"{source_err.text()[-2000:]} (no snapshot saved)", source.returncode)
        message = _clean_stderr(restic_err.text())
        if restic.returncode != 0:
            raise classify(f"backup {repo.location}", message, restic.returncode)
        return _backup_result(_Completed(restic_out.data(), message, 0, wall))

    @staticmethod
    def _backup_options(tags: Iterable[str], host: str | None, taken_at: datetime | None = None) -> list[str]:
        options: list[str] = []
        for tag in _check_tags(tags):
            options += ["--tag", tag]
        if host:
            options += ["--host", host]
        if taken_at is not None:
            options += ["--time", restic_time(taken_at)]
        return options

    def snapshots(
        self, repo: Repository, *, tags: Iterable[str] = (), host: str | None = None,
        timeout_s: float | None = None, no_lock: bool = False,
    ) -> list[Snapshot]:
        """The repository's snapshots, oldest first; `tags` must all be present (restic's AND).
        `no_lock`: a reader that must never hold up the rounds' `forget` (restic 0.14 does not wait
        for a lock: the other command fails)."""
        args: list[str] = ["--no-lock"] if no_lock else []
        checked = _check_tags(tags)
        if checked:
            args += ["--tag", ",".join(checked)]
        if host:
            args += ["--host", host]
        done = self._run(repo, "snapshots", args, json_output=True, timeout_s=timeout_s)
        data = _json_document(done.stdout) or []
        return sorted((_snapshot(item) for item in data), key=lambda snapshot: snapshot.time)

    def copy(
        self, destination: Repository, source: Repository, *, snapshot_ids: Sequence[str] = (),
        tags: Iterable[str] = (), timeout_s: float | None = None,
    ) -> CopyResult:
        """Copy snapshots from `source` into `destination` (restic skips those already copied)."""
        args = ["--from-repo", source.location,
                "--from-password-file", str(check_password_file(source.password_file))]
        checked = _check_tags(tags)
        if checked:
            args += ["--tag", ",".join(checked)]
        args += [_check_snapshot_id(snapshot_id) for snapshot_id in snapshot_ids]
        # copy reports per snapshot only without --quiet
        argv = [self.binary, "copy", *args] + (["--no-cache"] if self.cache_dir is None else [])
        try:
            done = self._once(destination, "copy", argv, None, None, timeout_s, (0,))
        except RepositoryLocked as locked:
            if not (self.clear_stale_locks and self._remove_if_stale(destination, locked, source)):
                raise
            done = self._once(destination, "copy", argv, None, None, timeout_s, (0,))
        copied, skipped = parse_copy_output(done.stdout.decode(errors="replace"))
        return CopyResult(copied=copied, skipped=tuple(skipped), wall_s=done.wall_s)

    def forget(
        self, repo: Repository, retention: Retention, *, tags: Iterable[str] = (), host: str | None = None,
        group_by: str = "host,tags", prune: bool = False, timeout_s: float | None = None,
    ) -> ForgetResult:
        """Apply `retention` to each group of snapshots (by default one group per host and tag set:
        one per county); with `prune`, also delete the data no snapshot uses any more."""
        args: list[str] = []
        keep = (("--keep-last", retention.keep_last), ("--keep-hourly", retention.keep_hourly),
                ("--keep-daily", retention.keep_daily), ("--keep-monthly", retention.keep_monthly))
        for flag, value in keep:
            if value is not None:
                args += [flag, str(value)]
        checked = _check_tags(tags)
        if checked:
            args += ["--tag", ",".join(checked)]
        if host:
            args += ["--host", host]
        args += ["--group-by", group_by]
        if prune:
            args.append("--prune")
        done = self._run(repo, "forget", args, json_output=True, timeout_s=timeout_s)
        groups = _json_document(done.stdout) or []
        kept = [item["id"] for group in groups for item in group.get("keep") or ()]
        removed = [item["id"] for group in groups for item in group.get("remove") or ()]
        return ForgetResult(tuple(kept), tuple(removed), prune, done.wall_s)

    def forget_ids(self, repo: Repository, snapshot_ids: Sequence[str], *,
                   timeout_s: float | None = None) -> None:
        """Remove the named snapshots (their data stays until the next prune)."""
        if snapshot_ids:
            self._run(repo, "forget", [_check_snapshot_id(s) for s in snapshot_ids], timeout_s=timeout_s)

    def prune(self, repo: Repository, *, timeout_s: float | None = None) -> float:
        return self._run(repo, "prune", timeout_s=timeout_s).wall_s

    def check(
        self, repo: Repository, *, read_data_subset: str | None = None, timeout_s: float | None = None,
    ) -> CheckResult:
        """restic check; with `read_data_subset` ("100%", "10%", "1/5", "50M") it also reads and
        verifies that much pack data. Damage is a result (ok=False), not an exception; failing to
        check at all (wrong password, locked, unreachable) raises."""
        args = [] if read_data_subset is None else [f"--read-data-subset={read_data_subset}"]
        done = self._run(repo, "check", args, timeout_s=timeout_s, accept=(0, 1))
        if done.returncode == 0:
            return CheckResult(True, (), (), read_data_subset, done.wall_s)
        if "repository contains errors" not in done.stderr:
            raise classify(f"check {repo.location}", done.stderr, done.returncode)
        errors = tuple(line for line in done.stderr.splitlines()
                       if not line.startswith(("Fatal: repository contains errors", "create exclusive lock",
                                               "load indexes", "check ", "read ", "no errors")))
        packs = sorted(set(re.findall(r"(?:Pack ID does not match, want |pack )([0-9a-f]{64})", done.stderr)))
        return CheckResult(False, errors, tuple(packs), read_data_subset, done.wall_s)

    def restore(
        self, repo: Repository, snapshot_id: str, target: Path, *, include: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> RestoreResult:
        args = [_check_snapshot_id(snapshot_id), "--target", str(target)]
        for pattern in include:
            args += ["--include", pattern]
        done = self._run(repo, "restore", args, timeout_s=timeout_s)
        return RestoreResult(snapshot_id, target, done.wall_s)

    def dump(
        self, repo: Repository, snapshot_id: str, path: str, target: Path, *, timeout_s: float | None = None,
        no_lock: bool = False,
    ) -> DumpResult:
        """Write one file of a snapshot to `target` (through a temporary file: no half-written target)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        args = ["--no-lock"] if no_lock else []
        try:
            with partial.open("wb") as out:
                done = self._run(repo, "dump", [*args, _check_snapshot_id(snapshot_id), path], stdout=out,
                                 timeout_s=timeout_s)
            size = partial.stat().st_size
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return DumpResult(snapshot_id, path, target, size, done.wall_s)

    def stats(
        self, repo: Repository, *, mode: StatsMode = StatsMode.RESTORE_SIZE, snapshot_ids: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> RepositoryStats:
        args = ["--mode", mode.value, *(_check_snapshot_id(s) for s in snapshot_ids)]
        done = self._run(repo, "stats", args, json_output=True, timeout_s=timeout_s)
        data = _json_document(done.stdout)
        return RepositoryStats(
            total_size=int(data.get("total_size", 0)),
            total_file_count=int(data.get("total_file_count", 0)),
            snapshots_count=int(data.get("snapshots_count", 0)),
            total_blob_count=data.get("total_blob_count"),
        )

    def locks(self, repo: Repository, *, timeout_s: float | None = None) -> list[LockInfo]:
        """The repository's lock files, read without taking a lock."""
        listed = self._run(repo, "list", ["locks", "--no-lock"], timeout_s=timeout_s)
        found = []
        for lock_id in listed.stdout.decode().split():
            try:
                data = json.loads(self._run(repo, "cat", ["lock", lock_id, "--no-lock"],
                                            timeout_s=timeout_s).stdout)
            except ResticError:
                continue  # removed meanwhile by its process
            found.append(LockInfo(lock_id, parse_time(data["time"]), bool(data.get("exclusive")),
                                  data.get("hostname", ""), int(data.get("pid", 0))))
        return found

    def unlock(self, repo: Repository, *, timeout_s: float | None = None) -> UnlockResult:
        """Remove stale locks only (restic's `unlock` without --remove-all): those of processes that
        no longer exist on this host, or older than 30 minutes (a live restic refreshes every 5)."""
        before = {lock.id for lock in self.locks(repo, timeout_s=timeout_s)}
        self._once(repo, "unlock", self._argv("unlock", [], False), None, None, timeout_s, (0,))
        after = self.locks(repo, timeout_s=timeout_s)
        return UnlockResult(tuple(sorted(before - {lock.id for lock in after})), tuple(after))


class _Drain:
    """Reads a pipe to its end on a thread of its own."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes] | None) -> None:
        if pipe is not None:
            while chunk := pipe.read(65536):
                self._chunks.append(chunk)

    def data(self) -> bytes:
        self._thread.join(timeout=10)
        return b"".join(self._chunks)

    def text(self) -> str:
        return self.data().decode(errors="replace").strip()


def _interrupt(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (restic cleans up its lock), then SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=_INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _backup_result(done: _Completed) -> BackupResult:
    messages = _json_lines(done.stdout)
    summary = next((m for m in reversed(messages) if m.get("message_type") == "summary"), None)
    if summary is None or not summary.get("snapshot_id"):
        raise ResticError("backup", f"no summary in restic's output: {done.stderr}", done.returncode)
    return BackupResult(
        snapshot_id=summary["snapshot_id"],
        data_added=int(summary.get("data_added", 0)),
        total_bytes_processed=int(summary.get("total_bytes_processed", 0)),
        files_new=int(summary.get("files_new", 0)),
        files_changed=int(summary.get("files_changed", 0)),
        duration_s=float(summary.get("total_duration", 0.0)),
        wall_s=done.wall_s,
    )
