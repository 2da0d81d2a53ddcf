"""A fake Kubernetes API for the executor's tests: the boundary that cannot run here.

``FakeKubeApi`` has the surface of :class:`nothing.scheduler.executors.kube_api.KubeApi`
(``request``, ``read_text``, ``line_batches``, ``watch``).  It keeps objects by collection path like an
API server, answers creates of existing names, reads of missing ones and planted failures with the
recorded ``Status`` bodies of ``tests/data/kube/``, and serves watch events and log lines that the test
pushes.  Every call is recorded, so a test can say "created once, never twice".
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from nothing.scheduler.executors.kube_api import KubeApiError

DATA = Path(__file__).parent / "data" / "kube"
NAMESPACE = "ml"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
END = object()


def recorded(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def _status(code: int, reason: str, message: str, details: dict) -> dict:
    body = recorded({409: "status-409-job-already-exists.json", 404: "status-404-job-not-found.json"}[code])
    body.update(message=message, details=details)
    assert body["reason"] == reason
    return body


def _matches(obj: dict, selector: str | None) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKubeApi:
    def __init__(self, responses: dict[str, str] | None = None):
        self.objects: dict[str, dict[str, dict]] = {}
        self.calls: list[tuple[str, str, dict, Any]] = []
        self.failures: dict[tuple[str, str], list[str]] = {}
        self.created = dict(responses or {})  # name -> recorded file answered to its POST
        self.version = 1000
        self.watches: dict[str, asyncio.Queue] = {}
        self.logs: dict[str, asyncio.Queue] = {}
        self.texts: dict[str, str] = {}
        self.watch_calls: list[tuple[str, dict]] = []

    # -- what the test does -------------------------------------------------------------------------
    def put(self, collection: str, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        self.objects.setdefault(collection, {})[obj["metadata"]["name"]] = obj
        return obj

    def emit(self, collection: str, kind: str, obj: dict) -> None:
        """The cluster changed: store it, and tell the watchers (when one is open)."""
        if kind == "DELETED":
            self.objects.get(collection, {}).pop(obj["metadata"]["name"], None)
        elif kind in ("ADDED", "MODIFIED"):
            self.put(collection, obj)
        self.queue(self.watches, collection).put_nowait({"type": kind, "object": copy.deepcopy(obj)})

    def end_watch(self, collection: str) -> None:
        self.queue(self.watches, collection).put_nowait(END)

    def fail(self, method: str, path: str, recorded_status: str) -> None:
        """The next ``method path`` answers with a recorded Status error."""
        self.failures.setdefault((method, path), []).append(recorded_status)

    def log_lines(self, pod_log_path: str, *lines: str, end: bool = False) -> None:
        queue = self.queue(self.logs, pod_log_path)
        if lines:
            queue.put_nowait(list(lines))
        if end:
            queue.put_nowait(END)

    @staticmethod
    def queue(queues: dict, key: str) -> asyncio.Queue:
        return queues.setdefault(key, asyncio.Queue())

    def made(self, method: str, path: str | None = None) -> list[tuple[str, str, dict, Any]]:
        return [c for c in self.calls if c[0] == method and (path is None or c[1] == path)]

    # -- the API's surface ---------------------------------------------------------------------------
    async def request(self, method: str, path: str, params: dict | None = None, body: Any = None,
                      content_type: str = "application/json") -> dict:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        self.calls.append((method, path, params, copy.deepcopy(body)))
        await asyncio.sleep(0)
        planted = self.failures.get((method, path))
        if planted:
            status = recorded(planted.pop(0))
            raise KubeApiError.from_response(status["code"], json.dumps(status))
        collection, _, name = path.rpartition("/")
        if method == "POST":
            return self._create(path, body)
        if method == "GET" and path in self.objects or method == "GET" and path.endswith(("/jobs", "/pods", "/nodes")):
            return self._list(path, params.get("labelSelector"))
        if method == "GET":
            return copy.deepcopy(self._get(collection, name))
        if method == "PATCH":
            obj = self._get(collection, name)
            obj["metadata"].update(body.get("metadata", {}))
            return copy.deepcopy(obj)
        if method == "DELETE":
            if path in self.objects or path.endswith("/pods"):
                return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}
            obj = self._get(collection, name)
            if collection.endswith("/jobs") and params.get("propagationPolicy") == "Foreground":
                obj["metadata"].update(deletionTimestamp="2026-12-01T10:02:00Z", finalizers=["foregroundDeletion"])
            else:
                self.objects[collection].pop(name)
            return copy.deepcopy(obj)
        raise AssertionError(f"the fake does not answer {method} {path}")

    def _get(self, collection: str, name: str) -> dict:
        obj = self.objects.get(collection, {}).get(name)
        if obj is None:
            kind = collection.rsplit("/", 1)[-1]
            raise KubeApiError.from_response(404, json.dumps(_status(
                404, "NotFound", f'{kind} "{name}" not found', {"name": name, "kind": kind})))
        return obj

    def _create(self, collection: str, body: dict) -> dict:
        name = body["metadata"]["name"]
        if name in self.objects.get(collection, {}):
            kind = collection.rsplit("/", 1)[-1]
            raise KubeApiError.from_response(409, json.dumps(_status(
                409, "AlreadyExists", f'{kind} "{name}" already exists', {"name": name, "kind": kind})))
        if name in self.created:
            answer = recorded(self.created[name])
        else:
            answer = copy.deepcopy(body)
            answer["metadata"].update(uid=f"uid-{name}", resourceVersion=str(self.version))
            answer.pop("stringData", None)
        self.version += 1
        return copy.deepcopy(self.put(collection, answer))

    def _list(self, path: str, selector: str | None) -> dict:
        items = [copy.deepcopy(o) for o in self.objects.get(path, {}).values() if _matches(o, selector)]
        return {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)}, "items": items}

    async def read_text(self, path: str, params: dict | None = None) -> str:
        self.calls.append(("GET", path, dict(params or {}), None))
        if path not in self.texts:
            raise KubeApiError.from_response(404, json.dumps(_status(404, "NotFound", "pods not found", {})))
        return self.texts[path]

    async def line_batches(self, path: str, params: dict | None = None, timeout: float = 3600.0):
        """A followed log: the lines pushed so far, then more as they are pushed; like the API it ends once
        the pod's container has terminated and everything is sent (or when the test ends it)."""
        self.calls.append(("STREAM", path, dict(params or {}), None))
        queue = self.queue(self.logs, path)
        pod = path.removesuffix("/log").rsplit("/", 1)[-1]
        while True:
            if queue.empty() and self._terminated(pod):
                return
            try:
                item = await asyncio.wait_for(queue.get(), 0.02)
            except asyncio.TimeoutError:
                continue
            if item is END:
                return
            yield item

    def _terminated(self, pod_name: str) -> bool:
        pod = self.objects.get(PODS, {}).get(pod_name)
        return pod is not None and any("terminated" in (c.get("state") or {})
                                       for c in (pod.get("status") or {}).get("containerStatuses") or ())

    async def watch(self, path: str, params: dict | None = None, timeout_seconds: int = 300):
        self.watch_calls.append((path, dict(params or {})))
        queue = self.queue(self.watches, path)
        while (item := await queue.get()) is not END:
            yield item
