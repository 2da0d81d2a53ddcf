"""The cluster's history, for the admin page's charts: GPUs held and busy per node, the queue and its waits.

``ClusterHistory`` takes a sample every ``interval`` seconds: one ``NodeSample`` per node (GPUs,
GPUs held by anything the dispatcher counts as a holder: runs, notebooks, model-server replicas,
and the mean utilisation of its GPUs where a utilisation source measures them) and one
``ClusterSample`` (queued runs, the median and p95 of how long they have waited so far, runs
starting, running or stopping).  A sample is read from the dispatcher's memory (``take_sample``, no I/O) and
stored in one transaction on the database thread, which also drops samples older than
``retention_days``; nothing is kept anywhere else, so a restart loses at most one interval.

``read_history`` is what ``GET /api/cluster/history`` answers: the samples of a window averaged
into buckets of ``bucket_seconds(hours)`` (at most ``MAX_POINTS`` per series), in SQL.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import delete, func, insert, literal, select
from traitlets import Float, validate
from traitlets.config import LoggingConfigurable

from .orm import ClusterSample, NodeSample
from .states import HOLDING, RunState
from .usage import quantile

# Points per series the history API answers at most, whatever the window.
MAX_POINTS = 300


@dataclass(frozen=True)
class NodeRow:
    node: str
    gpus_total: int
    gpus_allocated: int
    utilization: float | None


@dataclass(frozen=True)
class ClusterRow:
    queue_length: int
    wait_p50_seconds: float | None
    wait_p95_seconds: float | None
    running_runs: int


@dataclass(frozen=True)
class Sample:
    """What one sample stores: ``at`` in whole seconds since the epoch."""

    at: int
    nodes: tuple[NodeRow, ...]
    cluster: ClusterRow


def node_gpus(dispatcher) -> dict[str, tuple[int, ...]]:
    """Every node's GPU indices: the engine's inventory (down and drained nodes too) or the policy's nodes."""
    if dispatcher.node_infos is not None:
        return {i.name: tuple(range(i.gpus)) for i in dispatcher.node_infos}
    return {n.name: tuple(n.gpus) for n in dispatcher.nodes}


def take_sample(dispatcher, now: float, utilization: dict[str, float | None]) -> Sample:
    """One sample of the dispatcher's state at ``now`` (epoch seconds); ``utilization`` by node, where measured."""
    holding, submitted = [], []
    for run in dispatcher.active.values():  # one walk: at 10,000 queued it runs on the event loop
        if run.state is RunState.QUEUED:
            submitted.append(run.submitted_epoch)
        elif run.state in HOLDING:
            holding.append(run)
    held: dict[str, int] = {}
    for node, _gpu in dispatcher.gpu_holders(holding):
        held[node] = held.get(node, 0) + 1
    nodes = tuple(NodeRow(name, len(gpus), held.get(name, 0), utilization.get(name))
                  for name, gpus in sorted(node_gpus(dispatcher).items()))
    # The latest submission is the shortest wait: quantiles of the negated submission times are the waits'.
    negated = [-at for at in submitted]
    cluster = ClusterRow(len(negated), max(0.0, now + quantile(negated, 0.5)) if negated else None,
                         max(0.0, now + quantile(negated, 0.95)) if negated else None, len(holding))
    return Sample(int(now), nodes, cluster)


def store_sample(session, sample: Sample, keep_since: int) -> None:
    """Write one sample (one insert per table) and drop the samples from before ``keep_since``."""
    if sample.nodes:
        session.execute(insert(NodeSample), [dict(asdict(n), at=sample.at) for n in sample.nodes])
    session.execute(insert(ClusterSample), [dict(asdict(sample.cluster), at=sample.at)])
    session.execute(delete(NodeSample).where(NodeSample.at < keep_since))
    session.execute(delete(ClusterSample).where(ClusterSample.at < keep_since))


def bucket_seconds(hours: int) -> int:
    """How many seconds each point of an ``hours`` window averages, so that no series has over ``MAX_POINTS``.

    Buckets are aligned on the epoch (a point does not move between two polls), so a window
    touches at most one bucket more than it spans.
    """
    return max(1, math.ceil(hours * 3600 / (MAX_POINTS - 1)))


def _number(value: Any, digits: int = 2) -> float | None:
    """An average as JSON shows it (PostgreSQL answers ``Decimal`` for averages of integers)."""
    return None if value is None else round(float(value), digits)


