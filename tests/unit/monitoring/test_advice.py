from __future__ import annotations

from monitoring.advice import Change, Facts, Measure, evaluate, server_p95_ratios
from monitoring.rollups import HOUR_S, RollupStore
from monitoring.rum import Sample
from monitoring.timings import ServerTiming, split
from monitoring.transactions import Transaction

NOW = 1_796_400_000.0


def cpu(value: float, minutes: int, step_s: float = 30.0) -> list[tuple[float, float]]:
    n = int(minutes * 60 / step_s)
    return [(NOW - i * step_s, value) for i in range(n + 1)]


def facts(ratio: float, cpu_series: list[tuple[float, float]], vcpus: int = 1) -> Facts:
    return Facts("臺中市", "taichung-vm", vcpus, 768, {Transaction.CERTIFY: ratio},
                 {Measure.VM_CPU_PCT: cpu_series})


def test_certify_doubled_and_cpu_busy_for_ten_minutes_advises_one_more_vcpu() -> None:
    [advice] = evaluate(facts(2.3, cpu(92, 12)), NOW)
    assert advice.change is Change.ADD_VCPU and advice.amount == 1
    assert advice.message.startswith("臺中市: 簽證 server time p95 ×2.3")
    assert advice.evidence == {"server_p95_ratio:certify": 2.3, "vm_cpu_pct": 92}
    assert advice.resize(vcpus=1, memory_mib=768) == (2, 768)


def test_no_advice_when_one_condition_is_missing_or_too_short() -> None:
    assert evaluate(facts(1.7, cpu(92, 12)), NOW) == []  # not doubled
    assert evaluate(facts(2.3, cpu(70, 12)), NOW) == []  # CPU not busy
    assert evaluate(facts(2.3, cpu(92, 6)), NOW) == []  # busy, but not for ten minutes yet
    dip = cpu(92, 12)
    dip[5] = (dip[5][0], 60.0)
    assert evaluate(facts(2.3, dip), NOW) == []  # it dipped inside the window
    stale = [(at - 30 * 60, v) for at, v in cpu(92, 12)]
    assert evaluate(facts(2.3, stale), NOW) == []  # no reading in the last minutes: not evidence
    assert evaluate(facts(2.3, cpu(92, 12), vcpus=4), NOW) == []  # already at the ceiling


def test_idle_vm_with_spare_vcpus_gives_one_back() -> None:
    [advice] = evaluate(facts(1.0, cpu(3, 24 * 60, step_s=300), vcpus=2), NOW)
    assert advice.change is Change.REMOVE_VCPU and advice.resize(2, 768) == (1, 768)
    assert evaluate(facts(1.0, cpu(3, 24 * 60, step_s=300), vcpus=1), NOW) == []


def test_ratios_come_from_the_rollups() -> None:
    store = RollupStore()
    for i in range(200):  # last week: 簽證 at 40 ms of server time
        at = NOW - 3 * 24 * HOUR_S + i * 60
        store.add(Sample("臺中市", Transaction.CERTIFY, at, 201, split(60, ServerTiming(40, 10))))
    for i in range(50):  # the last hour: 90 ms
        store.add(Sample("臺中市", Transaction.CERTIFY, NOW - 600 + i, 201, split(110, ServerTiming(90, 10))))
    ratios = server_p95_ratios(store, "臺中市", NOW)
    assert set(ratios) == {Transaction.CERTIFY}
    assert abs(ratios[Transaction.CERTIFY] - 90 / 40) < 0.05
