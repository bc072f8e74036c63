"""A bad COUNTYCLOUD_* value stops every command with its name and the reason, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("COUNTYCLOUD_BRINGUP_PLACES", "-1", "greater than or equal to 0"),
    ("COUNTYCLOUD_BRINGUP_PLACES", "abc", "valid integer"),
    # Read by provisioning.vmplan at import as well: the import must not be what fails.
    ("COUNTYCLOUD_REPLICA_PORT", "99999", "less than or equal to 65535"),
    ("COUNTYCLOUD_REPLICA_PORT", "abc", "valid integer"),
    ("COUNTYCLOUD_BACKUP_REST_PORTS", "primary=23001", "not valid JSON"),
])
def test_a_bad_setting_is_named_without_a_traceback(tmp_path: Path, variable: str, value: str,
                                                     said: str) -> None:
    env = {**os.environ, "COUNTYCLOUD_STATE_DIR": str(tmp_path), variable: value}
    done = subprocess.run([sys.executable, "-m", "controlplane", "tenant", "list"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{variable}: ") and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "countycloud.db").exists(), "nothing made for a refused command"
