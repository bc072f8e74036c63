"""One restic repository per site: where it lives, its password file, and how it is reached.

Each site keeps its repository under its own state folder (`SITE/backup/repositories/countycloud`).
The primary reaches its own repository by path; the secondary's is reached through the REST server
that serves the secondary's folder on 127.0.0.1 (backup/restserver.py). The offsite repository is
created with the primary's chunker parameters so `restic copy` moves only new chunks.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from backup import restserver
from backup.restic import Repository, Restic, write_password_file
from backup.restserver import RestServer
from provisioning.sites import site_paths

REPOSITORY_NAME = "countycloud"


@dataclass(frozen=True)
class SiteBackup:
    """A site's backup files. Only `served` is ever exposed (by the REST server)."""

    site: str
    root: Path

    @property
    def served(self) -> Path:
        """The folder a REST server serves: one subfolder per repository, nothing else."""
        return self.root / "repositories"

    @property
    def repository_dir(self) -> Path:
        return self.served / REPOSITORY_NAME

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def rest_server(self, port: int) -> RestServer:
        return RestServer(root=self.served, port=port, pidfile=self.root / "rest-server.pid",
                          logfile=self.root / "rest-server.log")

    def local(self) -> Repository:
        """The repository by path (the site's own control plane)."""
        return Repository(str(self.repository_dir), self.password_file)

    def remote(self, port: int) -> Repository:
        """The repository through the site's REST server (from the other site)."""
        return Repository(self.rest_server(port).repository_location(REPOSITORY_NAME), self.password_file)


def site_backup(state_dir: Path, site: str) -> SiteBackup:
    return SiteBackup(site=site, root=site_paths(state_dir, site).root / "backup")


def ensure_password(backup: SiteBackup) -> Path:
    """The site repository's password file, made once with a random password (0600)."""
    if not backup.password_file.exists():
        backup.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_password_file(backup.password_file, secrets.token_urlsafe(32))
    return backup.password_file


def ensure_repository(restic: Restic, repository: Repository, *,
                      chunker_params_from: Repository | None = None,
                      server: RestServer | None = None) -> bool:
    """Create the repository if there is none (idempotent); True when it was created now. A config
    file seen (on disk, or through `server`) answers without restic: every round asks, and each
    restic command pays a key derivation (~0.5 s)."""
    if has_config(repository, server):
        return False
    if restic.is_initialized(repository):
        return False
    restic.init(repository, chunker_params_from=chunker_params_from)
    return True


def has_config(repository: Repository, server: RestServer | None = None) -> bool:
    """Whether the repository's `config` (written by `restic init` after its key) is there: a local
    repository by its file, one behind our REST server by a HEAD request. False when unsure."""
    if server is not None and repository.location == server.repository_location(REPOSITORY_NAME):
        return restserver.has_config(server, REPOSITORY_NAME)
    if ":" in repository.location.split("/", 1)[0]:  # another backend (rest:, sftp:, s3:...)
        return False
    return (Path(repository.location) / "config").is_file()


@dataclass(frozen=True)
class Pair:
    """The primary's repository (by path) and its offsite copy at the secondary (through REST)."""

    primary: Repository
    offsite: Repository
    offsite_server: RestServer


def pair(state_dir: Path, primary_site: str, secondary_site: str, port: int) -> Pair:
    primary = site_backup(state_dir, primary_site)
    secondary = site_backup(state_dir, secondary_site)
    return Pair(primary.local(), secondary.remote(port), secondary.rest_server(port))


def ensure_local(restic: Restic, state_dir: Path, site: str) -> Repository:
    """A site's own repository (and its password file), made if missing: all a round needs to land."""
    backup = site_backup(state_dir, site)
    ensure_password(backup)
    ensure_repository(restic, backup.local())
    return backup.local()


def ensure_pair(restic: Restic, state_dir: Path, primary_site: str, secondary_site: str, port: int) -> Pair:
    """Password files, the secondary's REST server and both repositories, each made if missing."""
    for site in (primary_site, secondary_site):
        ensure_password(site_backup(state_dir, site))
    repositories = pair(state_dir, primary_site, secondary_site, port)
    restserver.ensure_running(repositories.offsite_server)
    ensure_repository(restic, repositories.primary)
    ensure_repository(restic, repositories.offsite, chunker_params_from=repositories.primary,
                      server=repositories.offsite_server)
    return repositories
