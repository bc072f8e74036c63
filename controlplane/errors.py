"""The control plane's error base, and the one place where every package's errors are mapped to a
stable code, a CLI exit code and an HTTP status.

Each package has one error base (inventory.errors.InventoryError, provisioning.errors.
ProvisioningError, ...); the use-case layer lets them through and the entry points translate them
with `classify`, so a message written for an operator reaches the CLI, the API and the console alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    NOT_FOUND = "not_found"
    INVALID = "invalid_input"
    CONFLICT = "conflict"  # e.g. an unfinished job for the same target
    FORBIDDEN = "forbidden"
    UNAUTHENTICATED = "unauthenticated"
    FAILED = "operation_failed"  # a precondition of the world (site down, no capacity) or a failed job
    UNAVAILABLE = "unavailable"  # the platform database or a daemon did not answer
    THROTTLED = "throttled"


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2


@dataclass(frozen=True)
class Mapping:
    exit_code: ExitCode
    http_status: int


MAPPING: dict[ErrorCode, Mapping] = {
    ErrorCode.NOT_FOUND: Mapping(ExitCode.USAGE, 404),
    ErrorCode.INVALID: Mapping(ExitCode.USAGE, 422),
    ErrorCode.CONFLICT: Mapping(ExitCode.FAILED, 409),
    ErrorCode.FORBIDDEN: Mapping(ExitCode.USAGE, 403),
    ErrorCode.UNAUTHENTICATED: Mapping(ExitCode.USAGE, 401),
    ErrorCode.FAILED: Mapping(ExitCode.FAILED, 409),
    ErrorCode.UNAVAILABLE: Mapping(ExitCode.FAILED, 503),
    ErrorCode.THROTTLED: Mapping(ExitCode.FAILED, 429),
}


class ControlPlaneError(Exception):
    """An error of a use case, written for the person who asked; `code` says which kind it is."""

    code: ErrorCode = ErrorCode.FAILED

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFoundError(ControlPlaneError):
    code = ErrorCode.NOT_FOUND


class InvalidInput(ControlPlaneError):
    code = ErrorCode.INVALID


class Conflict(ControlPlaneError):
    code = ErrorCode.CONFLICT


class Forbidden(ControlPlaneError):
    code = ErrorCode.FORBIDDEN


def classify(error: BaseException) -> tuple[ErrorCode, str] | None:
    """The stable code and the operator's message of any package's error; None for a bug (which
    the entry points let through, so it is seen and fixed, not hidden behind a message)."""
    from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

    from controlplane.jobs import JobConflict, JobError, JobFailed, JobNotFound
    from inventory.errors import InventoryError
    from inventory.loader import DeclarationError
    from inventory.queries import NotFound
    from provisioning.errors import ProvisioningError

    message = str(error)
    if isinstance(error, ControlPlaneError):
        return error.code, message
    if isinstance(error, NotFound | JobNotFound):
        return ErrorCode.NOT_FOUND, message
    if isinstance(error, DeclarationError):
        return ErrorCode.INVALID, "\n".join(error.lines())
    if isinstance(error, JobConflict):
        return ErrorCode.CONFLICT, message
    if isinstance(error, InventoryError | ProvisioningError | JobFailed | JobError):
        return ErrorCode.FAILED, message
    if isinstance(error, DataError):
        # The database refused a value (too long for its column, a NUL in text): the input's fault.
        return ErrorCode.INVALID, f"a value does not fit the platform database: {error.orig}"
    if isinstance(error, IntegrityError):
        return ErrorCode.CONFLICT, f"the change conflicts with what is recorded: {error.orig}"
    if isinstance(error, SQLAlchemyError):
        return ErrorCode.UNAVAILABLE, f"the platform database failed: {error}"
    return None
