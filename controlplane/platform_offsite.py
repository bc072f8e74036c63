"""The offsite repository a recovery reads the platform database's copy from: the DR site's own
restic repository, opened by path because the inventory that names repositories is what is being
recovered. Kept apart so that what the operator is told when the password is missing, unsafe, wrong
or conflicting, or when the folder is not the DR site's, is decided before restic runs and in one
place."""

from __future__ import annotations

from pathlib import Path

from backup import repository
from backup.restic import (
    Repository,
    ResticError,
    SnapshotNotFound,
    UnsafePasswordFile,
    WrongPassword,
    check_password_file,
)
from controlplane.errors import ControlPlaneError, NotFoundError
from controlplane.platform_recovery_plan import RecoveryRefused


def _password(backup: repository.SiteBackup, given: Path | None) -> Path:
    """The repository's password file: the one given (from the DR safe), else the site's own. A
    missing, unsafe or conflicting one is refused before restic runs."""
    kept = backup.password_file
    chosen = given if given is not None else kept
    if not chosen.exists():
        raise RecoveryRefused(
            f"no password file {chosen}: the offsite repository's password is kept in the DR safe; write it "
            f"there (one line, mode 0600) or pass --password-file")
    try:
        check_password_file(chosen)
    except UnsafePasswordFile as error:
        raise RecoveryRefused(str(error)) from None
    if given is not None and kept.exists() and kept.read_bytes().strip() != given.read_bytes().strip():
        raise RecoveryRefused(f"{given} differs from {kept}, the password the failover reads there; "
                              "keep one of them")
    return chosen


def site_repository(state_dir: Path, site: str, password_file: Path | None) -> tuple[Repository, Path]:
    """`site`'s own repository with the password that opens it, and the site's own password file
    (where the failover reads it)."""
    backup = repository.site_backup(state_dir, site)
    if not (backup.repository_dir / "config").is_file():
        raise RecoveryRefused(
            f"no restic repository at {backup.repository_dir} (site {site}'s, which holds the platform "
            f"database's offsite copies): is COUNTYCLOUD_STATE_DIR the DR site's state folder?")
    return Repository(str(backup.repository_dir), _password(backup, password_file)), backup.password_file


def restic_says(error: ResticError, repo: Repository) -> ControlPlaneError:
    """restic's failure as the one line the operator acts on."""
    if isinstance(error, WrongPassword):
        return RecoveryRefused(f"the password in {repo.password_file} does not open the repository at "
                               f"{repo.location}")
    if isinstance(error, SnapshotNotFound):
        return NotFoundError(f"{repo.location}: {error.message}")
    first = error.message.strip().splitlines()[0] if error.message.strip() else str(error)
    return ControlPlaneError(f"restic could not read {repo.location}: {first}")
