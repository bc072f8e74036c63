"""Settings of the control plane, read from COUNTYCLOUD_* environment variables (or a .env file).

Lower packages never read settings themselves: the control plane passes the values they need
(paths, URLs, port ranges) down as plain arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from provisioning.vmplan import DEFAULT_REPLICA_PORT


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COUNTYCLOUD_", env_file=".env", extra="ignore")

    # Site daemons, disks, templates and the control-plane database live here. Tests use their own.
    state_dir: Path = Path("/var/lib/countycloud")
    # Golden images and prebooted templates are cached here, outside any clone, keyed by their recipe.
    cache_dir: Path = Path("/var/cache/countycloud")
    database_url: str = ""
    # Host ports on 127.0.0.1 handed out to guests' forwards and to tenant addresses. Below Linux's
    # ephemeral range (32768-60999 by default): there, any outgoing connection on the machine may
    # hold a county's port at the moment its VM needs it (seen in the suite).
    guest_port_first: int = 22000
    guest_port_last: int = 22999
    gateway_port_first: int = 21000
    gateway_port_last: int = 21999
    # Each site's backup REST server (rclone serve restic) on 127.0.0.1: below the ephemeral range
    # and clear of the guest and gateway ranges; 23000-23009 are kept for backup servers (the bench
    # uses 23009, the tests 23100-23199). `backup_rest_port` is the secondary's; the other sites
    # take the next ones (the primary 23001: a county failed over copies to the primary's server
    # while the secondary's serves the counties at home), unless named in `backup_rest_ports`
    # (JSON, e.g. COUNTYCLOUD_BACKUP_REST_PORTS='{"primary": 23005}'). backup/restports.py.
    backup_rest_port: int = 23000
    backup_rest_ports: dict[str, int] = Field(default_factory=dict)
    # The secondary site's replica target (rclone serve sftp) that replicated counties' guests stream
    # to through their guestfwd (provisioning.vmplan reads it too: the VM's XML names it).
    replica_port: int = Field(default=DEFAULT_REPLICA_PORT, ge=1, le=65535)
    # VMs brought from restore (or boot) to serving at once on this machine; 0 for no limit. Under
    # TCG that phase is CPU-bound: one per core served 13 counties sooner than 13 at once, and the
    # first of them within seconds; two per core was not faster when measured side by side
    # (docs/benchmarks.md, issue 14 item 12).
    bringup_places: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0)

    # The service (`countycloud serve`): API, console and job workers on 127.0.0.1. The port is below
    # the ephemeral range for the same reason as the guests' ports.
    service_port: int = Field(default=8600, ge=1, le=65535)
    # Console sessions end this long after sign-in.
    session_hours: float = Field(default=12.0, gt=0)
    # Failed sign-ins allowed per user name and per client address within the window, before
    # further attempts are refused (HTTP 429) until the window has passed.
    login_max_failures_per_user: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_window_s: int = Field(default=900, ge=1)
    # Set when the console is served over HTTPS (behind a TLS proxy): cookies are then Secure.
    cookie_secure: bool = False
    # Monitoring (issue 13) in the service: probes of every serving county, the gateway's request
    # log, host and VM usage; every `monitoring_probe_interval_s` (divides a minute or an hour).
    monitoring: bool = True
    monitoring_probe_interval_s: int = Field(default=60, ge=1, le=3600)
    # The use-case module the service calls. Only tests change it (to a backend that records jobs
    # without booting VMs); it must provide controlplane.operations' functions.
    service_operations: str = "controlplane.operations"
    # The backup schedule and its metrics (controlplane.backup_schedule) run in the service's workers.
    backup_schedule: bool = True
    # A scheduled round waits while this many backup jobs (scheduled or asked for) are queued or
    # running: each copies a database out of a TCG guest and runs restic, and 13 at once took both
    # cores from everything else.
    backup_concurrency: int = Field(default=2, ge=1)
    # Disaster recovery (issue 15, docs/dr.md): the site watch in the service, every site checked every
    # second from the service, a witness process and each site's vantage point.
    dr_watch: bool = True
    # The vantage points the service starts as its own processes, comma-separated ("" when they run
    # elsewhere: in production each site's runs at that site, the witness on a third machine).
    dr_witnesses: str = "witness,primary,secondary"
    # On: when the primary is declared down, the failover job is submitted once `dr_grace_s` has
    # passed. Off (the default): the outage is recorded and an operator decides (`countycloud dr
    # failover`, the console's button).
    dr_automatic: bool = False
    dr_grace_s: float = Field(default=30.0, ge=0)
    # The recovery plan (YAML) the automatic failover follows; "": one tier, 3 counties at a time.
    dr_plan: str = ""

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.state_dir / 'countycloud.db'}"
        return self


def load() -> Settings:
    return Settings()
