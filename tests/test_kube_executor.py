"""The Kubernetes executor without a cluster: manifests against the official schema, state handling
against recorded API responses.

No API server runs here.  The pure builders' manifests are validated with ``kubernetes_validate``
(the official OpenAPI schema, strict: an unknown or misspelt field fails) for the oldest Kubernetes we
support (1.31: pod failure policies are GA) and the newest the notebook spawner's tests use (1.37),
and compared whole to literal dicts.  The executor runs against ``FakeKubeApi`` (tests/kube_fake.py),
which answers with the responses in tests/data/kube/ (themselves validated against the same schema).
The scripts that run inside the pods are run for real, here, with this machine's Python.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from nothing.scheduler.executors.base import ExitStatus
from nothing.scheduler.executors.kube_api import KubeApi, KubeApiError
from nothing.scheduler.executors.kube_objects import (FETCH_SCRIPT, LAUNCH_SCRIPT, KubeRunOptions, job_manifest,
                                                      label_value, manifests, secret_manifest, service_manifest,
                                                      snapshot_token)
from nothing.scheduler.executors.kube_status import (first_failure, job_status, parse_nodes, parse_quantity,
                                                     pending_message, pod_exit)
from nothing.scheduler.executors.kubernetes import KubeJobRef, KubernetesExecutor
from nothing.scheduler.runenv import RunLaunch, RunPaths

from .kube_fake import DATA, JOBS, PODS, SECRETS, SERVICES, FakeKubeApi, recorded

KUBE_VERSIONS = ("1.31.0", "1.37.0")
SCOPE = "nothing-5f3c9a1e"
JOB42 = f"{SCOPE}-42"
POD42 = f"{JOB42}-xk2pq"


def validate(obj: dict) -> None:
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def validate_meta(obj: dict, kind: str) -> None:
    """Status and WatchEvent live in meta/v1's schema, which kubernetes_validate does not look up by kind."""
    directory = "kubernetes-json-schema/v1.37.0-local-strict"
    schema = schema_contents(f"{directory}/{kind}-meta-v1.json", "1.37.0")
    definitions = schema_contents(f"{directory}/_definitions.json", "1.37.0")
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    jsonschema.validators.Draft202012Validator(schema, registry=registry).validate(obj)


def options(**changes) -> KubeRunOptions:
    fields = dict(name=JOB42, namespace="ml", run_id=42, owner="alice", image="nothingai/training:pytorch-gpu",
                  program=("python3", "-u", "train.py", "--lr", "0.1"),
                  snapshot_url="http://sched:10101/api/runs/42/snapshot", uid=1001, gid=1001, nodes=("gpu1",),
                  env={"NOTHING_RUN_ID": "42", "EM_HP_LR": "0.1"}, gpus_per_node=2, cpus=8,
                  memory_bytes=32 * 2**30, deadline_seconds=3660, scope=SCOPE)
    fields.update(changes)
    return KubeRunOptions(**fields)


# -- manifests -------------------------------------------------------------------------------------


def test_a_one_node_run_is_one_plain_job_with_everything_in_place():
    job = job_manifest(options())
    validate(job)
    labels = {"app.kubernetes.io/managed-by": "nothingai", "app.kubernetes.io/component": "run",
              "nothing/run-id": "42", "nothing/owner": "alice", "nothing/scope": SCOPE}
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                "runAsUser": 1001, "runAsGroup": 1001}
    assert job == {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": JOB42, "namespace": "ml", "labels": labels, "annotations": {"nothing/owner": "alice"}},
        "spec": {
            "completions": 1, "parallelism": 1, "completionMode": "NonIndexed", "backoffLimit": 0,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
                {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
            "ttlSecondsAfterFinished": 86400,
            "activeDeadlineSeconds": 3660,
            "template": {
                "metadata": {"labels": labels, "annotations": {"nothing/owner": "alice"}},
                "spec": {
                    "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1001, "runAsGroup": 1001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": ["gpu1"]}]}]}}},
                    "initContainers": [{
                        "name": "fetch-code", "image": "nothingai/training:pytorch-gpu",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python3", "-c", FETCH_SCRIPT, "http://sched:10101/api/runs/42/snapshot",
                                    "/run/nothing/run/src"],
                        "env": [{"name": "NOTHING_SNAPSHOT_TOKEN", "valueFrom": {"secretKeyRef": {
                            "name": f"{JOB42}-snapshot", "key": "token"}}}],
                        "resources": {"requests": {"cpu": "8", "memory": "34359738368"},
                                      "limits": {"cpu": "8", "memory": "34359738368"}},
                        "volumeMounts": [{"name": "code", "mountPath": "/run/nothing/run/src"}],
                        "securityContext": security, "terminationMessagePolicy": "File"}],
                    "containers": [{
                        "name": "train", "image": "nothingai/training:pytorch-gpu", "imagePullPolicy": "IfNotPresent",
                        "command": ["python3", "-c", LAUNCH_SCRIPT, "python3", "-u", "train.py", "--lr", "0.1"],
                        "workingDir": "/run/nothing/run/src",
                        "env": [{"name": "NOTHING_RUN_ID", "value": "42"}, {"name": "EM_HP_LR", "value": "0.1"}],
                        "resources": {"requests": {"cpu": "8", "memory": "34359738368"},
                                      "limits": {"cpu": "8", "memory": "34359738368", "nvidia.com/gpu": "2"}},
                        "volumeMounts": [{"name": "run", "mountPath": "/run/nothing/run"},
                                         {"name": "code", "mountPath": "/run/nothing/run/src"}],
                        "securityContext": security, "terminationMessagePolicy": "File"}],
                    "volumes": [{"name": "run", "emptyDir": {}}, {"name": "code", "emptyDir": {}}],
                },
            },
        },
    }
    assert service_manifest(options()) is None


