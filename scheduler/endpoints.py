"""The endpoint controller: keeps every stage resource served by its replicas, and the gateway's routes.

The database holds what is wanted (endpoints, stages, stage resources: ``endpoint_store``);
each pass compares it with what runs and acts, so a controller that was killed picks up
where it was from the rows and the replica runs alone:

- a stage resource gets ``replicas`` model-server runs (kind ``serving``, ``runtime_jobs``),
  queued and placed like any run, held and never preempted;
- a replica that answers ``/v2/health/ready`` joins the routes; a resource is ACTIVE when all
  of its replicas are;
- a replica whose model server ended (crashed, or failed to load) leaves its resource
  CREATE FAILED with the reason and the log's last lines, and is started again after an
  exponential back-off;
- a resource being deleted leaves the routes at once, its in-flight requests finish (at most
  ``drain_seconds``), then its replicas are stopped and its row removed; a stage or an
  endpoint being deleted goes when its last resource has.

Stage and endpoint states follow from their resources', named as in the seed.  The gateway
(``api/inference.py``) reads ``routes`` and never the database; so does nginx, the data plane on
``gateway_url`` (``data_plane.py``), through the answers of ``api/data_plane_routes.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
from traitlets import Enum, Float, Integer, Tuple, Unicode, validate
from traitlets.config import LoggingConfigurable

from . import endpoint_store as es
from . import serving_states as ss
from .data_plane import NginxDataPlane, free_port_in, upstream_for
from .dispatcher import RunNotActive, utcnow
from .orm import Endpoint, EndpointStage, Run, StageResource
from .runtime_jobs import submit_runtime_run
from .serving_stats import ServingStats
from .states import TERMINAL, RunState

log = logging.getLogger("nothing.endpoints")

REPLICA_TOKEN_FILE = "replica.token"  # in its source folder: the secret the model server checks
PORT_FILE = "serving.json"  # in the replica's run folder, written by model_server.py (``--port-file``)
LOG_TAIL_LINES = 20
IN_FLIGHT_PATH = "/nothing/in-flight"  # a replica's own count of requests it is answering (model_server.py)
# Past the cache's validity, before a drained replica's own in-flight count is trusted: nginx's cache counts
# whole seconds, and a request routed just before may still be on its way.
DRAIN_MARGIN_SECONDS = 2.0
CANCELLED_BY = "the endpoint controller"


@dataclass
class Replica:
    run_id: int
    url: str
    token: str = ""  # what its model server expects in X-Nothing-Replica
    in_flight: int = 0
    ready_since: float = 0.0


@dataclass
class Route:
    """One stage resource as the gateway sees it: where to send a request for its resource path."""

    resource_id: int
    stage_id: int
    model: str
    replicas: list[Replica] = field(default_factory=list)
    turn: int = 0

    def pick(self, exclude: set[int] = frozenset()) -> Replica | None:
        """The next ready replica, round robin, skipping ``exclude`` (ones that just failed)."""
        candidates = [r for r in self.replicas if r.run_id not in exclude]
        if not candidates:
            return None
        self.turn = (self.turn + 1) % len(candidates)
        return candidates[self.turn]


@dataclass
class EndpointRoutes:
    endpoint_id: int
    name: str
    owner: str
    group: str
    default_stage: str | None
    # stage name -> (stage id, resource path -> route)
    stages: dict[str, tuple[int, dict[str, Route]]] = field(default_factory=dict)


def backoff_seconds(failures: int, initial: float, most: float) -> float:
    return min(most, initial * 2 ** max(0, failures - 1))


def _read_port(run_dir: str) -> int | None:
    """The port a replica's model server wrote; never follows a link (the folder is its user's)."""
    try:
        fd = os.open(Path(run_dir) / PORT_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        port = json.loads(data)["port"]
    except (ValueError, KeyError, TypeError):
        return None
    return port if isinstance(port, int) and 1024 <= port <= 65535 else None


def _log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class EndpointController(LoggingConfigurable):
    interval = Float(
        0.5, help="""Seconds between passes over stage resources (replicas started, readiness checked, drained
        resources removed). Example: ``c.EndpointController.interval = 1``""",
    ).tag(config=True)
    ready_timeout = Float(
        300.0, help="""Seconds a started replica may take to answer ``/v2/health/ready`` before it counts as
        failed (a model that loads slowly needs more). Example: ``c.EndpointController.ready_timeout = 900``""",
    ).tag(config=True)
    backoff_initial = Float(
        1.0, help="Seconds before a crashed replica is started again the first time; doubled per failure in a row.",
    ).tag(config=True)
    backoff_max = Float(60.0, help="The longest wait before a crashed replica is started again.").tag(config=True)
    drain_seconds = Float(
        30.0, help="""Most seconds a removed stage resource's in-flight requests may take before its replicas
        are stopped (a default-stage change removes the old stage's resources this way).""",
    ).tag(config=True)
    stats_flush_seconds = Float(5.0, help="Seconds between writes of the stages' API statistics.").tag(config=True)
    request_timeout = Float(
        60.0, help="Seconds the gateway waits for a model server's answer before answering 504.",
    ).tag(config=True)
    gateway_url = Unicode(
        "", help="""Where the inference gateway also listens on its own (as the seed's API Gateway has a domain of its
        own), e.g. ``http://0.0.0.0:8010``: ``POST <gateway_url>/serve/ENDPOINT/PATH`` with the same tokens and
        rules as ``<hub>/services/nothing/serve/...``, without the hub's proxy in front. Empty: only through the
        hub's proxy. Example: ``c.EndpointController.gateway_url = "http://0.0.0.0:8010"``""",
    ).tag(config=True)
    max_request_bytes = Integer(
        64 * 1024 * 1024, help="Largest inference request body the gateway accepts (413 above).",
    ).tag(config=True)
    data_plane = Enum(
        ["auto", "nginx", "python"], "auto",
        help="""What carries inference calls on ``gateway_url``: ``nginx`` (nginx forwards to the replicas itself, asking this service once per client connection and ``route_cache_seconds`` where a call
        goes: see ``scheduler/data_plane.py``), ``python`` (this service's own gateway forwards every call) or
        ``auto`` (nginx when ``gateway_url`` is set and ``nginx`` is installed). Calls through the hub's proxy
        (``/services/nothing/serve/...``) always take the Python gateway.
        Example: ``c.EndpointController.data_plane = "nginx"``""",
    ).tag(config=True)

    route_cache_seconds = Integer(
        2, min=1, help="""Whole seconds nginx keeps the service's answer for a client connection (which replica,
        or a refusal): token revocations, permission and route changes reach calls on a kept-alive connection
        within this. A drained stage's replicas are stopped only after it. Example:
        ``c.EndpointController.route_cache_seconds = 5``""",
    ).tag(config=True)
    local_replica_ports = Tuple(
        Integer(), Integer(), default_value=(41000, 41255), help="""The ports (first, last) local replicas listen
        on under the nginx data plane: nginx's configuration declares a kept-alive upstream for each, once, so
        a new replica needs no reload. Replicas on other nodes (Slurm) are reached at ``host:port`` without
        keep-alive. Example: ``c.EndpointController.local_replica_ports = (42000, 42511)``""",
    ).tag(config=True)

    @validate("local_replica_ports")
    def _check_ports(self, proposal):
        low, high = proposal.value
        if not 1024 <= low <= high <= 65535 or high - low > 4095:
            raise ValueError(f"local_replica_ports must be (first, last) within 1024-65535, at most 4096 ports, "
                             f"not {proposal.value!r}")
        return proposal.value

    def __init__(self, scheduler, **kwargs):
        super().__init__(**kwargs)
        self.scheduler = scheduler
        self.dispatcher = scheduler.dispatcher
        self.db = scheduler.db
        self.routes: dict[str, EndpointRoutes] = {}
        self.stats = ServingStats()
        self._ready: dict[int, Replica] = {}  # replica run id -> ready replica
        self._failures: dict[int, int] = {}  # resource id -> failures in a row
        self._retry_at: dict[int, float] = {}  # resource id -> when a failed replica may start again
        self._seen_ended: set[int] = set()  # replica runs whose end was already handled
        # Replicas that ended before this controller started are history (their resource was judged then, or
        # they ended while the service was down and are simply started again): only later ends count as failures.
        self._started_at = utcnow()
        self._draining: dict[int, float] = {}  # resource id -> when it left the routes
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self.nginx: NginxDataPlane | None = None  # set by ``start_data_plane`` when nginx carries the calls
        self._port_turn = 0
        self._flush_task: asyncio.Task | None = None
        self.session: aiohttp.ClientSession | None = None
        self._secret = b""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        self._secret = await asyncio.to_thread(self._load_secret)
        # Replicas that ended while the service was down are judged by the first pass.
        self._loop_task = asyncio.ensure_future(self._loop())
        self._flush_task = asyncio.ensure_future(self._flush_loop())

    async def stop(self) -> None:
        for task in [self._loop_task, self._flush_task, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._loop_task, self._flush_task, *self._tasks] if t],
                             return_exceptions=True)
        if self.nginx is not None:
            await self.nginx.stop()
            self.stats.merge(await self.nginx.take_stats())
        await self._flush()
        if self.session is not None:
            await self.session.close()

    def _load_secret(self) -> bytes:
        path = Path(self.scheduler.data_dir) / "serving-secret"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            secret = os.urandom(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secret)
            return secret

    # ------------------------------------------------------------------ the nginx data plane
    def wants_nginx(self) -> bool:
        """Whether nginx carries the calls on ``gateway_url`` (``data_plane``); an error for ``nginx`` without one."""
        if self.data_plane == "nginx" and not self.gateway_url:
            raise ValueError("c.EndpointController.data_plane = 'nginx' needs c.EndpointController.gateway_url")
        if self.data_plane == "auto":
            return bool(self.gateway_url) and shutil.which("nginx") is not None
        return self.data_plane == "nginx"

    async def start_data_plane(self, python_port: int, secret: str) -> None:
        """nginx on ``gateway_url``, in front of the replicas, asking the service on ``python_port`` (loopback)."""
        where = urlparse(self.gateway_url)
        host = where.hostname or "127.0.0.1"
        listen = f"[{host}]:{where.port or 80}" if ":" in host else f"{host}:{where.port or 80}"
        self.nginx = NginxDataPlane(Path(self.scheduler.data_dir) / "nginx", dict(
            listen=listen, python_port=python_port, secret=secret, replica_ports=tuple(self.local_replica_ports),
            cache_seconds=self.route_cache_seconds, max_body_bytes=self.max_request_bytes,
            request_timeout=self.request_timeout), parent=self)
        await self.nginx.start()

    def upstream_of(self, replica: Replica) -> str | None:
        """What nginx forwards a replica's calls to (``data_plane.upstream_for``)."""
        return upstream_for(replica.url, tuple(self.local_replica_ports))

    def _local_port(self) -> int | None:
        """A free port of ``local_replica_ports`` for a new local replica, taken in turn (a restarted replica gets
        another one than its predecessor's); None when all are taken."""
        used = {int(r.url.rpartition(":")[2]) for r in self._ready.values()}
        port = free_port_in(tuple(self.local_replica_ports), used, self._port_turn)
        if port is not None:
            self._port_turn = port - self.local_replica_ports[0] + 1
        return port

    async def _in_flight_at_replicas(self, replicas: list[Replica]) -> int:
        """What the replicas themselves are answering (nginx's calls too); a replica that does not answer has
        nothing in flight."""
        async def one(replica: Replica) -> int:
            try:
                async with self.session.get(replica.url + IN_FLIGHT_PATH,  # type: ignore[union-attr]
                                            headers={"X-Nothing-Replica": replica.token},
                                            timeout=aiohttp.ClientTimeout(total=1.0)) as response:
                    return int((await response.json())["in_flight"]) if response.status == 200 else 0
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError, TypeError):
                return 0

        return sum(await asyncio.gather(*[one(r) for r in replicas]))

    def replica_token(self, client_key: str) -> str:
        """The secret a replica's model server expects in ``X-Nothing-Replica``: only the gateway and the
        replica's own account know it, so no other local user can call the model server directly."""
        return hmac.new(self._secret, client_key.encode(), hashlib.sha256).hexdigest()

    def wake(self) -> None:
        self._wake.set()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the controller must outlive any one endpoint
                log.exception("Endpoint pass failed; retrying at the next pass")
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_flush_seconds)
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("Could not store endpoint statistics; kept for the next flush")

    async def _flush(self) -> None:
        if self.nginx is not None:
            self.stats.merge(await self.nginx.take_stats())
        taken = self.stats.drain()
        if not taken:
            return

        def write(session):
            for stage_id, minute, counts in taken:
                es.add_stats(session, stage_id, minute, counts.requests, counts.errors, counts.buckets)

        try:
            await self.db.run(write)
        except Exception:
            for stage_id, minute, counts in taken:  # back into the next flush
                pending = self.stats.pending.setdefault((stage_id, minute), counts)
                if pending is not counts:
                    pending.requests += counts.requests
                    pending.errors += counts.errors
                    pending.buckets = [a + b for a, b in zip(pending.buckets, counts.buckets)]
            raise

    # ------------------------------------------------------------------ the pass
    async def reconcile(self) -> None:
        async with self._lock:
            await self._reconcile()

    async def _reconcile(self) -> None:
        endpoints = await self.db.run(es.list_endpoints)
        resources = [r for e in endpoints for s in e.stages for r in s.resources]
        models = await self.db.run(es.models_by_id, sorted({r.model_id for r in resources}))
        runs, counts = await self.db.run(es.replica_runs, [r.id for r in resources], self._started_at)
        now, at = time.monotonic(), utcnow()
        routes: dict[str, EndpointRoutes] = {}
        for endpoint in endpoints:
            default = next((s.name for s in endpoint.stages if s.id == endpoint.default_stage_id), None)
            table = EndpointRoutes(endpoint.id, endpoint.name, endpoint.owner, endpoint.group, default)
            for stage in endpoint.stages:
                paths: dict[str, Route] = {}
                for resource in stage.resources:
                    route = await self._reconcile_resource(endpoint, stage, resource, models.get(resource.model_id),
                                                           runs.get(resource.id, []), counts.get(resource.id, 0),
                                                           now, at)
                    if route is not None:
                        paths[resource.resource_path] = route
                table.stages[stage.name] = (stage.id, paths)
            routes[endpoint.name] = table
        self._carry_turns(routes)
        self.routes = routes
        await self._settle_states(endpoints, at)

    def _carry_turns(self, routes: dict[str, EndpointRoutes]) -> None:
        """Keep in-flight counts and round-robin turns across passes (replicas are the same objects)."""
        for name, table in routes.items():
            old = self.routes.get(name)
            if old is None:
                continue
            for stage, (_, paths) in table.stages.items():
                old_paths = old.stages.get(stage, (0, {}))[1]
                for path, route in paths.items():
                    if path in old_paths:
                        route.turn = old_paths[path].turn

    async def _reconcile_resource(self, endpoint: Endpoint, stage: EndpointStage, resource: StageResource,
                                  model, replica_runs: list[Run], submitted: int, now: float, at) -> Route | None:
        # Runs between the two (out of ``active``, their end not committed yet) are judged at the next pass.
        live = [r for r in replica_runs if r.state not in TERMINAL and r.id in self.dispatcher.active]
        ended = [r for r in replica_runs if r.state in TERMINAL]
        deleting = ss.DELETE_IN_PROGRESS in (resource.state, stage.state, endpoint.state)
        if deleting:
            await self._drain(resource, live, now)
            return None
        if model is None:
            await self._set(StageResource, resource, ss.CREATE_FAILED, f"model {resource.model_id} is gone", at)
            return None
        for run in ended:
            if run.id in self._seen_ended:
                continue
            self._seen_ended.add(run.id)
            self._ready.pop(run.id, None)
            if run.state == RunState.STOPPED and CANCELLED_BY in (run.reason or ""):
                continue  # ours: a scale-down or a drain
            await self._replica_failed(resource, run, f"replica run {run.id} ended: {run.state.value}"
                                                      f"{' (' + run.reason + ')' if run.reason else ''}", at, now)
        # Too many (replicas lowered): stop the newest.
        for run in live[resource.replicas:]:
            self._cancel(run.id)
        live = live[:resource.replicas]
        ready: list[Replica] = []
        for run in live:
            replica = await self._check_ready(resource, run, now, at)
            if replica is not None:
                ready.append(replica)
        missing = resource.replicas - len(live)
        if missing > 0 and now >= self._retry_at.get(resource.id, 0.0):
            for k in range(missing):
                await self._start_replica(endpoint, resource, model, submitted + k, at)
        if len(ready) == resource.replicas:
            self._failures.pop(resource.id, None)
            await self._set(StageResource, resource, ss.ACTIVE, f"{len(ready)}/{resource.replicas} replicas ready", at)
        elif resource.state != ss.CREATE_FAILED or (missing <= 0 and ready):
            waiting = f"{len(ready)}/{resource.replicas} replicas ready"
            await self._set(StageResource, resource, ss.CREATE_IN_PROGRESS, waiting, at)
        return Route(resource.id, stage.id, model.name, ready) if ready else None

    async def _check_ready(self, resource: StageResource, run: Run, now: float, at) -> Replica | None:
        replica = self._ready.get(run.id)
        if replica is not None:
            return replica
        active = self.dispatcher.active.get(run.id)
        if active is None or active.state != RunState.RUNNING:
            return None
        port = await asyncio.to_thread(_read_port, run.run_dir)
        started = active.started_at.timestamp() if active.started_at else time.time()
        if port is not None:
            url = f"http://{self._host_of(active)}:{port}"
            token = self.replica_token(run.client_key or "")
            try:
                async with self.session.get(f"{url}/v2/health/ready",  # type: ignore[union-attr]
                                            headers={"X-Nothing-Replica": token},
                                            timeout=aiohttp.ClientTimeout(total=1.0)) as response:
                    if response.status == 200:
                        replica = self._ready[run.id] = Replica(run.id, url, token, ready_since=now)
                        return replica
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
        if time.time() - started > self.ready_timeout:
            self._cancel(run.id)
            await self._replica_failed(resource, run, f"replica run {run.id} was not ready after "
                                                      f"{self.ready_timeout:.0f}s", at, now)
        return None

    def _host_of(self, run) -> str:
        """Where a replica listens: its node's address (this machine for local runs)."""
        return self.dispatcher.executor.node_address(run.node or "")

    async def _start_replica(self, endpoint: Endpoint, resource: StageResource, model, count: int, at) -> None:
        client_key = f"serving:{resource.id}:{count}"
        args = ["--name", model.name, "--framework", model.framework, "--format", model.artifact_format,
                "--port-file", f"../{PORT_FILE}"]
        if self.dispatcher.executor.listens_beyond_loopback:  # reached from this machine: the replica secret guards it
            args += ["--host", "0.0.0.0"]
        elif self.nginx is not None and (port := self._local_port()) is not None:
            args += ["--port", str(port)]  # one of nginx's declared upstreams: kept-alive connections to it
        try:
            await submit_runtime_run(
                self.scheduler, owner=endpoint.owner, owner_groups=[endpoint.group] if endpoint.group else [],
                group=endpoint.group, kind=ss.KIND_SERVING, parent_id=resource.id, client_key=client_key,
                name=f"{endpoint.name}-r{resource.id}"[:100], entry_point="model_server.py", args=args, model=model,
                gpus=resource.gpus, cpus=resource.cpus, memory_bytes=resource.memory_bytes,
                files={REPLICA_TOKEN_FILE: self.replica_token(client_key).encode()})
        except Exception as e:  # noqa: BLE001 - SpecError, StorageQuotaExceeded, snapshot: the reason is shown
            log.warning("Stage resource %s: could not start a replica: %s", resource.id, e)
            self._retry_at[resource.id] = time.monotonic() + self.backoff_max
            await self._set(StageResource, resource, ss.CREATE_FAILED, f"a replica could not be started: {e}", at)

    async def _replica_failed(self, resource: StageResource, run: Run, reason: str, at, now: float) -> None:
        failures = self._failures[resource.id] = self._failures.get(resource.id, 0) + 1
        wait = backoff_seconds(failures, self.backoff_initial, self.backoff_max)
        self._retry_at[resource.id] = now + wait
        tail = await asyncio.to_thread(_log_tail, run.log_path)
        log.warning("Stage resource %s: %s; starting again in %.0fs", resource.id, reason, wait)
        await self.db.run(partial(es.set_state, restarts=resource.restarts + 1, last_failure_log=tail),
                          StageResource, resource.id, ss.CREATE_FAILED, f"{reason}; started again in {wait:.0f}s", at)
        resource.state, resource.restarts = ss.CREATE_FAILED, resource.restarts + 1

    def _cancel(self, run_id: int) -> None:
        async def cancel():
            try:
                await self.dispatcher.cancel(run_id, CANCELLED_BY)
            except RunNotActive:
                pass

        self._spawn(cancel())

    async def _drain(self, resource: StageResource, live: list[Run], now: float) -> None:
        """Out of the routes already; stop its replicas once nothing is in flight, then remove the row.

        Under nginx, calls may still be routed to them from its cache for ``route_cache_seconds``: they are
        stopped only after that, once the replicas themselves count nothing in flight."""
        left = self._draining.setdefault(resource.id, now)
        replicas = [r for run in live if (r := self._ready.get(run.id)) is not None]
        if now - left < self.drain_seconds:
            if self.nginx is not None and now - left < self.route_cache_seconds + DRAIN_MARGIN_SECONDS:
                return
            busy = sum(r.in_flight for r in replicas)
            if not busy and self.nginx is not None:
                busy = await self._in_flight_at_replicas(replicas)
            if busy:
                return
        for run in live:
            self._cancel(run.id)
        if not live:
            self._draining.pop(resource.id, None)
            await self.db.run(es.delete_row, StageResource, resource.id)

    async def _set(self, table, row, state: str, reason: str, at) -> None:
        if (row.state, row.reason) == (state, reason):
            return
        await self.db.run(es.set_state, table, row.id, state, reason, at)
        row.state, row.reason = state, reason

    async def _settle_states(self, endpoints: list[Endpoint], at) -> None:
        """Stages' and endpoints' states from their resources'; deleted ones go once empty."""
        for endpoint in endpoints:
            for stage in endpoint.stages:
                live = [r for r in stage.resources]
                if stage.state == ss.DELETE_IN_PROGRESS or endpoint.state == ss.DELETE_IN_PROGRESS:
                    if not await self.db.run(_stage_has_resources, stage.id):
                        await self.db.run(es.delete_stage, stage.id)
                    continue
                await self._set(EndpointStage, stage, *stage_state(stage.state, [r.state for r in live]), at)
            if endpoint.state == ss.DELETE_IN_PROGRESS:
                if not await self.db.run(_endpoint_has_stages, endpoint.id):
                    await self.db.run(es.delete_endpoint, endpoint.id)
                continue
            default = next((s for s in endpoint.stages if s.id == endpoint.default_stage_id), None)
            await self._set(Endpoint, endpoint, *endpoint_state(endpoint.state, default,
                                                                [s for s in endpoint.stages if s is not default]), at)

    # ------------------------------------------------------------------ entry points of the API
    async def switch_default(self, endpoint_id: int, stage_id: int) -> None:
        """Make ``stage_id`` the default: new requests go there at once, and the old default's resources are
        removed once their in-flight requests are done (as in the seed)."""
        async with self._lock:
            at = utcnow()
            endpoint = await self.db.run(es.get_endpoint, endpoint_id)
            old = endpoint.default_stage_id

            def write(session):
                es.set_default_stage(session, endpoint_id, stage_id, at)
                for resource in session.query(StageResource).filter(StageResource.stage_id == old):
                    es.set_state(session, StageResource, resource.id, ss.DELETE_IN_PROGRESS,
                                 "the endpoint's default stage changed", at)

            await self.db.run(write)
            table = self.routes.get(endpoint.name)
            if table is not None:
                new = next((s.name for s in endpoint.stages if s.id == stage_id), None)
                old_name = next((s.name for s in endpoint.stages if s.id == old), None)
                table.default_stage = new
                if old_name in table.stages:  # out of the routes now; its in-flight requests drain
                    table.stages[old_name] = (table.stages[old_name][0], {})
        self.wake()


