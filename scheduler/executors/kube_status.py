"""Kubernetes' answers (Jobs, Pods, Nodes, quantities) read into typed values, as pure functions.

The executor's only view of the cluster: what phase a run's Job is in, how each of its pods ended
(the failing rank's container exit, ``OOMKilled``, a disruption), why a pod waits (the scheduler's
``PodScheduled`` message), and the nodes with their GPUs and states.  Tested on the API responses in
``tests/data/kube/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .kube_objects import CONTAINER, GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE, INDEX_ANNOTATION

__all__ = ["KubeJobStatus", "KubeNode", "PodExit", "first_failure", "job_status", "parse_nodes", "parse_quantity",
           "pending_message", "pod_exit", "pod_index"]

_QUANTITY = re.compile(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?\Z")
_SUFFIX = {None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes quantity: ``"7910m"`` → 7.91, ``"65842108Ki"`` → 67422318592, ``"1e3"`` → 1000."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


@dataclass(frozen=True)
class KubeNode:
    """A node of the cluster as the policy needs it: ``state`` is ``up``, ``drained`` or ``down``."""

    name: str
    gpus: int
    cpus: int
    memory_bytes: int
    state: str
    gpu_model: str = ""
    gpu_memory_bytes: int = 0
    reason: str = ""


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or ()}


def parse_nodes(node_list: Mapping[str, Any]) -> list[KubeNode]:
    """The nodes of a ``NodeList``: allocatable GPUs/CPUs/memory, the GPU's product and memory labels.

    Ready condition not True → ``down`` (its reason and message); ``spec.unschedulable`` (cordoned,
    drained) → ``drained``.
    """
    nodes = []
    for item in node_list.get("items") or ():
        metadata, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
        labels = metadata.get("labels") or {}
        allocatable = status.get("allocatable") or {}
        ready = _conditions(item).get("Ready")
        if ready is None or ready.get("status") != "True":
            state = "down"
            reason = "NotReady" if ready is None else \
                ": ".join(p for p in (ready.get("reason") or "NotReady", ready.get("message")) if p)
        elif spec.get("unschedulable"):
            state, reason = "drained", "cordoned (spec.unschedulable)"
        else:
            state, reason = "up", ""
        try:
            gpu_memory = int(labels.get(GPU_MEMORY_LABEL, "0")) * 2**20
        except ValueError:
            gpu_memory = 0
        nodes.append(KubeNode(
            name=metadata["name"], gpus=int(parse_quantity(allocatable.get(GPU_RESOURCE, "0"))),
            cpus=int(parse_quantity(allocatable.get("cpu", "0"))),
            memory_bytes=int(parse_quantity(allocatable.get("memory", "0"))), state=state,
            gpu_model=labels.get(GPU_PRODUCT_LABEL, ""), gpu_memory_bytes=gpu_memory, reason=reason))
    return nodes


@dataclass(frozen=True)
class KubeJobStatus:
    """Where a run's Job is: ``phase`` is ``pending`` (no pod running yet), ``running``, ``succeeded``
    or ``failed`` (with the Job's reason: ``DeadlineExceeded``, ``PodFailurePolicy``,
    ``BackoffLimitExceeded``)."""

    name: str
    phase: str
    reason: str = ""
    message: str = ""
    deleting: bool = False
    suspended: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in ("succeeded", "failed")


def job_status(job: Mapping[str, Any]) -> KubeJobStatus:
    """The Job's phase from its conditions (terminal once ``Complete`` or ``Failed`` is True)."""
    conditions = _conditions(job)
    name = job["metadata"]["name"]
    deleting = bool(job["metadata"].get("deletionTimestamp"))
    status = job.get("status") or {}
    suspended = bool((job.get("spec") or {}).get("suspend"))
    for kind, phase in (("Complete", "succeeded"), ("Failed", "failed")):
        condition = conditions.get(kind)
        if condition is not None and condition.get("status") == "True":
            return KubeJobStatus(name, phase, condition.get("reason", ""), condition.get("message", ""), deleting,
                                 suspended)
    running = (status.get("ready") or 0) > 0 or (status.get("active") or 0) > 0 and not suspended
    return KubeJobStatus(name, "running" if running else "pending", deleting=deleting, suspended=suspended)


