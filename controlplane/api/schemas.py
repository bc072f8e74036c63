"""Request bodies and path/query shapes of the API: bounded, strict (unknown fields refused), so bad
input is a 422 before any use case runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.roles import Role

SLUG = r"^[a-z][a-z0-9-]{0,62}$"
VM_NAME = r"^[a-z][a-z0-9-]{0,62}$"
USER_NAME = r"^[a-z][a-z0-9._-]{0,62}$"
JOB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$"
TOKEN_ID = r"^[A-Za-z0-9_]{1,40}$"
MAX_YAML = 512 * 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(Strict):
    slug: str = Field(pattern=SLUG, description="The county's slug, declared in the inventory.")
    cold: bool = Field(default=False, description="Boot instead of restoring the prebooted template.")


class Resize(Strict):
    vcpus: int | None = Field(default=None, ge=1, le=64)
    memory_mb: int | None = Field(default=None, ge=128, le=262_144)
    vm: str | None = Field(default=None, pattern=VM_NAME, description="Which VM (default: the app VM).")

    @model_validator(mode="after")
    def _something(self) -> Resize:
        if self.vcpus is None and self.memory_mb is None:
            raise ValueError("give vcpus, memory_mb or both")
        return self


class Retire(Strict):
    purge: bool = Field(default=False, description="Also delete the county's disks and records.")


class InventoryText(Strict):
    yaml: str = Field(max_length=MAX_YAML, description="An inventory declaration (YAML).")


class UserCreate(Strict):
    name: str = Field(pattern=USER_NAME)
    role: Role
    tenant: str | None = Field(default=None, pattern=SLUG)
    password: str | None = Field(default=None, min_length=10, max_length=1024)


class PasswordSet(Strict):
    password: str = Field(min_length=10, max_length=1024)


class TokenCreate(Strict):
    user: str | None = Field(default=None, pattern=USER_NAME, description="Default: yourself.")
    label: str = Field(default="", max_length=120)


class Error(BaseModel):
    code: str = Field(description="A stable controlplane.errors.ErrorCode value.")
    message: str


class Accepted(BaseModel):
    job_id: str
    kind: str
    target: str
    status_url: str


def job_ref(ref: Any) -> dict[str, Any]:
    kind = getattr(ref, "kind", "")
    return {"job_id": ref.id, "kind": getattr(kind, "value", str(kind)), "target": ref.target,
            "status_url": f"/api/v1/jobs/{ref.id}"}
