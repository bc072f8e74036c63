"""Resource advice: rules as data (what to watch, how far, for how long, the change proposed),
evaluated on the rollups and the VM usage series. Pure: facts in, advice out.

The shipped rule that motivated this: "臺中市: server time p95 of 簽證 doubled and its VM's CPU is
above 80 % for 10 min: add one vCPU". Applying advice is the live resize job (the lead's wiring
calls it with `Advice.resize`); `before_after` keeps the figures side by side.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from monitoring.rollups import HOUR_S, RollupStore
from monitoring.timings import Component, Source
from monitoring.transactions import TITLES, Transaction

BASELINE_S = 7 * 24 * HOUR_S  # "doubled" compares the last hour with the week before it


class Measure(enum.StrEnum):
    SERVER_P95_RATIO = "server_p95_ratio"  # a transaction's server-time p95, last hour / the week before
    VM_CPU_PCT = "vm_cpu_pct"  # of the VM's own vCPUs
    VM_MEMORY_USED_PCT = "vm_memory_used_pct"  # of what the balloon leaves the guest


class Op(enum.StrEnum):
    ABOVE = ">"
    BELOW = "<"


_OPS: Mapping[Op, Callable[[float, float], bool]] = {Op.ABOVE: operator.gt, Op.BELOW: operator.lt}


class Change(enum.StrEnum):
    ADD_VCPU = "add_vcpu"
    REMOVE_VCPU = "remove_vcpu"
    ADD_MEMORY_MIB = "add_memory_mib"


@dataclass(frozen=True)
class Condition:
    measure: Measure
    op: Op
    threshold: float
    # A series measure must hold at every point of the last `for_s` seconds (and be measured over
    # all of it); 0 = its latest value.
    for_s: float = 0.0
    transaction: Transaction | None = None  # for SERVER_P95_RATIO


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...]
    change: Change
    amount: int
    message: str  # formatted with county, transaction, ratio, cpu, amount
    min_vcpus: int = 1  # what a VM keeps at least / may have at most after the change
    max_vcpus: int = 4


RULES: tuple[Rule, ...] = (
    Rule("certify-slow-cpu-busy",
         (Condition(Measure.SERVER_P95_RATIO, Op.ABOVE, 2.0, transaction=Transaction.CERTIFY),
          Condition(Measure.VM_CPU_PCT, Op.ABOVE, 80.0, for_s=600)),
         Change.ADD_VCPU, 1,
         "{county}: 簽證 server time p95 ×{ratio:.1f} and its VM's CPU above 80 % for 10 min: add one vCPU"),
    Rule("reports-slow-memory-full",
         (Condition(Measure.SERVER_P95_RATIO, Op.ABOVE, 2.0, transaction=Transaction.REPORT),
          Condition(Measure.VM_MEMORY_USED_PCT, Op.ABOVE, 90.0, for_s=600)),
         Change.ADD_MEMORY_MIB, 256,
         "{county}: 報表 server time p95 ×{ratio:.1f} and its VM's memory above 90 % for 10 min: "
         "add {amount} MiB"),
    Rule("idle-extra-vcpu",
         (Condition(Measure.VM_CPU_PCT, Op.BELOW, 10.0, for_s=24 * HOUR_S),),
         Change.REMOVE_VCPU, 1,
         "{county}: VM CPU below 10 % for a day with {vcpus} vCPUs: one vCPU can go to a busier county"),
)


@dataclass(frozen=True)
class Facts:
    """What the rules look at for one county's VM."""

    county: str
    vm: str
    vcpus: int
    memory_mib: int
    server_p95_ratio: Mapping[Transaction, float] = field(default_factory=dict)
    series: Mapping[Measure, Sequence[tuple[float, float]]] = field(default_factory=dict)  # (at, value)


@dataclass(frozen=True)
class Advice:
    county: str
    vm: str
    rule: str
    change: Change
    amount: int
    message: str
    evidence: Mapping[str, float]

    def resize(self, vcpus: int, memory_mib: int) -> tuple[int, int]:
        """The (vcpus, memory_mib) to give the resize job."""
        if self.change is Change.ADD_VCPU:
            return vcpus + self.amount, memory_mib
        if self.change is Change.REMOVE_VCPU:
            return vcpus - self.amount, memory_mib
        return vcpus, memory_mib + self.amount


