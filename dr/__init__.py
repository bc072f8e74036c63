"""Failover, DR tests and failback of all tenants by recorded runbooks, with measured RTO and RPO.
(Not built yet.)"""
