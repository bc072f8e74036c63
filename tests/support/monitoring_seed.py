"""Hourly rollups for a county, made up (no VM, no gateway): what the chart page and its bench read.

Each hour of each transaction gets a few answers whose network / queue / app / db split follows a
daily wave, and one hour (`slow_hour`) whose server time is four times the rest, so a chart shows a
slow hour and which part grew.
"""

from __future__ import annotations

import math

from sqlalchemy import Engine

from monitoring import storage
from monitoring.rollups import HOUR_S, Rollup, RollupKey, hour_of
from monitoring.rum import Sample
from monitoring.timings import ServerTiming, Source, split
from monitoring.transactions import Transaction

TRANSACTIONS = (Transaction.LOG_IN, Transaction.BUDGET_LINES, Transaction.CERTIFY, Transaction.REPORT,
                Transaction.EXPORT)


def seed_rollups(engine: Engine, county: str, *, days: int, now: float, per_hour: int = 4,
                 slow_hour: int | None = None, source: Source = Source.REAL_USER) -> int:
    """Rollups for the `days` before `now` (and the current hour); returns how many rows."""
    rollups: dict[RollupKey, Rollup] = {}
    last = hour_of(now)
    for hour in range(last - days * 24 * HOUR_S, last + HOUR_S, HOUR_S):
        wave = 1 + 0.5 * math.sin(hour / 86400 * 2 * math.pi)
        slow = 4.0 if hour == slow_hour else 1.0
        for n, transaction in enumerate(TRANSACTIONS):
            rollup = rollups[RollupKey(county, transaction, source, hour)] = Rollup()
            for i in range(per_hour):
                app, db = (20 + 5 * n + i) * wave * slow, (8 + 2 * n) * wave * slow
                network, queue = 15 * wave + i, 1.0 + (i % 2)
                timing = split(network + queue + app + db, ServerTiming(app + db, db), queue)
                rollup.add(Sample(county, transaction, hour + 60 * i, 200, timing, source))
    storage.flush(engine, rollups, [])
    return len(rollups)
