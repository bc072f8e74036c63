"""The site watch's rules, table-driven: a site is DOWN only when a quorum of the vantage points that
may judge it have seen it failed (daemon silent AND no county answering) continuously for hold_s."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dr.health import Observation, Opinion, SiteVerdict, Vantage, WatchRules, opinion, site_status

RULES = WatchRules()  # 1 s checks, hold 3 s, stale after 3.5 s; service, witness, primary, secondary
T0 = 1_800_000_000.0
COUNTIES = 13

# One character per one-second tick from T0:
#   U alive (daemon answers, counties answer)     D daemon silent, counties answer (a paused libvirtd)
#   C daemon answers, no county answers           F failed: daemon silent and no county answers
#   S a slow tick: both checks timed out (as F)   . no observation (the vantage point itself stalled)
_KIND = {
    "U": (True, COUNTIES), "D": (False, COUNTIES), "C": (True, 0), "F": (False, 0), "S": (False, 0),
}


def series(vantage: str, ticks: str, site: str = "primary", counties: int = COUNTIES) -> list[Observation]:
    observations = []
    for second, tick in enumerate(ticks):
        if tick == ".":
            continue
        daemon_ok, answered = _KIND[tick]
        observations.append(Observation(
            vantage=vantage, site=site, at=T0 + second, took_s=0.8 if tick == "S" else 0.01,
            daemon_ok=daemon_ok, counties_checked=counties, counties_ok=min(answered, counties),
        ))
    return observations


def now_after(*ticks: str) -> float:
    """Just after the last tick's answer."""
    return T0 + max(len(t) for t in ticks) - 1 + 0.2


PAUSED = "UU" + "D" * 10
CASES = [
    # (name, service's ticks, witness's ticks, secondary's ticks, verdict)
    ("all alive", "UUUUUU", "UUUUUU", "UUUUUU", SiteVerdict.UP),
    ("libvirtd paused 10 s, its guests serve", PAUSED, PAUSED, PAUSED, SiteVerdict.UP),
    ("every county down, the daemon answers", "UUCCCCCC", "UUCCCCCC", "UUCCCCCC", SiteVerdict.UP),
    ("one slow check, then fine", "UUSUUU", "UUUUUU", "UUUUUU", SiteVerdict.UP),
    ("one slow check just now", "UUUUUS", "UUUUUU", "UUUUUU", SiteVerdict.SUSPECT),
    ("two slow checks everywhere", "UUUUSS", "UUUUSS", "UUUUSS", SiteVerdict.SUSPECT),
    ("failed 2 s everywhere: not yet", "UUUFF", "UUUFF", "UUUFF", SiteVerdict.SUSPECT),
    ("failed 3 s everywhere", "UUUFFF", "UUUFFF", "UUUFFF", SiteVerdict.DOWN),
    ("failed 3 s from two of three", "UUUFFF", "UUUFFF", "UUUUUU", SiteVerdict.DOWN),
    ("failed 3 s from one of three", "UUUFFF", "UUUUUU", "UUUUUU", SiteVerdict.SUSPECT),
    ("failed from one, the others silent", "UUUFFFFFF", "", "", SiteVerdict.SUSPECT),
    ("failed for a long time from one, one alive", "F" * 12, "U" * 12, "", SiteVerdict.SUSPECT),
    ("the witness stalled 3 s then saw 2 s of failure",
     "UUUFFFFFF", "UU...FFF.", "UUUUUUUUU", SiteVerdict.SUSPECT),
    ("the witness stalled then saw 3 s of failure",
     "UUUFFFFFFF", "UU...FFFF.", "UUUUUUUUUU", SiteVerdict.DOWN),
    ("no observation at all", "", "", "", SiteVerdict.UNKNOWN),
    ("a failure, then alive again", "UFFFFFU", "UFFFFFU", "UFFFFFU", SiteVerdict.UP),
    ("daemon pause overlapping a county outage: still not both at once", "UDDDCCCDDD", "UDDDCCCDDD",
     "UDDDCCCDDD", SiteVerdict.UP),
]


