"""Converges wait for counties coming up, across processes, and never for a dead process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provisioning import bringup

HOLDER = """
import sys, time
from pathlib import Path
import pytest

from provisioning import bringup
bringup.begin(Path(sys.argv[1]), sys.argv[2])
print("holding", flush=True)
if sys.argv[3] == "end":
    sys.stdin.readline()
    bringup.end(Path(sys.argv[1]), sys.argv[2])
    print("ended", flush=True)
time.sleep(60)
"""


def _holder(directory: Path, tenant: str, then: str = "sleep") -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), tenant, then],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "holding"
    return process


def _serves(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()


def test_another_process_coming_up_is_seen_until_it_serves(tmp_path: Path) -> None:
    holder = _holder(tmp_path, "penghu", then="end")
    try:
        assert bringup.coming_up(tmp_path) == ["penghu"]
        assert holder.stdout is not None
        _serves(holder)
        assert holder.stdout.readline().strip() == "ended"
        assert bringup.coming_up(tmp_path) == []
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_job_holds_no_one_back(tmp_path: Path) -> None:
    holder = _holder(tmp_path, "kinmen")
    assert bringup.coming_up(tmp_path) == ["kinmen"]
    holder.kill()
    holder.wait()
    # Its file stays behind (nobody unlinked it), but no live process holds it.
    assert (tmp_path / bringup.COMING_UP / "kinmen.lock").exists()
    assert bringup.coming_up(tmp_path) == []


def test_a_county_of_this_process_is_waited_for_until_it_serves(tmp_path: Path) -> None:
    # `tenant create A B` runs both jobs in one process: A's converge must wait for B.
    bringup.begin(tmp_path, "yunlin")
    bringup.begin(tmp_path, "yunlin")  # every step before serving calls it
    try:
        assert bringup.coming_up(tmp_path) == ["yunlin"]
    finally:
        bringup.end(tmp_path, "yunlin")
    assert bringup.coming_up(tmp_path) == []
    assert not (tmp_path / bringup.COMING_UP / "yunlin.lock").exists()
    with bringup.converge_turn(tmp_path, wait_s=5) as turn:
        assert turn.waited_for == () and not turn.gave_up


def test_converge_waits_until_the_others_serve(tmp_path: Path) -> None:
    holder = _holder(tmp_path, "changhua", then="end")
    releaser = threading.Timer(0.6, _serves, args=(holder,))
    releaser.start()
    try:
        began = time.monotonic()
        with bringup.converge_turn(tmp_path, wait_s=30, poll_s=0.05) as turn:
            waited = time.monotonic() - began
        assert 0.5 < waited < 10
        assert turn.waited_for == ("changhua",) and not turn.gave_up
    finally:
        releaser.cancel()
        holder.kill()
        holder.wait()


def test_converge_goes_ahead_after_its_bound(tmp_path: Path) -> None:
    holder = _holder(tmp_path, "pingtung")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    try:
        with bringup.converge_turn(tmp_path, wait_s=10, poll_s=1, clock=lambda: now[0], sleep=sleep) as turn:
            assert turn.gave_up and turn.waited_for == ("pingtung",)
            assert turn.waited_s == 10
    finally:
        holder.kill()
        holder.wait()


def test_converges_take_turns(tmp_path: Path) -> None:
    inside: list[int] = []
    overlap: list[bool] = []

    def converge() -> None:
        with bringup.converge_turn(tmp_path, wait_s=5, poll_s=0.01):
            inside.append(1)
            overlap.append(len(inside) > 1)
            time.sleep(0.1)
            inside.pop()

    threads = [threading.Thread(target=converge) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap == [False, False, False]


def test_places_are_shared_out_and_freed(tmp_path: Path) -> None:
    assert bringup.take_place(tmp_path, "vm-a", 2) < 0.5
    assert bringup.take_place(tmp_path, "vm-a", 2) == 0.0  # idempotent: it keeps its place
    assert bringup.take_place(tmp_path, "vm-b", 2) < 0.5
    taken: list[float] = []

    def take_third() -> None:
        taken.append(bringup.take_place(tmp_path, "vm-c", 2, poll_s=0.01))

    third = threading.Thread(target=take_third)
    third.start()
    time.sleep(0.3)
    assert taken == []  # both places are held
    bringup.leave_place("vm-a")
    third.join(timeout=5)
    assert taken and taken[0] >= 0.25
    for vm in ("vm-b", "vm-c"):
        bringup.leave_place(vm)
    assert bringup.take_place(tmp_path, "vm-d", 0) == 0.0  # 0: no limit, nothing taken
    bringup.leave_place("vm-d")


def test_only_the_head_of_the_line_polls_for_a_place(tmp_path: Path) -> None:
    """Four VMs wait for the one place: one of them polls, the others sleep on the line's lock (each
    polling every 0.05 s had cost the 13-county create a fifth of a core)."""
    assert bringup.take_place(tmp_path, "vm-holder", 1) < 0.5
    polls: list[str] = []
    taken: list[str] = []

    def wait_for_place(vm: str) -> None:
        def sleep(seconds: float) -> None:
            polls.append(vm)
            time.sleep(seconds)

        bringup.take_place(tmp_path, vm, 1, poll_s=0.01, sleep=sleep)
        taken.append(vm)
        bringup.leave_place(vm)

    waiters = [threading.Thread(target=wait_for_place, args=(f"vm-{n}",)) for n in range(4)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.5)
    assert taken == []
    assert len(set(polls)) == 1, f"more than one waiter polled: {sorted(set(polls))}"
    bringup.leave_place("vm-holder")
    for waiter in waiters:
        waiter.join(timeout=5)
    assert sorted(taken) == [f"vm-{n}" for n in range(4)]


def test_a_place_held_by_a_killed_process_is_free_again(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from provisioning import bringup; "
        "bringup.take_place(Path(sys.argv[1]), 'vm-x', 1); print('holding', flush=True); time.sleep(60)"),
        str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 1.0:
            holder.kill()
            holder.wait()

    waited = bringup.take_place(tmp_path, "vm-y", 1, poll_s=0.5, clock=lambda: now[0], sleep=sleep)
    assert waited == 1.0
    bringup.leave_place("vm-y")


def test_a_vm_step_frees_its_place_when_it_fails_and_when_the_vm_serves(tmp_path: Path) -> None:
    from inventory.jobs import Step, StepContext
    from provisioning import steps
    from provisioning.platform import Platform
    from provisioning.spec import DomainType

    platform = Platform(engine=None, state_dir=tmp_path, cache_dir=tmp_path,  # type: ignore[arg-type]
                        domain_type=DomainType.QEMU, bringup_places=1)
    ctx = StepContext(job_id="job-1", args={}, artifacts=tmp_path)

    def fails(_ctx: StepContext) -> str:
        raise RuntimeError("restore failed")

    start = steps._in_place(platform, "vm-a", Step("vm-a:start", fails), first=True)
    with pytest.raises(RuntimeError):
        start.run(ctx)
    # Its place is free: another VM takes it at once.
    assert bringup.take_place(tmp_path, "vm-b", 1, poll_s=0.01) < 0.5
    ready = steps._in_place(platform, "vm-b", Step("vm-b:app-ready", lambda _ctx: "app healthy"), last=True)
    assert ready.run(ctx) == "app healthy"
    assert bringup.take_place(tmp_path, "vm-c", 1, poll_s=0.01) < 0.5
    bringup.leave_place("vm-c")
