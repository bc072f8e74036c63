"""Prometheus metrics of the last DR runs: RTO and RPO per county and run kind, read from the last
reports (dr.report.save_last) at scrape time, so every process serving /metrics shows the same.

countycloud_dr_rto_seconds{kind,county,tier}, countycloud_dr_rpo_seconds{kind,county,tier} and
countycloud_dr_last_run_timestamp_seconds{kind}. The site watch's state (dr.watchstate, written each
second by the service): countycloud_dr_site_verdict{site,verdict} (1 for the current verdict),
countycloud_dr_site_checked_timestamp_seconds{site}, countycloud_dr_outage_declared_timestamp_seconds{site}
(open outages only) and countycloud_dr_automatic_failover (the setting). The service adds
`DrCollector(state_dir)` to the registry it serves at /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dr import watchstate
from dr.health import SiteVerdict
from dr.report import RunKind, load_last


class DrCollector(Collector):
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rto = GaugeMetricFamily("countycloud_dr_rto_seconds", "Last DR run: site failure to serving through "
                                "the county's address", labels=["kind", "county", "tier"])
        rpo = GaugeMetricFamily("countycloud_dr_rpo_seconds", "Last DR run: seconds of writes the county may "
                                "have lost (restore point to failure)", labels=["kind", "county", "tier"])
        when = GaugeMetricFamily("countycloud_dr_last_run_timestamp_seconds", "When the last DR run of each "
                                 "kind finished", labels=["kind"])
        for kind in RunKind:
            found = load_last(self.state_dir, kind)
            if found is None:
                continue
            when.add_metric([kind.value], datetime.fromisoformat(found.finished_at).timestamp())
            for county in found.counties:
                rto.add_metric([kind.value, county.county, county.tier], county.rto_s)
                rpo.add_metric([kind.value, county.county, county.tier], county.rpo_s)
        yield rto
        yield rpo
        yield when
        yield from self._watch()

    def _watch(self) -> Iterator[GaugeMetricFamily]:
        if not watchstate.state_path(self.state_dir).exists():
            return  # no site watch runs here
        state = watchstate.load(self.state_dir)
        verdict = GaugeMetricFamily("countycloud_dr_site_verdict", "The site watch's verdict on each site "
                                    "(1 for the current one)", labels=["site", "verdict"])
        checked = GaugeMetricFamily("countycloud_dr_site_checked_timestamp_seconds", "When the site watch "
                                    "last judged the site", labels=["site"])
        declared = GaugeMetricFamily("countycloud_dr_outage_declared_timestamp_seconds", "When the site "
                                     "was declared down (open outages only)", labels=["site"])
        for site, view in sorted(state.sites.items()):
            for each in SiteVerdict:
                verdict.add_metric([site, each.value], 1.0 if view.verdict is each else 0.0)
            checked.add_metric([site], view.checked_at)
        for site, outage in sorted(state.outages.items()):
            declared.add_metric([site], outage.declared_at)
        yield verdict
        yield checked
        yield declared
        yield GaugeMetricFamily("countycloud_dr_automatic_failover", "1 when a site declared down is failed "
                                "over without an operator (after the grace period)",
                                value=1.0 if state.automatic else 0.0)


_SERVED = DrCollector(Path("/nonexistent"))
REGISTRY = CollectorRegistry()
REGISTRY.register(_SERVED)


def registry(state_dir: Path) -> CollectorRegistry:
    """The service's one DR registry (controlplane.metrics.add_registry), reading `state_dir`: one
    registry per process, so building the app again never repeats its metrics."""
    _SERVED.state_dir = state_dir
    return REGISTRY


def exposition(state_dir: Path) -> bytes:
    """The metrics alone, in Prometheus' text format (for a test or a one-off scrape)."""
    own = CollectorRegistry()
    own.register(DrCollector(state_dir))
    return generate_latest(own)
