"""The witness loop in-process: it rereads the targets each tick (a new site is checked without a
restart), keeps only its window of observations, and refuses arguments that cannot work."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dr import observations, witness
from dr.targets import SiteTarget, write_targets

ANSWERING = "test:///default"


def wait_for(condition: object, timeout_s: float = 15.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_witness_follows_the_targets_file_and_keeps_its_window(tmp_path: Path) -> None:
    write_targets(tmp_path, [SiteTarget(site="primary", libvirt_uri=ANSWERING)])
    stop = threading.Event()
    loop = threading.Thread(target=witness.run, args=(tmp_path, "witness"),
                            kwargs={"interval_s": 0.1, "timeout_s": 0.1, "keep_s": 1.0, "stop": stop})
    loop.start()
    try:
        wait_for(lambda: {o.site for o in observations.read(tmp_path)} == {"primary"})
        write_targets(tmp_path, [SiteTarget(site="primary", libvirt_uri=ANSWERING),
                                 SiteTarget(site="secondary", libvirt_uri=ANSWERING)])
        wait_for(lambda: "secondary" in {o.site for o in observations.read(tmp_path)})
        time.sleep(1.5)
        seen = observations.read(tmp_path)
        assert all(o.daemon_ok and o.vantage == "witness" for o in seen)
        newest = max(o.at for o in seen)
        assert newest - min(o.at for o in seen) <= 1.0 + 0.2  # the window, give or take one tick
    finally:
        stop.set()
        loop.join(timeout=10)
    assert not loop.is_alive()


def test_a_fixed_number_of_ticks(tmp_path: Path) -> None:
    write_targets(tmp_path, [SiteTarget(site="primary", libvirt_uri=ANSWERING)])
    witness.run(tmp_path, "secondary", interval_s=0.05, timeout_s=0.05, ticks=3)
    assert len(observations.read(tmp_path)) == 3


@pytest.mark.parametrize(
    "arguments",
    [["--interval", "1", "--timeout", "2"], ["--interval", "0"], ["--vantage", "../x"]],
)
def test_arguments_that_cannot_work_are_refused(tmp_path: Path, arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        witness.main(["--state-dir", str(tmp_path), *arguments])
    assert exited.value.code == 2
    assert not observations.observations_dir(tmp_path).exists()


def test_the_witness_ends_when_its_parent_is_gone(tmp_path: Path) -> None:
    """`--parent PID`: started by a service that is gone (here: a parent pid that is not its parent),
    the witness stops at its first tick instead of checking on forever."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    gone = subprocess.run([sys.executable, "-m", "dr.witness", "--state-dir", str(tmp_path),
                           "--parent", str(os.getpid() + 1_000_000)], cwd=root, timeout=60, check=False)
    assert gone.returncode == 0
    assert not observations.path_of(tmp_path, "witness").exists(), "it checked nothing"
    stop = threading.Event()
    loop = threading.Thread(target=witness.run, args=(tmp_path, "service"),
                            kwargs={"interval_s": 0.1, "stop": stop, "parent_pid": os.getppid()})
    loop.start()  # in-process, the parent is this process's own: it runs until stopped
    try:
        wait_for(lambda: observations.path_of(tmp_path, "service").exists())
    finally:
        stop.set()
        loop.join(10)
