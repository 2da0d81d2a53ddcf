"""Runs as Kubernetes Jobs, placed exactly on the node(s) our policy chose.

Our scheduler keeps the queue, the fair share, the quotas and the placement; Kubernetes only
launches.  Every start creates, from the pure builders of :mod:`.kube_objects`, a Secret with the
run's snapshot token, the run's Job (an Indexed Job, one pod per node, for several nodes) and, for
several nodes, the headless Service the ranks meet through.  Creation is idempotent: a Job that
already exists with this run's labels (a restart between "created" and "stored") is adopted, never
created twice.

One list-and-watch of the scheduler's Jobs and one of their pods (label selector of this
scheduler's scope) keep a cache: the Job's conditions say when a run ended, its pods say how (the
failing rank's container exit code, ``OOMKilled``, a disruption) and why a run waits (the pod's
``PodScheduled`` message).  A watch that expires (410 Gone) or breaks is resumed from a fresh list,
with the one back-off rule.  Cancel, max-time and preemption delete the Job with
``propagationPolicy=Foreground``: every pod gets SIGTERM and ``terminationGracePeriodSeconds``
before SIGKILL; our own SIGKILL after the dispatcher's grace deletes the pods at once.  The pods'
logs (one per rank) are copied into the run's ``output.log`` as they are written, each line
prefixed with its rank when there are several.  After a restart the executor re-attaches by the
Job name stored in the run's reference; a Job that ended meanwhile reports how it ended.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Integer, List, TraitError, Unicode, validate

from ...common.backoff import Backoff
from ..runenv import RunLaunch, RunPaths, build_environment, entry_argv
from .base import Executor, ExitStatus, NodeInfo
from .kube_api import KubeApi, KubeApiError
from .kube_logs import follow_pod_log
from .kube_objects import (CONTAINER, FETCH_CONTAINER, JOB_NAME_LABEL, POD_ROOT, POD_SOURCE, KubeRunOptions,
                           job_manifest, label_value, owner_reference, secret_manifest, service_manifest,
                           snapshot_token)
from .kube_status import first_failure, job_status, parse_nodes, pending_message, pod_exit, pod_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubeJobRef:
    """A run's Job, stored as ``namespace/name``."""

    namespace: str
    name: str
    run_id: int = 0


@dataclass(frozen=True)
class KubeExitStatus(ExitStatus):
    """An exit with the rank it came from (``where``) and, where the base words do not fit, our own."""

    where: str = ""
    detail: str = ""

    def describe(self) -> str:
        text = self.detail or super().describe()
        return f"{self.where}: {text}" if self.where else text


@dataclass(frozen=True)
class KubeNodeInfo(NodeInfo):
    """A node with its GPUs' memory (``nvidia.com/gpu.memory``, from GPU feature discovery)."""

    gpu_memory_bytes: int = 0


@dataclass(frozen=True)
class RunShape:
    nodes: tuple[str, ...]
    gpus_per_node: int
    procs_per_node: int = 1
    torchrun: bool = False


def run_shape(launch: RunLaunch) -> RunShape:
    """The nodes and per-node shape of a launch: the multi-node fields where the launch has them
    (``nodes`` as the chosen node names, ``gpus_per_node``, ``procs_per_node``, ``torchrun``), else one
    node with the launch's GPUs."""
    nodes = getattr(launch, "nodes", None)
    if isinstance(nodes, (tuple, list)) and nodes and all(isinstance(n, str) for n in nodes):
        names = tuple(nodes)
    else:
        names = tuple(n for n in launch.node.split(",") if n)
    gpus = getattr(launch, "gpus_per_node", 0) or len(launch.gpus)
    return RunShape(names, gpus, getattr(launch, "procs_per_node", None) or 1, bool(getattr(launch, "torchrun", False)))


