"""controlplane.errors.classify: every package's error to one stable code, exit code and status."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from controlplane.errors import MAPPING, ErrorCode, ExitCode, classify
from inventory.queries import NotFound
from provisioning.errors import ProvisioningError


@pytest.mark.parametrize(("error", "code", "status"), [
    (NotFound("no tenant 'nosuch'"), ErrorCode.NOT_FOUND, 404),
    (ProvisioningError("site primary is down"), ErrorCode.FAILED, 409),
    # A value the database refuses (too long for its column on PostgreSQL) is the input's fault.
    (DataError("INSERT", {}, Exception("value too long for type character varying(120)")),
     ErrorCode.INVALID, 422),
    (IntegrityError("INSERT", {}, Exception("duplicate key")), ErrorCode.CONFLICT, 409),
    (OperationalError("SELECT 1", {}, Exception("connection refused")), ErrorCode.UNAVAILABLE, 503),
])
def test_errors_map_to_a_code_and_a_status(error: Exception, code: ErrorCode, status: int) -> None:
    known = classify(error)
    assert known is not None and known[0] is code
    assert MAPPING[code].http_status == status


def test_a_bug_is_not_classified() -> None:
    assert classify(KeyError("x")) is None
    assert MAPPING[ErrorCode.NOT_FOUND].exit_code is ExitCode.USAGE
