"""Kubernetes manifests of an endpoint's stage resource (a model served by N replicas), as pure functions.

On the local executor and Slurm each replica of a stage resource is a run of kind ``serving``.  On
Kubernetes the cluster keeps the replicas running itself: one :class:`ServingOptions` becomes

- a ``v1`` **ConfigMap** ``<name>-runtime`` with the serving runtime's files (``model_server.py`` and the
  modules it imports), mounted read-only as the container's working folder: the code reaches the pod
  without a shared filesystem and without the scheduler (a replica restarted at night needs nothing
  of ours), and a change of the files changes the pod template's ``nothing/runtime-sha256`` annotation,
  so the pods are replaced with the new code;
- an ``apps/v1`` **Deployment** of ``replicas`` pods running
  ``python model_server.py --name N --framework F --format FMT --model-dir /mnt/model --port 8080
  --host 0.0.0.0 --port-file /tmp/port.json`` in the serving image, with ``GET /v2/health/ready`` as
  startup, readiness and liveness probe;
- a ``v1`` **Service** (ClusterIP, port 80 to the pods' 8080) that the stage's traffic goes to;

or, with ``inference_service``, the ConfigMap and a KServe ``serving.kserve.io/v1beta1``
**InferenceService** whose custom predictor is the same pod (KServe then makes the Deployment and the
Service, ``<name>-predictor``, itself; never both, which would run every replica twice).

As for runs (``kube_objects``): the model's artifact is a read-only ``subPath`` of the
PersistentVolumeClaim that holds the platform's data folder (``KubernetesExecutor.output_claim``); the
pods run as the owner's Unix account (``runAsUser``/``runAsGroup``, ``runAsNonRoot``, no privilege
escalation, all capabilities dropped, the runtime's seccomp profile, no service-account token); GPUs
are limits of the executor's GPU resource.  Unlike runs, no node is chosen by our policy: the cluster
places the replicas on the nodes ``node_selector`` admits (a required node affinity).  Nothing here
does I/O; ``tests/test_kube_serving.py`` checks every shape against the official Kubernetes schema.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .kube_objects import GPU_RESOURCE, MANAGED_BY, container_resources, label_value

__all__ = [
    "KSERVE_API_VERSION", "MODEL_DIR", "PORT", "PORT_FILE", "READY_PATH", "RUNTIME_DIR", "SERVER_CONTAINER",
    "ServingOptions", "claim_sub_path", "config_map_manifest", "deployment_manifest", "inference_service_manifest",
    "node_affinity", "serving_labels", "serving_name", "serving_objects", "serving_selector", "serving_url",
    "service_manifest",
]

SERVER_CONTAINER = "model-server"
KSERVE_CONTAINER = "kserve-container"  # the name KServe gives a custom predictor's container
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
KSERVE_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
RUNTIME_DIR = "/opt/nothing/serving"  # the runtime's files (the ConfigMap, or the image's own copy)
MODEL_DIR = "/mnt/model"
PORT = 8080
SERVICE_PORT = 80
PORT_FILE = "/tmp/port.json"
READY_PATH = "/v2/health/ready"
RUNTIME_HASH_ANNOTATION = "nothing/runtime-sha256"
NAME_LIMIT = 45  # 63 less KServe's "-predictor" and a Knative revision suffix, so one name fits every object
CONFIG_MAP_LIMIT = 1000 * 1024  # a ConfigMap holds at most 1 MiB, keys and metadata included

_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+\Z")
_RESERVED_PREFIXES = ("app.kubernetes.io/", "nothing/")


@dataclass(frozen=True)
class ServingOptions:
    """Everything one stage resource's Kubernetes objects are made from.

    From the database: ``endpoint`` (``Endpoint.name``), ``stage`` (``EndpointStage.name``), ``resource_id``,
    ``resource_path``, ``replicas``, ``cpus``, ``memory_bytes``, ``gpus`` (``StageResource``; per replica, 0:
    not asked for), ``model_name`` (the name in the URLs, ``/v1/models/NAME:predict``), ``model_id``,
    ``framework`` and ``model_format`` (``Model.framework``, ``Model.artifact_format``), ``owner`` and the
    owner's ``uid``/``gid`` (``KubernetesExecutor.default_uid``/``default_gid`` when accounts are off).
    ``model_claim`` is the PersistentVolumeClaim holding the data folder (``KubernetesExecutor.output_claim``)
    and ``model_sub_path`` the artifact's folder inside it (:func:`claim_sub_path` of ``Model.artifact_path``).
    From the executor: ``image`` (``serving_image``), ``namespace``, ``scope`` (``job_scope``),
    ``node_selector``, ``service_account``, ``image_pull_secrets``, ``termination_grace_seconds``;
    ``gpu_resource`` is the device plugin's resource name.  ``runtime_files`` maps the serving runtime's
    file names to their text (``runtime_jobs.RUNTIME_FILES``); empty: the image holds them in
    :data:`RUNTIME_DIR`.  ``labels`` are added to every object (keys outside ``app.kubernetes.io/`` and
    ``nothing/``).  ``startup_seconds`` is how long a model may take to load before the pod is restarted.
    ``inference_service``: a KServe InferenceService instead of the Deployment and the Service.
    """

    endpoint: str
    stage: str
    resource_id: int
    resource_path: str
    model_name: str
    model_id: int
    framework: str
    model_format: str
    model_claim: str
    model_sub_path: str
    owner: str
    uid: int
    gid: int
    image: str
    namespace: str = "default"
    replicas: int = 1
    cpus: float = 0
    memory_bytes: int = 0
    gpus: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    scope: str = ""
    python: str = "python"
    runtime_files: Mapping[str, str] = field(default_factory=dict)
    gpu_resource: str = GPU_RESOURCE
    node_selector: str = ""
    service_account: str = ""
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    termination_grace_seconds: int = 30
    startup_seconds: int = 600
    inference_service: bool = False


# ---------------------------------------------------------------------------------------------- names and labels
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def serving_name(o: ServingOptions) -> str:
    """The objects' name: ``ep-<endpoint>-<stage>-<resource id>-<hash>``, a DNS label of at most 45 characters.

    Readable parts of the names, shortened to fit; the hash of the exact names, the resource id and the
    scope keeps two resources (or two schedulers' resources in one namespace) apart whatever was cut.
    Starts with a letter, so it is also a valid Service name (RFC 1035).
    """
    digest = hashlib.sha256(f"{o.scope}\0{o.endpoint}\0{o.stage}\0{o.resource_id}".encode()).hexdigest()[:6]
    tail = f"-{o.resource_id}-{digest}"
    room = NAME_LIMIT - len("ep") - len(tail)  # for "-<endpoint>-<stage>"
    endpoint, stage = _slug(o.endpoint), _slug(o.stage)
    while (endpoint or stage) and len(endpoint) + len(stage) + 2 > room:
        if len(endpoint) >= len(stage):  # shorten the longer part, so both stay readable
            endpoint = endpoint[:-1]
        else:
            stage = stage[:-1]
    return "-".join(p for p in ("ep", endpoint.strip("-"), stage.strip("-")) if p) + tail


def serving_selector(o: ServingOptions) -> dict[str, str]:
    """The labels that pick out this resource's pods (the Deployment's selector, the Service's)."""
    selector = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "serving",
                "nothing/endpoint": label_value(o.endpoint), "nothing/stage": label_value(o.stage),
                "nothing/resource-id": str(o.resource_id)}
    if o.scope:
        selector["nothing/scope"] = label_value(o.scope)
    return selector


