"""Kubernetes manifests of a run, as pure functions (the API's answers are read by ``kube_status``).

The Kubernetes executor decides nothing here: our policy has already chosen who runs, when and on
which nodes.  This module turns that decision (one :class:`KubeRunOptions`) into plain-dict
manifests (``batch/v1`` Job, ``v1`` Service, ``v1`` Secret).  Nothing here does I/O; every manifest is checked against
the official Kubernetes schema by ``tests/test_kube_executor.py`` (``kubernetes-validate``, strict).

The shape of a run in the cluster:

- One node: a Job (``completions = parallelism = 1``).  Several nodes: an *Indexed* Job
  (``completions = parallelism = nodes``) plus a headless Service, so that pod ``i`` is
  ``<job>-<i>.<service>`` in DNS and rank 0 is the rendezvous (``MASTER_ADDR``).  The node rank is
  the pod's completion index, read through the downward API into ``NODE_RANK``; Kubernetes expands
  ``$(NODE_RANK)`` in the variables and arguments that refer to it (``RANK``, ``TF_CONFIG``,
  torchrun's ``--node-rank``).  Because Kubernetes expands ``$(NAME)`` everywhere in ``env`` values
  and ``command``, every value that comes from the user has its ``$`` doubled (``$$`` is a literal
  ``$``), so a hyperparameter ``$(HOME)`` arrives as typed.
- The policy's nodes are a required node affinity on ``metadata.name`` (the node's API name, which
  is what the inventory reports; the ``kubernetes.io/hostname`` label usually but not always equals
  it), and, for several nodes, a required pod anti-affinity on ``kubernetes.io/hostname`` among the
  Job's own pods: each chosen node gets exactly one pod.  Which index lands on which chosen node is
  the cluster's choice; the set is ours.
- ``backoffLimit: 0`` and a ``podFailurePolicy`` that fails the whole Job when any container of any
  index exits non-zero or a pod is disrupted (node drained, preempted): one failing rank fails the
  run, and the Job controller stops the other ranks.
- The code reaches the pod without a shared filesystem: an init container (``fetch-code``) downloads
  the run's snapshot from the scheduler with a per-run token (held in a Secret, never in the Job's
  spec) and unpacks it into an ``emptyDir``.  The run's folder (model, checkpoints, TensorBoard
  events) is a ``subPath`` of a PersistentVolumeClaim when one is configured, else an ``emptyDir``
  that lives only as long as the pod.
- Every container runs as the run's Unix account (``runAsUser``/``runAsGroup``),
  ``runAsNonRoot``, no privilege escalation, all capabilities dropped, the runtime's seccomp profile.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "CONTAINER", "FETCH_CONTAINER", "FETCH_SCRIPT", "LAUNCH_SCRIPT", "POD_ROOT", "POD_SOURCE", "KubeRunOptions",
    "job_manifest", "label_value", "manifests", "owner_reference", "secret_manifest", "service_manifest",
    "snapshot_token",
]

MANAGED_BY = "nothingai"
CONTAINER = "train"
FETCH_CONTAINER = "fetch-code"
POD_ROOT = "/run/nothing/run"            # the run's folder inside the pod (HOME, outputs)
POD_SOURCE = POD_ROOT + "/src"           # the unpacked snapshot (EM_SOURCE_DIR)
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
HOSTNAME_LABEL = "kubernetes.io/hostname"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB, from NVIDIA's GPU feature discovery
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*\Z")

# Fetches the snapshot with the run's token and unpacks it; argv: URL, destination folder.  Fixed text: nothing
# of the user's reaches it except as data.  tarfile's "data" filter refuses links out of the folder,
# absolute names, devices and setuid bits (Python >= 3.11.4 / 3.12); on older Pythons only regular files
# and folders with relative names inside the folder are written (the service checked the archive at submit).
FETCH_SCRIPT = """\
import os, shutil, sys, tarfile, urllib.request
url, dest = sys.argv[1], sys.argv[2]
request = urllib.request.Request(url, headers={"Authorization": "token " + os.environ["NOTHING_SNAPSHOT_TOKEN"]})
def unpack(archive):
    if hasattr(tarfile, "data_filter"):
        archive.extractall(dest, filter="data")
        return
    for member in archive:
        parts = member.name.split("/")
        if member.name.startswith("/") or ".." in parts:
            raise ValueError("unsafe name in the snapshot: %r" % member.name)
        target = os.path.join(dest, *[p for p in parts if p not in ("", ".")])
        if member.isdir():
            os.makedirs(target, exist_ok=True)
        elif member.isfile():
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(target, member.mode & 0o755)
        else:
            raise ValueError("the snapshot holds a link or device: %r" % member.name)