def test_a_two_node_run_is_an_indexed_job_whose_pods_find_rank_0_through_a_headless_service():
    o = options(nodes=("gpu1", "gpu3"), gpus_per_node=4)
    objects = manifests(o, "t0ken")
    for obj in objects:
        validate(obj)
    assert [obj["kind"] for obj in objects] == ["Secret", "Job", "Service"]
    job = objects[1]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == \
        ("Indexed", 2, 2, 0)
    assert pod["subdomain"] == JOB42
    assert pod["affinity"] == {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu1", "gpu3"]}]}]}},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"batch.kubernetes.io/job-name": JOB42}},
            "topologyKey": "kubernetes.io/hostname"}]}}
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["ports"] == [{"name": "rendezvous", "containerPort": 29500, "protocol": "TCP"}]
    assert container["env"][2:] == [
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
        {"name": "MASTER_ADDR", "value": f"{JOB42}-0.{JOB42}"},
        {"name": "MASTER_PORT", "value": "29500"},
        {"name": "NOTHING_NNODES", "value": "2"},
        {"name": "NOTHING_PROCS_PER_NODE", "value": "1"},
        {"name": "WORLD_SIZE", "value": "2"},
        {"name": "RANK", "value": "$(NODE_RANK)"},
        {"name": "LOCAL_RANK", "value": "0"},
        {"name": "TF_CONFIG", "value": '{"cluster": {"worker": ["' + JOB42 + '-0.' + JOB42 + ':29500", "' + JOB42
         + '-1.' + JOB42 + ':29500"]}, "task": {"type": "worker", "index": $(NODE_RANK)}}'},
    ]
    # As Kubernetes will expand it for index 1, TF_CONFIG is the JSON MultiWorkerMirroredStrategy reads.
    tf_config = json.loads(container["env"][-1]["value"].replace("$(NODE_RANK)", "1"))
    assert tf_config["task"] == {"type": "worker", "index": 1} and len(tf_config["cluster"]["worker"]) == 2
    assert objects[2] == {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": JOB42, "namespace": "ml", "labels": job["spec"]["template"]["metadata"]["labels"],
                     "annotations": {"nothing/owner": "alice"}},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {"batch.kubernetes.io/job-name": JOB42},
                 "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]}}
    assert objects[0]["stringData"] == {"token": "t0ken"}
    assert "t0ken" not in json.dumps(job)


def test_torchrun_is_started_on_every_node_with_the_node_rank_from_the_index():
    job = job_manifest(options(nodes=("gpu1", "gpu3"), procs_per_node=4, torchrun=True))
    validate(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][3:] == [
        "torchrun", "--nnodes=2", "--nproc-per-node=4", "--node-rank=$(NODE_RANK)", "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)", "train.py", "--lr", "0.1"]
    names = [e["name"] for e in container["env"]]
    assert "RANK" not in names and "WORLD_SIZE" not in names and "TF_CONFIG" not in names  # torchrun's to set
    assert {"name": "NOTHING_PROCS_PER_NODE", "value": "1"} in container["env"]
    shell = job_manifest(options(program=("./run.sh",), torchrun=True, nodes=("gpu1", "gpu3")))
    assert shell["spec"]["template"]["spec"]["containers"][0]["command"][9:] == ["--no-python", "./run.sh"]


def test_values_from_the_user_are_not_expanded_by_kubernetes():
    job = job_manifest(options(program=("python3", "-u", "train.py", "--path", "$(HOME)/x"),
                               env={"EM_HP_PATH": "$(HOME)/x", "EM_HPS": '{"path": "$(HOME)/x"}'}))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "$$(HOME)/x"
    assert container["env"] == [{"name": "EM_HP_PATH", "value": "$$(HOME)/x"},
                                {"name": "EM_HPS", "value": '{"path": "$$(HOME)/x"}'}]


def test_a_claim_kueue_queue_service_account_and_pull_secrets_are_passed_and_valid():
    job = job_manifest(options(output_claim="nothing-data", queue_name="team-ml", service_account="nothing-run",
                               image_pull_secrets=("registry-creds",), fetch_image="python:3.12-slim"))
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-ml"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert pod["volumes"][0] == {"name": "run", "persistentVolumeClaim": {"claimName": "nothing-data"}}
    assert pod["containers"][0]["volumeMounts"][0] == {"name": "run", "mountPath": "/run/nothing/run",
                                                       "subPath": "runs/42"}
    assert (pod["serviceAccountName"], pod["imagePullSecrets"]) == ("nothing-run", [{"name": "registry-creds"}])
    assert pod["initContainers"][0]["image"] == "python:3.12-slim"
    assert "fsGroup" not in pod["securityContext"]  # would re-own the shared claim


def test_the_schema_check_catches_a_field_kubernetes_does_not_have():
    job = job_manifest(options())
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)
    job = job_manifest(options())
    job["spec"]["backoffLimit"] = "0"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)


@pytest.mark.parametrize("changes, message", [
    ({"uid": 0}, "non-root"),
    ({"nodes": ()}, "node"),
    ({"nodes": ("gpu1", "gpu1")}, "twice"),
    ({"name": "Run_42"}, "DNS label"),
    ({"name": "n" * 53}, "DNS label"),
    ({"image": ""}, "image"),
    ({"deadline_seconds": 0}, "deadline"),
    ({"env": {"A B": "1"}}, "variable name"),
])
def test_the_builder_refuses_what_kubernetes_would_refuse_or_misread(changes, message):
    with pytest.raises(ValueError, match=message):
        job_manifest(options(**changes))


def test_owner_names_become_valid_label_values_and_stay_whole_in_an_annotation():
    assert label_value("alice") == "alice"
    value = label_value("alice@example.com")
    assert value.startswith("alice-example.com-") and len(value) <= 63
    job = job_manifest(options(owner="alice@example.com"))
    validate(job)
    assert job["metadata"]["annotations"]["nothing/owner"] == "alice@example.com"


def test_snapshot_tokens_are_per_run_and_per_key():
    assert snapshot_token(b"k", 42) == snapshot_token(b"k", 42)
    assert len({snapshot_token(b"k", 42), snapshot_token(b"k", 43), snapshot_token(b"j", 42)}) == 3


def test_recorded_responses_follow_the_official_schema():
    seen = 0
    for path in sorted(DATA.glob("*.json")):
        data = json.loads(path.read_text())
        for obj in ([e["object"] for e in data] if isinstance(data, list) else [data]):
            if obj.get("kind") == "Status":
                validate_meta(obj, "status")
            elif obj.get("metadata", {}).get("annotations", {}).get("k8s.io/initial-events-end"):
                continue  # a bookmark carries only its resourceVersion
            else:
                validate(obj)
            seen += 1
        if isinstance(data, list):
            for event in data:
                validate_meta(dict(event, object={}), "watchevent")
    assert seen >= 30


# -- parsers on recorded responses -------------------------------------------------------------------


