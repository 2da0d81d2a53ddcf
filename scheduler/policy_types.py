"""The policy's value types: the nodes, what a queued run asks for, what a started run holds.

Shared by the policy (``policy``, ``fairshare``, ``placement``) and the quota book
(``quotas``) and imported by both, so neither imports the other for them.  This
module imports nothing of the platform; ``nothing.scheduler.policy`` re-exports
every name, which is where callers take them from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    name: str
    gpus: tuple[int, ...]
    cpus: int
    memory_bytes: int


@dataclass(frozen=True)
class Allocation:
    """Resources held by a run that has started.

    A run spread over several nodes has one ``Allocation`` per node, all with the
    same ``run_id``.  ``expected_end`` is when the run will have stopped at the
    latest (start + its enforced time limit); ``None`` lets the policy estimate it
    from the group's history.  ``stopping`` marks a run that has been told to stop
    (preempted) but still holds its GPUs.  ``attained_gpu_seconds`` is GPU time the
    run received in earlier attempts (before a preemption), not counting this one;
    ``estimated_end`` is the caller's guess of its end when there is no enforced
    limit (a guess: the policy never trusts it to keep a reservation whole);
    ``submitted_at``, when known, lets a policy tell how long the run has waited.
    """

    run_id: int
    owner: str
    node: str
    gpus: tuple[int, ...]
    cpus: int = 0
    memory_bytes: int = 0
    group: str = ""
    preemptible: bool = False
    is_notebook: bool = False
    started_at: float = 0.0
    expected_end: float | None = None
    stopping: bool = False
    attained_gpu_seconds: float = 0.0
    estimated_end: float | None = None
    submitted_at: float | None = None


@dataclass(frozen=True)
class PendingRun:
    """A queued run.  ``max_seconds`` is the user's enforced time limit, which the
    policy trusts for backfill; ``estimated_seconds`` is the caller's guess when
    there is no limit (else the policy uses the group's typical run time).

    ``gpus_per_node`` > 0 makes the run a *shaped* gang, as multi-node training
    (torchrun, MultiWorkerMirroredStrategy) needs: exactly ``nodes`` distinct
    nodes with exactly ``gpus_per_node`` GPUs on each, and ``cpus`` and
    ``memory_bytes`` *per node*; ``gpus`` is then ``nodes * gpus_per_node``.
    ``gpus_per_node == 0`` (the default) is not shaped: the run goes on one node,
    or, when ``gpus`` exceeds every node, is spread over the fewest nodes in
    uneven shares with ``cpus``/``memory_bytes`` split in proportion.

    ``attained_gpu_seconds`` is the GPU time the run has already received (in
    attempts that were preempted); ``queued_since`` is when it last became queued
    (None: at ``submitted_at``).  Attained-service policies order by them.
    """

    run_id: int
    owner: str
    gpus: int
    cpus: int = 0
    memory_bytes: int = 0
    priority: int = 0
    submitted_at: float = 0.0
    group: str = ""
    preemptible: bool = False
    max_seconds: float | None = None
    estimated_seconds: float | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    attained_gpu_seconds: float = 0.0
    queued_since: float | None = None

    @property
    def shaped(self) -> bool:
        """Whether the run asks for a fixed shape (``nodes`` x ``gpus_per_node``)."""
        return self.gpus_per_node > 0


@dataclass
class HeldRun:
    """A running run as the policy sees it: its allocations on every node, summed."""

    run_id: int
    owner: str
    group: str
    gpus: int
    preemptible: bool
    is_notebook: bool
    started_at: float
    expected_end: float | None
    stopping: bool
    parts: list[Allocation]
    attained_gpu_seconds: float = 0.0
    estimated_end: float | None = None
    submitted_at: float | None = None

    def attained(self, now: float) -> float:
        """GPU time received so far: earlier attempts plus this one."""
        return self.attained_gpu_seconds + self.gpus * max(0.0, now - self.started_at)
