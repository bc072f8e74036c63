"""What the site watch remembers and shows: each site's latest verdict and each open outage (with
its one failover job), in `STATE_DIR/dr/watch.json`, replaced atomically each tick.

The service reads it back at start, so a restarted service continues the outage it knew (and never
submits a second failover for it); the console page and /metrics read it, so every process serving
them shows what the watching one sees.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from dr.health import SiteVerdict
from dr.outage import STATUS_TEXT, Outage, Status
from dr.targets import dr_dir, write_atomically

STATE_FILE = "watch.json"


class SiteView(BaseModel):
    model_config = ConfigDict(frozen=True)

    site: str
    verdict: SiteVerdict
    reason: str  # the verdict with each vantage point's opinion (dr.health.SiteStatusReport.reason)
    status: Status  # what the watch does about it (dr.outage.Decision)
    status_args: dict[str, str] = {}
    checked_at: float


    @property
    def status_text(self) -> str:
        return STATUS_TEXT[self.status].format(**self.status_args)


class WatchState(BaseModel):
    automatic: bool = False
    grace_s: float = 0.0
    sites: dict[str, SiteView] = {}
    outages: dict[str, Outage] = {}


def state_path(state_dir: Path) -> Path:
    return dr_dir(state_dir) / STATE_FILE


def load(state_dir: Path) -> WatchState:
    """The last state written; an empty one when there is none (or it cannot be read: the watch then
    starts afresh rather than not at all)."""
    try:
        return WatchState.model_validate_json(state_path(state_dir).read_bytes())
    except (OSError, ValidationError):
        return WatchState()


def save(state_dir: Path, state: WatchState) -> None:
    write_atomically(state_path(state_dir), state.model_dump_json(indent=1))
