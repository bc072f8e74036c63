"""Backups of every county and of the platform database: restic repositories per site (restic.py,
repository.py), the offsite REST server (restserver.py), policy (policy.py) and the platform
database (platformdb.py). Rounds, verification and restore jobs are not built yet (docs/backup.md)."""
