"""Scheduled restic backups of every tenant, replicated offsite, with retention and restore
verification. (Not built yet.)"""