def pod_index(pod: Mapping[str, Any]) -> int:
    """The pod's completion index (its node rank); 0 for a non-indexed Job's pod."""
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION, "0")
    try:
        return int(text)
    except ValueError:
        return 0


@dataclass(frozen=True)
class PodExit:
    """How a pod of a run ended: its index, the container that failed and its terminated state."""

    pod: str
    index: int
    node: str
    container: str
    exit_code: int | None
    reason: str = ""
    message: str = ""
    disrupted: str = ""
    memory_limit: int = 0
    finished_at: str = ""  # RFC 3339, as the API writes it (sorts as text)


def pod_exit(pod: Mapping[str, Any]) -> PodExit | None:
    """The pod's end (the failing init container first, then the training container), or None if it
    has not ended.  ``disrupted`` holds the ``DisruptionTarget`` condition's reason (eviction, node
    drain, preemption by the cluster)."""
    metadata, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    disruption = _conditions(pod).get("DisruptionTarget")
    disrupted = ""
    if disruption is not None and disruption.get("status") == "True":
        disrupted = ": ".join(p for p in (disruption.get("reason"), disruption.get("message")) if p)
    elif status.get("reason") in ("Evicted", "NodeLost", "Shutdown", "Terminated"):
        disrupted = ": ".join(p for p in (status.get("reason"), status.get("message")) if p)
    limits: dict[str, int] = {}
    for c in spec.get("containers") or ():
        memory = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        if memory:
            limits[c["name"]] = int(parse_quantity(memory))
    found = None
    for c in list(status.get("initContainerStatuses") or ()) + list(status.get("containerStatuses") or ()):
        terminated = (c.get("state") or {}).get("terminated")
        if terminated is None:
            continue
        found = PodExit(metadata.get("name", ""), pod_index(pod), spec.get("nodeName", ""), c.get("name", ""),
                        terminated.get("exitCode"), terminated.get("reason", ""),
                        (terminated.get("message") or "").strip(), disrupted, limits.get(c.get("name", ""), 0),
                        terminated.get("finishedAt") or "")
        if terminated.get("exitCode"):
            return found  # the first container that failed is the cause
    if found is None and status.get("phase") in ("Failed", "Succeeded"):
        return PodExit(metadata.get("name", ""), pod_index(pod), spec.get("nodeName", ""), "", None,
                       status.get("reason", ""), status.get("message", ""), disrupted)
    if found is not None and found.container != CONTAINER and status.get("phase") not in ("Failed", "Succeeded"):
        return None  # only the init container has ended, successfully
    return found


def pending_message(pod: Mapping[str, Any]) -> str:
    """Why the cluster has not started a pod: the scheduler's ``PodScheduled`` message
    ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."), or a container's waiting reason
    (``ImagePullBackOff: ...``); "" once it runs."""
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return ""
    scheduled = _conditions(pod).get("PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        return scheduled.get("message") or scheduled.get("reason") or "not scheduled yet"
    for c in list(status.get("initContainerStatuses") or ()) + list(status.get("containerStatuses") or ()):
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
            return ": ".join(p for p in (f"{c.get('name')}: {waiting['reason']}", waiting.get("message")) if p)
    return ""


_POLICY_POD = re.compile(r"\bfor pod [^/\s]+/([a-z0-9][-a-z0-9.]*)")


def first_failure(exits: Sequence[PodExit], job_message: str = "") -> PodExit | None:
    """The rank that failed the run, not one the Job controller stopped because of it.

    The pod the Job's ``PodFailurePolicy`` message names, else a disrupted pod (a lost node makes its
    peers fail too), else the failure that ended first (the others were stopped after it, by SIGTERM),
    lowest index on a tie.
    """
    failed = [e for e in exits if e.disrupted or e.exit_code]
    named = _POLICY_POD.search(job_message)
    if named:
        for e in failed:
            if e.pod == named.group(1):
                return e
    return min(failed, key=lambda e: (0 if e.disrupted else 1, e.finished_at or "~", e.index), default=None)
