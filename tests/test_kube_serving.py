"""An endpoint's stage resource on Kubernetes, without a cluster: whole manifests, the official schema, KServe's fields.

No API server runs here.  The Deployment, Service and ConfigMap are validated with ``kubernetes_validate``
(the official OpenAPI schema, strict: an unknown or misspelt field fails) for the oldest Kubernetes the
executor supports (1.31) and the newest the other Kubernetes tests use (1.37).  The InferenceService has
no schema file here: its pod part is validated against Kubernetes' own PodSpec schema, its other fields
against the fields KServe documents for ``serving.kserve.io/v1beta1``, and, where the serving environment
(``.venv/serving``) has KServe's SDK, against the field names the SDK's models declare.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from nothing.scheduler.executors.kube_serving import (ServingOptions, claim_sub_path, config_map_manifest,
                                                      deployment_manifest, inference_service_manifest,
                                                      node_affinity, serving_name, serving_objects, serving_url,
                                                      service_manifest)
from nothing.scheduler.executors.kubernetes import KubernetesExecutor

REPO = Path(__file__).resolve().parent.parent
KUBE_VERSIONS = ("1.31.0", "1.37.0")
SCOPE = "nothing-5f3c9a1e"
NAME = "ep-mnist-classifier-production-7-47ed6c"
RUNTIME = {"model_server.py": "import loaders\nloaders.serve()\n", "loaders.py": "def serve():\n    pass\n"}
RUNTIME_SHA = "73e511cded33e7031c463f764fdbf711b70982d1af5f4869e4a1908d90dd2061"

DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")  # RFC 1035: what a Service name must be
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")

# The fields KServe's API reference documents for serving.kserve.io/v1beta1 (InferenceService,
# InferenceServiceSpec, ComponentExtensionSpec, PredictorSpec's own; PredictorSpec also inlines a PodSpec).
KSERVE_OBJECT = {"apiVersion", "kind", "metadata", "spec", "status"}
KSERVE_SPEC = {"predictor", "transformer", "explainer"}
KSERVE_COMPONENT = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
                    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
                    "annotations", "deploymentStrategy", "autoScaling"}
KSERVE_PREDICTOR = {"model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
                    "lightgbm", "paddle", "workerSpec"}


def options(**changes) -> ServingOptions:
    fields = dict(endpoint="mnist-classifier", stage="production", resource_id=7, resource_path="/mnist",
                  model_name="mnist", model_id=3, framework="pytorch", model_format="pytorch",
                  model_claim="nothing-data", model_sub_path="models/3-9f2c", owner="alice", uid=1001, gid=1001,
                  image="nothingai/serving:kserve-0.21", namespace="ml", replicas=2, cpus=2,
                  memory_bytes=4 * 2**30, gpus=1, scope=SCOPE, runtime_files=RUNTIME)
    fields.update(changes)
    return ServingOptions(**fields)


def validate(obj: dict) -> None:
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def validate_pod_spec(spec: dict) -> None:
    """A PodSpec against Kubernetes' own schema (strict), which kubernetes_validate does not look up by kind."""
    for version in KUBE_VERSIONS:
        directory = f"kubernetes-json-schema/v{version}-local-strict"
        schema = schema_contents(f"{directory}/podspec-v1.json", version)
        definitions = schema_contents(f"{directory}/_definitions.json", version)
        registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
        jsonschema.validators.Draft202012Validator(schema, registry=registry).validate(spec)


def pod_spec_fields() -> set[str]:
    return set(schema_contents("kubernetes-json-schema/v1.37.0-local-strict/podspec-v1.json", "1.37.0")["properties"])