def serving_labels(o: ServingOptions) -> dict[str, str]:
    """Every object's labels: the selector's, the model and the owner (label-safe), then ``labels``."""
    return {**serving_selector(o), "nothing/model-id": str(o.model_id), "nothing/owner": label_value(o.owner),
            **o.labels}


def _annotations(o: ServingOptions) -> dict[str, str]:
    """The exact names (labels may be shortened) and the resource path, which no label can hold."""
    return {"nothing/owner": o.owner, "nothing/endpoint": o.endpoint, "nothing/stage": o.stage,
            "nothing/resource-path": o.resource_path, "nothing/model": o.model_name}


def serving_url(o: ServingOptions) -> str:
    """Where the stage's traffic for this resource goes, inside the cluster (port 80)."""
    service = serving_name(o) + ("-predictor" if o.inference_service else "")
    return f"http://{service}.{o.namespace}.svc"


def claim_sub_path(claim_root: str, path: str) -> str:
    """``path`` as a sub-path of the claim mounted at ``claim_root`` on the scheduler (the data folder).

    ``/srv/nothing/models/7-ab12`` under ``/srv/nothing`` is ``models/7-ab12``.  Pure: links are not
    followed, so the store must be inside the claim as written.  ValueError for a path outside it.
    """
    root, target = posixpath.normpath(claim_root), posixpath.normpath(path)
    if not posixpath.isabs(root) or not posixpath.isabs(target) or ".." in path.split("/"):
        raise ValueError(f"both paths must be absolute and plain: {claim_root!r}, {path!r}")
    relative = posixpath.relpath(target, root)
    if relative == "." or relative.startswith(".."):
        raise ValueError(f"{path!r} is not inside {claim_root!r}, the folder the claim holds: "
                         "the model store must be in the data folder to be served on Kubernetes")
    return relative