try:
    with urllib.request.urlopen(request, timeout=300) as response:
        with tarfile.open(fileobj=response, mode="r|gz") as archive:
            unpack(archive)
except Exception as e:
    message = "could not fetch the code snapshot: %s" % (e,)
    print(message, file=sys.stderr)
    with open(os.environ.get("NOTHING_TERMINATION_LOG", "/dev/termination-log"), "w") as log:
        log.write(message[:1000])
    sys.exit(1)
"""

# Runs the user's program: installs requirements.txt first when there is one, then execs the program,
# or, for several processes per node without torchrun, starts one per local rank (LOCAL_RANK, RANK),
# forwards SIGTERM to all, and ends with the first failing one's status after stopping the others.
# A failed pip install leaves "requirements" as the container's termination message.
LAUNCH_SCRIPT = """\
import os, signal, subprocess, sys
argv = sys.argv[1:]
requirements = os.environ.get("NOTHING_REQUIREMENTS", "")
if requirements and os.path.isfile(requirements):
    code = subprocess.call([sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                            "--target", os.environ["NOTHING_PACKAGES_DIR"], "-r", requirements])
    if code:
        with open(os.environ.get("NOTHING_TERMINATION_LOG", "/dev/termination-log"), "w") as log:
            log.write("requirements")
        sys.exit(code)
procs = int(os.environ.get("NOTHING_PROCS_PER_NODE", "1"))
if procs <= 1:
    os.execvp(argv[0], argv)
node = int(os.environ.get("NODE_RANK", "0"))
children = [subprocess.Popen(argv, env=dict(os.environ, LOCAL_RANK=str(i), RANK=str(node * procs + i)))
            for i in range(procs)]
def forward(number, frame):
    for child in children:
        if child.poll() is None:
            child.send_signal(number)
signal.signal(signal.SIGTERM, forward)
status = 0
while any(child.returncode is None for child in children):
    pid, code = os.wait()
    for child in children:
        if child.pid == pid:
            child.returncode = os.waitstatus_to_exitcode(code)
            if child.returncode and not status:
                status = child.returncode if child.returncode > 0 else 128 - child.returncode
                forward(signal.SIGTERM, None)
sys.exit(status)
"""


def snapshot_token(key: bytes, run_id: int) -> str:
    """The token that lets a run's init container fetch that run's snapshot, and nothing else.

    Derived from the scheduler's key, so it needs no storage and survives restarts; the service
    checks it with :func:`hmac.compare_digest` against the same function.
    """
    return hmac.new(key, f"nothing-snapshot:{int(run_id)}".encode(), hashlib.sha256).hexdigest()


def label_value(text: str) -> str:
    """``text`` as a label value: unchanged when it is one, else its label-safe part plus a hash."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:50].strip("-_.")
    return (safe + "-" if safe else "") + hashlib.sha256(text.encode()).hexdigest()[:8]


def _escape(value: str) -> str:
    """A value Kubernetes must not expand: ``$(NAME)`` is written ``$$(NAME)``."""
    return value.replace("$", "$$")