def every_label_set(obj: dict) -> list[dict]:
    """Every labels map and selector of an object: metadata, pod template, selectors, KServe's pod labels."""
    spec = obj.get("spec") or {}
    found = [obj["metadata"].get("labels") or {}]
    if obj["kind"] == "Deployment":
        found += [spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"]]
    elif obj["kind"] == "Service":
        found.append(spec["selector"])
    elif obj["kind"] == "InferenceService":
        found.append(spec["predictor"]["labels"])
    return found


def assert_names_and_labels_are_valid(objects: list[dict]) -> None:
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and DNS_LABEL.match(name), name
        for labels in every_label_set(obj):
            for key, value in labels.items():
                prefix, _, key_name = key.rpartition("/")
                assert LABEL_NAME.match(key_name) and len(key_name) <= 63, key
                assert not prefix or (DNS_SUBDOMAIN.match(prefix) and len(prefix) <= 253), key
                assert isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.match(value), (key, value)


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


# -- the typical stage resource, whole -------------------------------------------------------------------


def test_a_stage_resource_is_a_runtime_config_map_a_deployment_and_a_service_exactly_as_written():
    objects = serving_objects(options())

    labels = {"app.kubernetes.io/managed-by": "nothingai", "app.kubernetes.io/component": "serving",
              "nothing/endpoint": "mnist-classifier", "nothing/stage": "production", "nothing/resource-id": "7",
              "nothing/scope": SCOPE, "nothing/model-id": "3", "nothing/owner": "alice"}
    selector = {k: v for k, v in labels.items() if k not in ("nothing/model-id", "nothing/owner")}
    annotations = {"nothing/owner": "alice", "nothing/endpoint": "mnist-classifier", "nothing/stage": "production",
                   "nothing/resource-path": "/mnist", "nothing/model": "mnist"}
    probe = {"httpGet": {"path": "/v2/health/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 5}
    assert objects == [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"{NAME}-runtime", "namespace": "ml", "labels": labels,
                      "annotations": {**annotations, "nothing/runtime-sha256": RUNTIME_SHA}},
         "data": RUNTIME},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": NAME, "namespace": "ml", "labels": labels, "annotations": annotations},
         "spec": {
             "replicas": 2,
             "selector": {"matchLabels": selector},
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
             "revisionHistoryLimit": 2,
             "template": {
                 "metadata": {"labels": labels,
                              "annotations": {**annotations, "nothing/runtime-sha256": RUNTIME_SHA}},
                 "spec": {
                     "automountServiceAccountToken": False, "enableServiceLinks": False,
                     "terminationGracePeriodSeconds": 30,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1001, "runAsGroup": 1001,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{
                         "name": "model-server", "image": "nothingai/serving:kserve-0.21",
                         "imagePullPolicy": "IfNotPresent",
                         "command": ["python", "model_server.py", "--name", "mnist", "--framework", "pytorch",
                                     "--format", "pytorch", "--model-dir", "/mnt/model", "--port", "8080",
                                     "--host", "0.0.0.0", "--port-file", "/tmp/port.json"],
                         "workingDir": "/opt/nothing/serving",
                         "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
                                 {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                         "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                         "resources": {"requests": {"cpu": "2", "memory": "4294967296"},
                                       "limits": {"cpu": "2", "memory": "4294967296", "nvidia.com/gpu": "1"}},
                         "volumeMounts": [
                             {"name": "runtime", "mountPath": "/opt/nothing/serving", "readOnly": True},
                             {"name": "model", "mountPath": "/mnt/model", "subPath": "models/3-9f2c",
                              "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
                         "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 60},
                         "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
                         "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
                         "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                             "runAsNonRoot": True, "runAsUser": 1001, "runAsGroup": 1001},
                         "terminationMessagePolicy": "FallbackToLogsOnError"}],
                     "volumes": [
                         {"name": "runtime", "configMap": {"name": f"{NAME}-runtime", "defaultMode": 0o444}},
                         {"name": "model", "persistentVolumeClaim": {"claimName": "nothing-data", "readOnly": True}},
                         {"name": "tmp", "emptyDir": {}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": NAME, "namespace": "ml", "labels": labels, "annotations": annotations},
         "spec": {"type": "ClusterIP", "selector": selector,
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}},
    ]
    for obj in objects:
        validate(obj)
    assert serving_url(options()) == f"http://{NAME}.ml.svc"


# -- every shape against the official schema ---------------------------------------------------------------

SHAPES = {
    "no GPUs": dict(gpus=0),
    "two GPUs": dict(gpus=2),
    "three replicas": dict(replicas=3),
    "a long endpoint name": dict(endpoint="the-very-long-name-of-an-endpoint-for-image-classification-" * 4),
    "a stage name invalid in labels": dict(stage="Prod / 한국어 ☃ v1.0!"),
    "the runtime in the image": dict(runtime_files={}),
    "half a CPU, no memory asked": dict(cpus=0.5, memory_bytes=0),
    "nodes, pull secrets, account, extra labels": dict(
        node_selector="nvidia.com/gpu.present=true,zone in (a, b),!cordoned", image_pull_secrets=("registry",),
        service_account="nothing-serving", labels={"team.example.com/cost-center": "r-and-d"}),
}


@pytest.mark.parametrize("changes", SHAPES.values(), ids=SHAPES.keys())
def test_every_shape_passes_the_official_schema_with_valid_names_and_labels(changes):
    o = options(**changes)
    objects = serving_objects(o)

    for obj in objects:
        validate(obj)
    assert_names_and_labels_are_valid(objects)
    kinds = by_kind(objects)
    assert set(kinds) == ({"ConfigMap", "Deployment", "Service"} if o.runtime_files else {"Deployment", "Service"})
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == o.replicas
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    assert limits.get("nvidia.com/gpu") == (str(o.gpus) if o.gpus else None)
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert kinds["Service"]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_schema_check_catches_a_field_kubernetes_does_not_have():
    deployment = deployment_manifest(options())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    service = service_manifest(options())
    service["spec"]["ports"][0]["port"] = "80"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service)


# -- names and labels ------------------------------------------------------------------------------------


def test_a_long_endpoint_name_is_shortened_to_a_dns_label_and_kept_apart_by_its_hash():
    long = "the-very-long-name-of-an-endpoint-for-image-classification-" * 4
    first, second = serving_name(options(endpoint=long + "a")), serving_name(options(endpoint=long + "b"))

    assert len(first) <= 45 and DNS_LABEL.match(first)
    assert first.startswith("ep-the-very-long-name") and "-production" in first and first.endswith(
        "-7-" + first[-6:])
    assert first != second
    deployment = deployment_manifest(options(endpoint=long))
    assert deployment["metadata"]["annotations"]["nothing/endpoint"] == long  # the exact name stays readable
    assert len(deployment["metadata"]["labels"]["nothing/endpoint"]) <= 63


def test_a_stage_name_with_characters_labels_cannot_hold_gets_a_safe_label_and_keeps_its_exact_name():
    odd = options(stage="Prod / 한국어 ☃ v1.0!")
    deployment = deployment_manifest(odd)

    label = deployment["metadata"]["labels"]["nothing/stage"]
    assert LABEL_VALUE.match(label) and len(label) <= 63 and label.startswith("Prod-")
    assert deployment["metadata"]["annotations"]["nothing/stage"] == "Prod / 한국어 ☃ v1.0!"
    assert DNS_LABEL.match(deployment["metadata"]["name"])
    # Two stages that sanitise alike still select different pods.
    other = deployment_manifest(options(stage="Prod / 한국어 ☃ v1.0?"))
    assert other["spec"]["selector"]["matchLabels"]["nothing/stage"] != label
    assert other["metadata"]["name"] != deployment["metadata"]["name"]


def test_two_schedulers_in_one_namespace_never_share_names_or_pods():
    mine, theirs = options(scope="nothing-aaaaaaaa"), options(scope="nothing-bbbbbbbb")
    assert serving_name(mine) != serving_name(theirs)
    assert (service_manifest(mine)["spec"]["selector"]["nothing/scope"]
            != service_manifest(theirs)["spec"]["selector"]["nothing/scope"])


# -- model, user, GPUs ------------------------------------------------------------------------------------


def test_the_model_is_mounted_read_only_and_only_tmp_is_writable():
    pod = deployment_manifest(options())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}

    model = next(m for m in container["volumeMounts"] if m["mountPath"] == "/mnt/model")
    assert model == {"name": "model", "mountPath": "/mnt/model", "subPath": "models/3-9f2c", "readOnly": True}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "nothing-data", "readOnly": True}
    assert [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")] == ["/tmp"]
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert "--model-dir" in container["command"]
    assert container["command"][container["command"].index("--model-dir") + 1] == "/mnt/model"


def test_the_server_runs_as_the_owner_without_privileges_or_an_api_token():
    pod = deployment_manifest(options(uid=2345, gid=678))["spec"]["template"]["spec"]

    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 2345, "runAsGroup": 678,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
        "runAsUser": 2345, "runAsGroup": 678}
    assert pod["automountServiceAccountToken"] is False
    assert "fsGroup" not in pod["securityContext"]  # would re-own the shared claim's files


@pytest.mark.parametrize("gpus, resource, expected", [
    (0, "nvidia.com/gpu", None), (2, "nvidia.com/gpu", "2"), (1, "amd.com/gpu", "1")])
def test_gpus_are_limits_of_the_executors_gpu_resource(gpus, resource, expected):
    resources = deployment_manifest(options(gpus=gpus, gpu_resource=resource))[
        "spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"].get(resource) == expected
    assert resource not in resources["requests"]
    assert resources["requests"] == {"cpu": "2", "memory": "4294967296"}


def test_with_gpus_an_update_frees_an_old_pod_first_and_without_it_surges():
    gpu = deployment_manifest(options(gpus=1))["spec"]["strategy"]["rollingUpdate"]
    cpu = deployment_manifest(options(gpus=0))["spec"]["strategy"]["rollingUpdate"]
    assert (gpu, cpu) == ({"maxSurge": 0, "maxUnavailable": 1}, {"maxSurge": 1, "maxUnavailable": 0})


def test_the_probes_ask_the_servers_v2_readiness_on_8080():
    container = deployment_manifest(options(startup_seconds=1200))["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v2/health/ready", "port": 8080, "scheme": "HTTP"}
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 1200
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_names_from_the_user_reach_the_server_unexpanded():
    command = deployment_manifest(options(model_name="m$(HOME)"))["spec"]["template"]["spec"]["containers"][0][
        "command"]
    assert command[command.index("--name") + 1] == "m$$(HOME)"  # Kubernetes turns $$ into $


def test_changed_runtime_files_change_the_pod_template_so_the_pods_are_replaced():
    before = deployment_manifest(options())["spec"]["template"]
    after = deployment_manifest(options(runtime_files={**RUNTIME, "loaders.py": "def serve():\n    return 1\n"}))
    assert (before["metadata"]["annotations"]["nothing/runtime-sha256"]
            != after["spec"]["template"]["metadata"]["annotations"]["nothing/runtime-sha256"])
    baked = deployment_manifest(options(runtime_files={}))["spec"]["template"]
    assert "nothing/runtime-sha256" not in baked["metadata"]["annotations"]
    assert [v["name"] for v in baked["spec"]["volumes"]] == ["model", "tmp"]
    assert config_map_manifest(options(runtime_files={})) is None


def test_building_leaves_the_options_as_they_were():
    labels = {"team": "vision"}
    files = dict(RUNTIME)
    o = options(labels=labels, runtime_files=files)
    first = copy.deepcopy(serving_objects(o))
    built = by_kind(serving_objects(o))
    built["Deployment"]["metadata"]["labels"]["team"] = "changed"
    built["ConfigMap"]["data"]["loaders.py"] = "changed"
    assert labels == {"team": "vision"} and files == RUNTIME
    assert serving_objects(o) == first


# -- node selector -----------------------------------------------------------------------------------------


def test_the_executors_node_selector_becomes_a_required_node_affinity():
    assert node_affinity("") is None
    assert node_affinity("nvidia.com/gpu.present=true, zone in (a, b),gpu!=k80,pool notin(x),ssd,!cordoned,"
                         "tier==gold") == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                             "nodeSelectorTerms": [{"matchExpressions": [
                                 {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]},
                                 {"key": "zone", "operator": "In", "values": ["a", "b"]},
                                 {"key": "gpu", "operator": "NotIn", "values": ["k80"]},
                                 {"key": "pool", "operator": "NotIn", "values": ["x"]},
                                 {"key": "ssd", "operator": "Exists"},
                                 {"key": "cordoned", "operator": "DoesNotExist"},
                                 {"key": "tier", "operator": "In", "values": ["gold"]}]}]}}}


