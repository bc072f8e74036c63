"""The outage decision (dr.outage) over real site-watch verdicts (dr.health) from fake observations and
a fake clock: when an outage opens and closes, and when (only with the automatic setting, after the
grace period, once per outage) the failover is submitted."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dr import outage
from dr.health import Observation, SiteVerdict, WatchRules, site_status
from dr.outage import Action, Outage, Policy, SiteFacts, Status, WatchEvent

RULES = WatchRules()  # 1 s checks, hold 3 s; the primary is judged by service, witness, secondary
T0 = 1_800_000_000.0
VANTAGES = ("service", "witness", "secondary")
#   U alive   D daemon silent, counties answer (a paused libvirtd)   F failed   S slow tick (as F)   . none
_KIND = {"U": (True, 13), "D": (False, 13), "F": (False, 0), "S": (False, 0)}


def observations(vantage: str, ticks: str) -> list[Observation]:
    found = []
    for second, tick in enumerate(ticks):
        if tick == ".":
            continue
        daemon_ok, answered = _KIND[tick]
        found.append(Observation(vantage=vantage, site="primary", at=T0 + second,
                                 took_s=0.8 if tick == "S" else 0.01, daemon_ok=daemon_ok,
                                 counties_checked=13, counties_ok=answered))
    return found


@dataclass
class Run:
    """The service's ticks, one a second, each just after that second's observations."""

    events: list[tuple[int, WatchEvent]] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    verdicts: list[SiteVerdict] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)


def run(ticks: str | dict[str, str], policy: Policy, *, counties: int = 13,
        to_site_verdict: SiteVerdict = SiteVerdict.UP, existing_job: str | None = None,
        submit_fails_until: int = -1) -> Run:
    """Every vantage point sees `ticks` (or each its own); the failover's submission fails at every
    tick up to `submit_fails_until`."""
    per_vantage = {vantage: ticks for vantage in VANTAGES} if isinstance(ticks, str) else ticks
    seen = [o for vantage, text in per_vantage.items() for o in observations(vantage, text)]
    done = Run()
    current: Outage | None = None
    for second in range(max(len(text) for text in per_vantage.values())):
        now = T0 + second + 0.5
        report = site_status("primary", [o for o in seen if o.at <= now], RULES, now)
        out = current is not None or report.verdict is SiteVerdict.DOWN
        facts = SiteFacts(counties=counties, to_site="secondary", to_site_verdict=to_site_verdict,
                          existing_job=existing_job if out else None)
        decision = outage.decide(report, current, facts, policy, now)
        done.events += [(second, event) for event in decision.events]
        done.statuses.append(decision.status)
        done.verdicts.append(report.verdict)
        current = decision.outage
        if current is not None and Action.SUBMIT_FAILOVER in decision.actions:
            if second <= submit_fails_until:
                current = outage.not_submitted(current, "database away", now)
            else:
                done.submitted.append(second)
                current = outage.submitted(current, f"failover-primary-{second}")
        if current is not None and current not in done.outages:
            done.outages.append(current)
    return done


AUTOMATIC = Policy(automatic=True, grace_s=10)
KILLED = "UUUU" + "F" * 60  # the primary killed at second 4 and never back


def test_manual_by_default_records_the_outage_and_never_submits() -> None:
    assert Policy().automatic is False
    done = run(KILLED, Policy())
    # last seen alive at 3, failed from 4 on: held 3 s at the check of 6
    assert done.events == [(6, WatchEvent.SITE_DOWN)]
    assert done.submitted == []
    assert done.statuses[-1] is Status.WAITING_FOR_OPERATOR
    first = done.outages[0]
    assert first.failed_since == T0 + 3 and first.declared_at == T0 + 6.01


def test_automatic_submits_once_after_the_grace_period() -> None:
    done = run(KILLED, AUTOMATIC)
    # declared at 6.01, grace 10 s: the tick at 16.5 is the first past 16.01
    assert done.submitted == [16]
    assert done.statuses[8] is Status.GRACE and done.statuses[17] is Status.FAILOVER_JOB
    assert done.events == [(6, WatchEvent.SITE_DOWN)]


def test_no_grace_submits_at_the_declaring_tick() -> None:
    assert run(KILLED, Policy(automatic=True, grace_s=0)).submitted == [6]


def test_a_flapping_outage_gets_one_failover() -> None:
    """DOWN, then SUSPECT (one vantage point sees life again), then DOWN: one outage, one job."""
    flapping = {"service": "UUUU" + "F" * 40, "witness": "UUUU" + "F" * 8 + "UU" + "F" * 30,
                "secondary": "UUUU" + "F" * 8 + "UU" + "F" * 30}
    done = run(flapping, Policy(automatic=True, grace_s=5))
    assert done.verdicts[6] is SiteVerdict.DOWN and done.verdicts[12] is SiteVerdict.SUSPECT
    assert done.verdicts[17] is SiteVerdict.DOWN
    assert [event for _, event in done.events] == [WatchEvent.SITE_DOWN]
    assert done.submitted == [11]


def test_a_paused_daemon_or_a_slow_check_is_no_outage() -> None:
    for ticks in ("UU" + "D" * 40, "UUUSUUUUSUUU", "UUUSSUUUUSSUUUUU", "UU" + "D" * 10 + "UUUU"):
        done = run(ticks, Policy(automatic=True, grace_s=0))
        assert done.events == [] and done.submitted == [], ticks
        assert Status.UP in done.statuses


def test_one_vantage_point_alone_declares_nothing() -> None:
    done = run({"service": KILLED, "witness": "U" * len(KILLED), "secondary": ""}, AUTOMATIC)
    assert done.events == [] and done.submitted == []


def test_the_outage_ends_when_the_site_is_up_and_a_new_one_gets_its_own_failover() -> None:
    twice = "UUUU" + "F" * 20 + "U" * 5 + "F" * 20
    done = run(twice, AUTOMATIC)
    assert [event for _, event in done.events] == [WatchEvent.SITE_DOWN, WatchEvent.SITE_UP,
                                                    WatchEvent.SITE_DOWN]
    assert done.submitted == [16, 41]
    assert done.statuses[24] is Status.RECOVERED


def test_a_job_already_there_is_adopted_not_doubled() -> None:
    done = run(KILLED, AUTOMATIC, existing_job="failover-primary-by-operator")
    assert done.submitted == [] and done.outages[-1].failover_job == "failover-primary-by-operator"
    assert done.statuses[-1] is Status.FAILOVER_JOB


def test_nothing_to_fail_over_or_nowhere_to_go() -> None:
    assert run(KILLED, AUTOMATIC, counties=0).submitted == []
    assert run(KILLED, AUTOMATIC, counties=0).statuses[-1] is Status.NOTHING_THERE
    waiting = run(KILLED, AUTOMATIC, to_site_verdict=SiteVerdict.SUSPECT)
    assert waiting.submitted == [] and waiting.statuses[-1] is Status.TARGET_NOT_UP


def test_a_failed_submission_is_retried_after_the_retry_period() -> None:
    done = run(KILLED, Policy(automatic=True, grace_s=10, retry_s=30), submit_fails_until=16)
    assert done.submitted == [46]  # failed at 16, tried again 30 s later
    assert done.statuses[20] is Status.RETRYING


def test_failure_time_is_the_latest_moment_a_deciding_vantage_point_saw_it_alive() -> None:
    seen = [*observations("service", "UUUU" + "F" * 6), *observations("witness", "UUUUUU" + "F" * 4),
            *observations("secondary", "U" * 10)]
    report = site_status("primary", seen, RULES, T0 + 9.5)
    assert report.verdict is SiteVerdict.DOWN
    assert outage.failure_time(report) == T0 + 5


def test_every_status_has_its_text() -> None:
    assert set(outage.STATUS_TEXT) == set(Status)
    decision = outage.decide(site_status("primary", observations("service", "U"), RULES, T0 + 0.5), None,
                             SiteFacts(0, "secondary", SiteVerdict.UP), Policy(), T0 + 0.5)
    assert decision.status is Status.UP and decision.status_text == "up"


def _hurry_at(ticks: str | dict[str, str], now_s: float, policy: Policy = Policy(),
              outages: dict[str, Outage] | None = None) -> float | None:
    per_vantage = {vantage: ticks for vantage in VANTAGES} if isinstance(ticks, str) else ticks
    seen = [o for vantage, text in per_vantage.items() for o in observations(vantage, text)]
    now = T0 + now_s
    report = site_status("primary", [o for o in seen if o.at <= now], RULES, now)
    return outage.hurry({"primary": report}, outages or {}, RULES, policy, now)


def test_the_watch_hurries_only_while_a_failure_may_be_declared_any_moment() -> None:
    assert _hurry_at(KILLED, 3.5) is None  # up: the grid's tick is soon enough
    assert _hurry_at(KILLED, 4.5) == outage.HURRY_S  # SUSPECT, last seen alive at 3
    assert _hurry_at(KILLED, 5.5) == outage.HURRY_S
    assert _hurry_at(KILLED, 6.5) is None  # DOWN (held 3 s at 6): declared; nothing more to wait for
    # One vantage point alone sees the failure: a hurry for as long as the others might follow,
    # then none, though the site stays SUSPECT (no hurry for an hour of a cut-off vantage point).
    alone = {"service": KILLED, "witness": "U" * 64, "secondary": "U" * 64}
    assert _hurry_at(alone, 5.5) == outage.HURRY_S
    assert _hurry_at(alone, 3 + RULES.hold_s + RULES.stale_after_s - 0.1) == outage.HURRY_S
    assert _hurry_at(alone, 3 + RULES.hold_s + RULES.stale_after_s + 0.5) is None
    # A paused daemon (counties answering) is no suspicion at all.
    assert _hurry_at("UUUU" + "D" * 20, 10.5) is None


def test_the_watch_looks_again_when_a_grace_period_ends() -> None:
    found = Outage(site="primary", declared_at=T0 + 7.01, failed_since=T0 + 3, noticed_at=T0 + 7.5)
    # (the verdict DOWN at 8.5: only the grace gives a hurry)
    policy = Policy(automatic=True, grace_s=10)
    assert _hurry_at(KILLED, 8.5, policy, {"primary": found}) == pytest.approx(8.51)  # due at 17.01, not 17.5
    assert _hurry_at(KILLED, 17.5, policy, {"primary": found}) is None  # due: this tick submits
    assert _hurry_at(KILLED, 8.5, Policy(grace_s=10), {"primary": found}) is None  # manual
    assert _hurry_at(KILLED, 8.5, policy, {"primary": outage.submitted(found, "failover-primary-x")}) is None
