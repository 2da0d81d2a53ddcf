"""Run-time estimates that learn from finished runs and say how wrong they have been.

A run's expected run time matters to the policy in two places only: which runs
may use GPUs kept for a reservation before it starts, and the estimated start
shown to people.  The policy never orders by it (it is not clairvoyant), so a
better estimate can only make backfill tighter and the shown times closer.

``RuntimeEstimator`` keeps the last run times of finished runs under several keys,
most specific first: the entry point within an experiment, the experiment, the
user, the group.  An estimate comes from the most specific key that has at least
``min_samples`` runs, as the ``quantile`` of those runs that lasted longer than the
run has already run (a run that has outlived most of its peers is expected to
last as long as the ones that outlived it too), and never beyond the run's own
enforced limit.  Every finished run is scored against the estimate made for it
when it was queued, so ``error()`` reports how good the estimates are.

Pure bookkeeping: the caller (the simulator, or the live service) feeds it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    """``seconds``: the expected run time; ``source``: which history it came from
    (``"limit"``, ``"entry point"``, ``"experiment"``, ``"user"``, ``"group"`` or
    ``"default"``); ``samples``: how many finished runs that history holds."""

    seconds: float
    source: str
    samples: int = 0


@dataclass(frozen=True)
class EstimateError:
    """How the estimates made when runs were queued compared with their run times.

    ``median_factor``: the median of ``max(actual/estimate, estimate/actual)``
    (1 = exact); ``over_2x``: share of runs that ran more than twice their
    estimate (the ones that break backfill); ``under_half``: share that ran less
    than half of it."""

    runs: int
    median_factor: float
    over_2x: float
    under_half: float


class RuntimeEstimator:
    """Per-key histories of run times; estimates by the most specific key that knows enough."""

    def __init__(self, history: int = 200, quantile: float = 0.5, min_samples: int = 3,
                 default_seconds: float = 3600.0):
        self.history = history
        self.quantile = quantile
        self.min_samples = min_samples
        self.default_seconds = default_seconds
        self._runs: dict[tuple[str, ...], deque[float]] = {}
        self._sorted: dict[tuple[str, ...], list[float]] = {}
        self._scores: list[float] = []

    @staticmethod
    def keys(owner: str, group: str, experiment: str = "", entry_point: str = "") -> list[tuple[str, ...]]:
        """The histories a run belongs to, most specific first."""
        out: list[tuple[str, ...]] = []
        if experiment and entry_point:
            out.append(("entry point", experiment, entry_point))
        if experiment:
            out.append(("experiment", experiment))
        if owner:
            out.append(("user", owner))
        out.append(("group", group))
        return out

    def _values(self, key: tuple[str, ...]) -> list[float]:
        values = self._sorted.get(key)
        if values is None:
            values = self._sorted[key] = sorted(self._runs.get(key, ()))
        return values

    def estimate(self, owner: str, group: str, experiment: str = "", entry_point: str = "",
                 max_seconds: float | None = None, elapsed: float = 0.0) -> Estimate:
        """The expected total run time of a run that has run ``elapsed`` seconds so far."""
        for key in self.keys(owner, group, experiment, entry_point):
            values = self._values(key)
            if len(values) < self.min_samples:
                continue
            longer = values[bisect.bisect_right(values, elapsed):]
            if longer:
                seconds = longer[min(len(longer) - 1, max(0, math.ceil(self.quantile * len(longer)) - 1))]
            else:
                seconds = 2 * elapsed  # it outlived every run we know: expect as long again
            est = Estimate(seconds, key[0], len(values))
            break
        else:
            est = Estimate(max(self.default_seconds, 2 * elapsed), "default")
        if max_seconds is not None and max_seconds < est.seconds:
            return Estimate(max_seconds, "limit", est.samples)
        return est

    def learn(self, owner: str, group: str, seconds: float, experiment: str = "", entry_point: str = "",
              estimated: float | None = None) -> None:
        """Record a finished run's run time (and score the estimate made for it, if given)."""
        for key in self.keys(owner, group, experiment, entry_point):
            runs = self._runs.get(key)
            if runs is None:
                runs = self._runs[key] = deque(maxlen=self.history)
            runs.append(seconds)
            self._sorted.pop(key, None)
        if estimated is not None and estimated > 0 and seconds > 0:
            self._scores.append(seconds / estimated)

    def error(self) -> EstimateError:
        """How good the scored estimates were (see ``EstimateError``)."""
        n = len(self._scores)
        if not n:
            return EstimateError(0, 1.0, 0.0, 0.0)
        factors = sorted(max(r, 1 / r) for r in self._scores)
        return EstimateError(n, factors[(n - 1) // 2], sum(r > 2 for r in self._scores) / n,
                             sum(r < 0.5 for r in self._scores) / n)
