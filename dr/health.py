"""The site watch: when is a site down? Pure rules over observations; nothing here checks anything
(dr.probe does) or reads a file (dr.observations does).

Every site is checked every second from several vantage points: the service, a separate witness
process and the other site. Each check of a site records two independent signals:

- **daemon**: the site's libvirtd answered a real RPC (list the domains) within the check timeout;
- **counties**: how many of the counties running there answered /healthz on their own addresses
  (the VMs' forwarded app ports, served by the site's QEMU processes) within the timeout.

The rule, and why:

1. One observation says the site *failed* only when **both** signals fail: the daemon did not answer
   **and** not one of its counties answered. A county answering means the site's QEMU and network
   are alive and serving writes: failing over then would make two writable copies of that county.
   So a libvirtd paused (SIGSTOP, a hung daemon, a long GC) for any time, 10 s or 10 min, is never
   a site failure while its guests serve. A site with no county running has only the daemon signal.
2. One vantage point's *opinion* is FAILED once its observations have shown the site failed
   continuously for `hold_s` (3 s): measured from its last observation that showed life, when the
   failed ones follow it without a gap, else from the first failed one. One slow check, or two, is
   not 3 s. A gap in a vantage point's own observations (it was paused or restarted) restarts its
   count: a vantage point cannot vouch for a time it did not watch.
3. An opinion counts only while fresh (its newest observation at most `stale_after_s` old), so a
   dead witness stops voting rather than voting with old news.
4. The site is **DOWN** when a quorum of the vantage points eligible to judge it hold FAILED
   opinions: a strict majority of the *configured* ones not located at that site (a site does not
   judge itself). With the service, the witness and the secondary watching the primary: 2 of 3.
   The quorum is over the configured vantage points, not the ones that happen to report, so one
   opinion alone never declares a site down.

Detection: a site killed at t0 is last seen alive at some check started at ≤ t0; the checks started
1, 2 and 3 s later fail (a killed daemon and QEMU refuse connections at once; an unreachable one
times out within `check_timeout_s`), so each vantage point holds FAILED by t0 + 3 s + the timeout,
and a reader polling every `interval_s` sees the quorum within about t0 + 5 s (≤ 6 s).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Opinion(StrEnum):
    """What one vantage point currently thinks of one site."""

    UP = "up"  # its newest observation showed life
    FAILING = "failing"  # failed, but not yet for hold_s
    FAILED = "failed"  # failed continuously for hold_s
    NO_OPINION = "no_opinion"  # no fresh observation


class SiteVerdict(StrEnum):
    UP = "up"
    SUSPECT = "suspect"  # some vantage point sees a failure; not (yet) a quorum for hold_s
    DOWN = "down"
    UNKNOWN = "unknown"  # no fresh observation from any eligible vantage point


class Vantage(BaseModel):
    """A place the sites are checked from. `located_at` names the site it runs in, if any: it does
    not judge that site (a dead site cannot report itself dead)."""

    model_config = ConfigDict(frozen=True)

    name: str
    located_at: str | None = None


class WatchRules(BaseModel):
    model_config = ConfigDict(frozen=True)

    interval_s: float = Field(default=1.0, gt=0)
    check_timeout_s: float = Field(default=0.8, gt=0)
    hold_s: float = Field(default=3.0, gt=0)
    stale_after_s: float = Field(default=3.5, gt=0)
    vantages: tuple[Vantage, ...] = (
        Vantage(name="service"),
        Vantage(name="witness"),
        Vantage(name="primary", located_at="primary"),
        Vantage(name="secondary", located_at="secondary"),
    )

    def eligible(self, site: str) -> list[Vantage]:
        return [vantage for vantage in self.vantages if vantage.located_at != site]

    def quorum(self, site: str) -> int:
        return len(self.eligible(site)) // 2 + 1


class Observation(BaseModel):
    """One check of one site from one vantage point. `at` is when the check began (Unix time: the
    vantage points are separate processes, on separate machines in production)."""

    model_config = ConfigDict(frozen=True)

    vantage: str
    site: str
    at: float
    took_s: float = Field(ge=0)
    daemon_ok: bool
    counties_checked: int = Field(ge=0)
    counties_ok: int = Field(ge=0)

    @model_validator(mode="after")
    def _counts(self) -> Observation:
        if self.counties_ok > self.counties_checked:
            raise ValueError(f"{self.counties_ok} counties answered of {self.counties_checked} checked")
        return self

    @property
    def site_failed(self) -> bool:
        """Rule 1: failed only when neither the daemon nor any county shows life."""
        if self.daemon_ok:
            return False
        return self.counties_checked == 0 or self.counties_ok == 0


@dataclass(frozen=True)
class VantageOpinion:
    vantage: str
    opinion: Opinion
    failing_since: float | None  # when this vantage point last saw the site alive (see rule 2)
    newest_at: float | None
    # FAILED only: when the first observation that held the failure for hold_s had its answer.
    failed_at: float | None = None


@dataclass(frozen=True)
class SiteStatusReport:
    site: str
    verdict: SiteVerdict
    opinions: tuple[VantageOpinion, ...]
    quorum: int
    # DOWN only: the moment the quorum's opinions all held FAILED (the detection time).
    declared_at: float | None

    @property
    def reason(self) -> str:
        parts = [f"{o.vantage}: {o.opinion}" for o in self.opinions]
        return f"site {self.site} {self.verdict} (quorum {self.quorum}; {', '.join(parts)})"


def opinion(observations: Sequence[Observation], rules: WatchRules, now: float) -> VantageOpinion | None:
    """Rules 2 and 3 for one vantage point's observations of one site (any order)."""
    if not observations:
        return None
    ordered = sorted(observations, key=lambda o: o.at)
    vantage = ordered[-1].vantage
    newest = ordered[-1]
    if now - newest.at > rules.stale_after_s:
        return VantageOpinion(vantage, Opinion.NO_OPINION, None, newest.at)
    if not newest.site_failed:
        return VantageOpinion(vantage, Opinion.UP, None, newest.at)
    # Walk back through the unbroken run of failed observations.
    start = len(ordered) - 1
    while True:
        previous = ordered[start - 1] if start > 0 else None
        if previous is None or ordered[start].at - previous.at > rules.stale_after_s:
            since = ordered[start].at  # no earlier evidence either way: count from the first failure
            break
        if not previous.site_failed:
            since = previous.at  # last seen alive
            break
        start -= 1
    held = next((o for o in ordered[start:] if o.at - since >= rules.hold_s), None)
    if held is None:
        return VantageOpinion(vantage, Opinion.FAILING, since, newest.at)
    return VantageOpinion(vantage, Opinion.FAILED, since, newest.at, held.at + held.took_s)


