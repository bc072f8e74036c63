"""The report of a DR run (failover, DR test, failback): per county and per part, the restore point
used, RTO and RPO, and the run's totals. Pure: built from the counties' runs and the failure time.

RTO: from the site failure (`failed_at`, detection included) to the county serving through its
address. RPO: the writes a county may have lost, in seconds: from its restore point's copy to the
failure (0 for a failback, which drains and copies the final state).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dr.bringup import CountyRun
from inventory.jobs import StepResult

LAST_RUN_FILE = "last-{kind}.json"


class RunKind(StrEnum):
    FAILOVER = "failover"
    DR_TEST = "dr_test"
    FAILBACK = "failback"


class CountyReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    county: str
    tier: str
    vm: str
    site: str
    snapshot: str
    point_taken_at: str
    how: str
    parts: dict[str, float]
    rto_s: float
    rpo_s: float
    expected_rto_s: float | None = None
    expected_rpo_s: float | None = None


class Report(StepResult):
    kind: RunKind
    job_id: str
    from_site: str
    to_site: str
    failed_at: str
    finished_at: str
    counties: tuple[CountyReport, ...]
    fence: dict[str, object] = Field(default_factory=dict)
    rto_s: float | None  # the last county serving
    rto_first_tier_s: float | None
    rpo_worst_s: float | None

    def summary(self) -> str:
        if not self.counties:
            return f"{self.kind.value}: no county to recover"
        return (f"{self.kind.value}: {len(self.counties)} county(ies) serving at {self.to_site}; RTO "
                f"{self.rto_s:.1f} s (first tier {self.rto_first_tier_s:.1f} s), worst RPO "
                f"{self.rpo_worst_s:.1f} s")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def build(kind: RunKind, job_id: str, from_site: str, to_site: str, failed_at: float,
          runs: Sequence[CountyRun], tiers: Mapping[str, str], tier_order: Sequence[str], *,
          expected: Mapping[str, tuple[float, float]] | None = None,
          fence: Mapping[str, object] | None = None, zero_rpo: bool = False) -> Report:
    """`tiers`: county -> tier name; `tier_order`: tier names in the order they ran; `expected`:
    tier -> (rto_s, rpo_s) the plan expects; `zero_rpo`: a failback (nothing written is lost)."""
    counties = []
    for run in sorted(runs, key=lambda run: run.serving_at):
        tier = tiers.get(run.county, "")
        rto, rpo = expected.get(tier, (None, None)) if expected else (None, None)
        counties.append(CountyReport(
            county=run.county, tier=tier, vm=run.vm, site=run.site, snapshot=run.point.snapshot_id,
            point_taken_at=_iso(run.point.taken_at), how=run.how, parts=run.parts,
            rto_s=round(run.serving_at - failed_at, 3),
            rpo_s=0.0 if zero_rpo else round(max(failed_at - run.point.taken_at, 0.0), 3),
            expected_rto_s=rto, expected_rpo_s=rpo))
    first_tier = next((tier for tier in tier_order if any(c.tier == tier for c in counties)), None)
    in_first = [c.rto_s for c in counties if c.tier == first_tier]
    return Report(
        kind=kind, job_id=job_id, from_site=from_site, to_site=to_site, failed_at=_iso(failed_at),
        finished_at=_iso(max((run.serving_at for run in runs), default=failed_at)),
        counties=tuple(counties), fence=dict(fence or {}),
        rto_s=max((c.rto_s for c in counties), default=None),
        rto_first_tier_s=max(in_first, default=None),
        rpo_worst_s=max((c.rpo_s for c in counties), default=None),
    )


def save_last(state_dir: Path, report: Report) -> Path:
    """The last run of each kind, for the metrics (dr.metrics) and the console."""
    path = state_dir / "dr" / LAST_RUN_FILE.format(kind=report.kind.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(report.model_dump(mode="json"), ensure_ascii=False, indent=1))
    partial.replace(path)
    return path


def load_last(state_dir: Path, kind: RunKind) -> Report | None:
    path = state_dir / "dr" / LAST_RUN_FILE.format(kind=kind.value)
    return Report.model_validate_json(path.read_text()) if path.exists() else None