@dataclass(frozen=True)
class KubeRunOptions:
    """Everything one run's Kubernetes objects are made from.

    ``program`` is the user's command line (``python3 -u train.py --lr 0.1``) as the pod runs it, and
    ``env`` the run's environment with pod paths; neither is expanded by Kubernetes.  ``nodes`` are
    the policy's nodes, one pod per node.  ``cpus``, ``memory_bytes`` and ``gpus_per_node`` are per
    node (0: not asked for).  ``deadline_seconds`` becomes ``activeDeadlineSeconds`` (None: none).
    ``output_claim`` names a PersistentVolumeClaim whose ``runs/<run id>`` folder becomes the run's
    folder (the claim is the scheduler's data folder, which made that folder the run's account's);
    empty: an ``emptyDir``.  No ``fsGroup`` is set: on a shared claim it would hand every file of the
    claim to the run's group.  ``queue_name`` adds Kueue's queue label.
    """

    name: str
    namespace: str
    run_id: int
    owner: str
    image: str
    program: tuple[str, ...]
    snapshot_url: str
    uid: int
    gid: int
    nodes: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    gpus_per_node: int = 0
    procs_per_node: int = 1
    torchrun: bool = False
    python: str = "python3"
    cpus: float = 0
    memory_bytes: int = 0
    deadline_seconds: int | None = None
    termination_grace_seconds: int = 30
    ttl_seconds_after_finished: int = 86400
    service_account: str = ""
    fetch_image: str = ""
    output_claim: str = ""
    queue_name: str = ""
    scope: str = ""
    master_port: int = 29500
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"

    @property
    def multi_node(self) -> bool:
        return len(self.nodes) > 1

    @property
    def service_name(self) -> str:
        return self.name

    @property
    def secret_name(self) -> str:
        return self.name + "-snapshot"

    @property
    def distributed(self) -> bool:
        return self.multi_node or self.procs_per_node > 1 or self.torchrun


def _validate(o: KubeRunOptions) -> None:
    if len(o.name) > 52 or not _DNS_LABEL.match(o.name):
        # 52: the Job controller puts the name into each pod's ``controller-uid``-free labels and into the
        # pods' hostnames ``<name>-<index>``, which must stay a DNS label (63) for any index.
        raise ValueError(f"a run's Job name must be a DNS label of at most 52 characters, not {o.name!r}")
    if not o.nodes:
        raise ValueError("a Kubernetes run needs the node(s) the policy chose")
    if len(set(o.nodes)) != len(o.nodes):
        raise ValueError(f"the nodes name a node twice: {o.nodes}")
    if not o.image:
        raise ValueError("a Kubernetes run needs an image (c.KubernetesExecutor.image)")
    if not o.program:
        raise ValueError("a run needs a program to run")
    if o.uid <= 0 or o.gid < 0:
        raise ValueError(f"pods run as a non-root account: uid {o.uid}, gid {o.gid} cannot be used")
    for label, value, least in (("gpus_per_node", o.gpus_per_node, 0), ("procs_per_node", o.procs_per_node, 1),
                                ("memory_bytes", o.memory_bytes, 0), ("termination_grace_seconds",
                                                                      o.termination_grace_seconds, 0)):
        if value < least:
            raise ValueError(f"{label} must be at least {least}, not {value}")
    if o.cpus < 0:
        raise ValueError(f"cpus must not be negative, not {o.cpus}")
    if o.deadline_seconds is not None and o.deadline_seconds <= 0:
        raise ValueError(f"deadline_seconds must be positive or None, not {o.deadline_seconds}")
    for name in o.env:
        if not _ENV_NAME.match(name):
            raise ValueError(f"not an environment variable name Kubernetes accepts: {name!r}")


def _labels(o: KubeRunOptions) -> dict[str, str]:
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "run",
              "nothing/run-id": str(o.run_id), "nothing/owner": label_value(o.owner)}
    if o.scope:
        labels["nothing/scope"] = label_value(o.scope)
    return labels


def _metadata(o: KubeRunOptions, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": o.namespace, "labels": labels or _labels(o),
            "annotations": {"nothing/owner": o.owner}}