def test_node_inventory_reads_gpus_models_memory_and_ready_cordoned_states():
    nodes = parse_nodes(recorded("nodes.json"))
    assert [(n.name, n.state, n.gpus, n.cpus, n.gpu_model, n.gpu_memory_bytes) for n in nodes] == [
        ("gpu1", "up", 8, 63, "NVIDIA-A100-SXM4-80GB", 81920 * 2**20),
        ("gpu2", "drained", 8, 63, "NVIDIA-A100-SXM4-80GB", 81920 * 2**20),
        ("gpu3", "down", 4, 63, "NVIDIA-H100-80GB-HBM3", 81559 * 2**20),
        ("cpu1", "up", 0, 63, "", 0)]
    assert nodes[0].memory_bytes == 527340060 * 1024
    assert nodes[1].reason == "cordoned (spec.unschedulable)"
    assert nodes[2].reason == "NodeStatusUnknown: Kubelet stopped posting node status."


@pytest.mark.parametrize("text, value", [("7910m", 7.91), ("65842108Ki", 65842108 * 1024), ("1e3", 1000.0),
                                         ("8", 8.0), ("16Gi", 16 * 2**30), ("1G", 1e9), (4, 4.0)])
def test_quantities_are_read_as_kubernetes_writes_them(text, value):
    assert parse_quantity(text) == value


def test_job_phases_come_from_the_conditions():
    assert [job_status(recorded(f"job-42-{s}.json")).phase for s in
            ("created", "running", "complete", "failed", "deadline")] == \
        ["pending", "running", "succeeded", "failed", "failed"]
    assert job_status(recorded("job-42-deadline.json")).reason == "DeadlineExceeded"
    assert job_status(recorded("job-42-deleting.json")).deleting


