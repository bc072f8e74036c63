"""The observations' files: each vantage point keeps its recent observations of every site as JSON
lines in `STATE_DIR/dr/observations/VANTAGE.jsonl`, the whole file replaced atomically each tick (so a
reader never sees half a line) and bounded to the last `keep_s` seconds. The watch reads them all.
No database table: the witness must keep working when the platform database does not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from dr.health import Observation, SiteStatusReport, WatchRules, watch
from dr.targets import dr_dir, write_atomically


def observations_dir(state_dir: Path) -> Path:
    return dr_dir(state_dir) / "observations"


def path_of(state_dir: Path, vantage: str) -> Path:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", vantage):
        raise ValueError(f"a vantage point's name is lower-case letters, digits and '-' (got {vantage!r})")
    return observations_dir(state_dir) / f"{vantage}.jsonl"


def recent(observations: Iterable[Observation], now: float, keep_s: float) -> list[Observation]:
    return [o for o in observations if now - o.at <= keep_s]


def write(state_dir: Path, vantage: str, observations: Iterable[Observation]) -> None:
    text = "".join(o.model_dump_json() + "\n" for o in observations)
    write_atomically(path_of(state_dir, vantage), text)


def read(state_dir: Path) -> list[Observation]:
    """Every vantage point's observations. A line that does not parse is skipped, not fatal: the
    watch must go on judging from the others (a file is only ever replaced whole, so this is a file
    someone else wrote, not a torn write)."""
    found: list[Observation] = []
    folder = observations_dir(state_dir)
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            try:
                found.append(Observation.model_validate_json(line))
            except ValidationError:
                continue
    return found


def verdicts(
    state_dir: Path, sites: Iterable[str], rules: WatchRules, now: float | None = None
) -> dict[str, SiteStatusReport]:
    """The site watch as the service runs it: every vantage point's file read, every site judged."""
    return watch(sites, read(state_dir), rules, time.time() if now is None else now)
