"""Backups of every county and of the platform database: restic repositories per site (restic.py,
repository.py), the offsite REST server (restserver.py), policy (policy.py), the platform database
(platformdb.py), a county's app-consistent copy (consistent.py) and figures (figures.py), restored data
disks (restored.py), and the backup and restore jobs' steps (steps.py). See docs/backup.md."""
