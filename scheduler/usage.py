"""Usage history for fair share and budgets: decayed GPU-seconds, period totals, run times.

Fair share needs "how much has this group used lately", with old usage counting
less (a half-life, as Slurm's ``PriorityDecayHalfLife``); budgets need the plain
GPU-seconds used in the current period; backfill needs a run time for runs that
have no time limit.  This module is pure arithmetic plus ``UsageLedger``, a small
accumulator the caller (the live service or the simulator) feeds with runs as they
end and turns into the ``Usage`` records a ``ClusterSnapshot`` carries.

Runs that are still going are *not* in the ledger: the policy adds their usage from
the snapshot's allocations, so a long run counts against its group while it runs,
not only once it has ended, and nothing is counted twice.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

LN2 = math.log(2)


@dataclass(frozen=True)
class Usage:
    """One group's (or user's) history as of ``as_of``, for runs that have ended.

    ``decayed_gpu_seconds`` is GPU-seconds weighted by ``2 ** -(age / half_life)``;
    ``period_gpu_seconds`` is the undecayed total since ``period_start``;
    ``typical_run_seconds`` is what a run of this group usually lasts (None: no
    history yet).
    """

    decayed_gpu_seconds: float = 0.0
    as_of: float = 0.0
    period_gpu_seconds: float = 0.0
    period_start: float = 0.0
    typical_run_seconds: float | None = None


def decay_factor(elapsed: float, half_life: float) -> float:
    """The weight of usage ``elapsed`` seconds old."""
    if elapsed <= 0 or math.isinf(half_life):
        return 1.0
    return math.exp(-LN2 * elapsed / half_life)


def decayed_interval(gpus: float, start: float, end: float, now: float, half_life: float) -> float:
    """``gpus`` held from ``start`` to ``end``, as decayed GPU-seconds seen at ``now``.

    The exact integral of ``gpus * 2 ** -((now - t) / half_life)`` over the interval,
    so the answer does not depend on how often anyone samples it.
    """
    if end <= start or gpus <= 0:
        return 0.0
    if math.isinf(half_life):
        return gpus * (end - start)
    k = LN2 / half_life
    return gpus / k * (math.exp(-k * (now - end)) - math.exp(-k * (now - start)))


def decayed_now(usage: Usage | None, now: float, half_life: float) -> float:
    """A record's decayed GPU-seconds brought forward to ``now``."""
    if usage is None:
        return 0.0
    return usage.decayed_gpu_seconds * decay_factor(now - usage.as_of, half_life)


def period_start(now: float, period: float) -> float:
    """Start of the budget period holding ``now``; periods are aligned on the epoch."""
    return math.floor(now / period) * period


def period_used(usage: Usage | None, now: float, period: float) -> float:
    """GPU-seconds of ended runs charged to the period holding ``now`` (0 if stale)."""
    if usage is None or usage.period_start != period_start(now, period):
        return 0.0
    return usage.period_gpu_seconds


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class UsageLedger:
    """Decayed and per-period usage of ended runs, and recent run times, per key.

    Use one ledger for groups and one for users.  ``charge`` a run once, when it
    stops (ends or is preempted); ``snapshot`` gives the records for a
    ``ClusterSnapshot``.  The run-time estimate is the ``estimate_quantile`` of the
    key's last ``history`` finished runs: never the run's own duration, which
    nobody knows until it has ended.
    """

    def __init__(self, half_life_seconds: float = 7 * 86400, period_seconds: float = 30 * 86400,
                 history: int = 100, estimate_quantile: float = 0.5):
        self.half_life = half_life_seconds
        self.period = period_seconds
        self.history = history
        self.estimate_quantile = estimate_quantile
        self._decayed: dict[str, tuple[float, float]] = {}
        self._period: dict[str, tuple[float, float]] = {}
        self._durations: dict[str, deque[float]] = {}
        self._typical: dict[str, float | None] = {}
        self._records: dict[str, Usage] | None = None

    def charge(self, key: str, gpus: int, start: float, end: float, finished: bool = True) -> None:
        """Add ``gpus`` held from ``start`` to ``end``; ``finished`` runs also teach
        the run-time estimate (a preempted run's partial time would mislead it)."""
        value, as_of = self._decayed.get(key, (0.0, end))
        at = max(as_of, end)
        value = value * decay_factor(at - as_of, self.half_life) + decayed_interval(
            gpus, start, end, at, self.half_life)
        self._decayed[key] = (value, at)
        ps = period_start(end, self.period)
        total, old_ps = self._period.get(key, (0.0, ps))
        if ps > old_ps:
            total = 0.0
        if ps >= old_ps:
            self._period[key] = (total + gpus * (end - max(start, ps)), ps)
        if finished:
            durations = self._durations.setdefault(key, deque(maxlen=self.history))
            durations.append(end - start)
            self._typical.pop(key, None)
        self._records = None

    def typical_run_seconds(self, key: str) -> float | None:
        if key not in self._typical:
            durations = self._durations.get(key)
            self._typical[key] = quantile(list(durations), self.estimate_quantile) if durations else None
        return self._typical[key]

    def snapshot(self) -> dict[str, Usage]:
        """The records, cached until the next charge (the policy decays them to ``now``)."""
        if self._records is None:
            keys = set(self._decayed) | set(self._durations)
            records = {}
            for key in keys:
                value, as_of = self._decayed.get(key, (0.0, 0.0))
                total, ps = self._period.get(key, (0.0, 0.0))
                records[key] = Usage(value, as_of, total, ps, self.typical_run_seconds(key))
            self._records = records
        return self._records