def site_status(
    site: str, observations: Iterable[Observation], rules: WatchRules, now: float
) -> SiteStatusReport:
    """Rule 4: the verdict on `site` from every eligible vantage point's observations of it."""
    by_vantage: dict[str, list[Observation]] = defaultdict(list)
    for observation in observations:
        if observation.site == site:
            by_vantage[observation.vantage].append(observation)
    opinions = []
    for vantage in rules.eligible(site):
        found = opinion(by_vantage.get(vantage.name, []), rules, now)
        opinions.append(found or VantageOpinion(vantage.name, Opinion.NO_OPINION, None, None))
    quorum = rules.quorum(site)
    failed = sorted(o.failed_at for o in opinions if o.opinion is Opinion.FAILED and o.failed_at is not None)
    if len(failed) >= quorum:
        return SiteStatusReport(site, SiteVerdict.DOWN, tuple(opinions), quorum, failed[quorum - 1])
    if any(o.opinion in (Opinion.FAILED, Opinion.FAILING) for o in opinions):
        verdict = SiteVerdict.SUSPECT
    elif any(o.opinion is Opinion.UP for o in opinions):
        verdict = SiteVerdict.UP
    else:
        verdict = SiteVerdict.UNKNOWN
    return SiteStatusReport(site, verdict, tuple(opinions), quorum, None)


def watch(
    sites: Iterable[str], observations: Iterable[Observation], rules: WatchRules, now: float
) -> dict[str, SiteStatusReport]:
    """The verdict on every site at `now`."""
    seen = list(observations)
    return {site: site_status(site, seen, rules, now) for site in sites}
