"""The C data plane in the session's live hub: nginx on the gateway's listener forwards calls to the replicas
itself, asking the service once per connection where they go; it answers as the Python gateway does, refuses
as it does, loses no call when the default stage changes, counts the stages' statistics, and comes back when
killed."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path

import pytest
import requests

from .conftest import GATEWAY_URL
from .helpers import SteadyLoad, wait_for_sync
from .test_endpoints_live import delete_endpoint, stage, train_model, wait_endpoint

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def line(hub):
    """A user, two models (w=2, w=3) and an endpoint serving the first."""
    from .hub import Api

    name = f"dp-{secrets.token_hex(3)}"
    hub.create_user(name)
    token = hub.token_for(name)
    api = Api(hub, token)
    train_model(api, "dplin2", 2.0)
    train_model(api, "dplin3", 3.0)
    endpoint = f"dpe-{secrets.token_hex(3)}"
    r = api("POST", "/endpoints", json={"name": endpoint, "model": "dplin2", "cpus": 0})
    assert r.status_code == 201, r.text
    wait_endpoint(api, endpoint)
    yield {"user": name, "token": token, "api": api, "endpoint": endpoint}
    delete_endpoint(api, endpoint)


def through_nginx(path: str, token: str | None, body: dict, session=requests) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return session.post(f"{GATEWAY_URL}{path}", json=body, headers=headers, timeout=10)


def through_python(hub, path: str, token: str | None, body: dict) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.post(f"{hub.url}/services/nothing{path}", json=body, headers=headers, timeout=10)


def nginx_dir(hub) -> Path:
    return hub.root / "var" / "scheduler" / "nginx"


def logged_stages(hub) -> list[str]:
    """The stage ids of the calls nginx forwarded to a replica itself (its stats log, flushed each second)."""
    log = nginx_dir(hub) / "logs" / "stats.log"
    rotated = log.with_name("stats.log.1")
    return [line.split()[1] for f in (rotated, log) if f.exists() for line in f.read_text().splitlines()]


def test_nginx_answers_a_call_as_the_python_gateway_does_and_forwards_it_itself(hub, line):
    token, name = line["token"], line["endpoint"]
    before = len(logged_stages(hub))
    body = {"instances": [[1, 2], [3, 4]]}
    r = through_nginx(f"/serve/{name}/inference", token, body)
    assert r.status_code == 200 and r.headers["Server"].startswith("nginx"), r.text
    assert r.json() == through_python(hub, f"/serve/{name}/inference", token, body).json() == \
        {"predictions": [[7.0], [15.0]]}
    v2 = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    r = through_nginx(f"/serve/{name}/inference/infer", token, v2)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [7.0, 15.0], r.text
    # A kept-alive connection's calls after the first are routed from nginx's cache; all went to the replica.
    session = requests.Session()
    for _ in range(20):
        assert through_nginx(f"/serve/{name}/inference", token, {"instances": [[0, 0]]}, session).json() == \
            {"predictions": [[1.0]]}
    wait_for_sync(lambda: len(logged_stages(hub)) >= before + 22, timeout=10, interval=0.2,
                  message="nginx's log of the calls it forwarded")
    # Each replica counts what it is answering (a drain waits for 0): nginx's calls reach it without the service.
    [run] = [r for r in line["api"]("GET", "/runs?kind=serving").json()["runs"] if r["state"] == "RUNNING"]
    folder = hub.root / "var" / "scheduler" / "runs" / str(run["id"])
    port, secret = json.loads((folder / "serving.json").read_text())["port"], (folder / "src" / "replica.token").read_text()
    assert 41000 <= port <= 41255  # one of nginx's declared upstreams (c.EndpointController.local_replica_ports)
    r = requests.get(f"http://127.0.0.1:{port}/nothing/in-flight", headers={"X-Nothing-Replica": secret.strip()},
                     timeout=5)
    assert r.json() == {"in_flight": 0}
    assert requests.get(f"http://127.0.0.1:{port}/nothing/in-flight", timeout=5).status_code == 403
    # The service's route answers are not for callers: nginx refuses the internal path outright.
    assert requests.get(f"{GATEWAY_URL}/_nothing/route", timeout=5).status_code == 404


def test_refusals_through_nginx_are_the_python_gateways_status_and_message(hub, line, make_user):
    token, name = line["token"], line["endpoint"]
    other, _ = make_user("dpother")
    other_token = hub.token_for(other)
    elsewhere = hub.token_for(line["user"], scopes=["custom:nothing:inference!service=endpoint-another"])
    body = {"instances": [[1, 1]]}
    cases = [
        (f"/serve/{name}/inference", other_token, 404),  # no rights: as if it did not exist
        ("/serve/no-such-endpoint/inference", token, 404),
        (f"/serve/{name}/nowhere", token, 404),
        (f"/serve/{name}/stages/nope/inference", token, 404),
        (f"/serve/{name}/inference", elsewhere, 403),  # a token for another endpoint
        (f"/serve/{name}/inference", "not-a-token", 403),
        (f"/serve/{name}/inference", None, 403),
    ]
    for path, who, status in cases:
        via_nginx, via_python = through_nginx(path, who, body), through_python(hub, path, who, body)
        assert (via_nginx.status_code, via_nginx.json()) == (via_python.status_code, via_python.json()), path
        assert via_nginx.status_code == status, (path, via_nginx.text)
    # What the model server refuses (a body not in the seed's shape) comes back as it said it.
    r = through_nginx(f"/serve/{name}/inference", token, {"rows": []})
    assert r.status_code == 400 and r.text == through_python(hub, f"/serve/{name}/inference", token, {"rows": []}).text


def test_the_default_stage_changes_under_load_through_nginx_without_a_failed_call(hub, line):
    api, name, token = line["api"], line["endpoint"], line["token"]
    r = api("POST", f"/endpoints/{name}/stages", json={"name": "canary", "model": "dplin3", "cpus": 0})
    assert r.status_code == 201, r.text
    e = wait_endpoint(api, name)
    old_resources = {r["id"] for r in stage(e, "default")["resources"]}
    old_replicas = {r["id"] for r in api("GET", "/runs?kind=serving").json()["runs"]
                    if r["state"] == "RUNNING" and r["parent_id"] in old_resources}
    assert old_replicas
    # Each session kept alive: its route answer comes from nginx's cache.
    with SteadyLoad(lambda session: through_nginx(f"/serve/{name}/inference", token, {"instances": [[1, 2]]},
                                                  session)) as load:
        answers = load.answers
        wait_for_sync(lambda: len(answers) > 200, timeout=30, message="load before the switch")
        r = api("POST", f"/endpoints/{name}/default-stage", json={"stage": "canary"})
        assert r.status_code == 200, r.text
        switched = len(answers)
        wait_for_sync(lambda: len(answers) > switched + 500, timeout=30, message="load after the switch")
        wait_for_sync(lambda: not stage(api("GET", f"/endpoints/{name}").json(), "default")["resources"],
                      timeout=60, interval=0.3, message="the old default stage's resources to be removed")
        after_removal = len(answers)
        wait_for_sync(lambda: len(answers) > after_removal + 200, timeout=30, message="load after the removal")
    failed = load.failed()
    assert not failed, f"{len(failed)} of {len(answers)} calls failed: {failed[:5]}"
    predictions = [json.loads(text)["predictions"] for _, text in answers]
    assert predictions[0] == [[7.0]] and predictions[-1] == [[10.0]]
    running = {r["id"] for r in api("GET", "/runs?kind=serving").json()["runs"] if r["state"] == "RUNNING"}
    assert not running & old_replicas, "the old default stage's replica still runs"

    # The stage's statistics count the calls nginx forwarded itself.
    canary = str(stage(api("GET", f"/endpoints/{name}").json(), "canary")["id"])
    logged = logged_stages(hub).count(canary)
    assert logged > 100
    stats = wait_for_sync(lambda: (lambda s: s if s["total"]["requests"] >= logged else None)(
        api("GET", f"/endpoints/{name}/stages/canary/stats?minutes=10").json()), timeout=20,
        message="the canary stage's statistics to count nginx's calls")
    assert stats["total"]["errors"] == 0 and stats["total"]["p50_ms"] <= stats["total"]["p99_ms"]


def test_a_killed_nginx_is_started_again_and_serves(hub, line):
    token, name = line["token"], line["endpoint"]
    pid = int((nginx_dir(hub) / "nginx.pid").read_text())
    os.killpg(pid, signal.SIGKILL)  # the master and its workers

    def serves():
        try:
            r = through_nginx(f"/serve/{name}/inference", token, {"instances": [[1, 1]]})
        except requests.RequestException:
            return None
        return r if r.status_code == 200 and r.headers.get("Server", "").startswith("nginx") else None

    time.sleep(0.2)
    r = wait_for_sync(serves, timeout=30, interval=0.2, message="nginx to serve again")
    assert r.json()["predictions"] in ([[5.0]], [[7.0]])
    assert int((nginx_dir(hub) / "nginx.pid").read_text()) != pid