# ---------------------------------------------------------------------------------------------- node placement
def _requirements(selector: str) -> list[str]:
    """The comma-separated parts of a label selector; commas inside ``in (a, b)`` do not separate."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p.strip() for p in parts if p.strip()]


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.match(name) or len(name) > 63 or (prefix and (len(prefix) > 253
                                                                     or not _DNS_SUBDOMAIN.match(prefix))):
        raise ValueError(f"not a label key: {key!r}")
    return key


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(f"not a label value: {value!r}")
    return value


def _label_values(text: str) -> list[str]:
    return [_label_value(v.strip()) for v in text.split(",")]


def node_affinity(selector: str) -> dict[str, Any] | None:
    """A label selector (``KubernetesExecutor.node_selector``) as a required node affinity; None when empty.

    ``k=v``/``k==v`` (In), ``k!=v`` (NotIn), ``k in (a,b)``, ``k notin (a,b)``, ``k`` (Exists), ``!k``
    (DoesNotExist), as ``kubectl -l`` reads them.  ValueError for anything else.
    """
    expressions: list[dict[str, Any]] = []
    for part in _requirements(selector):
        if match := re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^()]*)\)", part):
            key, operator, values = match[1], "In" if match[2] == "in" else "NotIn", _label_values(match[3])
        elif match := re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", part):
            key, operator, values = match[1], "NotIn" if match[2] == "!=" else "In", _label_values(match[3])
        elif match := re.fullmatch(r"!\s*([^=!\s]+)", part):
            key, operator, values = match[1], "DoesNotExist", []
        elif re.fullmatch(r"[^=!\s(),]+", part):
            key, operator, values = part, "Exists", []
        else:
            raise ValueError(f"not a label selector requirement: {part!r} (in {selector!r})")
        expression: dict[str, Any] = {"key": _label_key(key), "operator": operator}
        if values:
            expression["values"] = values
        expressions.append(expression)
    if not expressions:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": expressions}]}}}


# ---------------------------------------------------------------------------------------------- checks
def _validate(o: ServingOptions) -> None:
    if not o.image:
        raise ValueError("serving on Kubernetes needs the serving runtime's image (c.KubernetesExecutor.serving_image)")
    if not o.model_claim:
        raise ValueError("serving on Kubernetes needs the claim that holds the models (c.KubernetesExecutor."
                         "output_claim): the pods read the model from it")
    sub = o.model_sub_path
    if not sub or sub.startswith("/") or any(p in ("", ".", "..") for p in sub.split("/")):
        raise ValueError(f"the model's sub-path must be a plain relative path inside the claim, not {sub!r}")
    if o.uid <= 0 or o.gid < 0:
        raise ValueError(f"model servers run as a non-root account: uid {o.uid}, gid {o.gid} cannot be used")
    if not o.model_name or not o.framework or not o.model_format:
        raise ValueError("a model server needs the model's name, framework and format")
    for label, value, least in (("replicas", o.replicas, 1), ("gpus", o.gpus, 0), ("memory_bytes", o.memory_bytes, 0),
                                ("resource_id", o.resource_id, 1), ("termination_grace_seconds",
                                                                    o.termination_grace_seconds, 0),
                                ("startup_seconds", o.startup_seconds, 10)):
        if value < least:
            raise ValueError(f"{label} must be at least {least}, not {value}")
    if o.cpus < 0:
        raise ValueError(f"cpus must not be negative, not {o.cpus}")
    _label_key(o.gpu_resource)
    for key, text in o.labels.items():
        _label_key(key)
        if key.startswith(_RESERVED_PREFIXES):
            raise ValueError(f"label {key!r} is the platform's own (app.kubernetes.io/ and nothing/ are reserved)")
        _label_value(text)
    if o.runtime_files:
        if "model_server.py" not in o.runtime_files:
            raise ValueError("the runtime files must include model_server.py")
        for name in o.runtime_files:
            if not _CONFIG_KEY.match(name) or name in (".", ".."):
                raise ValueError(f"a runtime file name must be a plain file name, not {name!r}")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in o.runtime_files.items())
        if size > CONFIG_MAP_LIMIT:
            raise ValueError(f"the runtime files ({size} bytes) do not fit in a ConfigMap ({CONFIG_MAP_LIMIT} bytes); "
                             "build them into the serving image instead")


# ---------------------------------------------------------------------------------------------- builders
def _metadata(o: ServingOptions, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": o.namespace, "labels": serving_labels(o), "annotations": _annotations(o)}


def _literal(value: str) -> str:
    """A value Kubernetes must not expand: ``$(NAME)`` in ``command`` is written ``$$(NAME)``."""
    return value.replace("$", "$$")


def _runtime_hash(o: ServingOptions) -> str:
    digest = hashlib.sha256()
    for name in sorted(o.runtime_files):
        digest.update(name.encode() + b"\0" + o.runtime_files[name].encode() + b"\0")
    return digest.hexdigest()


def _resources(o: ServingOptions) -> dict[str, Any]:
    return container_resources(o.cpus, o.memory_bytes, o.gpu_resource, o.gpus)


def _probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {"httpGet": {"path": READY_PATH, "port": PORT, "scheme": "HTTP"}, "periodSeconds": period,
            "timeoutSeconds": timeout, "failureThreshold": failures}


def _container(o: ServingOptions, name: str) -> dict[str, Any]:
    command = [o.python, "model_server.py", "--name", _literal(o.model_name), "--framework", _literal(o.framework),
               "--format", _literal(o.model_format), "--model-dir", MODEL_DIR, "--port", str(PORT),
               "--host", "0.0.0.0", "--port-file", PORT_FILE]
    mounts = [{"name": "model", "mountPath": MODEL_DIR, "subPath": o.model_sub_path, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    if o.runtime_files:
        mounts.insert(0, {"name": "runtime", "mountPath": RUNTIME_DIR, "readOnly": True})
    return {
        "name": name, "image": o.image, "imagePullPolicy": o.image_pull_policy, "command": command,
        "workingDir": RUNTIME_DIR,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": _resources(o),
        "volumeMounts": mounts,
        # Loading may take minutes: liveness starts once the startup probe has seen the model ready.
        "startupProbe": _probe(10, max(1, o.startup_seconds // 10), 5),
        "readinessProbe": _probe(5, 3, 5),
        "livenessProbe": _probe(10, 6, 5),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True, "runAsUser": o.uid, "runAsGroup": o.gid},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _pod_spec(o: ServingOptions, container_name: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "model", "persistentVolumeClaim": {"claimName": o.model_claim, "readOnly": True}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if o.runtime_files:
        volumes.insert(0, {"name": "runtime", "configMap": {"name": serving_name(o) + "-runtime",
                                                            "defaultMode": 0o444}})
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": o.termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": o.uid, "runAsGroup": o.gid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(o, container_name)],
        "volumes": volumes,
    }
    affinity = node_affinity(o.node_selector)
    if affinity:
        spec["affinity"] = affinity
    if o.service_account:
        spec["serviceAccountName"] = o.service_account
    if o.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in o.image_pull_secrets]
    return spec


def _pod_annotations(o: ServingOptions) -> dict[str, str]:
    annotations = _annotations(o)
    if o.runtime_files:
        annotations[RUNTIME_HASH_ANNOTATION] = _runtime_hash(o)
    return annotations


def _strategy(o: ServingOptions) -> dict[str, Any]:
    """Without GPUs a new pod comes up before an old one goes; with GPUs an old one goes first, since a
    surge pod would wait for GPUs that only the old pods free."""
    surge, unavailable = (0, 1) if o.gpus else (1, 0)
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}


def config_map_manifest(o: ServingOptions) -> dict[str, Any] | None:
    """The runtime's files, mounted read-only at :data:`RUNTIME_DIR` (None when the image holds them)."""
    _validate(o)
    if not o.runtime_files:
        return None
    metadata = _metadata(o, serving_name(o) + "-runtime")
    metadata["annotations"][RUNTIME_HASH_ANNOTATION] = _runtime_hash(o)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(o.runtime_files)}


