from __future__ import annotations

import json
import random

import pytest

from monitoring.rollups import (
    HOUR_S,
    RELATIVE_ACCURACY,
    Rollup,
    RollupKey,
    RollupStore,
    hour_of,
    new_sketch,
    sketch_from_dict,
    sketch_to_dict,
)
from monitoring.rum import Sample
from monitoring.timings import Component, ServerTiming, Source, split
from monitoring.transactions import Transaction

T0 = 1_796_392_800.0  # the start of an hour


def exact(values: list[float], q: float) -> float:
    """The q-quantile as DDSketch defines it: the value of rank floor(q * (n - 1))."""
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def sample(total: float, server: float, at: float = T0, county: str = "taichung",
           transaction: Transaction = Transaction.CERTIFY, status: int = 200) -> Sample:
    return Sample(county, transaction, at, status, split(total, ServerTiming(server, server / 3)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_are_within_the_sketchs_relative_accuracy(seed: int) -> None:
    rng = random.Random(seed)
    # A long-tailed mix like real answer times: most fast, some very slow.
    values = [rng.lognormvariate(3.5, 0.8) for _ in range(20_000)]
    values += [rng.uniform(2_000, 9_000) for _ in range(200)]
    sketch = new_sketch()
    for v in values:
        sketch.add(v)
    for q in (0.5, 0.95, 0.99):
        truth = exact(values, q)
        found = sketch.get_quantile_value(q)
        assert found is not None and abs(found - truth) <= RELATIVE_ACCURACY * truth * 1.0001


def test_merged_hours_give_the_quantiles_of_all_samples_not_an_average_of_quantiles() -> None:
    rng = random.Random(7)
    store = RollupStore()
    quiet = [rng.uniform(10, 20) for _ in range(900)]
    busy = [rng.uniform(400, 500) for _ in range(100)]
    store.extend(sample(v + 5, v) for v in quiet)
    store.extend(sample(v + 5, v, at=T0 + HOUR_S) for v in busy)
    day = store.combined(county="taichung")
    assert day.count == 1000
    p95 = day.quantile(Component.SERVER, 0.95)
    truth = exact(quiet + busy, 0.95)
    assert p95 is not None and abs(p95 - truth) <= 2 * RELATIVE_ACCURACY * truth
    hourly = [store.combined(county="taichung", since=h, until=h + HOUR_S).quantile(Component.SERVER, 0.95)
              for h in (T0, T0 + HOUR_S)]
    assert abs(sum(h or 0 for h in hourly) / 2 - truth) > 100  # what averaging would have claimed


def test_a_sketch_survives_its_dict_form_and_the_store_its_dump() -> None:
    rng = random.Random(3)
    store = RollupStore()
    store.extend(sample(rng.expovariate(0.02), rng.expovariate(0.05), status=rng.choice([200, 200, 503]),
                        transaction=rng.choice(list(Transaction)), at=T0 + rng.uniform(0, 5 * HOUR_S))
                 for _ in range(3000))
    again = RollupStore.load(json.loads(json.dumps(store.dump())))
    assert again.rollups.keys() == store.rollups.keys()
    for key, rollup in store.rollups.items():
        assert again.rollups[key].summary() == rollup.summary()
    sketch = store.combined().sketches[Component.TOTAL]
    copy = sketch_from_dict(json.loads(json.dumps(sketch_to_dict(sketch))))
    assert (copy.count, copy.sum, copy.get_quantile_value(0.99)) == (sketch.count, sketch.sum,
                                                                     sketch.get_quantile_value(0.99))


def test_failures_counted_and_sources_kept_apart() -> None:
    rollup = Rollup()
    rollup.add(sample(10, 5, status=503))
    rollup.add(sample(10, 5))
    assert (rollup.count, rollup.failures) == (2, 1)
    store = RollupStore()
    store.add(sample(10, 5))
    store.add(Sample("taichung", Transaction.CERTIFY, T0, 200, split(10, None), Source.PROBE))
    assert store.combined(source=Source.PROBE).count == 1 == store.combined(source=Source.REAL_USER).count


def test_raw_samples_kept_a_day_and_rollups_a_year() -> None:
    store = RollupStore()
    store.add(sample(10, 5, at=T0))
    store.add(sample(10, 5, at=T0 + 2 * 24 * HOUR_S))
    store.prune(now=T0 + 2 * 24 * HOUR_S + 10)
    assert [s.at for s in store.raw] == [T0 + 2 * 24 * HOUR_S]
    assert len(store.rollups) == 2
    store.prune(now=T0 + 367 * 24 * HOUR_S)
    assert [k.hour for k in store.rollups] == [int(T0) + 2 * 24 * HOUR_S]


def test_a_batch_gives_the_same_rollups_as_one_sample_at_a_time() -> None:
    # The reader adds a batch with weighted adds (one per distinct value): nothing may differ from
    # adding each sample, across keys, hours, failures and the raw samples kept.
    rng = random.Random(7)
    samples = [sample(float(rng.choice([1, 2, 2, 3, 5, 8, 250])), float(rng.choice([0.5, 1, 1.5])),
                      at=T0 + rng.uniform(0, 2 * HOUR_S), county=rng.choice(["taichung", "penghu"]),
                      status=rng.choice([200, 200, 503]))
               for _ in range(3000)]
    one_by_one: dict[RollupKey, Rollup] = {}  # Rollup.add: one sketch add per value
    for each in samples:
        key = RollupKey(each.county, each.transaction, each.source, hour_of(each.at))
        one_by_one.setdefault(key, Rollup()).add(each)
    batched = RollupStore()
    assert batched.extend(samples[:1000]) == 1000
    for each in samples[1000:1010]:
        batched.add(each)  # a batch of one
    batched.extend(samples[1010:])
    assert batched.rollups.keys() == one_by_one.keys() and len(batched.rollups) == 4
    for key, rollup in one_by_one.items():
        mine = batched.rollups[key]
        assert (mine.count, mine.failures) == (rollup.count, rollup.failures)
        for component in Component:
            theirs = sketch_to_dict(rollup.sketches[component])
            ours = sketch_to_dict(mine.sketches[component])
            assert ours["bins"] == theirs["bins"] and ours["min"] == theirs["min"]
            assert ours["sum"] == pytest.approx(theirs["sum"])
    assert list(batched.raw) == samples, "raw samples kept in their order of arrival"