@pytest.mark.parametrize(
    ("service", "witness", "secondary", "verdict"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_verdict(service: str, witness: str, secondary: str, verdict: SiteVerdict) -> None:
    observations = series("service", service) + series("witness", witness) + series("secondary", secondary)
    now = now_after(service, witness, secondary) if observations else T0
    report = site_status("primary", observations, RULES, now)
    assert report.verdict is verdict, report.reason


def test_the_site_itself_does_not_vote() -> None:
    # The primary's own vantage point says the primary failed; with one other, that is not a quorum.
    observations = series("primary", "UUUFFFF") + series("service", "UUUFFFF") + series("witness", "UUUUUUU")
    report = site_status("primary", observations, RULES, now_after("UUUFFFF"))
    assert report.verdict is SiteVerdict.SUSPECT
    assert "primary" not in {o.vantage for o in report.opinions}
    assert report.quorum == 2


def test_a_site_with_no_county_has_only_the_daemon_signal() -> None:
    ticks = "UUUDDDD"
    observations = series("service", ticks, counties=0) + series("witness", ticks, counties=0)
    assert site_status("primary", observations, RULES, now_after(ticks)).verdict is SiteVerdict.DOWN


def test_each_site_is_judged_on_its_own_observations() -> None:
    observations = (series("service", "UUUFFFF") + series("witness", "UUUFFFF")
                    + series("service", "UUUUUUU", site="secondary")
                    + series("witness", "UUUUUUU", site="secondary"))
    now = now_after("UUUFFFF")
    assert site_status("primary", observations, RULES, now).verdict is SiteVerdict.DOWN
    assert site_status("secondary", observations, RULES, now).verdict is SiteVerdict.UP


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        ("UUU", Opinion.UP),
        ("UUF", Opinion.FAILING),
        ("UFFF", Opinion.FAILED),  # last alive at 0, failed at 1, 2, 3: 3 s without life
        ("FFF", Opinion.FAILING),  # no life seen, first failure at 0: only 2 s of evidence
        ("FFFF", Opinion.FAILED),
        ("U...FF", Opinion.FAILING),  # a gap longer than stale_after_s: counted from the first F
        ("U..FF", Opinion.FAILED),  # a shorter gap is bridged: no life seen for 4 s
    ],
)
def test_one_vantage_points_opinion(ticks: str, expected: Opinion) -> None:
    found = opinion(series("witness", ticks), RULES, now_after(ticks))
    assert found is not None
    assert found.opinion is expected


def test_an_old_opinion_does_not_count() -> None:
    ticks = "UUUFFFFF"
    late = now_after(ticks) + RULES.stale_after_s + 0.1
    found = opinion(series("witness", ticks), RULES, late)
    assert found is not None and found.opinion is Opinion.NO_OPINION
    observations = series("service", ticks) + series("witness", ticks)
    assert site_status("primary", observations, RULES, late).verdict is SiteVerdict.UNKNOWN


def test_detection_time_is_within_6_s_of_the_failure() -> None:
    # The site dies at T0 + 2.5: the checks at 3, 4, 5 and 6 s fail (each one answered in 0.01 s).
    # The service checks on the second, the witness half a second later: their opinions hold FAILED
    # at 5.01 (3 s after the last life at 2) and 5.51; the quorum of 2 is reached at 5.51.
    failure = T0 + 2.5
    service = series("service", "UUUFFFF")
    witness = [o.model_copy(update={"at": o.at + 0.5}) for o in series("witness", "UUUFFFF")]
    report = site_status("primary", service + witness, RULES, T0 + 6.6)
    assert report.verdict is SiteVerdict.DOWN
    assert report.declared_at == pytest.approx(T0 + 5.51)
    assert report.declared_at is not None and report.declared_at - failure <= 6.0


def test_the_quorum_counts_configured_vantage_points_not_reporting_ones() -> None:
    two = WatchRules(vantages=(Vantage(name="service"), Vantage(name="witness")))
    assert two.quorum("primary") == 2  # both must agree
    assert site_status("primary", series("service", "UFFFF"), two, now_after("UFFFF")).verdict \
        is SiteVerdict.SUSPECT
    one = WatchRules(vantages=(Vantage(name="service"),))
    assert site_status("primary", series("service", "UFFFF"), one, now_after("UFFFF")).verdict \
        is SiteVerdict.DOWN


def test_an_observation_cannot_count_more_answers_than_checks() -> None:
    with pytest.raises(ValidationError, match="3 counties answered of 2 checked"):
        Observation(vantage="w", site="primary", at=T0, took_s=0.0, daemon_ok=False,
                    counties_checked=2, counties_ok=3)
