"""The witness: a process apart from the service that checks every site each `--interval` seconds and
keeps its observations in `STATE_DIR/dr/observations/VANTAGE.jsonl` for the site watch to read.

    python -m dr.witness --state-dir /var/lib/countycloud --interval 1 [--vantage witness]

It reads what to check from `STATE_DIR/dr/targets.json` (written by the service, see dr.targets)
every tick. Run one with `--vantage witness` beside the service, and one per site with
`--vantage SITE` (the other site's view; it does not vote on its own site).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from dr import observations
from dr.health import Observation, WatchRules
from dr.probe import Prober
from dr.targets import read_targets, targets_path

DEFAULTS = WatchRules()


def run(
    state_dir: Path,
    vantage: str,
    interval_s: float = DEFAULTS.interval_s,
    timeout_s: float = DEFAULTS.check_timeout_s,
    keep_s: float = 30.0,
    stop: threading.Event | None = None,
    ticks: int | None = None,
    parent_pid: int | None = None,
) -> None:
    """Check every target each interval until `stop` is set (or `ticks` ticks have run, or the process
    `parent_pid` that started this one is gone)."""
    stop = stop or threading.Event()
    observations.path_of(state_dir, vantage)  # refuse a bad name before the first tick
    prober = Prober(vantage, timeout_s)
    kept: list[Observation] = []
    next_tick = time.monotonic()
    done = 0
    try:
        while not stop.is_set() and (ticks is None or done < ticks):
            if parent_pid is not None and os.getppid() != parent_pid:
                break  # the service that started this witness died (even by kill -9): end with it
            targets = read_targets(targets_path(state_dir))
            kept = observations.recent([*kept, *prober.observe_all(targets)], time.time(), keep_s)
            observations.write(state_dir, vantage, kept)
            done += 1
            # On the interval's grid: a slow tick shortens the wait, it does not shift every later one.
            next_tick += interval_s
            if next_tick < time.monotonic():
                next_tick = time.monotonic()
            stop.wait(max(0.0, next_tick - time.monotonic()))
    finally:
        prober.close()


def _name(text: str) -> str:
    try:
        observations.path_of(Path("."), text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dr.witness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="the platform's state folder")
    parser.add_argument("--interval", type=float, default=DEFAULTS.interval_s, help="seconds between checks")
    parser.add_argument("--timeout", type=float, default=DEFAULTS.check_timeout_s,
                        help="seconds each check waits for an answer")
    parser.add_argument("--vantage", type=_name, default="witness", help="this vantage point's name")
    parser.add_argument("--keep", type=float, default=30.0, help="seconds of observations kept in the file")
    parser.add_argument("--parent", type=int, default=None,
                        help="end when this process (the service that started the witness) is gone")
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.timeout <= 0 or args.timeout > args.interval:
        parser.error("--interval and --timeout must be positive, and the timeout at most the interval")
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run(args.state_dir, args.vantage, args.interval, args.timeout, args.keep, stop, parent_pid=args.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
