"""Endpoints with stages (엔드포인트) in the session's live hub, with real model servers: a run trains a model, a
model is made from it, an endpoint serves it through the platform; a second stage with a new model; the default
switched under load with no failed request; the seed's refusal rules; who may call, see and delete; a crashing
model server."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import textwrap
import time
from pathlib import Path

import pytest
import requests

from .helpers import SteadyLoad, wait_for_sync

pytestmark = pytest.mark.hub

HANDLER = textwrap.dedent("""
    import json
    import pathlib

    def load(model_dir):
        return json.loads((pathlib.Path(model_dir) / "weights.json").read_text())

    def predict(model, instances):
        return [[model["w"] * sum(x) + model["b"]] for x in instances]
""")

TRAIN = textwrap.dedent("""
    import json, os, pathlib
    out = pathlib.Path(os.environ["EM_MODEL_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "handler.py").write_text({handler!r})
    (out / "weights.json").write_text(json.dumps({{"w": float(os.environ["EM_HP_W"]), "b": 1.0}}))
    print("trained", flush=True)
""")


def train_model(api, name: str, w: float, handler: str = HANDLER) -> dict:
    """A run that writes a plain-Python model, and the model made from it (only a COMPLETE run makes one)."""
    r = api.submit({"train.py": TRAIN.format(handler=handler)}, entry_point="train.py", gpus=0,
                   hyperparameters={"w": str(w)})
    assert r.status_code == 201, r.text
    run = api.wait_state(r.json()["id"], {"COMPLETE", "FAIL TRAIN"}, timeout=60)
    assert run["state"] == "COMPLETE", run
    r = api("POST", "/models", json={"name": name, "framework": "python", "source": {"run": run["id"]}})
    assert r.status_code == 201, r.text
    return r.json()


def wait_endpoint(api, name: str, state: str = "ACTIVE", timeout: float = 90) -> dict:
    def check():
        e = api("GET", f"/endpoints/{name}").json()
        return e if e["state"] == state else None
    return wait_for_sync(check, timeout=timeout, interval=0.3, message=f"endpoint {name} to be {state}")


def stage(endpoint: dict, name: str) -> dict:
    return next(s for s in endpoint["stages"] if s["name"] == name)


def call(hub, token: str, path: str, body: dict, timeout: float = 10) -> requests.Response:
    return requests.post(hub.url + path, json=body, headers={"Authorization": f"token {token}"}, timeout=timeout)


@pytest.fixture(scope="module")
def served(hub):
    """One user, two models (w=2 and w=3), one endpoint serving the first at /inference."""
    from .hub import Api

    name = f"srv-{secrets.token_hex(3)}"
    hub.create_user(name)
    token = hub.token_for(name)
    api = Api(hub, token)
    first, second = train_model(api, "lin2", 2.0), train_model(api, "lin3", 3.0)
    endpoint = f"ep-{secrets.token_hex(3)}"
    r = api("POST", "/endpoints", json={"name": endpoint, "model": "lin2", "resource_path": "/inference",
                                         "cpus": 0, "description": "a line", "tags": {"team": "tests"}})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["state"] in ("CREATE REQUESTED", "CREATE IN PROGRESS")
    assert created["default_stage"] == "default" and created["url"] == f"/services/nothing/serve/{endpoint}"
    yield {"user": name, "token": token, "api": api, "endpoint": endpoint, "models": (first, second)}
    # Nothing keeps serving after the module (the fuzz tests wait for an empty queue).
    delete_endpoint(api, endpoint)


def delete_endpoint(api, name: str) -> None:
    """Its stages but the default, then the endpoint; waits until it is gone (a restart in between is ridden out)."""
    def answer():
        r = api("GET", f"/endpoints/{name}")
        return r if r.status_code in (200, 404) else None

    e = wait_for_sync(answer, timeout=60, interval=0.3, message=f"endpoint {name} to answer")
    if e.status_code == 404:
        return
    for s in e.json()["stages"]:
        if not s["default"]:
            api("DELETE", f"/endpoints/{name}/stages/{s['name']}")
    wait_for_sync(lambda: (lambda r: r.status_code == 404 or len(r.json().get("stages", ())) == 1)(answer() or e),
                  timeout=60, interval=0.3, message="the other stages to go")
    wait_for_sync(lambda: api("DELETE", f"/endpoints/{name}").status_code in (202, 404), timeout=60, interval=0.3,
                  message=f"endpoint {name} to be deleted")
    wait_for_sync(lambda: api("GET", f"/endpoints/{name}").status_code == 404, timeout=60, interval=0.3,
                  message="the endpoint to go")


def test_an_endpoint_serves_a_model_made_from_a_run(hub, served):
    api, name = served["api"], served["endpoint"]
    e = wait_endpoint(api, name)
    default = stage(e, "default")
    assert default["default"] and default["state"] == "ACTIVE"
    [resource] = default["resources"]
    assert (resource["model"]["name"], resource["resource_path"], resource["ready_replicas"]) == \
        ("lin2", "/inference", 1)
    assert resource["url"] == f"/services/nothing/serve/{name}/inference"

    r = call(hub, served["token"], resource["url"], {"instances": [[1, 2], [3, 4]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[7.0], [15.0]]}
    # The stage's own URL reaches the same resource; the Open Inference Protocol (V2) is at .../infer.
    r = call(hub, served["token"], f"{default['url']}/inference", {"instances": [[0, 0]]})
    assert r.json() == {"predictions": [[1.0]]}
    # The gateway's own listener answers the same, with the same token, without the hub's proxy in front.
    from .conftest import GATEWAY_URL
    r = requests.post(f"{GATEWAY_URL}/serve/{name}/inference", json={"instances": [[1, 2]]},
                      headers={"Authorization": f"token {served['token']}"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"predictions": [[7.0]]}, r.text
    assert requests.post(f"{GATEWAY_URL}/serve/{name}/inference", json={"instances": [[1, 2]]},
                         timeout=10).status_code in (401, 403)
    assert requests.get(f"{GATEWAY_URL}/services/nothing/api/runs", timeout=10).status_code == 404
    v2 = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    r = call(hub, served["token"], resource["url"] + "/infer", v2)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [7.0, 15.0]
    # What is not served is a clear 404, a body that is not the seed's shape a 4xx from the model server.
    assert call(hub, served["token"], f"/services/nothing/serve/{name}/nowhere", {"instances": []}).status_code == 404
    assert call(hub, served["token"], resource["url"], {"rows": []}).status_code == 400

    # On Kubernetes the stage is a Deployment and a Service (schema-checked in tests/test_kube_serving.py).
    objects = api("GET", f"/endpoints/{name}/stages/default/manifests").json()["objects"]
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "Service"]
    assert objects[1]["spec"]["replicas"] == 1
    kserve = api("GET", f"/endpoints/{name}/stages/default/manifests?kserve=1").json()["objects"]
    assert [o["kind"] for o in kserve] == ["ConfigMap", "InferenceService"]

    # The replica is a run of the owner's, of kind serving, holding what the resource asked for.
    runs = api("GET", "/runs?kind=serving").json()["runs"]
    [replica] = [r for r in runs if r["state"] == "RUNNING" and r["kind"] == "serving"]
    assert replica["parent_id"] == resource["id"] and not api("GET", "/runs").json()["runs"][0]["kind"] == "serving"
    # It goes with its stage resource, not on its own.
    r = api("DELETE", f"/runs/{replica['id']}?stop=true")
    assert r.status_code == 409 and name in r.json()["message"], r.text


def test_a_new_stage_becomes_the_default_under_load_without_a_failed_request(hub, served):
    api, name, token = served["api"], served["endpoint"], served["token"]
    wait_endpoint(api, name)
    r = api("POST", f"/endpoints/{name}/stages", json={"name": "canary", "model": "lin3", "cpus": 0})
    assert r.status_code == 201, r.text
    assert stage(r.json(), "canary")["state"] in ("CREATE REQUESTED", "CREATE IN PROGRESS")
    # Stage names are unique within the endpoint; a stage that is not ACTIVE cannot become the default.
    assert api("POST", f"/endpoints/{name}/stages", json={"name": "canary", "model": "lin3"}).status_code == 409
    r = api("POST", f"/endpoints/{name}/default-stage", json={"stage": "canary"})
    assert r.status_code in (200, 409)
    e = wait_endpoint(api, name)
    assert stage(e, "canary")["state"] == "ACTIVE" and e["default_stage"] == "default"
    canary_url = stage(e, "canary")["resources"][0]["url"]
    assert call(hub, token, canary_url, {"instances": [[1, 2]]}).json() == {"predictions": [[10.0]]}

    # Steady load on the default URL while the default changes.
    def infer(session):
        return session.post(f"{hub.url}/services/nothing/serve/{name}/inference", json={"instances": [[1, 2]]},
                            headers={"Authorization": f"token {token}"}, timeout=10)

    with SteadyLoad(infer) as load:
        answers = load.answers
        wait_for_sync(lambda: len(answers) > 100, timeout=30, message="load before the switch")
        r = api("POST", f"/endpoints/{name}/default-stage", json={"stage": "canary"})
        assert r.status_code == 200, r.text
        switched = len(answers)
        wait_for_sync(lambda: len(answers) > switched + 200, timeout=30, message="load after the switch")
        # The old default's resources are removed once drained, as in the seed.
        wait_for_sync(lambda: not stage(api("GET", f"/endpoints/{name}").json(), "default")["resources"],
                      timeout=60, interval=0.3, message="the old default stage's resources to be removed")
    failed = load.failed()
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"
    predictions = [json.loads(text)["predictions"] for _, text in answers]
    assert predictions[0] == [[7.0]] and predictions[-1] == [[10.0]]
    assert set(map(json.dumps, predictions)) == {json.dumps([[7.0]]), json.dumps([[10.0]])}
    e = api("GET", f"/endpoints/{name}").json()
    assert e["default_stage"] == "canary" and stage(e, "canary")["default"]

    # API statistics of the stage: the requests it answered, none failed, latency percentiles.
    stats = wait_for_sync(lambda: (lambda s: s if s["total"]["requests"] > 50 else None)(
        api("GET", f"/endpoints/{name}/stages/canary/stats?minutes=10").json()), timeout=20,
        message="the canary stage's statistics")
    assert stats["total"]["errors"] == 0 and 0 < stats["total"]["p50_ms"] <= stats["total"]["p99_ms"]
    assert sum(p["requests"] for p in stats["series"]) == stats["total"]["requests"]


def test_the_seeds_refusals_each_name_what_is_in_the_way(hub, served):
    api, name = served["api"], served["endpoint"]
    e = api("GET", f"/endpoints/{name}").json()
    default, others = e["default_stage"], [s["name"] for s in e["stages"] if not s["default"]]
    # Endpoint names are unique.
    r = api("POST", "/endpoints", json={"name": name, "model": "lin2"})
    assert r.status_code == 409 and "unique" in r.json()["message"]
    # The default stage cannot be deleted; an endpoint with other stages cannot be deleted.
    r = api("DELETE", f"/endpoints/{name}/stages/{default}")
    assert r.status_code == 409 and "default" in r.json()["message"]
    if others:
        r = api("DELETE", f"/endpoints/{name}")
        assert r.status_code == 409 and others[0] in r.json()["message"]
    # A model an endpoint serves cannot be deleted; the message names the endpoint.
    served_model = stage(e, default)["resources"][0]["model"]["name"]
    r = api("DELETE", f"/models/{served_model}")
    assert r.status_code == 409 and name in r.json()["message"], r.text
    # Bad input: a clear 400, nothing made.
    for body in ({"name": "Bad Name", "model": "lin2"}, {"name": "ok-name", "model": "lin2", "resource_path": "x"},
                 {"name": "ok-name", "model": "lin2", "replicas": 0}, {"name": "ok-name", "model": "lin2",
                                                                        "tags": {str(i): "v" for i in range(11)}},
                 {"name": "ok-name", "model": "lin2", "gpus": 10_000}, {"name": "ok-name", "model": "nope"},
                 {"name": "ok-name", "model": "lin2", "colour": "red"}):
        r = api("POST", "/endpoints", json=body)
        assert r.status_code in (400, 404), (body, r.text)
    assert api("GET", "/endpoints/ok-name").status_code == 404


def test_others_cannot_see_call_or_delete_an_endpoint_unless_their_group_may(hub, served, make_user):
    api, name = served["api"], served["endpoint"]
    e = wait_endpoint(api, name)
    url = stage(e, e["default_stage"])["resources"][0]["url"]
    other, other_api = make_user("srvother")
    other_token = hub.token_for(other)
    assert other_api("GET", f"/endpoints/{name}").status_code == 404
    assert name not in [x["name"] for x in other_api("GET", "/endpoints").json()["endpoints"]]
    assert other_api("DELETE", f"/endpoints/{name}").status_code == 404
    assert call(hub, other_token, url, {"instances": [[1, 1]]}).status_code == 404
    assert requests.post(hub.url + url, json={"instances": [[1, 1]]}, timeout=10).status_code in (401, 403)

    # A token scoped to this one endpoint calls it, and nothing else of the service.
    scoped = hub.token_for(served["user"], scopes=[f"custom:nothing:inference!service=endpoint-{name}"])
    assert call(hub, scoped, url, {"instances": [[1, 1]]}).status_code == 200
    assert requests.get(f"{hub.api_url}/runs", headers={"Authorization": f"token {scoped}"},
                        timeout=10).status_code == 403
    elsewhere = hub.token_for(served["user"], scopes=["custom:nothing:inference!service=endpoint-another"])
    assert call(hub, elsewhere, url, {"instances": [[1, 1]]}).status_code == 403

    # The model servers' ports are not a way around the platform: a call without the replica's secret is refused.
    runs = [r for r in api("GET", "/runs?kind=serving").json()["runs"] if r["state"] == "RUNNING"]
    port_file = os.path.join(hub.root, "var", "scheduler", "runs", str(runs[0]["id"]), "serving.json")
    port = json.load(open(port_file))["port"]
    direct = requests.post(f"http://127.0.0.1:{port}/v1/models/x:predict", json={"instances": [[1, 1]]}, timeout=5)
    assert direct.status_code == 403


def test_a_group_endpoint_is_called_by_members_and_deleted_only_by_its_owner(hub, make_user):
    group = f"eg{secrets.token_hex(3)}"
    owner, api = make_user("epown")
    member, member_api = make_user("epmem")
    hub.hub_api("POST", f"/groups/{group}", json={"users": [owner, member]}).raise_for_status()
    from .hub import Api
    api = Api(hub, hub.token_for(owner))
    member_token = hub.token_for(member)
    member_api = Api(hub, member_token)
    train_model(api, "shared", 1.0)
    name = f"ge-{secrets.token_hex(3)}"
    r = api("POST", "/endpoints", json={"name": name, "model": "shared", "group": group, "cpus": 0})
    assert r.status_code == 201, r.text
    wait_endpoint(api, name)
    assert member_api("GET", f"/endpoints/{name}").status_code == 200
    assert call(hub, member_token, f"/services/nothing/serve/{name}/inference",
                {"instances": [[2, 2]]}).json() == {"predictions": [[5.0]]}
    assert member_api("DELETE", f"/endpoints/{name}").status_code == 403
    assert member_api("POST", f"/endpoints/{name}/stages", json={"name": "x", "model": "shared"}).status_code == 403
    assert api("DELETE", f"/endpoints/{name}").status_code == 202
    wait_for_sync(lambda: api("GET", f"/endpoints/{name}").status_code == 404, timeout=60, interval=0.3,
                  message="the endpoint to be deleted")
    assert api("DELETE", "/models/shared").status_code == 204


def test_a_crashing_model_server_fails_its_resource_with_the_reason_and_is_restarted(hub, make_user):
    _, api = make_user("epcrash")
    broken = HANDLER.replace("return json.loads", "raise RuntimeError('weights are corrupt'); return json.loads")
    train_model(api, "broken", 1.0, handler=broken)
    name = f"cr-{secrets.token_hex(3)}"
    assert api("POST", "/endpoints", json={"name": name, "model": "broken", "cpus": 0}).status_code == 201

    def failed_twice():
        r = stage(api("GET", f"/endpoints/{name}").json(), "default")["resources"][0]
        return r if r["restarts"] >= 2 else None
    resource = wait_for_sync(failed_twice, timeout=60, interval=0.3, message="two restarts")
    assert "weights are corrupt" in resource["last_failure_log"]
    e = api("GET", f"/endpoints/{name}").json()
    assert resource["state"] in ("CREATE FAILED", "CREATE IN PROGRESS")
    assert e["state"] in ("CREATE FAILED", "CREATE IN PROGRESS")
    assert api("DELETE", f"/endpoints/{name}").status_code == 202


def test_a_killed_replica_is_replaced_and_the_endpoint_serves_again(hub, make_user):
    from .hub import Api
    user, _ = make_user("epkill")
    token = hub.token_for(user)
    api = Api(hub, token)
    train_model(api, "sturdy", 1.0)
    name = f"kl-{secrets.token_hex(3)}"
    assert api("POST", "/endpoints", json={"name": name, "model": "sturdy", "cpus": 0}).status_code == 201
    wait_endpoint(api, name)
    [run] = [r for r in api("GET", "/runs?kind=serving").json()["runs"] if r["state"] == "RUNNING"]
    port = json.load(open(os.path.join(hub.root, "var", "scheduler", "runs", str(run["id"]), "serving.json")))["pid"]
    os.kill(port, signal.SIGKILL)
    wait_for_sync(lambda: stage(api("GET", f"/endpoints/{name}").json(), "default")["resources"][0]["restarts"] >= 1,
                  timeout=30, interval=0.2, message="the replica's end to be noticed")
    wait_endpoint(api, name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = call(hub, token, f"/services/nothing/serve/{name}/inference", {"instances": [[1, 1]]})
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.json() == {"predictions": [[3.0]]}

    # A restarted service does not judge that old end again: the count stays, the endpoint stays ACTIVE.
    restarts = stage(api("GET", f"/endpoints/{name}").json(), "default")["resources"][0]["restarts"]
    old = hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)
    wait_for_sync(lambda: _answers_again(api, name), timeout=60, interval=0.3, message="the service to answer")
    time.sleep(2)  # a few controller passes
    e = api("GET", f"/endpoints/{name}").json()
    assert e["state"] == "ACTIVE" and stage(e, "default")["resources"][0]["restarts"] == restarts, e
    assert api("DELETE", f"/endpoints/{name}").status_code == 202


def _answers_again(api, name: str) -> bool:
    try:
        return api("GET", f"/endpoints/{name}", timeout=5).json()["state"] == "ACTIVE"
    except (requests.RequestException, ValueError, KeyError):
        return False


def test_a_sigkilled_service_serves_the_endpoint_again_with_the_same_replica(hub, make_user):
    """The routes are rebuilt from the rows and the replica runs; the replica is re-attached, not started twice."""
    from .hub import Api
    user, _ = make_user("eprestart")
    token = hub.token_for(user)
    api = Api(hub, token)
    train_model(api, "steady", 2.0)
    name = f"rs-{secrets.token_hex(3)}"
    assert api("POST", "/endpoints", json={"name": name, "model": "steady", "cpus": 0}).status_code == 201
    wait_endpoint(api, name)
    before = [r["id"] for r in api("GET", "/runs?kind=serving").json()["runs"]]
    r = api("PATCH", f"/endpoints/{name}", json={"description": "kept across restarts", "tags": {"a": "b"}})
    assert r.status_code == 200 and r.json()["tags"] == {"a": "b"}
    assert api("PATCH", f"/endpoints/{name}", json={"name": "renamed"}).status_code == 400

    old = hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)

    def answers():
        try:
            r = call(hub, token, f"/services/nothing/serve/{name}/inference", {"instances": [[1, 1]]}, timeout=5)
        except requests.RequestException:
            return None
        return r if r.status_code == 200 else None
    r = wait_for_sync(answers, timeout=60, interval=0.2, message="the endpoint to answer after the restart")
    assert r.json() == {"predictions": [[5.0]]}
    assert hub.scheduler_pid() != old
    assert [r["id"] for r in api("GET", "/runs?kind=serving").json()["runs"]] == before
    e = api("GET", f"/endpoints/{name}").json()
    assert e["state"] == "ACTIVE" and e["description"] == "kept across restarts"
    assert api("DELETE", f"/endpoints/{name}").status_code == 202


def test_the_docs_commands_create_call_and_switch_an_endpoint_from_a_terminal_and_a_cell(hub, tmp_path, monkeypatch):
    """docs/endpoints.md's commands, verbatim but for the names; then the same from IPython's magics."""
    import subprocess
    import sys
    from pathlib import Path

    from .hub import Api

    user = f"epcli-{secrets.token_hex(3)}"
    hub.create_user(user)
    token = hub.token_for(user)
    api = Api(hub, token)
    train_model(api, "iris-v1", 2.0)
    train_model(api, "iris-v2", 3.0)
    name = f"iris-{secrets.token_hex(3)}"
    env = dict(os.environ, NOTHING_SERVICE_URL=f"{hub.url}/services/nothing/", JUPYTERHUB_API_TOKEN=token)
    nothing = str(Path(sys.executable).parent / "nothing")

    def cli(*args):
        result = subprocess.run([nothing, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    (tmp_path / "request.json").write_text(json.dumps({"instances": [[1, 2], [3, 4]]}))
    assert name in cli("endpoint", "create", name, "--model", "iris-v1", "--path", "/inference", "--replicas", "2",
                       "--gpus", "0", "--cpus", "0")
    wait_endpoint(api, name)
    assert json.loads(cli("predict", name, "request.json")) == {"predictions": [[7.0], [15.0]]}
    cli("endpoint", "stage-create", name, "canary", "--model", "iris-v2", "--cpus", "0")
    wait_endpoint(api, name)
    assert json.loads(cli("predict", name, "request.json", "--stage", "canary")) == {"predictions": [[10.0], [22.0]]}
    cli("endpoint", "set-default", name, "canary")
    assert json.loads(cli("predict", name, "request.json")) == {"predictions": [[10.0], [22.0]]}
    assert "canary*:ACTIVE" in cli("endpoint", "ls")
    assert "requests" in cli("endpoint", "stats", name)

    # The same words in a notebook cell.
    from IPython.testing.globalipapp import start_ipython

    monkeypatch.setenv("NOTHING_SERVICE_URL", env["NOTHING_SERVICE_URL"])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    ip = start_ipython()
    ip.run_line_magic("load_ext", "nothing.magics")
    monkeypatch.chdir(tmp_path)
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    with redirect_stdout(out):
        ip.run_line_magic("nothing_predict", f"{name} request.json")
        ip.run_line_magic("nothing_endpoint", f"show {name}")
    assert '"predictions"' in out.getvalue() and "stage canary (default): ACTIVE" in out.getvalue()
    cli("endpoint", "stage-rm", name, "default")
    wait_for_sync(lambda: len(api("GET", f"/endpoints/{name}").json()["stages"]) == 1, timeout=60, interval=0.3,
                  message="the old stage to go")
    cli("endpoint", "rm", name)

    # The short form: ``nothing endpoint create MODEL`` names the endpoint after the model.
    model = f"Iris_V2.{secrets.token_hex(2)}"
    train_model(api, model, 3.0)
    out = cli("endpoint", "create", model, "--cpus", "0")
    short = model.lower().replace("_", "-").replace(".", "-")
    assert short in out
    wait_endpoint(api, short)
    assert json.loads(cli("predict", short, "request.json")) == {"predictions": [[10.0], [22.0]]}
    cli("endpoint", "rm", short)


README = (Path(__file__).parent.parent / "README.md").read_text()


def readme_serving_commands() -> list[str]:
    """The commands of the README's "Models, endpoints and batch inference" section, in order, comments dropped."""
    section = README.split("\n## Models, endpoints and batch inference\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's serving section has no bash block"
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_serving_examples_work_verbatim_but_for_the_run_id(hub, tmp_path):
    """The README's names (iris-v1, iris, canary, nightly) and options as written; run 12 is this test's run."""
    import shlex
    import subprocess
    import sys

    from .hub import Api

    user = f"readme-{secrets.token_hex(3)}"
    hub.create_user(user)
    token = hub.token_for(user)
    api = Api(hub, token)
    records = "\n".join(json.dumps([i, i]) for i in range(3))
    train = TRAIN.format(handler=HANDLER) + textwrap.dedent(f"""
        folder = pathlib.Path(os.environ["EM_CHECKPOINT_DIR"]) / "records"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.jsonl").write_text({records!r})
    """)
    r = api.submit({"train.py": train}, entry_point="train.py", gpus=0, hyperparameters={"w": "2"})
    run_id = api.wait_state(r.json()["id"], {"COMPLETE", "FAIL TRAIN"}, timeout=60)["id"]
    train_model(api, "iris-v2", 3.0)
    (tmp_path / "request.json").write_text(json.dumps({"instances": [[1, 2]]}))
    env = dict(os.environ, NOTHING_SERVICE_URL=f"{hub.url}/services/nothing/", JUPYTERHUB_API_TOKEN=token)
    nothing = str(Path(sys.executable).parent / "nothing")
    commands = readme_serving_commands()
    assert commands[0] == "nothing model create iris-v1 --framework python --run 12", commands
    for command in commands:
        args = shlex.split(command.replace("--run 12", f"--run {run_id}").replace("run:12/", f"run:{run_id}/"))
        result = subprocess.run([nothing, *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        if args[1:3] in (["endpoint", "create"], ["endpoint", "stage-create"]):
            wait_endpoint(api, "iris")
        elif args[1] == "predict":
            assert json.loads(result.stdout)["predictions"] in ([[7.0]], [[10.0]]), result.stdout
        elif args[1:3] == ["endpoint", "set-default"]:
            assert api("GET", "/endpoints/iris").json()["default_stage"] == "canary"
        elif args[1:3] == ["batch", "create"]:
            [job] = api("GET", "/batch-inferences").json()["batch_inferences"]
            url = f"/batch-inferences/{job['id']}"
            done = wait_for_sync(lambda u=url: (lambda b: b if b["state"] in ("COMPLETE", "FAIL BATCH INFERENCE")
                                                else None)(api("GET", u).json()),
                                 timeout=90, interval=0.5, message="the batch inference")
            assert done["state"] == "COMPLETE" and done["summary"]["records"] == 3, done
    assert json.loads(subprocess.run([nothing, "predict", "iris", "request.json"], cwd=tmp_path, env=env,
                                     capture_output=True, text=True, timeout=60).stdout) == {"predictions": [[10.0]]}
    delete_endpoint(api, "iris")
