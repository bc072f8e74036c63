"""Settings of one county's application, from TENANT_APP_* environment variables or a KEY=VALUE file.

The VM writes the file on first boot from its seed disk and points TENANT_APP_SETTINGS_FILE at it.
Environment variables win over the file, so an operator can override one value by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenant_app.db import DEFAULT_SYNCHRONOUS, Synchronous
from tenant_app.security.proxies import TrustedProxies

SETTINGS_FILE_VARIABLE = "TENANT_APP_SETTINGS_FILE"
# The values of services.certify_writer.WriterMode (settings must not import the services).
WriterModeName = Literal["inline", "thread", "async"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANT_APP_", extra="ignore")

    database_url: str = "sqlite:///tenant_app.db"
    county_id: str = "demo"
    county_name: str = "示範縣"
    # Signs sessions and CSRF tokens; the VM's seed disk provides a per-county value.
    secret: str = Field(default="change-me-in-production", min_length=8)
    host: str = "127.0.0.1"
    port: int = 8080
    # Bench-only: exposes the naive read-then-write certification endpoint used as a reference.
    enable_naive_certify: bool = False
    # Largest group of queued certifications committed in one transaction by the writer.
    certify_batch_max: int = 512
    # Where certification groups are committed: inline, thread or async (None: by database; see
    # services/certify_writer.py for the measurements behind the defaults).
    certify_writer_mode: WriterModeName | None = None
    # Addresses or networks (comma-separated) whose X-Forwarded-For / X-Forwarded-Proto the app
    # believes: the gateway only. Empty: the direct peer is the client, whatever headers it sends.
    # The platform sets the gateway's address as the guest sees it (provisioning/vmplan.py).
    trusted_proxies: str = ""
    # The county is published over HTTPS only (TLS ended in front of the app): every response
    # carries HSTS and every cookie the Secure flag even when no trusted proxy says "https".
    served_over_tls: bool = False
    # SQLite's durability (tenant_app.db.Synchronous); the default is chosen by measurement.
    sqlite_synchronous: Synchronous = DEFAULT_SYNCHRONOUS

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        TrustedProxies.parse(value)  # a typo must stop the start, not silently trust nobody
        return value


def load_settings(env_file: str | Path | None = None) -> Settings:
    """Read settings from the environment, and from the KEY=VALUE file if one is named."""
    path = env_file or os.environ.get(SETTINGS_FILE_VARIABLE)
    if path:
        return Settings(_env_file=str(path), _env_file_encoding="utf-8")
    return Settings()
