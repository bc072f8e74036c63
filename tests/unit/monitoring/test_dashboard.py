"""The Grafana dashboard only charts metrics the service exposes (names drift otherwise)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from monitoring.metrics import MonitoringMetrics
from monitoring.rollups import RollupStore

DASHBOARD = Path(__file__).parents[3] / "deploy" / "grafana" / "countycloud.json"


def test_every_dashboard_query_names_an_exposed_metric() -> None:
    board = json.loads(DASHBOARD.read_text())
    exposed = set()
    for metric in MonitoringMetrics(RollupStore()).registry.collect():
        exposed |= {metric.name, f"{metric.name}_total"}
    exposed |= {"countycloud_transaction_seconds", "countycloud_transaction_count",
                "countycloud_transaction_failures"}  # from the rollup collector, present once data is
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    assert len(queries) >= 10
    for query in queries:
        names = set(re.findall(r"countycloud_[a-z_]+", query))
        assert names and names <= exposed, (query, names - exposed)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