def test_pending_messages_are_the_schedulers_and_the_kubelets_words():
    assert pending_message(recorded("pod-42-unschedulable.json")).startswith(
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient nvidia.com/gpu.")
    assert pending_message(recorded("pod-42-image-pull.json")) == \
        'fetch-code: ImagePullBackOff: Back-off pulling image "nothingai/training:pytorch-gpu"'
    assert pending_message(recorded("pod-42-running.json")) == ""


def test_the_failing_rank_is_the_one_the_job_names_not_the_one_stopped_after_it():
    exits = [pod_exit(p) for p in recorded("pods-43-failed.json")["items"]]
    assert [(e.index, e.exit_code) for e in exits] == [(0, 143), (1, 3)]
    message = job_status(recorded("job-43-failed.json")).message
    assert first_failure(exits, message).index == 1
    assert first_failure(exits).index == 1  # without the message: the one that ended first
    assert pod_exit(recorded("pod-42-running.json")) is None


# -- the executor against the fake API ---------------------------------------------------------------


@dataclass(frozen=True)
class MultiNodeLaunch(RunLaunch):
    """A launch with the multi-node fields (the run spec's shape, as the dispatcher will hand it over)."""

    nodes: tuple[str, ...] = ()
    gpus_per_node: int = 0
    procs_per_node: int = 1
    torchrun: bool = False


def launch42(**changes) -> RunLaunch:
    fields = dict(run_id=42, owner="alice", experiment="mnist", entry_point="train.py", hyperparameters={"lr": 0.1},
                  gpus=(0, 1), cpus=8, memory_bytes=32 * 2**30, uid=1001, gid=1001, unix_name="alice", node="gpu1",
                  max_seconds=3600)
    fields.update(changes)
    return RunLaunch(**fields)


def run_paths(tmp_path: Path, run_id: int) -> RunPaths:
    paths = RunPaths(tmp_path / "runs" / str(run_id))
    paths.source.mkdir(parents=True)
    paths.control.mkdir(parents=True)
    (paths.source / "train.py").write_text("print('hi')\n")
    return paths


class Cluster:
    """An executor on the fake API, with what it reported."""

    def __init__(self, tmp_path: Path, fake: FakeKubeApi | None = None):
        self.tmp_path = tmp_path
        self.fake = fake or FakeKubeApi({JOB42: "job-42-created.json", f"{SCOPE}-43": "job-43-created.json"})
        self.reports: asyncio.Queue = asyncio.Queue()
        self.executor = self.new_executor()

    def new_executor(self) -> KubernetesExecutor:
        async def on_exit(run_id, status):
            self.reports.put_nowait((run_id, status))
        executor = KubernetesExecutor(on_exit, api=self.fake, namespace="ml", image="nothingai/training:pytorch-gpu",
                                      snapshot_url="http://sched:10101/api/runs/{run_id}/snapshot", job_scope=SCOPE)
        executor.set_scope(str(self.tmp_path / "runs"))
        return executor

    async def report(self) -> tuple[int, ExitStatus]:
        return await asyncio.wait_for(self.reports.get(), 5)


async def until(predicate, timeout: float = 5.0) -> None:
    async def wait():
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(wait(), timeout)


@pytest.fixture
async def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    await c.executor.stop()


def finished(pod_file: str, job_file: str) -> tuple[dict, dict]:
    return recorded(pod_file), recorded(job_file)


async def test_a_run_is_created_once_then_pending_running_and_succeeded(cluster, tmp_path):
    fake, executor = cluster.fake, cluster.executor
    paths = run_paths(tmp_path, 42)
    ref = await executor.launch(launch42(), paths, "/usr/bin/python3")
    assert ref == KubeJobRef("ml", JOB42, 42) and executor.ref_text(ref) == f"ml/{JOB42}"
    assert [(c[0], c[1]) for c in fake.calls[:3]] == [("POST", SECRETS), ("POST", JOBS),
                                                       ("PATCH", f"{SECRETS}/{JOB42}-snapshot")]
    posted = fake.made("POST", JOBS)[0][3]
    validate(posted)
    env = {e["name"]: e.get("value") for e in posted["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HOME"] == "/run/nothing/run" and env["EM_MODEL_DIR"] == "/run/nothing/run/model"
    assert env["EM_SOURCE_DIR"] == "/run/nothing/run/src" and "CUDA_VISIBLE_DEVICES" not in env
    assert posted["spec"]["activeDeadlineSeconds"] == 3660
    assert posted["spec"]["template"]["spec"]["containers"][0]["command"][3:] == [
        "python3", "-u", "train.py", "--lr", "0.1"]
    secret = fake.made("POST", SECRETS)[0][3]
    key = (tmp_path / "control" / "kube-snapshot.key").read_bytes()
    assert secret["stringData"]["token"] == snapshot_token(key, 42)
    assert oct((tmp_path / "control" / "kube-snapshot.key").stat().st_mode & 0o777) == "0o600"
    assert fake.made("PATCH")[0][3] == {"metadata": {"ownerReferences": [{
        "apiVersion": "batch/v1", "kind": "Job", "name": JOB42, "uid": "3b8f4c2e-1d6a-4e7b-9c10-5a2d7e8f9b01",
        "blockOwnerDeletion": True}]}}

    fake.emit(PODS, "ADDED", recorded("pod-42-unschedulable.json"))
    await until(lambda: executor.pending_reason(ref).startswith("0/3 nodes are available"))
    assert "2 Insufficient nvidia.com/gpu." in executor.pending_reason(ref)
    fake.emit(JOBS, "MODIFIED", recorded("job-42-running.json"))
    fake.emit(PODS, "MODIFIED", recorded("pod-42-running.json"))
    await until(lambda: executor.pending_reason(ref) == "")
    assert await executor._alive(ref)
    fake.emit(PODS, "MODIFIED", recorded("pod-42-succeeded.json"))
    fake.emit(JOBS, "MODIFIED", recorded("job-42-complete.json"))
    fake.log_lines(f"{PODS}/{POD42}/log", end=True)
    assert await cluster.report() == (42, ExitStatus("entry", 0))
    assert len(fake.made("POST", JOBS)) == 1 and not fake.made("POST", SERVICES)


@pytest.mark.parametrize("pod_file, job_file, expected, words", [
    ("pod-42-failed.json", "job-42-failed.json", ExitStatus("entry", 3), "exited with code 3"),
    ("pod-42-oomkilled.json", "job-42-failed-oom.json", ExitStatus("oom", 137, 32 * 2**30),
     "killed: out of memory (limit 32 GiB)"),
    ("pod-42-requirements.json", "job-42-failed.json", ExitStatus("requirements", 1),
     "installing requirements.txt failed (pip exited with code 1); see the log"),
    ("pod-42-fetch-failed.json", "job-42-failed.json", ExitStatus("entry", 1),
     "could not fetch the code snapshot: HTTP Error 403: Forbidden"),
    ("pod-42-disrupted.json", "job-42-failed.json", ExitStatus("node", None),
     "the pod was disrupted (DeletionByTaintManager: Taint manager: deleting due to NoExecute taint)"),
    ("pod-42-failed.json", "job-42-deadline.json", ExitStatus("timeout", None), "killed by the cluster at its time limit"),
])
async def test_how_a_run_ended_comes_from_its_pods_terminated_state(cluster, tmp_path, pod_file, job_file, expected,
                                                                     words):
    fake, executor = cluster.fake, cluster.executor
    await executor.launch(launch42(), run_paths(tmp_path, 42), "python3")
    fake.emit(PODS, "MODIFIED", recorded(pod_file))
    fake.emit(JOBS, "MODIFIED", recorded(job_file))
    run_id, status = await cluster.report()
    assert (run_id, status.phase, status.exit_code, status.memory_limit) == \
        (42, expected.phase, expected.exit_code, expected.memory_limit)
    assert status.describe() == words
    assert not status.succeeded


async def test_a_failing_index_fails_the_run_with_that_ranks_exit_and_node(cluster, tmp_path):
    fake, executor = cluster.fake, cluster.executor
    launch = MultiNodeLaunch(**{**launch42(run_id=43, node="gpu1").__dict__, "nodes": ("gpu1", "gpu3"),
                                "gpus_per_node": 4, "gpus": (0, 1, 2, 3)})
    await executor.launch(launch, run_paths(tmp_path, 43), "python3")
    posted = fake.made("POST", JOBS)[0][3]
    assert posted["spec"]["completionMode"] == "Indexed" and posted["spec"]["completions"] == 2
    service = fake.made("POST", SERVICES)[0][3]
    validate(service)
    assert service["metadata"]["ownerReferences"][0]["uid"] == "9e2d1c7a-5b3f-4a8e-8d21-6f0b3c9e7a43"
    for pod in recorded("pods-43-failed.json")["items"]:
        fake.put(PODS, pod)
    fake.emit(JOBS, "MODIFIED", recorded("job-43-failed.json"))
    run_id, status = await cluster.report()
    assert (run_id, status.phase, status.exit_code) == (43, "entry", 3)
    assert status.describe() == f"rank 1 (pod {SCOPE}-43-1-m9zvd on gpu3): exited with code 3"


async def test_cancel_deletes_the_job_in_the_foreground_and_kill_deletes_its_pods_at_once(cluster, tmp_path):
    fake, executor = cluster.fake, cluster.executor
    ref = await executor.launch(launch42(), run_paths(tmp_path, 42), "python3")
    fake.emit(JOBS, "MODIFIED", recorded("job-42-running.json"))
    await until(lambda: executor._listed.is_set())
    await executor.signal(ref, signal.SIGTERM)
    assert fake.made("DELETE") == [("DELETE", f"{JOBS}/{JOB42}", {"propagationPolicy": "Foreground"}, None)]
    await executor.signal(ref, signal.SIGKILL)
    assert fake.made("DELETE")[-1] == ("DELETE", PODS, {"labelSelector": f"batch.kubernetes.io/job-name={JOB42}",
                                                        "gracePeriodSeconds": "0"}, None)
    fake.emit(JOBS, "MODIFIED", recorded("job-42-deleting.json"))
    fake.emit(JOBS, "DELETED", recorded("job-42-deleting.json"))
    run_id, status = await cluster.report()
    assert (run_id, status) == (42, ExitStatus("killed", -signal.SIGKILL))
    assert not await executor._alive(ref)


async def test_a_job_deleted_by_someone_else_is_reported_lost_not_succeeded(cluster, tmp_path):
    fake, executor = cluster.fake, cluster.executor
    await executor.launch(launch42(), run_paths(tmp_path, 42), "python3")
    fake.emit(JOBS, "DELETED", recorded("job-42-running.json"))
    _, status = await cluster.report()
    assert status.phase == "lost" and "deleted outside the scheduler" in status.describe()


async def test_a_restart_re_attaches_by_the_stored_job_name_none_lost_none_started_twice(tmp_path):
    first = Cluster(tmp_path)
    paths = run_paths(tmp_path, 42)
    ref = await first.executor.launch(launch42(), paths, "python3")
    stored = first.executor.ref_text(ref)
    first.fake.emit(JOBS, "MODIFIED", recorded("job-42-running.json"))
    first.fake.put(PODS, recorded("pod-42-running.json"))
    await until(lambda: first.executor._listed.is_set())
    await first.executor.stop()  # the scheduler goes away; the Job goes on

    second = Cluster(tmp_path, first.fake)
    calls = len(first.fake.calls)
    executor = second.executor
    again = executor.parse_ref(42, stored)
    assert again == ref
    assert await executor.recover(42, paths) == ref  # an interrupted start is adopted
    assert await executor.recover(44, paths) is None  # 404: it never began
    executor.reattach(42, again, paths)
    await until(lambda: executor._listed.is_set())
    assert not [c for c in first.fake.calls[calls:] if c[0] in ("POST", "DELETE")]
    second.fake.emit(PODS, "MODIFIED", recorded("pod-42-succeeded.json"))
    second.fake.emit(JOBS, "MODIFIED", recorded("job-42-complete.json"))
    assert await second.report() == (42, ExitStatus("entry", 0))
    await asyncio.sleep(0.05)
    assert second.reports.empty()  # reported once
    await executor.stop()


async def test_a_start_repeated_after_a_restart_adopts_the_existing_job(tmp_path):
    fake = FakeKubeApi()
    fake.put(SECRETS, {"metadata": {"name": f"{JOB42}-snapshot", "labels": {"nothing/run-id": "42",
                                                                           "nothing/scope": SCOPE}}})
    fake.put(JOBS, recorded("job-42-running.json"))
    cluster = Cluster(tmp_path, fake)
    ref = await cluster.executor.launch(launch42(), run_paths(tmp_path, 42), "python3")
    assert ref.name == JOB42
    assert [(c[0], c[1]) for c in fake.calls[:4]] == [
        ("POST", SECRETS), ("GET", f"{SECRETS}/{JOB42}-snapshot"), ("POST", JOBS), ("GET", f"{JOBS}/{JOB42}")]
    assert len(fake.objects[JOBS]) == 1
    await until(lambda: cluster.executor._listed.is_set())
    await cluster.executor.stop()


async def test_an_existing_job_of_another_run_is_never_adopted(tmp_path):
    fake = FakeKubeApi()
    other = recorded("job-42-running.json")
    other["metadata"]["labels"]["nothing/run-id"] = "7"
    fake.put(JOBS, other)
    cluster = Cluster(tmp_path, fake)
    with pytest.raises(RuntimeError, match="is not this run's"):
        await cluster.executor.launch(launch42(), run_paths(tmp_path, 42), "python3")
    await cluster.executor.stop()


async def test_jobs_that_ended_or_vanished_while_the_scheduler_was_down_are_reported(tmp_path):
    fake = FakeKubeApi()
    fake.put(JOBS, recorded("job-42-complete.json"))
    cluster = Cluster(tmp_path, fake)
    executor = cluster.executor
    executor.reattach(42, executor.parse_ref(42, f"ml/{JOB42}"), run_paths(tmp_path, 42))
    executor.reattach(41, executor.parse_ref(41, f"ml/{SCOPE}-41"), run_paths(tmp_path, 41))  # removed by its TTL
    reports = dict([await cluster.report(), await cluster.report()])
    assert reports[42] == ExitStatus("entry", 0)
    assert reports[41].phase == "lost" and "the Job is gone" in reports[41].describe()
    await executor.stop()


async def test_a_forbidden_create_fails_the_start_with_the_apis_words(cluster, tmp_path):
    cluster.fake.fail("POST", JOBS, "status-403-forbidden.json")
    with pytest.raises(KubeApiError) as info:
        await cluster.executor.launch(launch42(), run_paths(tmp_path, 42), "python3")
    assert info.value.status == 403 and 'cannot create resource "jobs"' in str(info.value)
    assert await cluster.executor.leftovers(42) is False  # no Job was made; the Secret is removed
    assert cluster.fake.made("DELETE")[-1][1] == f"{SECRETS}/{JOB42}-snapshot"


async def test_an_expired_watch_is_resumed_from_a_fresh_list_and_an_ended_one_from_its_last_version(cluster,
                                                                                                   tmp_path):
    fake, executor = cluster.fake, cluster.executor
    ref = await executor.launch(launch42(), run_paths(tmp_path, 42), "python3")
    await until(lambda: len(fake.watch_calls) >= 2)
    for event in recorded("watch-pods-42.json"):  # ADDED, MODIFIED, BOOKMARK, then ERROR 410 Expired
        fake.queue(fake.watches, PODS).put_nowait(event)
    pod_lists = lambda: [c for c in fake.calls if c[:2] == ("GET", PODS)]  # noqa: E731
    pod_watches = lambda: [p for path, p in fake.watch_calls if path == PODS]  # noqa: E731
    await until(lambda: len(pod_lists()) == 2 and len(pod_watches()) == 2)  # the 410 made it list again
    assert pod_lists()[0][2] == {"labelSelector": f"app.kubernetes.io/managed-by=nothingai,nothing/scope={SCOPE}"}
    assert executor._pods.get(JOB42, {}) == {}  # the fresh list is the truth: the pod is not there now
    fake.emit(PODS, "ADDED", recorded("pod-42-unschedulable.json"))
    await until(lambda: executor.pending_reason(ref).startswith("0/3 nodes"))
    fake.end_watch(PODS)  # the watch's timeoutSeconds ran out: watch again from the last version seen
    await until(lambda: len(pod_watches()) == 3)
    assert pod_watches()[2]["resourceVersion"] == "81201" and len(pod_lists()) == 2


async def test_a_kueue_suspended_job_says_it_waits_for_admission(cluster, tmp_path):
    cluster.executor.queue_name = "team-ml"
    ref = await cluster.executor.launch(launch42(), run_paths(tmp_path, 42), "python3")
    assert cluster.fake.made("POST", JOBS)[0][3]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-ml"
    suspended = recorded("job-42-created.json")
    suspended["spec"]["suspend"] = True
    suspended["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-ml"
    cluster.fake.emit(JOBS, "MODIFIED", suspended)
    await until(lambda: cluster.executor.pending_reason(ref) == "suspended until Kueue admits it (queue team-ml)")


async def test_node_inventory_comes_from_the_nodes_list(cluster):
    cluster.fake.objects["/api/v1/nodes"] = {n["metadata"]["name"]: n for n in recorded("nodes.json")["items"]}
    cluster.executor.node_selector = "nvidia.com/gpu.present=true"
    nodes = await cluster.executor.inventory()
    assert [(n.name, n.state, n.gpus, n.gpu_model) for n in nodes] == [
        ("gpu1", "up", 8, "NVIDIA-A100-SXM4-80GB"), ("gpu2", "drained", 8, "NVIDIA-A100-SXM4-80GB"),
        ("gpu3", "down", 4, "NVIDIA-H100-80GB-HBM3")]
    assert nodes[0].gpu_memory_bytes == 81920 * 2**20 and nodes[0].cpus == 63
    assert cluster.fake.made("GET", "/api/v1/nodes")[0][2] == {"labelSelector": "nvidia.com/gpu.present=true"}


async def test_pod_logs_reach_the_runs_log_once_with_ranks_and_per_rank_on_request(cluster, tmp_path):
    fake, executor = cluster.fake, cluster.executor
    paths = run_paths(tmp_path, 42)
    ref = await executor.launch(launch42(), paths, "python3")
    log_path = f"{PODS}/{POD42}/log"
    lines = (DATA / "log-42.txt").read_text().splitlines()
    fake.log_lines(log_path, *lines[:2])
    fake.emit(PODS, "MODIFIED", recorded("pod-42-running.json"))
    await until(lambda: paths.log.exists() and paths.log.read_text().count("\n") == 2)
    fake.log_lines(log_path, end=True)  # the stream broke; the follower asks again from where it was
    await until(lambda: len(fake.made("STREAM", log_path)) == 2)
    assert fake.made("STREAM", log_path)[1][2]["sinceTime"] == "2026-12-01T10:00:09Z"
    fake.log_lines(log_path, *lines, end=True)  # sinceTime has second resolution: two lines come again
    fake.emit(PODS, "MODIFIED", recorded("pod-42-succeeded.json"))
    fake.emit(JOBS, "MODIFIED", recorded("job-42-complete.json"))
    await cluster.report()
    assert paths.log.read_text() == "epoch 1 loss 2.31\nepoch 2 loss 1.87\nepoch 3 loss 1.52\n"
    fake.put(PODS, recorded("pod-42-succeeded.json"))
    fake.texts[log_path] = "epoch 1 loss 2.31\n"
    assert await executor.logs(ref, rank=0) == "epoch 1 loss 2.31\n"
    assert await executor.logs(ref, rank=1) == ""


async def test_a_multi_node_runs_log_lines_carry_their_rank(cluster, tmp_path):
    fake, executor = cluster.fake, cluster.executor
    launch = MultiNodeLaunch(**{**launch42(run_id=43).__dict__, "nodes": ("gpu1", "gpu3"), "gpus_per_node": 4})
    paths = run_paths(tmp_path, 43)
    await executor.launch(launch, paths, "python3")
    pod = recorded("pods-43-failed.json")["items"][1]
    pod["status"]["phase"] = "Running"
    pod["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-12-01T10:00:09Z"}}
    fake.log_lines(f"{PODS}/{pod['metadata']['name']}/log", "2026-12-01T10:00:09.5Z all-reduce ok")
    fake.emit(PODS, "MODIFIED", pod)
    await until(lambda: paths.log.exists() and paths.log.read_text() == "[rank 1] all-reduce ok\n")


async def test_the_runs_log_is_never_written_through_a_planted_link(tmp_path):
    from nothing.scheduler.executors.kube_logs import _append_log
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "output.log"
    link.symlink_to(target)
    with pytest.raises(OSError):
        _append_log(link, ["x"], tmp_path / "pos", "2026-12-01T10:00:00Z")
    assert target.read_text() == ""


# -- the real HTTP layer against a local server ------------------------------------------------------


class Recorded(BaseHTTPRequestHandler):
    """Answers like an API server, from the recorded files; remembers the headers it was sent."""

    seen: list = []

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: bytes, chunks: int = 1):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = max(1, len(body) // chunks)
        for i in range(0, len(body), step):
            part = body[i:i + step]
            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        Recorded.seen.append((self.command, self.path, dict(self.headers)))
        if self.path.startswith("/api/v1/namespaces/ml/pods?") and "watch=true" in self.path:
            events = b"".join(json.dumps(e).encode() + b"\n" for e in recorded("watch-pods-42.json"))
            self._send(200, events, chunks=7)  # events split across chunks anywhere
        elif self.path == "/api/v1/nodes":
            self._send(200, (DATA / "nodes.json").read_bytes())
        else:
            self._send(404, (DATA / "status-404-job-not-found.json").read_bytes())

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        Recorded.seen.append((self.command, self.path, json.loads(self.rfile.read(length))))
        self._send(409, (DATA / "status-409-job-already-exists.json").read_bytes())


@pytest.fixture
def api_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorded.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_the_http_layer_sends_the_token_and_reads_lists_errors_and_watch_streams(api_server, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    api = KubeApi(api_server, token_file=str(token))
    try:
        nodes = await asyncio.wait_for(api.request("GET", "/api/v1/nodes"), 10)
        assert [n["metadata"]["name"] for n in nodes["items"]] == ["gpu1", "gpu2", "gpu3", "cpu1"]
        assert Recorded.seen[0][2]["Authorization"] == "Bearer s3cret"
        with pytest.raises(KubeApiError) as info:
            await asyncio.wait_for(api.request("POST", JOBS, body={"metadata": {"name": JOB42}}), 10)
        assert (info.value.status, info.value.reason) == (409, "AlreadyExists")
        assert Recorded.seen[1][2] == {"metadata": {"name": JOB42}}
        with pytest.raises(KubeApiError) as info:
            await asyncio.wait_for(api.request("GET", f"{JOBS}/{JOB42}"), 10)
        assert (info.value.status, info.value.reason) == (404, "NotFound")
        events = []

        async def read():
            async for event in api.watch(PODS, {"labelSelector": "a=b", "resourceVersion": "81200"}):
                events.append(event)
        await asyncio.wait_for(read(), 10)
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "BOOKMARK", "ERROR"]
        assert events[3]["object"]["code"] == 410
        assert "watch=true" in Recorded.seen[-1][1] and "resourceVersion=81200" in Recorded.seen[-1][1]
        with pytest.raises(KubeApiError) as info:
            await asyncio.wait_for(api.read_text(f"{PODS}/x/log"), 10)
        assert info.value.status == 404
    finally:
        api.close()


# -- the scripts that run inside the pods, run here ----------------------------------------------------


def run_launcher(tmp_path: Path, argv: list[str], **env) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "NOTHING_TERMINATION_LOG": str(tmp_path / "termination"), **env}
    return subprocess.run([sys.executable, "-c", LAUNCH_SCRIPT, *argv], env=environment, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


def test_the_launcher_starts_one_process_per_local_rank_with_its_rank(tmp_path):
    program = [sys.executable, "-c", "import os; print(os.environ['LOCAL_RANK'], os.environ['RANK'])"]
    result = run_launcher(tmp_path, program, NOTHING_PROCS_PER_NODE="3", NODE_RANK="1")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")[:-1]) == ["0 3", "1 4", "2 5"]


def test_a_failing_local_rank_fails_the_pod_and_stops_the_others(tmp_path):
    program = [sys.executable, "-c", "import os, sys, time\nif os.environ['LOCAL_RANK'] == '1': sys.exit(7)\n"
               "time.sleep(60)"]
    result = run_launcher(tmp_path, program, NOTHING_PROCS_PER_NODE="2", NODE_RANK="0")
    assert result.returncode == 7


def test_a_failed_requirements_install_leaves_requirements_as_the_termination_message(tmp_path):
    (tmp_path / "requirements.txt").write_text("--no-index\nthis-package-does-not-exist-anywhere==0\n")
    result = run_launcher(tmp_path, ["true"], NOTHING_REQUIREMENTS=str(tmp_path / "requirements.txt"),
                          NOTHING_PACKAGES_DIR=str(tmp_path / "packages"))
    assert result.returncode != 0
    assert (tmp_path / "termination").read_text() == "requirements"


def snapshot_server(archive: bytes, token: str):
    class Snapshot(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.headers.get("Authorization") != f"token {token}":
                self.send_response(403)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(archive)))
            self.end_headers()
            self.wfile.write(archive)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Snapshot)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def tar_gz(files: dict[str, bytes], link: str | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("escape")
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
    return gzip.compress(raw.getvalue())


# The pod's image may have a Python without tarfile's "data" filter (before 3.11.4): both ways are tried.
PYTHONS = [sys.executable] + [p for p in ("/usr/bin/python3",) if os.path.exists(p) and p != sys.executable]


@pytest.mark.parametrize("python", PYTHONS)
def test_the_init_container_fetches_with_the_runs_token_and_unpacks_safely(tmp_path, python):
    server = snapshot_server(tar_gz({"train.py": b"print(1)\n", "pkg/m.py": b"x = 1\n"}), "tok")
    url = f"http://127.0.0.1:{server.server_address[1]}/api/runs/42/snapshot"
    try:
        env = {"PATH": os.environ["PATH"], "NOTHING_TERMINATION_LOG": str(tmp_path / "termination")}
        ok = subprocess.run([python, "-c", FETCH_SCRIPT, url, str(tmp_path / "src")], capture_output=True,
                            env={**env, "NOTHING_SNAPSHOT_TOKEN": "tok"}, timeout=60)
        assert ok.returncode == 0, ok.stderr
        assert (tmp_path / "src" / "pkg" / "m.py").read_text() == "x = 1\n"
        refused = subprocess.run([python, "-c", FETCH_SCRIPT, url, str(tmp_path / "src2")],
                                 capture_output=True, env={**env, "NOTHING_SNAPSHOT_TOKEN": "wrong"}, timeout=60)
        assert refused.returncode == 1
        assert (tmp_path / "termination").read_text() == \
            "could not fetch the code snapshot: HTTP Error 403: Forbidden"
    finally:
        server.shutdown()
        server.server_close()
    bad = snapshot_server(tar_gz({"a": b""}, link="/etc/passwd"), "tok")
    try:
        url = f"http://127.0.0.1:{bad.server_address[1]}/x"
        result = subprocess.run([python, "-c", FETCH_SCRIPT, url, str(tmp_path / "src3")], capture_output=True,
                                env={**env, "NOTHING_SNAPSHOT_TOKEN": "tok"}, timeout=60)
        assert result.returncode == 1 and not (tmp_path / "src3" / "escape").exists()
    finally:
        bad.shutdown()
        bad.server_close()


def test_every_setting_is_a_documented_traitlet():
    executor = KubernetesExecutor(on_exit=None, api=FakeKubeApi())
    own = {name: trait for name, trait in executor.traits(config=True).items()
           if trait.this_class is KubernetesExecutor}
    assert len(own) >= 20
    assert [name for name, trait in own.items() if len(trait.help or "") < 20] == []
    docs = (Path(__file__).parent.parent / "docs" / "kubernetes.md").read_text()
    assert [name for name in own if f"`{name}`" not in docs and f"KubernetesExecutor.{name}" not in docs] == []


def test_secret_manifests_hold_the_token_only_as_string_data():
    secret = secret_manifest(options(), "tok")
    validate(secret)
    assert secret == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "stringData": {"token": "tok"},
                      "metadata": {"name": f"{JOB42}-snapshot", "namespace": "ml", "annotations": {"nothing/owner": "alice"},
                                   "labels": job_manifest(options())["spec"]["template"]["metadata"]["labels"]}}