def _quantity_cpu(cpus: float) -> str:
    millis = math.ceil(cpus * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def container_resources(cpus: float, memory_bytes: int, gpu_resource: str, gpus: int) -> dict[str, Any]:
    """A container's ``resources``: CPUs and memory requested and limited alike (the scheduler placed exactly
    that), GPUs as a limit only (an extended resource's request defaults to its limit)."""
    amounts: dict[str, str] = {}
    if cpus:
        amounts["cpu"] = _quantity_cpu(cpus)
    if memory_bytes:
        amounts["memory"] = str(memory_bytes)
    resources: dict[str, Any] = {}
    if amounts:
        resources["requests"] = dict(amounts)
    limits = dict(amounts)
    if gpus:
        limits[gpu_resource] = str(gpus)
    if limits:
        resources["limits"] = limits
    return resources


def _resources(o: KubeRunOptions, gpus: bool) -> dict[str, Any]:
    return container_resources(o.cpus, o.memory_bytes, GPU_RESOURCE, o.gpus_per_node if gpus else 0)


def _host(o: KubeRunOptions, index: int) -> str:
    return f"{o.name}-{index}.{o.service_name}"


def _rank_env(o: KubeRunOptions) -> list[dict[str, Any]]:
    """The distributed-job variables of every process of the pod, in the order their references need."""
    if not o.distributed:
        return []
    nodes, procs = len(o.nodes), o.procs_per_node
    env: list[dict[str, Any]] = []
    if o.multi_node:
        env.append({"name": "NODE_RANK", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}})
        master = _host(o, 0)
    else:
        env.append({"name": "NODE_RANK", "value": "0"})
        master = "127.0.0.1"
    env += [{"name": "MASTER_ADDR", "value": master}, {"name": "MASTER_PORT", "value": str(o.master_port)},
            {"name": "NOTHING_NNODES", "value": str(nodes)},
            {"name": "NOTHING_PROCS_PER_NODE", "value": "1" if o.torchrun else str(procs)}]
    if not o.torchrun:  # torchrun sets these per worker itself
        env.append({"name": "WORLD_SIZE", "value": str(nodes * procs)})
        if procs == 1:  # else the launcher sets them per local process
            env += [{"name": "RANK", "value": "$(NODE_RANK)"}, {"name": "LOCAL_RANK", "value": "0"}]
            if o.multi_node:
                workers = json.dumps([f"{_host(o, i)}:{o.master_port}" for i in range(nodes)])
                env.append({"name": "TF_CONFIG", "value": '{"cluster": {"worker": ' + workers
                            + '}, "task": {"type": "worker", "index": $(NODE_RANK)}}'})
    return env


def _command(o: KubeRunOptions) -> list[str]:
    program = [_escape(a) for a in o.program]
    if o.torchrun:
        head = ["torchrun", f"--nnodes={len(o.nodes)}", f"--nproc-per-node={o.procs_per_node}",
                "--node-rank=$(NODE_RANK)", "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"]
        if program[:2] == [_escape(o.python), "-u"]:
            program = head + program[2:]
        else:
            program = head + ["--no-python"] + program
    return [o.python, "-c", LAUNCH_SCRIPT, *program]


def _security(o: KubeRunOptions) -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
            "runAsUser": o.uid, "runAsGroup": o.gid}


def _affinity(o: KubeRunOptions) -> dict[str, Any]:
    affinity: dict[str, Any] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                "values": list(o.nodes)}]}]}}}
    if o.multi_node:
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {JOB_NAME_LABEL: o.name}}, "topologyKey": HOSTNAME_LABEL}]}
    return affinity