def _holds(condition: Condition, facts: Facts, now: float) -> float | None:
    """The value that satisfied the condition (the worst over the window), or None."""
    test = _OPS[condition.op]
    if condition.measure is Measure.SERVER_P95_RATIO:
        if condition.transaction is None:
            return None
        ratio = facts.server_p95_ratio.get(condition.transaction)
        return ratio if ratio is not None and test(ratio, condition.threshold) else None
    points = sorted(facts.series.get(condition.measure, ()))
    if not points:
        return None
    if condition.for_s <= 0:
        value = points[-1][1]
        return value if test(value, condition.threshold) else None
    start = now - condition.for_s
    window = [v for at, v in points if at >= start]
    # Measured over the whole window: a point at (or before) its start, and none missing at the end.
    covered = points[0][0] <= start + 60 and points[-1][0] >= now - 120
    if not window or not covered or not all(test(v, condition.threshold) for v in window):
        return None
    return min(window) if condition.op is Op.ABOVE else max(window)


def evaluate(facts: Facts, now: float, rules: Sequence[Rule] = RULES) -> list[Advice]:
    advice = []
    for rule in rules:
        if rule.change is Change.ADD_VCPU and facts.vcpus + rule.amount > rule.max_vcpus:
            continue
        if rule.change is Change.REMOVE_VCPU and facts.vcpus - rule.amount < rule.min_vcpus:
            continue
        evidence: dict[str, float] = {}
        for condition in rule.conditions:
            value = _holds(condition, facts, now)
            if value is None:
                break
            suffix = f":{condition.transaction.value}" if condition.transaction else ""
            name = condition.measure.value + suffix
            evidence[name] = value
        else:
            ratio = next((v for k, v in evidence.items()
                          if k.startswith(Measure.SERVER_P95_RATIO.value)), 0.0)
            advice.append(Advice(facts.county, facts.vm, rule.name, rule.change, rule.amount,
                                 rule.message.format(county=facts.county, ratio=ratio, amount=rule.amount,
                                                     vcpus=facts.vcpus,
                                                     cpu=evidence.get(Measure.VM_CPU_PCT.value, 0.0)),
                                 evidence))
    return advice


def server_p95_ratios(store: RollupStore, county: str, now: float,
                      baseline_s: float = BASELINE_S) -> dict[Transaction, float]:
    """Per transaction: server-time p95 of the last hour over that of the `baseline_s` before it
    (real users' requests; transactions with no baseline are left out)."""
    recent_since = now - HOUR_S
    ratios: dict[Transaction, float] = {}
    for transaction in Transaction:
        recent = store.combined(county=county, transaction=transaction, source=Source.REAL_USER,
                                since=recent_since - recent_since % HOUR_S)
        base = store.combined(county=county, transaction=transaction, source=Source.REAL_USER,
                              since=recent_since - baseline_s, until=recent_since - recent_since % HOUR_S)
        now_p95, base_p95 = recent.quantile(Component.SERVER, 0.95), base.quantile(Component.SERVER, 0.95)
        if now_p95 is not None and base_p95:
            ratios[transaction] = now_p95 / base_p95
    return ratios


@dataclass(frozen=True)
class BeforeAfter:
    """Applied advice with the figures it was judged by, before and after the change."""

    advice: Advice
    before: Mapping[str, float]
    after: Mapping[str, float]

    def rows(self) -> list[tuple[str, float | None, float | None]]:
        names = sorted(set(self.before) | set(self.after))
        return [(n, self.before.get(n), self.after.get(n)) for n in names]


def figures(store: RollupStore, county: str, since: float, until: float) -> dict[str, float]:
    """server p95 (ms) per transaction over [since, until): what before/after compares."""
    result = {}
    for transaction in Transaction:
        rollup = store.combined(county=county, transaction=transaction, source=Source.REAL_USER,
                                since=since, until=until)
        p95 = rollup.quantile(Component.SERVER, 0.95)
        if p95 is not None:
            result[f"server_p95_ms:{transaction.value} ({TITLES[transaction]})"] = p95
    return result
