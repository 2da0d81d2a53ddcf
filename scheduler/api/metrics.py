"""``GET <service prefix>metrics``: the scheduler's state for Prometheus, so a site's Grafana draws what the
admin page shows.

Names follow Prometheus' conventions (``nothing_`` prefix, base units, ``_seconds``
histograms):

- ``nothing_queue_length``: runs waiting (QUEUED);
- ``nothing_runs{state="RUNNING"}``: runs in each state, every state listed (0 included);
  active states as the dispatcher holds them, ended ones as the database has them;
- ``nothing_gpus{node}``, ``nothing_gpus_allocated{node}``, ``nothing_gpus_idle{node}``: GPUs per node,
  those a run or a notebook holds, and those nobody holds;
- ``nothing_schedule_pass_duration_seconds``: histogram of scheduling passes (policy and the starts it decides);
- ``nothing_submit_duration_seconds``: histogram of ``POST /api/runs`` as the service answered it, from the
  request's arrival to its answer, for submissions that queued a run (or found the retried one).

No user, run or group names are in them.  As JupyterHub's own ``/hub/metrics``
(``c.JupyterHub.authenticate_prometheus``), they need a token by default: any token
the service's one access rule admits (``access:services!service=nothing``; give the
Prometheus server a JupyterHub service with that scope), or none with
``c.PrometheusMetrics.authenticate_prometheus = False`` where the network is trusted.
Each application has its own registry, so two schedulers in one process (tests) do not mix.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from traitlets import Bool
from traitlets.config import Configurable

from ..orm import Run
from ..states import HOLDING, RunState
from .base import APIHandler

# Passes take about a millisecond, submissions a few; the long buckets catch a queue of 10,000 or a slow disk.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ACTIVE_STATES = frozenset({RunState.CREATE_REQUESTED, RunState.QUEUED, *HOLDING})


class PrometheusMetrics(Configurable):
    """The service's Prometheus registry: live gauges read at each scrape and two histograms fed as things happen."""

    authenticate_prometheus = Bool(
        True,
        help="""Whether ``<service prefix>metrics`` needs a token, as ``c.JupyterHub.authenticate_prometheus``.

        With True (the default) the caller needs a token the service admits (scope
        ``access:services!service=nothing``), e.g. of a JupyterHub service made for the Prometheus
        server (``bearer_token`` in its scrape config). The metrics hold no user, run or group names.
        Example: ``c.PrometheusMetrics.authenticate_prometheus = False``
        """,
    ).tag(config=True)

    def __init__(self, scheduler: Any, **kwargs: Any) -> None:
        super().__init__(parent=scheduler, **kwargs)
        self.scheduler = scheduler
        self.registry = CollectorRegistry()
        self.pass_seconds = Histogram("nothing_schedule_pass_duration_seconds",
                                      "Time one scheduling pass took (policy decision and the starts it made)",
                                      buckets=BUCKETS, registry=self.registry)
        self.submit_seconds = Histogram("nothing_submit_duration_seconds",
                                        "Time the service took to answer a run submission (POST /api/runs)",
                                        buckets=BUCKETS, registry=self.registry)
        self._ended: dict[RunState, int] = {}
        self.registry.register(self)

    def observe_request(self, handler: Any) -> None:
        """Called for every finished request (the application's ``log_function``): times the submissions."""
        from .runs import RunsHandler

        if isinstance(handler, RunsHandler) and handler.request.method == "POST" and handler.get_status() in (200, 201):
            self.submit_seconds.observe(handler.request.request_time())

    async def refresh(self) -> None:
        """Read the ended runs' counts from the database (off the event loop) before a scrape."""
        self._ended = dict(await self.scheduler.dispatcher.db.run(_ended_counts))

    def collect(self):
        """The gauges, from the dispatcher's memory at this moment (a prometheus_client collector)."""
        dispatcher = self.scheduler.dispatcher
        active = Counter(run.state for run in dispatcher.active.values())
        yield GaugeMetricFamily("nothing_queue_length", "Runs waiting in the queue (QUEUED)",
                                value=active[RunState.QUEUED])
        runs = GaugeMetricFamily("nothing_runs", "Runs in each state", labels=["state"])
        for state in RunState:
            runs.add_metric([state.value], active[state] if state in ACTIVE_STATES else self._ended.get(state, 0))
        yield runs
        held = Counter(node for node, _ in dispatcher.gpu_holders())
        total = GaugeMetricFamily("nothing_gpus", "GPUs of each node", labels=["node"])
        allocated = GaugeMetricFamily("nothing_gpus_allocated", "GPUs a run or a notebook holds", labels=["node"])
        idle = GaugeMetricFamily("nothing_gpus_idle", "GPUs nobody holds", labels=["node"])
        for node, gpus in sorted(self.scheduler.inventory.items()):
            total.add_metric([node], len(gpus))
            allocated.add_metric([node], held[node])
            idle.add_metric([node], len(gpus) - held[node])
        yield from (total, allocated, idle)


def _ended_counts(session) -> list[tuple[RunState, int]]:
    query = select(Run.state, func.count()).where(Run.state.not_in(ACTIVE_STATES)).group_by(Run.state)
    return [(state, count) for state, count in session.execute(query)]


def prometheus_metrics(settings: dict) -> PrometheusMetrics:
    """The application's metrics, made on first use (``make_app`` makes them at start, to time every pass)."""
    metrics = settings.get("nothing_metrics")
    if metrics is None:
        metrics = settings["nothing_metrics"] = PrometheusMetrics(settings["scheduler"])
    return metrics


class MetricsHandler(APIHandler):
    """``GET <prefix>metrics``: the Prometheus text exposition."""

    @property
    def requires_login(self) -> bool:  # type: ignore[override]
        return prometheus_metrics(self.settings).authenticate_prometheus

    async def get(self) -> None:
        metrics = prometheus_metrics(self.settings)
        await metrics.refresh()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(metrics.registry))


default_handlers = [(r"/metrics", MetricsHandler)]