# -- the real dispatcher on the fake cluster ---------------------------------------------------------


async def test_the_dispatcher_runs_a_run_on_kubernetes_and_its_pod_fetches_the_code_with_its_token(tmp_path):
    from tornado import web
    from tornado.httpclient import AsyncHTTPClient

    from nothing.scheduler import store
    from nothing.scheduler.api import snapshots
    from nothing.scheduler.db import Database
    from nothing.scheduler.dispatcher import Dispatcher
    from nothing.scheduler.policy import PriorityFifoPolicy
    from nothing.scheduler.snapshot import SnapshotLimits
    from nothing.scheduler.states import RunState

    from .helpers import make_archive, wait_for

    fake = FakeKubeApi()
    fake.objects["/api/v1/nodes"] = {n["metadata"]["name"]: n for n in recorded("nodes.json")["items"]}
    executor = KubernetesExecutor(None, api=fake, namespace="ml", image="nothingai/training:pytorch-gpu",
                                  snapshot_url="http://sched/api/runs/{run_id}/snapshot", job_scope=SCOPE)
    db = Database(f"sqlite:///{tmp_path / 'scheduler.sqlite'}")
    db.upgrade()
    dispatcher = Dispatcher(db, executor, PriorityFifoPolicy(), [], tmp_path / "runs", sys.executable,
                            SnapshotLimits(64 * 1024**2), kill_grace_seconds=1.0)
    dispatcher.inventory_interval = 0.05
    await dispatcher.start()
    server = None
    try:
        assert {n.name: n.state for n in dispatcher.node_infos} == \
            {"gpu1": "up", "gpu2": "drained", "gpu3": "down", "cpu1": "up"}
        values = dict(owner="alice", name="", experiment="default", entry_point="train.py", args=[],
                      hyperparameters={}, gpus=2, cpus=1, memory_bytes=0, priority=0, max_seconds=None,
                      snapshot_bytes=0)
        run = await dispatcher.submit(values, make_archive({"train.py": "print('hi')\n"}))
        await wait_for(lambda: run.state == RunState.RUNNING, 10, message="the run to be submitted")
        name = f"{SCOPE}-{run.id}"
        job = fake.made("POST", JOBS)[0][3]
        validate(job)
        terms = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu1"]}]}]
        assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"

        pending = recorded("pod-42-unschedulable.json")
        pending["metadata"]["labels"]["batch.kubernetes.io/job-name"] = name
        fake.emit(PODS, "ADDED", pending)
        await wait_for(lambda: "Insufficient nvidia.com/gpu" in run.reason, 10, message="the cluster's reason")
        assert run.reason.startswith(f"submitted as job ml/{name}; the cluster has not started it yet: 0/3 nodes")

        app = web.Application(snapshots.default_handlers, dispatcher=dispatcher)
        server = app.listen(0, "127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        url = f"http://127.0.0.1:{port}/api/runs/{run.id}/snapshot"
        token = fake.made("POST", SECRETS)[0][3]["stringData"]["token"]
        client = AsyncHTTPClient()
        answer = await client.fetch(url, headers={"Authorization": f"token {token}"})
        with tarfile.open(fileobj=io.BytesIO(answer.body)) as archive:
            member = next(n for n in archive.getnames() if n.endswith("train.py"))
            assert archive.extractfile(member).read() == b"print('hi')\n"
        for headers in ({"Authorization": f"token {snapshot_token(b'other key', run.id)}"}, {}):
            refused = await client.fetch(url, headers=headers, raise_error=False)
            assert refused.code == 404
        other = await client.fetch(url.replace(f"/{run.id}/", f"/{run.id + 1}/"),
                                   headers={"Authorization": f"token {token}"}, raise_error=False)
        assert other.code == 404  # the token opens its own run's code only

        done = recorded("job-42-complete.json")
        done["metadata"]["name"] = name
        done["metadata"]["labels"]["nothing/run-id"] = str(run.id)
        fake.emit(JOBS, "MODIFIED", done)
        await wait_for(lambda: run.id not in dispatcher.active, 10, message="the run to end")
        row = await db.run(store.get_run, run.id)
        assert (row.state, row.reason, row.job_ref) == (RunState.COMPLETE, "exited with code 0", f"ml/{name}")
        assert (await client.fetch(url, headers={"Authorization": f"token {token}"}, raise_error=False)).code == 404
    finally:
        if server is not None:
            server.stop()
        await dispatcher.stop()
        db.close()


def test_pods_can_never_be_configured_to_run_as_root():
    from traitlets import TraitError
    with pytest.raises(TraitError, match="must not be root"):
        KubernetesExecutor(on_exit=None, api=FakeKubeApi(), default_uid=0)


def kube_dispatcher(tmp_path: Path, fake: FakeKubeApi):
    """A real dispatcher (database, helper processes) whose executor talks to ``fake``."""
    from nothing.scheduler.db import Database
    from nothing.scheduler.dispatcher import Dispatcher
    from nothing.scheduler.policy import PriorityFifoPolicy
    from nothing.scheduler.snapshot import SnapshotLimits

    executor = KubernetesExecutor(None, api=fake, namespace="ml", image="nothingai/training:pytorch-gpu",
                                  snapshot_url="http://sched/api/runs/{run_id}/snapshot", job_scope=SCOPE)
    db = Database(f"sqlite:///{tmp_path / 'scheduler.sqlite'}")
    db.upgrade()
    dispatcher = Dispatcher(db, executor, PriorityFifoPolicy(), [], tmp_path / "runs", sys.executable,
                            SnapshotLimits(64 * 1024**2), kill_grace_seconds=0.2)
    dispatcher.inventory_interval = 0.05
    return dispatcher


def job_of(run_id: int, recorded_file: str) -> dict:
    job = recorded(recorded_file)
    job["metadata"]["name"] = f"{SCOPE}-{run_id}"
    job["metadata"]["labels"]["nothing/run-id"] = str(run_id)
    return job


async def test_through_the_dispatcher_a_restart_re_attaches_and_a_cancel_stops_the_job(tmp_path):
    from nothing.scheduler import store
    from nothing.scheduler.states import RunState

    from .helpers import make_archive, wait_for

    fake = FakeKubeApi()
    fake.objects["/api/v1/nodes"] = {n["metadata"]["name"]: n for n in recorded("nodes.json")["items"]}
    values = dict(owner="alice", name="", experiment="default", entry_point="train.py", args=[],
                  hyperparameters={}, gpus=2, cpus=1, memory_bytes=0, priority=0, max_seconds=None, snapshot_bytes=0)
    first = kube_dispatcher(tmp_path, fake)
    await first.start()
    try:
        a = await first.submit(values, make_archive({"train.py": "pass\n"}))
        b = await first.submit(values, make_archive({"train.py": "pass\n"}))
        await wait_for(lambda: a.state == b.state == RunState.RUNNING, 10, message="both runs submitted")
        fake.emit(JOBS, "MODIFIED", job_of(a.id, "job-42-running.json"))
        fake.emit(JOBS, "MODIFIED", job_of(b.id, "job-42-running.json"))
    finally:
        await first.stop()  # the scheduler goes away; the Jobs go on
        first.db.close()
    assert len(fake.made("POST", JOBS)) == 2

    second = kube_dispatcher(tmp_path, fake)
    await second.start()
    try:
        assert {r.id: r.state for r in second.active.values()} == {a.id: RunState.RUNNING, b.id: RunState.RUNNING}
        await second.cancel(b.id, "alice")
        assert ("DELETE", f"{JOBS}/{SCOPE}-{b.id}", {"propagationPolicy": "Foreground"}, None) in fake.made("DELETE")
        fake.emit(JOBS, "DELETED", job_of(b.id, "job-42-deleting.json"))
        fake.emit(JOBS, "MODIFIED", job_of(a.id, "job-42-complete.json"))
        await wait_for(lambda: not second.active, 10, message="both runs to end")
        rows = {i: await second.db.run(store.get_run, i) for i in (a.id, b.id)}
        assert (rows[a.id].state, rows[a.id].reason) == (RunState.COMPLETE, "exited with code 0")
        assert rows[b.id].state == RunState.STOPPED and rows[b.id].reason.startswith("cancelled by alice")
        assert len(fake.made("POST", JOBS)) == 2  # none started twice
    finally:
        await second.stop()
        second.db.close()