def deployment_manifest(o: ServingOptions) -> dict[str, Any]:
    """The replicas: ``replicas`` pods of the model server, each with the model read-only at /mnt/model."""
    _validate(o)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(o, serving_name(o)), "spec": {
        "replicas": o.replicas,
        "selector": {"matchLabels": serving_selector(o)},
        "strategy": _strategy(o),
        "revisionHistoryLimit": 2,
        "template": {"metadata": {"labels": serving_labels(o), "annotations": _pod_annotations(o)},
                     "spec": _pod_spec(o, SERVER_CONTAINER)},
    }}


def service_manifest(o: ServingOptions) -> dict[str, Any]:
    """The ClusterIP Service in front of the replicas: port 80 to the model servers' 8080."""
    _validate(o)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(o, serving_name(o)), "spec": {
        "type": "ClusterIP", "selector": serving_selector(o),
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": PORT, "protocol": "TCP"}]}}


def inference_service_manifest(o: ServingOptions) -> dict[str, Any]:
    """The same pod as a KServe InferenceService with a custom predictor, in KServe's RawDeployment mode.

    RawDeployment (called Standard by KServe 0.15 and later, which still accept this name): a plain
    Deployment and Service, no Knative, which could not mount the model claim, the runtime and /tmp
    together.  ``minReplicas = maxReplicas = replicas``: the resource's replica count, not an autoscaler's.
    """
    _validate(o)
    metadata = _metadata(o, serving_name(o))
    metadata["annotations"][KSERVE_MODE_ANNOTATION] = "RawDeployment"
    predictor: dict[str, Any] = {
        "minReplicas": o.replicas, "maxReplicas": o.replicas,
        "labels": serving_labels(o), "annotations": _pod_annotations(o),
        "deploymentStrategy": _strategy(o),
        **_pod_spec(o, KSERVE_CONTAINER),
    }
    return {"apiVersion": KSERVE_API_VERSION, "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}


def serving_objects(options: ServingOptions) -> list[dict[str, Any]]:
    """Every object of a stage resource, in creation order: the runtime's ConfigMap (when the files are
    given), then the Deployment and the Service, or, with ``inference_service``, the InferenceService."""
    _validate(options)
    objects = [m for m in (config_map_manifest(options),) if m is not None]
    if options.inference_service:
        return [*objects, inference_service_manifest(options)]
    return [*objects, deployment_manifest(options), service_manifest(options)]