def _stage_has_resources(session, stage_id: int) -> bool:
    return session.query(StageResource.id).filter(StageResource.stage_id == stage_id).first() is not None


def _endpoint_has_stages(session, endpoint_id: int) -> bool:
    return session.query(EndpointStage.id).filter(EndpointStage.endpoint_id == endpoint_id).first() is not None


def stage_state(current: str, resource_states: list[str]) -> tuple[str, str]:
    """A stage's state from its resources' (the seed's names); a stage that was never ACTIVE is still creating."""
    never_active = current in (ss.CREATE_REQUESTED, ss.CREATE_IN_PROGRESS, ss.CREATE_FAILED)
    if not resource_states:
        return ss.ACTIVE, "no stage resources"
    if any(s == ss.CREATE_FAILED for s in resource_states):
        return ss.DEPLOY_FAILED, "a stage resource's model server failed (see the stage resources)"
    if all(s == ss.ACTIVE for s in resource_states):
        return ss.ACTIVE, "every stage resource is serving"
    if never_active:
        return ss.CREATE_IN_PROGRESS, "starting its model servers"
    return ss.DEPLOY_IN_PROGRESS, "deploying a stage resource"


def endpoint_state(current: str, default: EndpointStage | None, others: list[EndpointStage]) -> tuple[str, str]:
    never_active = current in (ss.CREATE_REQUESTED, ss.CREATE_IN_PROGRESS, ss.CREATE_FAILED)
    failed = [s.name for s in [default, *others] if s is not None and s.state in (ss.DEPLOY_FAILED, ss.CREATE_FAILED)]
    if default is None:
        return ss.UPDATE_FAILED, "the endpoint has no default stage"
    if never_active:
        if failed:
            return ss.CREATE_FAILED, f"stage {failed[0]} failed: delete the endpoint and create it again, or wait " \
                                     "for its model server's restart"
        if default.state != ss.ACTIVE:
            return ss.CREATE_IN_PROGRESS, "its default stage is starting"
    if failed:
        return ss.UPDATE_FAILED, f"stage {', '.join(failed)} is not serving properly"
    busy = [s.name for s in [default, *others] if s.state != ss.ACTIVE]
    if busy:
        return ss.UPDATE_IN_PROGRESS, f"stage {', '.join(busy)} is being deployed"
    return ss.ACTIVE, "serving"