def job_manifest(o: KubeRunOptions) -> dict[str, Any]:
    """The run's Job: Indexed with one pod per chosen node when there are several, else a plain one."""
    _validate(o)
    labels = _labels(o)
    job_labels = dict(labels)
    if o.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = o.queue_name
    run_mount = {"name": "run", "mountPath": POD_ROOT}
    if o.output_claim:
        run_mount["subPath"] = f"runs/{o.run_id}"
    fetch_argv = [o.python, "-c", FETCH_SCRIPT, o.snapshot_url, POD_SOURCE]
    fetch_mounts = [{"name": "code", "mountPath": POD_SOURCE}]
    rank_env = _rank_env(o)
    ours = {e["name"] for e in rank_env}
    env = [{"name": k, "value": _escape(v)} for k, v in o.env.items() if k not in ours] + rank_env
    container: dict[str, Any] = {
        "name": CONTAINER, "image": o.image, "imagePullPolicy": o.image_pull_policy, "command": _command(o),
        "workingDir": POD_SOURCE, "env": env, "resources": _resources(o, gpus=True),
        "volumeMounts": [run_mount, {"name": "code", "mountPath": POD_SOURCE}],
        "securityContext": _security(o), "terminationMessagePolicy": "File",
    }
    if o.multi_node:
        container["ports"] = [{"name": "rendezvous", "containerPort": o.master_port, "protocol": "TCP"}]
    fetch = {
        "name": FETCH_CONTAINER, "image": o.fetch_image or o.image, "imagePullPolicy": o.image_pull_policy,
        "command": fetch_argv,
        "env": [{"name": "NOTHING_SNAPSHOT_TOKEN", "valueFrom": {"secretKeyRef": {"name": o.secret_name,
                                                                                  "key": "token"}}}],
        "resources": _resources(o, gpus=False), "volumeMounts": fetch_mounts,
        "securityContext": _security(o), "terminationMessagePolicy": "File",
    }
    run_volume: dict[str, Any] = {"name": "run"}
    if o.output_claim:
        run_volume["persistentVolumeClaim"] = {"claimName": o.output_claim}
    else:
        run_volume["emptyDir"] = {}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": o.termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": o.uid, "runAsGroup": o.gid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "affinity": _affinity(o),
        "initContainers": [fetch],
        "containers": [container],
        "volumes": [run_volume, {"name": "code", "emptyDir": {}}],
    }
    if o.service_account:
        pod_spec["serviceAccountName"] = o.service_account
    if o.multi_node:
        pod_spec["subdomain"] = o.service_name
    if o.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in o.image_pull_secrets]
    nodes = len(o.nodes)
    spec: dict[str, Any] = {
        "completions": nodes, "parallelism": nodes,
        "completionMode": "Indexed" if o.multi_node else "NonIndexed",
        "backoffLimit": 0,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "ttlSecondsAfterFinished": o.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": labels, "annotations": {"nothing/owner": o.owner}}, "spec": pod_spec},
    }
    if o.deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = o.deadline_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(o, o.name, job_labels), "spec": spec}


def service_manifest(o: KubeRunOptions, owner: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The headless Service that names the pods of a multi-node run (None for one node).

    ``publishNotReadyAddresses``: the ranks look each other up before any is "ready" (they have no
    readiness probe, and rendezvous happens at start).  ``owner`` (:func:`owner_reference` of the
    created Job) lets the garbage collector remove it with the Job.
    """
    if not o.multi_node:
        return None
    metadata = _metadata(o, o.service_name)
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": {
        "clusterIP": "None", "publishNotReadyAddresses": True, "selector": {JOB_NAME_LABEL: o.name},
        "ports": [{"name": "rendezvous", "port": o.master_port, "targetPort": o.master_port, "protocol": "TCP"}]}}


def secret_manifest(o: KubeRunOptions, token: str) -> dict[str, Any]:
    """The Secret that holds the run's snapshot token (read by the init container only)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _metadata(o, o.secret_name), "type": "Opaque",
            "stringData": {"token": token}}


def manifests(o: KubeRunOptions, token: str) -> list[dict[str, Any]]:
    """Every object of a run, in creation order: Secret, Job, then (several nodes) Service."""
    objects = [secret_manifest(o, token), job_manifest(o)]
    service = service_manifest(o)
    if service is not None:
        objects.append(service)
    return objects


def owner_reference(job: Mapping[str, Any]) -> dict[str, Any]:
    """An ``ownerReferences`` entry naming a created Job (its ``uid`` comes from the API)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"], "blockOwnerDeletion": True}