@pytest.mark.parametrize("selector", ["a=b=c", "zone in (a", "Bad Key=x", "a=b c", "zone in (a,b c)", "x=" + "v" * 64])
def test_a_node_selector_kubernetes_would_not_read_is_refused(selector):
    with pytest.raises(ValueError, match="not a label"):
        node_affinity(selector)


# -- the model's place in the claim ---------------------------------------------------------------------------


def test_the_models_folder_is_its_path_inside_the_data_folder_the_claim_holds():
    assert claim_sub_path("/srv/nothing", "/srv/nothing/models/3-9f2c") == "models/3-9f2c"
    assert claim_sub_path("/srv/nothing/", "/srv/nothing//models/3-9f2c/") == "models/3-9f2c"
    for outside in ("/srv/other/models/3", "/srv/nothing", "/srv/nothing/../etc", "models/3", "/srv/nothingness/3"):
        with pytest.raises(ValueError):
            claim_sub_path("/srv/nothing", outside)


# -- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"image": ""}, "serving_image"),
    ({"model_claim": ""}, "output_claim"),
    ({"model_sub_path": "/srv/nothing/models/3"}, "sub-path"),
    ({"model_sub_path": "models/../../etc"}, "sub-path"),
    ({"model_sub_path": ""}, "sub-path"),
    ({"uid": 0}, "non-root"),
    ({"replicas": 0}, "replicas"),
    ({"gpus": -1}, "gpus"),
    ({"cpus": -1}, "cpus"),
    ({"model_name": ""}, "name, framework and format"),
    ({"labels": {"nothing/owner": "mallory"}}, "reserved"),
    ({"labels": {"team": "a b"}}, "label value"),
    ({"labels": {"bad key": "x"}}, "label key"),
    ({"gpu_resource": "nvidia gpu"}, "label key"),
    ({"runtime_files": {"loaders.py": ""}}, "model_server.py"),
    ({"runtime_files": {**RUNTIME, "../x.py": ""}}, "plain file name"),
    ({"runtime_files": {**RUNTIME, "big.bin": "x" * 1_100_000}}, "ConfigMap"),
    ({"node_selector": "a=b=c"}, "not a label"),
])
def test_options_that_cannot_become_valid_objects_are_refused_before_anything_is_built(changes, message):
    with pytest.raises(ValueError, match=message):
        serving_objects(options(**changes))


