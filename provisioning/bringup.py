"""Counties on their way to serving go before Ansible converges, and take turns among themselves.

Under TCG one converge costs about 10 CPU-seconds (ansible-playbook on the host, Python modules in
the guest). Thirteen of them beside thirteen restores on 2 cores put the last county's readiness at
265 s; without them it is the restores alone. A county needs no converge to serve (its seed disk
carries the same settings), so a provisioning job's converge waits until no other county is coming
up, and converges take turns, one at a time.

A county coming up holds an exclusive flock on its own file from its job's first step until it
serves through its address. A flock dies with its process, so a killed job never holds anyone back;
a job that failed in a process that lives on (the one case a lock outlives its county) costs the
others at most `wait_s`.

Bringing a VM from restore to serving is CPU-bound under TCG (mostly QEMU translating the guest's
code afresh, ~2.9 CPU-seconds a clone). Thirteen at once on 2 cores all served after 33-34 s; with
a place per core the first served after 5 s and the last after 30 s. So a VM takes one of a few
places for that phase (flocks again, one file per place).
"""

from __future__ import annotations

import errno
import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from provisioning import locks

COMING_UP = "coming-up"
_held: dict[Path, IO[str]] = {}
_held_lock = threading.Lock()


def begin(directory: Path, tenant: str) -> None:
    """This process is bringing `tenant` up (idempotent: every step before serving calls it)."""
    path = directory / COMING_UP / f"{tenant}.lock"
    with _held_lock:
        if path in _held:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "w")  # noqa: SIM115  (kept open: the lock lives as long as the handle)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES):
                return  # another process brings this tenant up (the job runner refuses that anyway)
            raise
        _held[path] = handle


def end(directory: Path, tenant: str) -> None:
    """`tenant` serves: it no longer holds back anyone's converge."""
    path = directory / COMING_UP / f"{tenant}.lock"
    with _held_lock:
        handle = _held.pop(path, None)
    if handle is not None:
        path.unlink(missing_ok=True)
        handle.close()  # closing releases the flock


def coming_up(directory: Path) -> list[str]:
    """Tenants a live process is bringing up now, this one included (flocks belong to open files,
    so another thread's county in this process counts too: `tenant create A B C` runs them together)."""
    found = []
    folder = directory / COMING_UP
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        try:
            handle = open(path)  # noqa: SIM115
        except FileNotFoundError:
            continue  # it came up while we looked
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                found.append(path.stem)
    return found


@dataclass(frozen=True)
class Turn:
    waited_s: float
    waited_for: tuple[str, ...]  # every tenant seen coming up while this converge waited
    gave_up: bool  # waited `wait_s` and went ahead anyway


@contextmanager
def converge_turn(directory: Path, wait_s: float = 600.0, poll_s: float = 1.0,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> Iterator[Turn]:
    """Hold the block until no other county is coming up and no other converge runs."""
    began = clock()
    seen: set[str] = set()
    with locks.exclusive(directory / "converge.lock"):
        while True:
            others = coming_up(directory)
            seen.update(others)
            if not others or clock() - began >= wait_s:
                break
            sleep(poll_s)
        yield Turn(waited_s=clock() - began, waited_for=tuple(sorted(seen)), gave_up=bool(others))


# --- places to come up in -------------------------------------------------------------------------

_places: dict[str, IO[str]] = {}
# Set when this process leaves a place: its waiter looks again at once instead of on its next poll.
_left = threading.Event()


def _until_a_place_is_left(timeout_s: float) -> None:
    """Sleep until this process leaves a place, or `timeout_s` (a place left by another process)."""
    _left.wait(timeout_s)
    _left.clear()


def take_place(directory: Path, vm: str, places: int, poll_s: float = 0.25,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = _until_a_place_is_left) -> float:
    """Wait for one of `places` places to bring a VM from restore (or boot) to serving; returns the
    seconds waited. Held until `leave_place` (or the process ends: one flock per place, so it counts
    across processes). Idempotent per VM. `places` 0: no limit."""
    if places <= 0:
        return 0.0
    with _held_lock:
        if vm in _places:
            return 0.0
    folder = directory / "places"
    folder.mkdir(parents=True, exist_ok=True)
    began = clock()
    # Only the waiter at the head of the line polls the places; the rest sleep in the kernel on the
    # line's lock. Eleven job threads each polling every 0.05 s cost a fifth of a core while 13
    # counties came up (docs/benchmarks.md, issue 14 item 12). The head wakes as soon as a job of
    # this process leaves its place (`tenant create A B C` is one process), and polls every `poll_s`
    # only for places held by other processes.
    with locks.exclusive(folder / "line.lock"):
        while True:
            handle = _free_place(folder, places)
            if handle is not None:
                with _held_lock:
                    _places[vm] = handle
                return clock() - began
            sleep(poll_s)


def _free_place(folder: Path, places: int) -> IO[str] | None:
    for index in range(places):
        handle = open(folder / f"{index}.lock", "w")  # noqa: SIM115  (kept open while held)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return handle
    return None


def leave_place(vm: str) -> None:
    with _held_lock:
        handle = _places.pop(vm, None)
    if handle is not None:
        handle.close()
        _left.set()
