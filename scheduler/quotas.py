"""Quotas per group and per user: guaranteed share, hard cap, GPU-hours budget.

A quota limit never reorders the queue: a run that would break one waits with a
reason naming the limit (as Slurm's ``QOSMaxGRESPerUser`` or a Kueue condition
does) and the runs behind it carry on.  Guarantees also decide *borrowing*: a
group may run past its guaranteed GPUs only with preemptible runs, and those runs
(newest first) are the ones preempted when a group needs its guarantee back.

``QuotaBook`` is the per-pass accounting the policy keeps while it decides; it is
built from the snapshot and updated as the pass starts runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .policy_types import HeldRun, PendingRun
from .usage import Usage, period_start, period_used


@dataclass(frozen=True)
class Quota:
    """Limits for one group or user; ``None`` means no such limit.

    ``guaranteed_gpus``: GPUs the group can always get back (by preempting runs
    that borrowed them).  Runs past it must be preemptible.  Groups only.
    ``max_gpus``: never more GPUs than this at once, preemptible or not.
    ``gpu_hours_per_period``: once this many GPU-hours are used in the current
    budget period, new runs wait for the next period.
    ``fairshare``: relative weight in fair share (default: ``guaranteed_gpus`` if
    set, else 1).
    ``storage_bytes``: what the runs' folders (outputs, checkpoints, logs) may take
    on disk together; new runs are refused over it (``storage.StorageAccounts``).
    """

    guaranteed_gpus: int | None = None
    max_gpus: int | None = None
    gpu_hours_per_period: float | None = None
    fairshare: float | None = None
    storage_bytes: int | None = None

    @property
    def weight(self) -> float:
        if self.fairshare is not None:
            return self.fairshare
        return float(self.guaranteed_gpus) if self.guaranteed_gpus else 1.0


@dataclass(frozen=True)
class Quotas:
    """Every quota of the platform.  ``period_seconds`` is the budget period (30
    days by default, aligned on the Unix epoch); the ``UsageLedger`` must use the
    same."""

    groups: Mapping[str, Quota] = field(default_factory=dict, hash=False)
    users: Mapping[str, Quota] = field(default_factory=dict, hash=False)
    default_group: Quota = Quota()
    default_user: Quota = Quota()
    period_seconds: float = 30 * 86400

    def group(self, name: str) -> Quota:
        return self.groups.get(name, self.default_group)

    def user(self, name: str) -> Quota:
        return self.users.get(name, self.default_user)

    @property
    def has_budgets(self) -> bool:
        quotas = [*self.groups.values(), *self.users.values(), self.default_group, self.default_user]
        return any(q.gpu_hours_per_period is not None for q in quotas)


_NO_LIMITS = Quota()


def _gpus(n: int) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h"


class QuotaBook:
    """GPUs in use and budget used, per group and user, during one pass."""

    def __init__(self, quotas: Quotas, held: Mapping[int, HeldRun], group_usage: Mapping[str, Usage],
                 user_usage: Mapping[str, Usage], now: float):
        self.quotas = quotas
        self.held = held
        self.now = now
        configured = [*quotas.groups.values(), *quotas.users.values(), quotas.default_group, quotas.default_user]
        #: False when no quota is set at all: the pass then skips every check.
        self.active = any(q != Quota() for q in configured)
        self.has_guarantees = any(q.guaranteed_gpus is not None for q in (*quotas.groups.values(),
                                                                          quotas.default_group))
        self.group_in_use: dict[str, int] = {}
        self.user_in_use: dict[str, int] = {}
        for h in held.values():
            self.group_in_use[h.group] = self.group_in_use.get(h.group, 0) + h.gpus
            self.user_in_use[h.owner] = self.user_in_use.get(h.owner, 0) + h.gpus
        self._user_limits: dict[str, Quota | None] = {}
        self._group_limits: dict[str, Quota | None] = {}
        self._guarantees: dict[str, int | None] = {}
        self.group_period: dict[str, float] = {}
        self.user_period: dict[str, float] = {}
        if quotas.has_budgets:
            ps = period_start(now, quotas.period_seconds)
            self.period_ends = ps + quotas.period_seconds
            for name, u in group_usage.items():
                self.group_period[name] = period_used(u, now, quotas.period_seconds)
            for name, u in user_usage.items():
                self.user_period[name] = period_used(u, now, quotas.period_seconds)
            for h in held.values():
                used = h.gpus * max(0.0, now - max(h.started_at, ps))
                self.group_period[h.group] = self.group_period.get(h.group, 0.0) + used
                self.user_period[h.owner] = self.user_period.get(h.owner, 0.0) + used

    def _limits(self, cache: dict[str, Quota | None], quotas: Mapping[str, Quota], default: Quota,
                name: str) -> Quota | None:
        """The quota for ``name``, or None when it sets no limit (the common, fast case)."""
        try:
            return cache[name]
        except KeyError:
            q = quotas.get(name, default)
            cache[name] = q if (q.max_gpus, q.gpu_hours_per_period, q.guaranteed_gpus) != (None, None, None) else None
            return cache[name]

    def blocked(self, run: PendingRun) -> str | None:
        """The quota ``run`` would break by starting now, as a reason; else None."""
        uq = self._limits(self._user_limits, self.quotas.users, self.quotas.default_user, run.owner)
        gq = self._limits(self._group_limits, self.quotas.groups, self.quotas.default_group, run.group)
        if uq is None and gq is None:
            return None
        uq, gq = uq or _NO_LIMITS, gq or _NO_LIMITS
        if uq.max_gpus is not None:
            used = self.user_in_use.get(run.owner, 0)
            if used + run.gpus > uq.max_gpus:
                return (f"QuotaHardCap: user {run.owner} at the cap of {_gpus(uq.max_gpus)} "
                        f"({used} in use, this run needs {run.gpus})")
        if gq.max_gpus is not None:
            used = self.group_in_use.get(run.group, 0)
            if used + run.gpus > gq.max_gpus:
                return (f"QuotaHardCap: group {run.group} at its cap of {_gpus(gq.max_gpus)} "
                        f"({used} in use, this run needs {run.gpus})")
        if uq.gpu_hours_per_period is not None:
            hours = self.user_period.get(run.owner, 0.0) / 3600
            if hours >= uq.gpu_hours_per_period:
                return (f"QuotaBudget: user {run.owner} has used {hours:,.1f} of {uq.gpu_hours_per_period:,.1f} "
                        f"GPU-hours this period; the budget renews in {_hours(self.period_ends - self.now)}")
        if gq.gpu_hours_per_period is not None:
            hours = self.group_period.get(run.group, 0.0) / 3600
            if hours >= gq.gpu_hours_per_period:
                return (f"QuotaBudget: group {run.group} has used {hours:,.1f} of {gq.gpu_hours_per_period:,.1f} "
                        f"GPU-hours this period; the budget renews in {_hours(self.period_ends - self.now)}")
        if self.borrowing(run) and not run.preemptible:
            used = self.group_in_use.get(run.group, 0)
            return (f"QuotaGuarantee: group {run.group} uses {used} of its {_gpus(gq.guaranteed_gpus or 0)} "
                    f"guaranteed; only preemptible runs may borrow idle GPUs beyond it")
        return None

    def _guarantee(self, group: str) -> int | None:
        try:
            return self._guarantees[group]
        except KeyError:
            self._guarantees[group] = g = self.quotas.group(group).guaranteed_gpus
            return g

    def borrowing(self, run: PendingRun) -> bool:
        """Would starting ``run`` take its group past its guaranteed GPUs?"""
        g = self._guarantee(run.group)
        return g is not None and self.group_in_use.get(run.group, 0) + run.gpus > g

    def within_share(self, run: PendingRun) -> bool:
        """Has ``run``'s group a guarantee that still covers it (so it may reclaim)?"""
        g = self._guarantee(run.group)
        return g is not None and self.group_in_use.get(run.group, 0) + run.gpus <= g

    def account(self, run: PendingRun) -> None:
        self.group_in_use[run.group] = self.group_in_use.get(run.group, 0) + run.gpus
        self.user_in_use[run.owner] = self.user_in_use.get(run.owner, 0) + run.gpus

    def borrowed(self) -> list[HeldRun]:
        """Running runs that use GPUs beyond their group's guarantee, newest first.

        Within a group, runs that may not be preempted (not preemptible, notebook
        servers) count against the guarantee first, then preemptible runs oldest
        first; every preemptible run that ends past the guarantee is borrowing.
        Notebook servers are never in this list.
        """
        by_group: dict[str, list[HeldRun]] = {}
        for h in self.held.values():
            by_group.setdefault(h.group, []).append(h)
        out: list[HeldRun] = []
        for group, runs in by_group.items():
            g = self.quotas.group(group).guaranteed_gpus
            if g is None:
                continue
            runs.sort(key=lambda h: (h.preemptible and not h.is_notebook, h.started_at, h.run_id))
            total = 0
            for h in runs:
                total += h.gpus
                if total > g and h.preemptible and not h.is_notebook:
                    out.append(h)
        out.sort(key=lambda h: (-h.started_at, -h.run_id))
        return out