def read_history(session, since: int, until: int, width: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """Samples from ``since`` to ``until`` (epoch seconds) averaged per bucket of ``width`` seconds.

    Returns per node (by name) and for the cluster a list of points, oldest first; each point's
    ``time`` is its bucket's latest sample and its values are the bucket's means (``total``: the
    largest), ``None`` where no sample of the bucket measured them.
    """
    w = literal(width, literal_execute=True)
    node_bucket = (NodeSample.at // w).label("bucket")
    window = (NodeSample.at >= since, NodeSample.at <= until)
    nodes: dict[str, list[dict]] = {}
    for name, _, at, allocated, total, util in session.execute(
            select(NodeSample.node, node_bucket, func.max(NodeSample.at), func.avg(NodeSample.gpus_allocated),
                   func.max(NodeSample.gpus_total), func.avg(NodeSample.utilization))
            .where(*window).group_by(NodeSample.node, node_bucket).order_by(NodeSample.node, node_bucket)):
        nodes.setdefault(name, []).append({"time": int(at), "allocated": _number(allocated), "total": int(total),
                                           "utilization": _number(util, 1)})
    bucket = (ClusterSample.at // w).label("bucket")
    cluster = [
        {"time": int(at), "queue_length": _number(queue), "wait_p50_seconds": _number(p50, 1),
         "wait_p95_seconds": _number(p95, 1), "running_runs": _number(running)}
        for _, at, queue, p50, p95, running in session.execute(
            select(bucket, func.max(ClusterSample.at), func.avg(ClusterSample.queue_length),
                   func.avg(ClusterSample.wait_p50_seconds), func.avg(ClusterSample.wait_p95_seconds),
                   func.avg(ClusterSample.running_runs))
            .where(ClusterSample.at >= since, ClusterSample.at <= until).group_by(bucket).order_by(bucket))
    ]
    return nodes, cluster


class ClusterHistory(LoggingConfigurable):
    """Samples the cluster every ``interval`` seconds into the database, for the admin page's charts."""

    interval = Float(
        30.0,
        help="""Seconds between two samples of the cluster (one row per node and one for the queue each time).

        Shorter shows quicker changes on the admin page's charts and stores more rows (30 days at 30 s
        is 86,400 rows per node).  Example: ``c.ClusterHistory.interval = 60``
        """,
    ).tag(config=True)

    retention_days = Float(
        30.0,
        help="""Days of samples kept; older ones are deleted as new ones are written.  The history API answers
        windows of up to 720 hours, so less than 30 leaves the end of a long window empty.
        Example: ``c.ClusterHistory.retention_days = 7``
        """,
    ).tag(config=True)

    @validate("interval", "retention_days")
    def _positive(self, proposal):
        if not proposal.value > 0:
            raise ValueError(f"{proposal.trait.name} must be more than 0, not {proposal.value!r}")
        return proposal.value

    def __init__(self, dispatcher, source=None, local_node: str | None = None, clock=None, **kwargs):
        """``source`` (a ``zombies.UtilizationSource``) measures the GPUs of ``local_node``, the machine the
        service runs on; other nodes' utilisation is unknown (``None``)."""
        super().__init__(**kwargs)
        self.dispatcher = dispatcher
        self.source = source
        self.local_node = local_node
        self.clock = clock or time.time
        self.samples = 0  # written since start, for tests
        self._util_failing = False
        self._task: asyncio.Task | None = None

    async def _utilization(self) -> dict[str, float | None]:
        indices = node_gpus(self.dispatcher).get(self.local_node or "")
        if self.source is None or not indices:
            return {}
        try:
            values = await self.source.sample(list(indices))
        except Exception as e:  # noqa: BLE001 - a sample without utilisation is still worth storing
            if not self._util_failing:
                self.log.warning("Could not measure GPU utilisation for the cluster's history: %s", e)
            self._util_failing = True
            return {}
        self._util_failing = False
        if not values:
            return {}
        return {self.local_node or "": sum(values.values()) / len(values)}

    async def sample_once(self) -> Sample:
        """Take one sample and store it (dropping what is past the retention)."""
        utilization = await self._utilization()
        now = self.clock()
        sample = take_sample(self.dispatcher, now, utilization)
        await self.dispatcher.db.run(store_sample, sample, int(now - self.retention_days * 86400))
        self.samples += 1
        return sample

    async def run_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Sampling the cluster's history failed")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