class KubernetesExecutor(Executor):
    namespace = Unicode("default", help="""Namespace of the runs' Jobs, Services and Secrets.

        Example: ``c.KubernetesExecutor.namespace = "nothing-runs"``""").tag(config=True)

    image = Unicode("", help="""Container image every run's program runs in (it needs ``python3``).

        Example: ``c.KubernetesExecutor.image = "nothingai/notebook:pytorch-gpu"``""").tag(config=True)

    fetch_image = Unicode("", help="""Image of the init container that fetches the code (needs ``python3`` >= 3.11.4);
        empty: the run's image. Example: ``"python:3.12-slim"``""").tag(config=True)

    python = Unicode("python3", help="The Python of the image (runs the entry point and the launcher).").tag(
        config=True)

    serving_image = Unicode("", help="""Container image the model servers of endpoints run in (the serving runtime:
        ``python`` with KServe and the model frameworks, as ``.venv/serving`` holds them elsewhere); each stage
        resource becomes a Deployment of it (``kube_serving``). Empty: endpoints cannot be served on Kubernetes.
        Example: ``c.KubernetesExecutor.serving_image = "nothingai/serving:kserve-0.21"``""").tag(config=True)

    service_account = Unicode("", help="""Service account of the runs' pods (empty: the namespace's default).
        Its API token is not mounted either way. Example: ``"nothing-run"``""").tag(config=True)

    image_pull_secrets = List(Unicode(), help="""Secrets to pull the images with, e.g. ``["registry-creds"]``.""").tag(
        config=True)

    api_url = Unicode("", help="""URL of the Kubernetes API server; empty: the cluster the scheduler runs in
        (its pod's service account, $KUBERNETES_SERVICE_HOST). Example: ``"https://10.0.0.1:6443"``""").tag(config=True)

    api_token_file = Unicode("", help="""File holding the bearer token for ``api_url`` (re-read every minute).
        Example: ``"/etc/nothing/kube-token"``""").tag(config=True)

    api_ca_file = Unicode("", help="""CA bundle that signed the API server's certificate (with ``api_url``).
        Example: ``"/etc/nothing/kube-ca.crt"``""").tag(config=True)

    api_verify = Bool(True, help="Check the API server's certificate (turn off on a throw-away test cluster only).").tag(
        config=True)

    snapshot_url = Unicode("", help="""URL the runs' init containers fetch the code snapshot from, ``{run_id}``
        replaced; it must reach the scheduler from the pods. Example:
        ``"http://nothing-scheduler.nothing.svc:10101/services/nothing/api/runs/{run_id}/snapshot"``""").tag(
        config=True)

    snapshot_key_file = Unicode("", help="""File with the key the per-run snapshot tokens are derived from (0600,
        made on first use); empty: ``kube-snapshot.key`` in the scheduler's control folder.""").tag(config=True)

    output_claim = Unicode("", help="""PersistentVolumeClaim that holds the scheduler's data folder (ReadWriteMany):
        each run's pod mounts only ``runs/<id>`` of it as its folder, so models, checkpoints and TensorBoard events
        reach the scheduler. Empty: an ``emptyDir`` (outputs live as long as the pod; only logs come back).
        Example: ``c.KubernetesExecutor.output_claim = "nothing-data"``""").tag(config=True)

    queue_name = Unicode("", help="""Kueue LocalQueue of the runs (label ``kueue.x-k8s.io/queue-name``), for
        clusters where Kueue admits workloads; empty: no label. Example: ``"team-ml"``""").tag(config=True)

    default_uid = Integer(1000, help="""Account the pods run as when runs have no Unix account of their own
        (user accounts are off). Never 0: pods run as non-root.""").tag(config=True)

    default_gid = Integer(1000, help="Group of ``default_uid``.").tag(config=True)

    extra_env = Dict(Unicode(), help="""Variables every run gets (the scheduler's own environment is never passed).
        Example: ``{"HF_HOME": "/run/nothing/run/.cache/huggingface"}``""").tag(config=True)

    termination_grace_seconds = Integer(30, help="""Seconds a pod has between SIGTERM and SIGKILL when its run is
        stopped (``terminationGracePeriodSeconds``).""").tag(config=True)

    deadline_margin_seconds = Integer(60, help="""The Job's ``activeDeadlineSeconds`` is the run's max time plus this:
        our own timer stops the run at its max time, the cluster's is the backstop.""").tag(config=True)

    ttl_seconds_after_finished = Integer(86400, help="""Seconds a finished Job (and its pods and logs) is kept.
        Keep it longer than the scheduler may be down: a Job removed meanwhile can only be reported lost.""").tag(
        config=True)

    master_port = Integer(29500, help="Rendezvous port of multi-node runs (MASTER_PORT, the Service's port).").tag(
        config=True)

    node_selector = Unicode("", help="""Label selector of the nodes the runs may use (the inventory lists only these).
        Example: ``"nvidia.com/gpu.present=true"``""").tag(config=True)

    watch_timeout_seconds = Integer(300, help="Seconds one watch request lasts before it is renewed.").tag(config=True)

    job_scope = Unicode(help="Prefix of the Job names, so two schedulers on one cluster never mix their jobs.").tag(
        config=True)

    @validate("default_uid")
    def _non_root(self, proposal):
        if proposal["value"] <= 0:
            raise TraitError("KubernetesExecutor.default_uid must not be root (0): pods run as non-root")
        return proposal["value"]

    def __init__(self, on_exit, api: Any = None, **kwargs):
        super().__init__(on_exit, **kwargs)
        self._api = api
        self._key: bytes | None = None
        self._control_dir: Path | None = None
        self._jobs: dict[str, dict] = {}
        self._pods: dict[str, dict[str, dict]] = {}
        self._waiting: dict[str, asyncio.Future] = {}
        self._paths: dict[str, RunPaths] = {}
        self._stopping: dict[str, int] = {}
        self._streams: list[asyncio.Task] = []
        self._tasks: set[asyncio.Task] = set()
        self._followers: dict[str, asyncio.Task] = {}
        self._listed = asyncio.Event()

    @property
    def reads_inputs(self) -> bool:
        """Pods get their code from the service, not a shared folder: no dataset or model reaches them yet."""
        return False

    # ------------------------------------------------------------------ configuration
    @property
    def api(self) -> KubeApi:
        if self._api is None:
            kwargs = dict(verify=self.api_verify)
            if self.api_url:
                self._api = KubeApi(self.api_url, token_file=self.api_token_file, ca_file=self.api_ca_file, **kwargs)
            else:
                self._api = KubeApi.in_cluster(**kwargs)
        return self._api

    def set_scope(self, data_dir: str) -> None:
        if not self.job_scope:
            self.job_scope = "nothing-" + hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:8]
        self._control_dir = Path(data_dir).parent / "control"

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/managed-by=nothingai,nothing/scope={label_value(self.job_scope or 'nothing')}"

    def job_name(self, run_id: int) -> str:
        return f"{self.job_scope or 'nothing'}-{run_id}"

    def ref_text(self, ref: KubeJobRef) -> str:
        return f"{ref.namespace}/{ref.name}"

    def parse_ref(self, run_id: int, text: str | None) -> KubeJobRef | None:
        namespace, _, name = (text or "").partition("/")
        return KubeJobRef(namespace, name, run_id) if namespace and name else None

    def snapshot_key(self) -> bytes:
        """The key of the snapshot tokens, made (32 random bytes, 0600) the first time."""
        if self._key is None:
            path = Path(self.snapshot_key_file) if self.snapshot_key_file else \
                (self._control_dir or Path(".")) / "kube-snapshot.key"
            try:
                self._key = path.read_bytes()
            except FileNotFoundError:
                key = secrets.token_bytes(32)
                temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(key)
                try:
                    os.link(temporary, path)  # whole or not at all; the first of two racing makers wins
                except FileExistsError:
                    pass
                finally:
                    temporary.unlink()
                self._key = path.read_bytes()
        return self._key

    def options(self, launch: RunLaunch, paths: RunPaths, has_requirements: bool) -> KubeRunOptions:
        """The run's :class:`KubeRunOptions` from its launch and this executor's settings."""
        shape = run_shape(launch)
        pod_paths = RunPaths(Path(POD_ROOT))
        env = build_environment(dict(self.extra_env), launch, pod_paths, has_requirements)
        env.pop("CUDA_VISIBLE_DEVICES", None)  # the device plugin sets it to the GPUs it gives the pod
        if has_requirements:
            env["NOTHING_REQUIREMENTS"] = f"{POD_SOURCE}/requirements.txt"
            env["NOTHING_PACKAGES_DIR"] = str(pod_paths.packages)
        uid = launch.uid if launch.uid else self.default_uid
        gid = launch.gid if launch.uid else self.default_gid
        return KubeRunOptions(
            name=self.job_name(launch.run_id), namespace=self.namespace, run_id=launch.run_id, owner=launch.owner,
            image=self.image, program=tuple(entry_argv(self.python, launch)),
            snapshot_url=self.snapshot_url.replace("{run_id}", str(launch.run_id)), uid=uid, gid=gid,
            nodes=shape.nodes, env=env, gpus_per_node=shape.gpus_per_node, procs_per_node=shape.procs_per_node,
            torchrun=shape.torchrun, python=self.python, cpus=launch.cpus, memory_bytes=launch.memory_bytes,
            deadline_seconds=launch.max_seconds + self.deadline_margin_seconds if launch.max_seconds else None,
            termination_grace_seconds=self.termination_grace_seconds,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished, service_account=self.service_account,
            fetch_image=self.fetch_image, output_claim=self.output_claim, queue_name=self.queue_name,
            scope=self.job_scope, master_port=self.master_port, image_pull_secrets=tuple(self.image_pull_secrets))

    # ------------------------------------------------------------------ paths of the API
    def _jobs_path(self, name: str = "") -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/jobs" + (f"/{name}" if name else "")

    def _core_path(self, kind: str, name: str = "", namespace: str = "") -> str:
        return f"/api/v1/namespaces/{namespace or self.namespace}/{kind}" + (f"/{name}" if name else "")

    # ------------------------------------------------------------------ the primitives
    async def _start(self, launch: RunLaunch, paths: RunPaths, python: str):
        if not self.snapshot_url:
            raise ValueError("c.KubernetesExecutor.snapshot_url is not set: pods could not fetch the run's code")
        has_requirements = await asyncio.to_thread((paths.source / "requirements.txt").is_file)
        options = self.options(launch, paths, has_requirements)
        token = snapshot_token(await asyncio.to_thread(self.snapshot_key), launch.run_id)
        job = await self._create_objects(options, token)
        ref = KubeJobRef(self.namespace, options.name, launch.run_id)
        self._jobs[ref.name] = job
        log.info("Run %s is Kubernetes Job %s on %s", launch.run_id, self.ref_text(ref), ",".join(options.nodes))
        return ref, ref

    async def _create_objects(self, options: KubeRunOptions, token: str) -> dict:
        """Secret, Job, Service; each one that exists already is taken as made by an earlier try."""
        secret = secret_manifest(options, token)
        await self._create(self._core_path("secrets"), secret, adopt=False)
        job = await self._create(self._jobs_path(), job_manifest(options), adopt=True)
        owner = owner_reference(job)
        service = service_manifest(options, owner)
        if service is not None:
            await self._create(self._core_path("services"), service, adopt=False)
        try:  # the Secret goes with the Job
            await self.api.request("PATCH", self._core_path("secrets", options.secret_name),
                                   body={"metadata": {"ownerReferences": [owner]}},
                                   content_type="application/merge-patch+json")
        except KubeApiError as e:
            log.warning("Could not tie Secret %s to its Job (it stays after the Job): %s", options.secret_name, e)
        return job

    async def _create(self, collection: str, manifest: dict, adopt: bool) -> dict:
        name = manifest["metadata"]["name"]
        try:
            return await self.api.request("POST", collection, body=manifest)
        except KubeApiError as e:
            if e.status != 409:
                raise
        existing = await self.api.request("GET", f"{collection}/{name}")
        ours = manifest["metadata"]["labels"]
        theirs = (existing.get("metadata") or {}).get("labels") or {}
        if any(theirs.get(k) != ours[k] for k in ("nothing/run-id", "nothing/scope") if k in ours):
            raise RuntimeError(f"{manifest['kind']} {name} already exists and is not this run's")
        if adopt:
            log.info("%s %s already existed (an earlier start of this run): adopted", manifest["kind"], name)
        return existing

    async def _wait(self, ref: KubeJobRef, paths: RunPaths) -> ExitStatus:
        future = self._waiting.get(ref.name)
        if future is None or future.done():
            future = self._waiting[ref.name] = asyncio.get_running_loop().create_future()
        self._paths[ref.name] = paths
        self._ensure_watchers()
        for pod in list(self._pods.get(ref.name, {}).values()):
            self._maybe_follow(ref.name, pod)
        return await future

    def reattach(self, run_id: int, ref, paths: RunPaths) -> None:
        if ref is None:
            self._watch(run_id, self._lost())
        else:
            self._watch(run_id, self._wait(ref, paths))

    async def _lost(self) -> ExitStatus:
        return ExitStatus("lost", None)

    async def _alive(self, ref: KubeJobRef) -> bool:
        job = self._jobs.get(ref.name)
        if job is None or not self._listed.is_set():
            try:
                job = await self.api.request("GET", self._jobs_path(ref.name))
            except KubeApiError as e:
                if e.status == 404:
                    return False
                raise
        return not job_status(job).finished

    async def _signal(self, ref: KubeJobRef, sig: int) -> None:
        """Any stop deletes the Job (Foreground: its pods first, each with its grace period); SIGKILL also
        deletes the pods at once.  Other signals cannot be delivered to a pod and are dropped."""
        if sig not in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
            log.warning("Job %s: signal %s cannot be sent to pods; ignored", ref.name, sig)
            return
        self._stopping[ref.name] = signal.SIGKILL if sig == signal.SIGKILL else signal.SIGTERM
        await self._delete(self._jobs_path(ref.name), {"propagationPolicy": "Foreground"})
        if sig == signal.SIGKILL:
            await self._delete(self._core_path("pods"), {"labelSelector": f"{JOB_NAME_LABEL}={ref.name}",
                                                         "gracePeriodSeconds": "0"})

    async def _delete(self, path: str, params: dict) -> bool:
        try:
            await self.api.request("DELETE", path, params=params)
            return True
        except KubeApiError as e:
            if e.status == 404:
                return False
            raise

    async def recover(self, run_id: int, paths: RunPaths) -> KubeJobRef | None:
        """The run's Job if it exists, ended or not: a Job that ended is reported, never started again."""
        name = self.job_name(run_id)
        try:
            job = await self.api.request("GET", self._jobs_path(name))
        except KubeApiError as e:
            if e.status == 404:
                return None
            raise
        if ((job.get("metadata") or {}).get("labels") or {}).get("nothing/run-id") != str(run_id):
            return None
        return KubeJobRef(self.namespace, name, run_id)

    async def leftovers(self, run_id: int) -> bool:
        killed = await self._delete(self._jobs_path(self.job_name(run_id)), {"propagationPolicy": "Foreground"})
        await self._delete(self._core_path("secrets", self.job_name(run_id) + "-snapshot"), {})
        return killed

    async def inventory(self) -> list[NodeInfo]:
        nodes = await self.api.request("GET", "/api/v1/nodes", params={"labelSelector": self.node_selector or None})
        return [KubeNodeInfo(n.name, n.gpus, n.cpus, n.memory_bytes, n.state, n.gpu_model, n.reason,
                             gpu_memory_bytes=n.gpu_memory_bytes) for n in parse_nodes(nodes)]

    def pending_reason(self, ref: KubeJobRef) -> str:
        """The cluster's reason while it has not started the run's pods, else ""."""
        job = self._jobs.get(ref.name)
        if job is not None and job_status(job).suspended:
            queue = ((job.get("metadata") or {}).get("labels") or {}).get("kueue.x-k8s.io/queue-name")
            return f"suspended until Kueue admits it (queue {queue})" if queue else "the Job is suspended"
        pods = sorted(self._pods.get(ref.name, {}).values(), key=pod_index)
        for pod in pods:
            message = pending_message(pod)
            if message:
                return message
        return ""

    async def logs(self, ref: KubeJobRef, rank: int = 0, tail_lines: int | None = None) -> str:
        """One rank's log (its pod's, from the pod log API); "" when that pod is gone."""
        pods = await self.api.request("GET", self._core_path("pods", namespace=ref.namespace),
                                      params={"labelSelector": f"{JOB_NAME_LABEL}={ref.name}"})
        for pod in pods.get("items") or ():
            if pod_index(pod) == rank:
                params = {"container": CONTAINER, "tailLines": tail_lines}
                path = self._core_path("pods", pod["metadata"]["name"], ref.namespace) + "/log"
                try:
                    return await self.api.read_text(path, params)
                except KubeApiError as e:
                    if e.status in (400, 404):  # not started yet, or gone
                        return ""
                    raise
        return ""

    async def stop(self) -> None:
        await super().stop()
        tasks = [*self._streams, *self._followers.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()
        self._followers.clear()
        if self._api is not None and hasattr(self._api, "close"):
            self._api.close()

    # ------------------------------------------------------------------ watching
    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_watchers(self) -> None:
        if not self._streams or all(t.done() for t in self._streams):
            self._streams = [
                asyncio.ensure_future(self._list_watch(self._jobs_path(), self._on_jobs_listed, self._on_job_event)),
                asyncio.ensure_future(self._list_watch(self._core_path("pods"), self._on_pods_listed,
                                                       self._on_pod_event)),
            ]

    async def _list_watch(self, path: str, on_list, on_event) -> None:
        """List, then watch from the list's resourceVersion; relist when the watch has expired (410)."""
        delays = None
        while True:
            try:
                listing = await self.api.request("GET", path, params={"labelSelector": self.selector})
                on_list(listing.get("items") or [])
                version = (listing.get("metadata") or {}).get("resourceVersion")
                delays = None
                expired = False
                while not expired:
                    params = {"labelSelector": self.selector, "resourceVersion": version}
                    async for event in self.api.watch(path, params, timeout_seconds=self.watch_timeout_seconds):
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                expired = True
                                break
                            raise KubeApiError(int(obj.get("code") or 500), obj.get("reason", ""),
                                               obj.get("message", ""), obj)
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind != "BOOKMARK":
                            on_event(kind, obj)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the API is unreachable or refused: retry with back-off
                delays = delays or Backoff(initial=0.5, maximum=30.0, jitter=0.5).delays()
                delay = next(delays)
                log.warning("Watching %s failed (%s); again in %.1fs", path, e, delay)
                await asyncio.sleep(delay)

    def _on_jobs_listed(self, jobs: list[dict]) -> None:
        names = {j["metadata"]["name"] for j in jobs}
        for job in jobs:
            self._on_job_event("MODIFIED", job)
        for name in list(self._waiting):
            if name not in names:  # removed while nobody watched (ttlSecondsAfterFinished, by hand)
                self._on_job_event("DELETED", self._jobs.get(name) or {"metadata": {"name": name}})
        self._listed.set()

    def _on_job_event(self, kind: str, job: dict) -> None:
        name = job["metadata"]["name"]
        if kind == "DELETED":
            last = self._jobs.pop(name, None) or job
            self._resolve_soon(name, last, deleted=True)
            return
        self._jobs[name] = job
        if name in self._waiting and job_status(job).finished:
            self._resolve_soon(name, job, deleted=False)

    def _on_pods_listed(self, pods: list[dict]) -> None:
        fresh: dict[str, dict[str, dict]] = {}
        for pod in pods:
            job = ((pod.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL)
            if job:
                fresh.setdefault(job, {})[pod["metadata"]["name"]] = pod
        self._pods = fresh
        for pod in pods:
            self._on_pod_event("MODIFIED", pod)

    def _on_pod_event(self, kind: str, pod: dict) -> None:
        job = ((pod.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL)
        if not job:
            return
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self._pods.get(job, {}).pop(name, None)
            return
        self._pods.setdefault(job, {})[name] = pod
        self._maybe_follow(job, pod)

    def _resolve_soon(self, name: str, job: dict, deleted: bool) -> None:
        future = self._waiting.get(name)
        if future is not None and not future.done():
            self._spawn(self._resolve(name, job, deleted))

    async def _resolve(self, name: str, job: dict, deleted: bool) -> None:
        try:
            status = await self._exit_status(name, job, deleted)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the run ended; if how cannot be read, say so
            log.warning("Job %s ended but its pods could not be read: %s", name, e)
            status = KubeExitStatus("lost", None, detail=f"the Job ended; its pods could not be read ({e})")
        await self._finish_logs(name)
        future = self._waiting.pop(name, None)
        self._paths.pop(name, None)
        self._stopping.pop(name, None)
        if future is not None and not future.done():
            future.set_result(status)

    async def _exit_status(self, name: str, job: dict, deleted: bool) -> ExitStatus:
        stopped = self._stopping.get(name)
        finished = job_status(job) if job.get("status") is not None else None
        if stopped and (finished is None or not finished.finished or deleted):
            return ExitStatus("killed", -stopped)
        if finished is None:
            return KubeExitStatus("lost", None, detail="the Job is gone (removed by its ttlSecondsAfterFinished or by "
                                  "hand while the scheduler was not watching): how it ended is unknown")
        if not finished.finished:
            return KubeExitStatus("lost", None, detail="the Job was deleted outside the scheduler before it ended")
        if finished.phase == "succeeded":
            return ExitStatus("entry", 0)
        if finished.reason == "DeadlineExceeded":
            return ExitStatus("timeout", None)
        pods = await self._job_pods(name, job)
        exits = [e for e in (pod_exit(p) for p in pods) if e is not None]
        failure = first_failure(exits, finished.message)
        if failure is None:
            return KubeExitStatus("lost", None, detail=f"the Job failed ({finished.reason}: {finished.message})")
        several = (job.get("spec") or {}).get("completionMode") == "Indexed"
        where = f"rank {failure.index} (pod {failure.pod} on {failure.node or 'no node'})" if several else ""
        if failure.disrupted:
            return KubeExitStatus("node", None, where=where, detail=f"the pod was disrupted ({failure.disrupted})")
        if failure.reason == "OOMKilled":
            return KubeExitStatus("oom", failure.exit_code, failure.memory_limit, where=where)
        if failure.container == FETCH_CONTAINER:
            return KubeExitStatus("entry", failure.exit_code, where=where, detail=failure.message or
                                  f"fetching the code snapshot failed (exit code {failure.exit_code})")
        if failure.container == CONTAINER and failure.message == "requirements":
            return KubeExitStatus("requirements", failure.exit_code, where=where)
        return KubeExitStatus("entry", failure.exit_code, where=where)

    async def _job_pods(self, name: str, job: dict) -> list[dict]:
        """The Job's pods as the API has them now (the pod watch may lag the Job's)."""
        namespace = job["metadata"].get("namespace") or self.namespace
        try:
            listing = await self.api.request("GET", self._core_path("pods", namespace=namespace),
                                             params={"labelSelector": f"{JOB_NAME_LABEL}={name}"})
            return list(listing.get("items") or ())
        except KubeApiError as e:
            log.warning("Could not list the pods of Job %s (%s); using the watched ones", name, e)
            return list(self._pods.get(name, {}).values())

    # ------------------------------------------------------------------ logs
    def _maybe_follow(self, job: str, pod: dict) -> None:
        paths = self._paths.get(job)
        name = pod["metadata"]["name"]
        if paths is None or name in self._followers:
            return
        started = any(c.get("name") == CONTAINER and ("running" in (c.get("state") or {})
                                                      or "terminated" in (c.get("state") or {}))
                      for c in (pod.get("status") or {}).get("containerStatuses") or ())
        if not started:
            return
        indexed = (self._jobs.get(job, {}).get("spec") or {}).get("completionMode") == "Indexed"
        self._followers[name] = asyncio.ensure_future(
            self._follow(pod, pod_index(pod) if indexed else None, paths))

    async def _finish_logs(self, job: str) -> None:
        """Let the log copies of an ended Job's pods drain (bounded), so the run's log is whole when it is reported."""
        tasks = [t for n, t in self._followers.items() if n.startswith(job + "-")]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for n in [n for n in self._followers if n.startswith(job + "-")]:
            task = self._followers.pop(n)
            if not task.done():
                task.cancel()

    async def _follow(self, pod: dict, rank: int | None, paths: RunPaths) -> None:
        name, namespace = pod["metadata"]["name"], pod["metadata"].get("namespace") or self.namespace
        await follow_pod_log(self.api, self._core_path("pods", name, namespace) + "/log", paths.log,
                             paths.control / f"kube-log.{name}.pos", f"[rank {rank}] " if rank is not None else "",
                             lambda: self._container_ended(name))

    def _container_ended(self, pod_name: str) -> bool:
        for pods in self._pods.values():
            pod = pods.get(pod_name)
            if pod is not None:
                return any(c.get("name") == CONTAINER and "terminated" in (c.get("state") or {})
                           for c in (pod.get("status") or {}).get("containerStatuses") or ())
        return True  # the pod is gone