# -- KServe ---------------------------------------------------------------------------------------------------


def test_with_kserve_the_same_pod_becomes_a_raw_deployment_inference_service_instead():
    o = options(inference_service=True, node_selector="nvidia.com/gpu.present=true",
                image_pull_secrets=("registry",), service_account="nothing-serving")
    objects = serving_objects(o)
    assert [obj["kind"] for obj in objects] == ["ConfigMap", "InferenceService"]  # never also a Deployment
    isvc = objects[1]
    predictor = isvc["spec"]["predictor"]
    deployment = deployment_manifest(o)
    pod = deployment["spec"]["template"]["spec"]

    assert set(isvc) <= KSERVE_OBJECT and (isvc["apiVersion"], isvc["kind"]) == (
        "serving.kserve.io/v1beta1", "InferenceService")
    assert set(isvc["spec"]) == {"predictor"} and set(isvc["spec"]) <= KSERVE_SPEC
    own = set(predictor) - pod_spec_fields()
    assert own == {"minReplicas", "maxReplicas", "labels", "annotations", "deploymentStrategy"}
    assert own <= KSERVE_COMPONENT | KSERVE_PREDICTOR
    validate_pod_spec({k: v for k, v in predictor.items() if k not in own})
    validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": isvc["metadata"]})  # ObjectMeta's schema
    assert_names_and_labels_are_valid(objects)

    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    assert predictor["labels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert predictor["annotations"] == deployment["spec"]["template"]["metadata"]["annotations"]
    assert predictor["deploymentStrategy"] == deployment["spec"]["strategy"]
    container = predictor["containers"][0]
    assert container["name"] == "kserve-container"
    assert {**container, "name": "model-server"} == pod["containers"][0]
    assert {k: v for k, v in predictor.items() if k not in own and k != "containers"} == {
        k: v for k, v in pod.items() if k != "containers"}
    assert serving_url(o) == f"http://{NAME}-predictor.ml.svc"  # KServe's Service for the predictor


def test_the_inference_service_check_catches_a_field_kserve_does_not_document():
    predictor = inference_service_manifest(options())["spec"]["predictor"]
    predictor["replicas"] = 2  # a Deployment's field, not KServe's
    assert set(predictor) - pod_spec_fields() - KSERVE_COMPONENT - KSERVE_PREDICTOR == {"replicas"}
    predictor.pop("replicas")
    predictor["containers"][0]["readinessprobe"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate_pod_spec({k: v for k, v in predictor.items() if k in pod_spec_fields()})


SDK_CHECK = r"""
import json, re, sys
from importlib.metadata import version
import kserve, kubernetes.client
def model(name):
    return getattr(kserve, name, None) or getattr(kserve.models, name, None) or getattr(kubernetes.client, name, None)
def walk(value, typ, path, unknown):
    if m := re.fullmatch(r"list\[(.+)\]", typ):
        for i, item in enumerate(value):
            walk(item, m[1], f"{path}[{i}]", unknown)
    elif m := re.fullmatch(r"dict\(str, (.+)\)", typ):
        for key, item in value.items():
            walk(item, m[1], f"{path}.{key}", unknown)
    elif hasattr(model(typ), "attribute_map"):
        cls = model(typ)
        attributes = {json_name: attr for attr, json_name in cls.attribute_map.items()}
        for key, item in value.items():
            if key in attributes:
                walk(item, cls.openapi_types[attributes[key]], f"{path}.{key}", unknown)
            else:
                unknown.append(f"{path}.{key}")
unknown = []
walk(json.load(sys.stdin), "V1beta1InferenceService", "", unknown)
print(json.dumps({"kserve": version("kserve"), "unknown": unknown}))
"""


def kserve_sdk_unknown_fields(isvc: dict) -> list[str]:
    python = REPO / ".venv" / "serving" / "bin" / "python"
    assert python.exists(), "no serving environment (.venv/serving): scripts/install.sh makes it"
    result = subprocess.run([str(python), "-c", SDK_CHECK], input=json.dumps(isvc), capture_output=True, text=True,
                            timeout=120)
    assert not (result.returncode and "ModuleNotFoundError" in result.stderr), \
        f"the serving environment has no KServe SDK: {result.stderr.strip()[-200:]}"
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["unknown"]


def test_every_inference_service_field_is_one_kserves_sdk_declares():
    isvc = inference_service_manifest(options(node_selector="zone in (a, b)", image_pull_secrets=("registry",),
                                              service_account="nothing-serving"))
    assert kserve_sdk_unknown_fields(isvc) == []
    isvc["spec"]["predictor"]["containers"][0]["bogus"] = 1
    isvc["spec"]["predictor"]["replicas"] = 2
    assert kserve_sdk_unknown_fields(isvc) == [".spec.predictor.containers[0].bogus", ".spec.predictor.replicas"]


# -- the executor's setting ----------------------------------------------------------------------------------------


def test_the_serving_image_is_a_documented_setting_of_the_executor():
    trait = KubernetesExecutor.class_traits()["serving_image"]
    assert trait.metadata.get("config") is True
    assert trait.default_value == ""
    assert 'c.KubernetesExecutor.serving_image = "' in trait.help
