"""The scheduler service: configuration, start-up and the tornado application.

JupyterHub runs it as a managed service (see ``nothing.hub_extension``) and passes
where to listen and which prefix to serve through ``JUPYTERHUB_SERVICE_URL`` and
``JUPYTERHUB_SERVICE_PREFIX``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate
from traitlets.config import Application

from . import __version__
from .accounts import UnixAccounts
from .api import default_handlers
from .api.metrics import PrometheusMetrics
from .collector import HeapCollector
from .datasets import Datasets
from .local_push import LocalPush
from .models import Models
from .tracker import Tracker
from .data_plane import NginxDataPlane
from .endpoints import EndpointController
from .tuning import TuningController
from .batch_inference import BatchController
from .cluster_history import ClusterHistory
from .db import Database
from .dispatcher import Dispatcher
from .executors.local import LocalExecutor
from .executors.slurm import SlurmExecutor
from .gpus import Gpu, discover
from .lock import LockHeld, SchedulerLock
from .policy import Node
from .policy_config import make_policy, parse_quotas
from .usage import UsageLedger
from .snapshot import SnapshotLimits
from .supervise import EXIT_DO_NOT_RESTART, supervisor_pid
from .tensorboard import TensorBoardManager
from .zombies import NoUtilization, NvmlUtilization, ZombieMonitor

aliases = {
    "config": "NothingScheduler.config_file",
    "data-dir": "NothingScheduler.data_dir",
    "db-url": "NothingScheduler.db_url",
    "gpu-mode": "NothingScheduler.gpu_mode",
    "virtual-gpus": "NothingScheduler.virtual_gpus",
    "log-level": "Application.log_level",
}


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


class NothingScheduler(Application):
    name = "nothing-scheduler"
    description = "The NothingAI GPU scheduler (a JupyterHub service)."
    version = __version__
    aliases = aliases
    classes = [LocalExecutor, SlurmExecutor, UnixAccounts, ZombieMonitor, TensorBoardManager, Tracker, TuningController,
               EndpointController, NginxDataPlane, BatchController, PrometheusMetrics, Models, ClusterHistory,
               HeapCollector]

    config_file = Unicode("", help="A Python config file to load, e.g. nothing_scheduler_config.py").tag(config=True)

    data_dir = Unicode(
        help="""Folder for the database (SQLite default) and every run's files.

        Example: ``c.NothingScheduler.data_dir = "/srv/nothing"``
        """
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self):
        return os.path.abspath("nothing-data")

    db_url = Unicode(
        help="""SQLAlchemy URL of the scheduler's database.

        Defaults to SQLite (WAL mode) in ``data_dir``. Example for PostgreSQL:
        ``c.NothingScheduler.db_url = "postgresql+psycopg://nothing:secret@db/nothing"``
        """
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return f"sqlite:///{os.path.join(self.data_dir, 'scheduler.sqlite')}"

    node_name = Unicode(help="Name of this machine in the GPU inventory (default: its host name).").tag(config=True)

    @default("node_name")
    def _default_node_name(self):
        return socket.gethostname()

    gpu_mode = Unicode(
        "auto",
        help="""Where GPUs come from: ``auto`` (NVML if a driver answers, otherwise virtual GPUs),
        ``nvml`` (fail without a driver) or ``virtual``.""",
    ).tag(config=True)

    @validate("gpu_mode")
    def _check_gpu_mode(self, proposal):
        if proposal.value not in ("auto", "nvml", "virtual"):
            raise ValueError(f"gpu_mode must be auto, nvml or virtual, not {proposal.value!r}")
        return proposal.value

    virtual_gpus = Integer(4, help="Number of virtual GPUs on a machine without an NVIDIA driver.").tag(config=True)
    virtual_gpu_memory = Integer(16 * 1024**3, help="Memory reported for each virtual GPU, in bytes.").tag(config=True)

    node_cpus = Integer(help="CPUs this node offers to runs (default: all of them).").tag(config=True)

    @default("node_cpus")
    def _default_node_cpus(self):
        return os.cpu_count() or 1

    node_memory = Integer(
        0, help="Memory in bytes this node offers to runs; 0 means memory requests are recorded but not enforced."
    ).tag(config=True)

    max_snapshot_bytes = Integer(
        100 * 1024**2, help="Largest code snapshot (compressed) a submission may upload, in bytes."
    ).tag(config=True)
    max_unpacked_bytes = Integer(
        1024**3, help="Largest size a code snapshot may unpack to, in bytes (guards against archive bombs)."
    ).tag(config=True)

    kill_grace_seconds = Float(
        10.0, help="Seconds between SIGTERM and SIGKILL when a run is cancelled or runs out of time."
    ).tag(config=True)

    gil_switch_interval = Float(
        0.001,
        help="""Python's thread switch interval in this process (``sys.setswitchinterval``), in seconds.  Long
        queues are decided, and the views digested, in worker threads while the event loop serves requests; each
        time a request's work needs the interpreter back from such a thread it waits up to this long, several
        times per request (at 10,000 queued with 100 open sidebars the slowest submissions took 59-78 ms with
        Python's default of 5 ms, 42 ms with 1 ms; ``docs/benchmarks.md``).
        Example: ``c.NothingScheduler.gil_switch_interval = 0.005``
        """,
    ).tag(config=True)

    @validate("gil_switch_interval")
    def _check_switch_interval(self, proposal):
        if not 0 < proposal.value <= 1:
            raise ValueError(f"gil_switch_interval must be more than 0 and at most 1 second, not {proposal.value!r}")
        return proposal.value

    python = Unicode(sys.executable, help="Python interpreter that runs entry points and installs requirements.").tag(
        config=True
    )

    runtime_python = Unicode(
        help="""The serving runtime's interpreter: KServe and the model frameworks, in an environment of their own
        (``scripts/install.sh`` makes ``.venv/serving``), as a KServe container image would hold them. Model-server
        replicas of endpoints and batch inference jobs run under it, as their owner's Unix account.
        Example: ``c.NothingScheduler.runtime_python = "/opt/serving/bin/python"``""",
    ).tag(config=True)

    @default("runtime_python")
    def _default_runtime_python(self):
        return str(Path(sys.prefix) / "serving" / "bin" / "python")

    service_url = Unicode(help="Where to listen (default: $JUPYTERHUB_SERVICE_URL).").tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    service_prefix = Unicode(help="URL prefix served (default: $JUPYTERHUB_SERVICE_PREFIX).").tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/nothing/")

    executor = Unicode(
        "local",
        help="""What starts the runs: ``local`` (processes on this machine, each in a cgroup as its user) or
        ``slurm`` (batch jobs on a Slurm cluster, on the nodes the policy chose); any name of the
        ``nothing.executors`` entry points, or a ``module:Class`` import string.

        Example: ``c.NothingScheduler.executor = "slurm"`` (see ``c.SlurmExecutor.*``)
        """,
    ).tag(config=True)

    policy = Unicode(
        "fair-share",
        help="""How queued runs are ordered and placed: ``fair-share`` (quotas, fair share with aging,
        borrowing with preemption, gang placement, backfill) or ``priority-fifo`` (strict priority then
        submission order, no backfill).""",
    ).tag(config=True)

    quota_config = Dict(
        help="""GPU quotas per JupyterHub group and per user.

        Example::

            c.NothingScheduler.quota_config = {
                "groups": {"vision": {"guaranteed_gpus": 4, "max_gpus": 8, "gpu_hours_per_period": 500}},
                "users": {"alice": {"max_gpus": 2}},
                "default_group": {"max_gpus": 4},
                "period_days": 30,
            }

        ``guaranteed_gpus``: GPUs the group can always get back; beyond them it may only borrow idle
        GPUs with ``--preemptible`` runs, which are preempted (newest first) when the owner needs them.
        ``max_gpus``: a hard cap. ``gpu_hours_per_period``: a budget per period. ``fairshare``: weight.
        ``storage_bytes``: what the runs' folders (outputs, checkpoints, logs, metrics files) may take on
        disk, e.g. ``{"default_user": {"storage_bytes": 50 * 1000**3}}``; over it new runs are refused
        (see ``c.Tracker.stop_over_storage_quota`` for running ones).
        """,
    ).tag(config=True)

    fairshare_half_life_hours = Float(
        168.0, help="Half-life of past usage in fair share, in hours (Slurm's PriorityDecayHalfLife)."
    ).tag(config=True)
    aging_hours = Float(
        4.0, help="Waiting this many hours outweighs the whole fair-share range, so nobody starves."
    ).tag(config=True)

    takeover = Bool(
        True,
        help="""What to do when another scheduler already owns the data dir or the database.

        ``True`` (default): stop it (SIGTERM to it and its supervisor, SIGKILL after
        ``takeover_timeout``; on PostgreSQL, wait for it to notice and step down) and
        take over: the newest scheduler wins, since it carries the hub's current token
        and configuration, e.g. after the hub alone was killed and restarted.
        ``False``: refuse to start, with one line saying who owns it, and exit status 1.

        Example: ``c.NothingScheduler.takeover = False``
        """,
    ).tag(config=True)
    takeover_timeout = Float(
        10.0,
        help="""Seconds to wait for the old scheduler to stop after SIGTERM (on PostgreSQL: to step
        down) before killing it, when taking over. Example: ``c.NothingScheduler.takeover_timeout = 30``""",
    ).tag(config=True)
    lock_check_interval = Float(
        2.0,
        help="""Seconds between checks that this scheduler still holds the PostgreSQL lock and that no
        newer scheduler waits for it (it then stops). Unused with SQLite, whose file lock is taken
        over by signalling its owner. Example: ``c.NothingScheduler.lock_check_interval = 5``""",
    ).tag(config=True)

    tornado_settings = Dict(help="Extra tornado Application settings.").tag(config=True)
    upgrade_db = Bool(True, help="Upgrade the database schema to the newest revision at start.").tag(config=True)

    @property
    def max_gpus_per_node(self) -> int:
        return max((len(g) for g in self.inventory.values()), default=0)

    @property
    def max_cpus_per_node(self) -> int:
        return self.node_cpus

    def initialize(self, argv=None):
        # Everything the scheduler writes (database, control files, logs of its own) is its alone.
        os.umask(0o077)
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.update_config(self.cli_config)
        sys.setswitchinterval(self.gil_switch_interval)
        logging.getLogger("nothing").setLevel(self.log_level)
        logging.getLogger("nothing").handlers = self.log.handlers
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        self.supervised = supervisor_pid() is not None
        self.exit_status = 0
        self.take_lock()
        self.db = Database(self.db_url)
        revision = self.db.upgrade()
        self.log.info("Scheduler database at revision %s (%s)", revision, self.db.engine.url.render_as_string())
        self.gpu_mode_in_use, gpus = discover(self.gpu_mode, self.virtual_gpus, self.node_name, self.virtual_gpu_memory)
        self.inventory = {self.node_name: gpus}
        nodes = [Node(self.node_name, tuple(g.index for g in gpus), self.node_cpus, self.node_memory)]
        self.quotas = parse_quotas(self.quota_config)
        half_life = self.fairshare_half_life_hours * 3600
        policy = make_policy(self.policy, self.quotas, half_life, self.aging_hours * 3600)
        ledgers = [UsageLedger(half_life, self.quotas.period_seconds) for _ in range(2)]
        executor = load_executor(self.executor)(on_exit=None, parent=self)
        if isinstance(executor, LocalExecutor):
            _ = executor.cgroups  # found (and a missing hierarchy logged) once, at start
        self.accounts = UnixAccounts(parent=self)
        self.tensorboards = TensorBoardManager(parent=self)
        if not self.tensorboards.state_dir:
            self.tensorboards.state_dir = str(Path(self.data_dir) / "tensorboard")
        self.dispatcher = Dispatcher(
            self.db, executor, policy, nodes, Path(self.data_dir) / "runs", self.python,
            SnapshotLimits(self.max_unpacked_bytes), self.kill_grace_seconds, *ledgers, self.quotas,
            accounts=self.accounts,
        )
        self.dispatcher.runtime_python = self.runtime_python
        source = NvmlUtilization() if self.gpu_mode_in_use == "nvml" else NoUtilization()
        self.zombies = ZombieMonitor(self.dispatcher, source, parent=self)
        self.cluster_history = ClusterHistory(self.dispatcher, source, self.node_name, parent=self)
        self.tracker = Tracker(self.db, self.dispatcher, parent=self)
        self.tunings = TuningController(self, parent=self)
        self.batch = BatchController(self, parent=self)
        self.endpoints = EndpointController(self, parent=self)
        self.datasets = Datasets(self.data_dir, parent=self)
        self.datasets.files.prepare()
        self.local_push = LocalPush(self.datasets, self.accounts)
        self.models = Models(self.data_dir, parent=self)
        self.models.prepare()
        self.collector = HeapCollector(parent=self)

    def take_lock(self) -> None:
        """Own the data dir and database before touching either (see ``lock.py``); exit if that is refused."""
        self.lock = SchedulerLock(self.data_dir, self.db_url, supervisor_pid())
        try:
            self.lock.acquire(self.takeover, self.takeover_timeout)
        except LockHeld as e:
            self.log.critical("%s", e)
            self.exit(EXIT_DO_NOT_RESTART if self.supervised else 1)

    async def _watch_lock(self, stop: asyncio.Event) -> None:
        """Stop when the PostgreSQL lock was lost or a newer scheduler waits for it."""
        while not stop.is_set():
            await asyncio.sleep(self.lock_check_interval)
            reason = await asyncio.to_thread(self.lock.check)
            if reason:
                self.log.critical("Stopping: %s", reason)
                self.exit_status = EXIT_DO_NOT_RESTART if self.supervised else 1
                stop.set()

    def make_app(self) -> web.Application:
        prefix = self.service_prefix
        self.metrics = PrometheusMetrics(self)  # before the first pass, so that every pass is timed
        self.dispatcher.pass_done.append(self.metrics.pass_seconds.observe)
        handlers = [(prefix + pattern.lstrip("/"), handler) for pattern, handler in default_handlers]
        handlers += [
            (prefix + "oauth_callback", HubOAuthCallbackHandler),
        ]
        settings = dict(
            dispatcher=self.dispatcher,
            tensorboards=self.tensorboards,
            scheduler=self,
            service_prefix=prefix,
            cookie_secret=os.urandom(32),
            log_function=self._log_request,
            nothing_metrics=self.metrics,
            xsrf_cookie_kwargs={"samesite": "Lax"},
        )
        settings.update(self.tornado_settings)
        self.app_settings = settings
        return web.Application(handlers, **settings)

    def make_gateway_app(self, data_plane_secret: str = "") -> web.Application:
        """The inference gateway's own listener (``c.EndpointController.gateway_url``): only ``/serve/...``, with
        the same handler, tokens and routes as through the hub's proxy, one hop fewer.  Behind nginx (given the
        data plane's secret) it also answers nginx's route questions (``api/data_plane_routes.py``)."""
        from .api.data_plane_routes import default_handlers as route_handlers
        from .api.inference import default_handlers as serve_handlers

        handlers = list(serve_handlers) + (list(route_handlers) if data_plane_secret else [])
        return web.Application(handlers, **self.app_settings, data_plane_secret=data_plane_secret)

    async def listen_gateway(self) -> HTTPServer | None:
        """The Python gateway on ``gateway_url``; or, with the nginx data plane, on a loopback port only nginx
        uses, with nginx started on ``gateway_url`` in front of it."""
        controller = self.endpoints
        nginx = controller.wants_nginx()  # first: ``data_plane = "nginx"`` without a gateway_url is an error
        if not controller.gateway_url:
            return None
        secret = secrets.token_hex(32) if nginx else ""
        gateway = HTTPServer(self.make_gateway_app(secret), xheaders=True,
                             max_body_size=int(controller.max_request_bytes) + 1024**2)
        if not nginx:
            where = urlparse(controller.gateway_url)
            gateway.listen(where.port or 80, where.hostname or "127.0.0.1")
            self.log.info("Inference gateway listening on %s", controller.gateway_url)
            return gateway
        sockets = bind_sockets(0, "127.0.0.1")
        gateway.add_sockets(sockets)
        await controller.start_data_plane(sockets[0].getsockname()[1], secret)
        self.log.info("Inference gateway: nginx on %s, asking the service on 127.0.0.1:%s", controller.gateway_url,
                      sockets[0].getsockname()[1])
        return gateway

    def _log_request(self, handler):
        self.metrics.observe_request(handler)
        status = handler.get_status()
        # The "nothing" logger carries the configured level (traitlets' own logger
        # leaves filtering to its handler, so every debug record would be built).
        log = request_log
        if status >= 400:
            level = logging.WARNING
        elif log.isEnabledFor(logging.DEBUG):
            level = logging.DEBUG
        else:
            return  # the common case, on the submit hot path: nothing to format
        log.log(level, "%s %s %s %.1fms", status, handler.request.method, handler.request.path,
                1000 * handler.request.request_time())

    async def start_async(self) -> None:
        await self.tensorboards.stop_orphans()
        await self.dispatcher.start()
        self.collector.start()  # once the active runs are loaded: they are what it freezes
        if self.dispatcher.node_infos is not None:  # the engine's nodes, not this machine's
            self.inventory = {i.name: [Gpu(k, "", i.gpu_model or "GPU", 0) for k in range(i.gpus)]
                              for i in self.dispatcher.node_infos}
        self.zombies.start()
        self.cluster_history.start()
        await self.tracker.start()
        await self.tunings.start()
        await self.batch.start()
        await self.endpoints.start()
        url = urlparse(self.service_url)
        # A client that stops sending half-way through an upload does not hold its connection for ever.
        # 1 MiB reads: a streamed dataset upload costs a callback per MiB, not per 64 KiB.
        server = HTTPServer(self.make_app(), max_body_size=self.max_snapshot_bytes * 2 + 1024**2, xheaders=True,
                            body_timeout=300, chunk_size=1024**2)
        server.listen(url.port or 80, url.hostname or "127.0.0.1")
        gateway = await self.listen_gateway()
        await self.local_push.start()
        self.log.info("NothingAI scheduler %s listening on %s%s (%d GPUs, %s mode)", __version__, self.service_url,
                      self.service_prefix, sum(len(g) for g in self.inventory.values()), self.gpu_mode_in_use)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = asyncio.ensure_future(self._watch_lock(stop)) if self.lock.db_url else None
        await stop.wait()
        self.log.info("Stopping; runs keep going and are re-attached at the next start")
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        server.stop()
        await self.local_push.stop()
        if gateway is not None:
            gateway.stop()
        await self.zombies.stop()
        await self.cluster_history.stop()
        await self.tunings.stop()
        await self.batch.stop()
        await self.endpoints.stop()
        await self.tracker.stop()
        await self.dispatcher.stop()
        await self.tensorboards.stop_all()
        self.collector.stop()
        self.db.close()
        self.lock.release()

    def start(self):
        asyncio.run(self.start_async())
        if self.exit_status:
            self.exit(self.exit_status)


request_log = logging.getLogger("nothing.scheduler.requests")


def load_executor(name: str) -> type:
    """The executor class named by a ``nothing.executors`` entry point, or by a ``module:Class`` string."""
    from importlib import import_module
    from importlib.metadata import entry_points

    for entry in entry_points(group="nothing.executors"):
        if entry.name == name:
            return entry.load()
    module, sep, attr = name.partition(":")
    if not sep:
        known = ", ".join(sorted(e.name for e in entry_points(group="nothing.executors")))
        raise ValueError(f"unknown executor {name!r}; known: {known} (or give module:Class)")
    return getattr(import_module(module), attr)


def main(argv=None):
    app = NothingScheduler.instance()
    try:
        app.initialize(argv)
    except SystemExit as e:
        # A configuration error (traitlets exits with 1) fails the same way every time: not worth a restart.
        if e.code == 1 and supervisor_pid() is not None:
            sys.exit(EXIT_DO_NOT_RESTART)
        raise
    app.start()


if __name__ == "__main__":
    main()
