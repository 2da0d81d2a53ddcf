"""Batch inference in the session's live hub: real jobs of the serving runtime over real input folders.

One training run leaves a python model (``handler.py``, ``weights.json``: y = 2x + 1) and folders of
JSON and JSONL files in ``$HOME/output``; a model is made from it; the batch inferences read that run's
folders or a dataset.  The jobs are started together (module fixtures) so the file's wall time stays short.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from .helpers import wait_for_sync
from .hub import Api
from .test_datasets_live import push
from .test_tracking_live import finished

pytestmark = pytest.mark.hub

DOCS = Path(__file__).resolve().parent.parent / "docs" / "batch-inference.md"
NOTHING = str(Path(sys.executable).parent / "nothing")
ENDED = {"COMPLETE", "STOPPED", "FAIL BATCH INFERENCE", "CREATE FAILED"}

HANDLER = textwrap.dedent("""
    import json, os, time

    def load(model_dir):
        with open(os.path.join(model_dir, "weights.json")) as f:
            return json.load(f)

    def predict(model, instances):
        out = []
        for x in instances:
            time.sleep(x.get("sleep", 0))
            out.append({"id": x["id"], "y": model["scale"] * x["x"] + model["bias"]})
        return out
""")
TRAIN = textwrap.dedent("""
    import json, os, shutil
    model = os.environ["EM_MODEL_DIR"]
    shutil.copy("handler.py", model)
    json.dump({"scale": 2, "bias": 1}, open(os.path.join(model, "weights.json"), "w"))
    shutil.copytree("inputs", os.path.join(os.environ["HOME"], "output"))
""")
JSONL = {  # the input folder output/data: relative path -> lines
    "a.jsonl": ['{"id": "a0", "x": 1}', '{"id": "a1", "x": 2}', 'not json', '', '{"id": "a3", "x": 4}'],
    "sub/b.jsonl": ['{"id": "b0", "x": 10}', '{"id": "b1", "x": 11}'],
    "sub/deep/c.jsonl": ['{"id": "c0", "x": -3}'],
    "skip/keep.jsonl": ['{"id": "k0", "x": 0}'],
    "skip/d.jsonl": ['{"id": "d0", "x": 0}'],
}
SELECTED = ["a.jsonl", "sub/b.jsonl", "sub/deep/c.jsonl"]  # **/*.jsonl and skip/keep.jsonl, less skip/**
SLOW = ['{"id": "s0", "x": 1}', '{"id": "s1", "x": 2, "sleep": 30}', '{"id": "s2", "x": 3}']
SLEEPY = ['{"id": "z0", "x": 1, "sleep": 60}', '{"id": "z1", "x": 2, "sleep": 60}']


def code_files() -> dict[str, str]:
    files = {"train.py": TRAIN, "handler.py": HANDLER, "inputs/data/notes.txt": "not an input\n",
             "inputs/data/e.json": '[{"id": "e0", "x": 5}]', "inputs/slow/s.jsonl": "\n".join(SLOW) + "\n",
             "inputs/sleepy/z.jsonl": "\n".join(SLEEPY) + "\n"}
    files.update({f"inputs/data/{path}": "\n".join(lines) + "\n" for path, lines in JSONL.items()})
    return files


def y(x: float) -> float:
    return 2 * x + 1


def docs_body() -> dict:
    return json.loads(re.search(r"```json\n(.*?)```", DOCS.read_text(), re.S).group(1))


def docs_cli_line() -> list[str]:
    return shlex.split(re.search(r"^(nothing batch create .*)$", DOCS.read_text(), re.M).group(1))


def new_user(hub, prefix: str) -> tuple[str, Api]:
    name = f"{prefix}-{secrets.token_hex(3)}"
    hub.create_user(name)
    return name, Api(hub, hub.token_for(name))


def get(api: Api, batch_id: int) -> dict:
    r = api("GET", f"/batch-inferences/{batch_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_batch(api: Api, batch_id: int, states=frozenset(ENDED), timeout: float = 120) -> dict:
    return wait_for_sync(lambda: (lambda b: b if b["state"] in states else None)(get(api, batch_id)),
                         timeout=timeout, interval=0.3, message=f"batch inference {batch_id} to reach {set(states)}")


def create(api: Api, **body) -> dict:
    r = api("POST", "/batch-inferences", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def result_files(api: Api, batch_id: int) -> dict[str, list[dict]]:
    """Each result file's records, by its path under output/ (the summary file apart)."""
    listing = api("GET", f"/batch-inferences/{batch_id}/results").json()
    out = {}
    for f in listing["files"]:
        r = api("GET", "/" + f["results_href"])
        assert r.status_code == 200, r.text
        if f["path"] != "output/_summary.json":
            out[f["path"].removeprefix("output/")] = [json.loads(line) for line in r.text.splitlines()]
    return out


@pytest.fixture(autouse=True)
def hub_log_on_failure(hub):
    yield
    print(hub.log()[-8000:])  # captured: shown only with a failure


@pytest.fixture(scope="module")
def owner(hub):
    return new_user(hub, "batch")


@pytest.fixture(scope="module")
def source(owner):
    """The run that leaves the model and the inputs, and the model made from it."""
    name, api = owner
    r = api.submit(code_files(), entry_point="train.py", cpus=0)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    finished(api, run_id)
    model = f"scorer-{secrets.token_hex(2)}"
    r = api("POST", "/models", json={"name": model, "framework": "python", "source": {"run": run_id}})
    assert r.status_code == 201, r.text
    return {"run": run_id, "model": model, "model_id": r.json()["id"]}


@pytest.fixture(scope="module")
def jobs(hub, owner, source):
    """Every batch inference the tests judge, created at once so their jobs run side by side."""
    try:
        return create_jobs(owner, source)
    except AssertionError:
        print(hub.log()[-8000:])  # a module fixture's failure shows no test's captured output
        raise


def create_jobs(owner, source):
    _, api = owner
    run, model = source["run"], source["model"]
    body = docs_body()
    body.update(model=model, input_path=body["input_path"].replace("run:12", f"run:{run}"), cpus=0)
    dataset = f"bdata-{secrets.token_hex(2)}"
    push(api, dataset, {
        "e.json": b'[{"id": "e0", "x": 5}, {"id": "e1", "x": 6}]', "sub/f.json": b'{"instances": [{"id": "f0", "x": 7}]}',
        "bad.json": b"{not json", "other.jsonl": b'{"id": "o0", "x": 1}\n'})
    return {
        "docs": create(api, **body),
        "dataset": create(api, name="over-dataset", model=source["model_id"], input_path=f"dataset:{dataset}",
                          input_type="json", cpus=0),
        "timeout": create(api, name="slow", model=model, input_path=f"run:{run}/output/slow", input_type="JSONL",
                          batch_size=1, timeout_seconds=1.5, cpus=0),
        "stop": create(api, name="to-stop", model=model, input_path=f"run:{run}/output/sleepy", input_type="JSONL",
                       batch_size=1, timeout_seconds=120, cpus=0),
        "max_time": create(api, name="too-long", model=model, input_path=f"run:{run}/output/sleepy",
                           input_type="JSONL", batch_size=1, timeout_seconds=120, max_time="3s", cpus=0),
    }


def test_a_jsonl_folder_with_globs_gives_one_result_file_per_selected_input_in_order(owner, source, jobs):
    _, api = owner
    created = jobs["docs"]
    assert created["state"] in ("CREATE IN PROGRESS", "RUNNING"), created
    assert created["output_path"] == f"run:{created['run_id']}/output"
    for field in ("instances", "input_path", "input_type", "include_glob", "exclude_glob", "batch_size",
                  "timeout_seconds", "max_time", "tags", "elapsed_seconds", "created_at", "summary", "reason"):
        assert field in created
    b = wait_batch(api, created["id"])
    assert b["state"] == "COMPLETE", b
    assert b["summary"]["files"] == 3 and b["summary"]["records"] == 7 and b["summary"]["errors"] == 1, b["summary"]
    assert b["summary"]["per_file"]["a.jsonl"] == {"records": 4, "errors": 1}
    assert b["elapsed_seconds"] > 0 and b["max_time"] == 600 and b["tags"] == {"team": "nlp"}
    results = result_files(api, b["id"])
    assert sorted(results) == sorted(p + ".result.jsonl" for p in SELECTED)  # exclude won over skip/keep.jsonl
    for path in SELECTED:
        records = [json.loads(line) for line in JSONL[path] if line.strip() and line.startswith("{")]
        got = results[path + ".result.jsonl"]
        assert [r["index"] for r in got] == list(range(len(got)))
        good = [r for r in got if "prediction" in r]
        assert [r["prediction"] for r in good] == [{"id": x["id"], "y": y(x["x"])} for x in records]
    bad = [r for r in results["a.jsonl.result.jsonl"] if "error" in r]
    assert len(bad) == 1 and bad[0]["index"] == 2 and bad[0]["line"] == 3 and "invalid JSON" in bad[0]["error"]
    # The same files through the run outputs API.
    listed = {f["path"] for f in api("GET", f"/runs/{b['run_id']}/outputs").json()["files"]}
    assert {"output/_summary.json", "output/a.jsonl.result.jsonl", "output/sub/deep/c.jsonl.result.jsonl"} <= listed
    r = api("GET", f"/runs/{b['run_id']}/outputs/output/sub/b.jsonl.result.jsonl")
    assert r.status_code == 200 and json.loads(r.text.splitlines()[1])["prediction"] == {"id": "b1", "y": 23}


@pytest.fixture(scope="module")
def endpoint(hub, owner, source):
    """The same model behind an endpoint (deleted after the module: the fuzz tests wait for an empty queue)."""
    name, api = owner
    endpoint = f"bep-{secrets.token_hex(3)}"
    r = api("POST", "/endpoints", json={"name": endpoint, "model": source["model"], "resource_path": "/inference",
                                         "cpus": 0})
    assert r.status_code == 201, r.text
    yield {"url": f"{hub.url}/services/nothing/serve/{endpoint}/inference", "token": hub.token_for(name),
           "name": endpoint}
    assert api("DELETE", f"/endpoints/{endpoint}").status_code == 202
    wait_for_sync(lambda: api("GET", f"/endpoints/{endpoint}").status_code == 404, timeout=60, interval=0.3,
                  message="the endpoint to go")


def test_the_batch_predictions_are_the_endpoints_for_the_same_records(owner, jobs, endpoint):
    _, api = owner
    wait_for_sync(lambda: api("GET", f"/endpoints/{endpoint['name']}").json()["state"] == "ACTIVE", timeout=90,
                  interval=0.3, message="the endpoint to be active")
    results = result_files(api, wait_batch(api, jobs["docs"]["id"])["id"])
    for path in SELECTED:
        records = [json.loads(line) for line in JSONL[path] if line.startswith("{")]
        r = requests.post(endpoint["url"], json={"instances": records}, timeout=30,
                          headers={"Authorization": f"token {endpoint['token']}"})
        assert r.status_code == 200, r.text
        batch = [x["prediction"] for x in results[path + ".result.jsonl"] if "prediction" in x]
        assert batch == r.json()["predictions"], path


def test_json_files_of_a_dataset_give_predictions_and_an_unreadable_file_one_error_record(owner, jobs):
    _, api = owner
    b = wait_batch(api, jobs["dataset"]["id"])
    assert b["state"] == "COMPLETE", b
    assert re.fullmatch(r"dataset:bdata-\w+:1", b["input_path"]), b["input_path"]  # pinned to the version read
    assert (b["summary"]["files"], b["summary"]["records"], b["summary"]["errors"]) == (3, 4, 1), b["summary"]
    results = result_files(api, b["id"])
    assert [r["prediction"] for r in results["e.json.result.jsonl"]] == [{"id": "e0", "y": 11}, {"id": "e1", "y": 13}]
    assert results["sub/f.json.result.jsonl"] == [{"index": 0, "prediction": {"id": "f0", "y": 15}}]
    assert len(results["bad.json.result.jsonl"]) == 1 and "invalid JSON" in results["bad.json.result.jsonl"][0]["error"]


def test_a_record_slower_than_the_timeout_is_an_error_record_and_the_job_still_completes(owner, jobs):
    _, api = owner
    b = wait_batch(api, jobs["timeout"]["id"])
    assert b["state"] == "COMPLETE", b
    assert (b["summary"]["records"], b["summary"]["errors"]) == (3, 1)
    got = result_files(api, b["id"])["s.jsonl.result.jsonl"]
    assert got[0]["prediction"] == {"id": "s0", "y": 3} and got[2]["prediction"] == {"id": "s2", "y": 7}
    assert "prediction" not in got[1] and "timeout" in got[1]["error"], got[1]


def test_delete_is_refused_while_running_stop_ends_stopped_then_delete_removes_its_run(owner, jobs):
    _, api = owner
    bid = jobs["stop"]["id"]
    b = wait_batch(api, bid, {"RUNNING", *ENDED}, timeout=60)
    assert b["state"] == "RUNNING", b
    r = api("DELETE", f"/batch-inferences/{bid}")
    assert r.status_code == 409 and "stop it first" in r.json()["message"]
    r = api("POST", f"/batch-inferences/{bid}/stop")
    assert r.status_code == 200 and r.json()["state"] in ("STOP IN PROGRESS", "STOPPED"), r.text
    b = wait_batch(api, bid, timeout=60)
    assert b["state"] == "STOPPED" and b["owner"] in b["reason"], b
    assert api("POST", f"/batch-inferences/{bid}/stop").status_code == 409
    assert api("DELETE", f"/batch-inferences/{bid}").status_code == 204
    assert api("GET", f"/batch-inferences/{bid}").status_code == 404
    assert api("GET", f"/runs/{b['run_id']}").status_code == 404


def test_max_time_fails_the_batch_inference_with_the_reason(owner, jobs):
    _, api = owner
    b = wait_batch(api, jobs["max_time"]["id"], timeout=90)
    assert b["state"] == "FAIL BATCH INFERENCE", b
    assert b["reason"].startswith("max total time reached"), b["reason"]
    assert b["summary"] is not None and b["summary"]["timed_out"] is True


def test_copy_makes_a_batch_inference_with_the_same_settings_and_the_overrides(owner, jobs):
    _, api = owner
    original = wait_batch(api, jobs["docs"]["id"])
    r = api("POST", f"/batch-inferences/{original['id']}/copy", json={"batch_size": 5})
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["name"] == "score-reviews-copy" and c["batch_size"] == 5 and c["run_id"] != original["run_id"]
    for field in ("input_path", "input_type", "include_glob", "exclude_glob", "timeout_seconds", "max_time", "tags",
                  "model"):
        assert c[field] == original[field], field
    c = wait_batch(api, c["id"])
    assert c["state"] == "COMPLETE" and c["summary"]["records"] == 7 and c["summary"]["errors"] == 1


def test_other_users_get_404_and_cannot_use_my_run_dataset_or_model(hub, owner, source, jobs):
    name, api = owner
    _, other = new_user(hub, "batchother")
    bid = jobs["docs"]["id"]
    for method, path in (("GET", ""), ("GET", "/results"), ("POST", "/stop"), ("POST", "/copy"), ("DELETE", "")):
        r = other(method, f"/batch-inferences/{bid}{path}")
        assert r.status_code == 404, (method, path, r.text)
    assert bid not in [b["id"] for b in other("GET", "/batch-inferences").json()["batch_inferences"]]
    theirs = {"name": "steal", "input_type": "JSONL", "cpus": 0}
    r = other("POST", "/batch-inferences", json=dict(theirs, model=source["model"],
                                                     input_path=f"run:{source['run']}/output/data"))
    assert r.status_code == 400 and "model" in r.json()["message"], r.text
    # With a model of their own, my run's folder or my dataset as the input: both read as absent.
    other_run = other.submit(code_files(), entry_point="train.py", cpus=0).json()["id"]
    finished(other, other_run)
    r = other("POST", "/models", json={"name": "own", "framework": "python", "source": {"run": other_run}})
    assert r.status_code == 201, r.text
    for path in (f"run:{source['run']}/output/data", f"dataset:{jobs['dataset']['input_path'].split(':')[1]}"):
        r = other("POST", "/batch-inferences", json=dict(theirs, model="own", input_path=path))
        assert r.status_code == 400 and "not found" in r.json()["message"], (path, r.text)


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 10001}, "batch_size"),
    ({"timeout_seconds": 0.05}, "timeout_seconds"), ({"timeout_seconds": 3601}, "timeout_seconds"),
    ({"instances": 0}, "instances"), ({"instances": 17}, "instances"), ({"input_type": "CSV"}, "input_type"),
    ({"include_glob": ["*.jsonl"] * 21}, "include_glob"), ({"exclude_glob": ["x" * 257]}, "exclude_glob"),
    ({"include_glob": ["a\0b"]}, "include_glob"), ({"max_time": "forever"}, "forever"),
    ({"tags": {f"k{i}": "v" for i in range(11)}}, "tags"), ({"input_path": "/etc"}, "input_path"),
    ({"input_path": "run:abc"}, "input_path"), ({"input_path": "run:{run}/output/../../x"}, "input_path"),
    ({"input_path": "run:{run}/src"}, "input_path"), ({"input_path": "run:{run}/output/nope"}, "no folder"),
    ({"output_path": "/tmp/out"}, "output_path"), ({"name": ""}, "name"), ({"model": "no-such-model"}, "model"),
    ({"cpus": 10_000}, "CPUs"),
])
def test_bad_fields_are_refused_with_a_400_naming_them(owner, source, change, message):
    _, api = owner
    body = {"name": "bad", "model": source["model"], "input_path": f"run:{source['run']}/output/data",
            "input_type": "JSONL", "cpus": 0}
    body.update({k: v.format(run=source["run"]) if isinstance(v, str) else v for k, v in change.items()})
    r = api("POST", "/batch-inferences", json=body)
    assert r.status_code == 400 and message in r.json()["message"], r.text


def test_the_cli_creates_waits_lists_shows_and_downloads_the_results(hub, owner, source, tmp_path):
    name, _ = owner
    env = dict(os.environ, NOTHING_SERVICE_URL=f"{hub.url}/services/nothing/", JUPYTERHUB_API_TOKEN=hub.token_for(name))

    def nothing(*args):
        r = subprocess.run([NOTHING, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        return r.stdout

    line = [a.replace("scorer", source["model"]).replace("run:12", f"run:{source['run']}") for a in docs_cli_line()]
    out = nothing(*line[1:], "--cpus", "0")
    assert re.search(r"batch inference (\d+) 'score-cli' COMPLETE: 3 files, 7 records, 1 error records", out), out
    bid = re.search(r"batch inference (\d+)", out).group(1)
    assert re.search(rf"^{bid}\s+score-cli\s+COMPLETE\s+{source['model']}\s+run:{source['run']}/output/data\s+7\s+1",
                     nothing("batch", "ls"), re.M)
    assert json.loads(nothing("batch", "show", bid))["batch_size"] == 3
    written = nothing("batch", "results", bid, "--download", str(tmp_path / "res")).split()
    assert sorted(Path(p).relative_to(tmp_path / "res").as_posix() for p in written) == sorted(
        ["_summary.json", *(p + ".result.jsonl" for p in SELECTED)])
    assert json.loads((tmp_path / "res" / "sub/deep/c.jsonl.result.jsonl").read_text()) == {
        "index": 0, "line": 1, "prediction": {"id": "c0", "y": -5}}


def test_a_sigkilled_scheduler_resumes_every_batch_inference_from_its_rows_and_runs(hub, owner, source):
    _, api = owner
    run = source["run"]
    done = create(api, name="survives", model=source["model"], input_path=f"run:{run}/output/slow",
                  input_type="JSONL", batch_size=1, timeout_seconds=1.5, cpus=0)
    stopped = create(api, name="stopped-across", model=source["model"], input_path=f"run:{run}/output/sleepy",
                     input_type="JSONL", batch_size=1, timeout_seconds=120, cpus=0)
    wait_batch(api, stopped["id"], {"RUNNING"}, timeout=60)
    assert api("POST", f"/batch-inferences/{stopped['id']}/stop").status_code == 200
    old = hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)
    wait_for_sync(lambda: api("GET", "/batch-inferences").status_code == 200, timeout=60, interval=0.2,
                  message="the scheduler to be back")
    b = wait_batch(api, done["id"])
    assert b["state"] == "COMPLETE" and (b["summary"]["records"], b["summary"]["errors"]) == (3, 1), b
    assert wait_batch(api, stopped["id"], timeout=60)["state"] == "STOPPED"
    with sqlite3.connect(f"file:{hub.root}/var/scheduler/scheduler.sqlite?mode=ro", uri=True) as db:
        jobs = db.execute("SELECT parent_id, id FROM runs WHERE kind = 'batch' AND parent_id IN (?, ?)",
                          (done["id"], stopped["id"])).fetchall()
    assert sorted(jobs) == sorted([(done["id"], b["run_id"]), (stopped["id"], get(api, stopped["id"])["run_id"])])


def test_a_group_batch_inference_is_seen_and_its_results_read_by_members_but_stopped_only_by_its_owner(hub, source):
    group = f"bg-{secrets.token_hex(3)}"
    owner_name, owner = new_user(hub, "bgown")
    member_name, member = new_user(hub, "bgmem")
    hub.hub_api("POST", f"/groups/{group}", json={"users": [owner_name, member_name]}).raise_for_status()
    run = owner.submit(code_files(), entry_point="train.py", cpus=0).json()["id"]
    finished(owner, run)
    r = owner("POST", "/models", json={"name": "gmodel", "framework": "python", "source": {"run": run}})
    assert r.status_code == 201, r.text
    b = create(owner, name="shared", model="gmodel", input_path=f"run:{run}/output/slow", input_type="JSONL",
               group=group, batch_size=1, timeout_seconds=1.5, cpus=0)
    assert b["group"] == group and b["id"] in [x["id"] for x in member("GET", "/batch-inferences").json()[
        "batch_inferences"]]
    assert member("POST", f"/batch-inferences/{b['id']}/stop").status_code == 403
    assert wait_batch(member, b["id"])["state"] == "COMPLETE"
    assert member("DELETE", f"/batch-inferences/{b['id']}").status_code == 403
    [entry] = [f for f in member("GET", f"/batch-inferences/{b['id']}/results").json()["files"]
               if f["path"] == "output/s.jsonl.result.jsonl"]
    assert json.loads(member("GET", "/" + entry["results_href"]).text.splitlines()[0])["prediction"] == {
        "id": "s0", "y": 3}
    assert member("GET", f"/batch-inferences/{b['id']}/results", params={"path": "model/handler.py"}).status_code \
        == 404  # only the results, never the rest of the run's files


def test_the_state_machine_sends_each_end_of_the_job_where_the_seed_says():
    from nothing.scheduler import batch_inference as bi

    assert bi.outcome("COMPLETE", 0, None, "", "")[0] == "COMPLETE IN PROGRESS"
    assert bi.outcome("FAIL TRAIN", 3, None, "exited with code 3", "2 of 5 files")[1] == \
        "max total time reached (2 of 5 files)"
    assert bi.outcome("FAIL TRAIN", None, "max_time", "exceeded", "")[1] == "max total time reached"
    assert bi.outcome("FAIL TRAIN", 2, None, "exited with code 2", "no file under dataset:x matches")[1] == \
        "no file under dataset:x matches"
    assert bi.outcome("STOPPED", None, "cancel", "cancelled by ann", "") == ("STOPPED", "its job was cancelled by ann")
    assert bi.outcome("STOPPED", None, "storage_quota", "storage full", "")[0] == "FAIL BATCH INFERENCE IN PROGRESS"
    assert bi.outcome("CREATE FAILED", None, None, "no such user", "")[0] == "CREATE FAILED"
    assert bi.outcome("FAIL TRAIN", 1, None, "x", "", stopping=True)[0] == "STOPPED"
    for state, targets in bi.TRANSITIONS.items():
        assert (state in {"STOPPED", "COMPLETE", "FAIL BATCH INFERENCE", "CREATE FAILED"}) == (not targets)
    with pytest.raises(bi.InvalidBatchTransition):
        bi.check_batch_transition("COMPLETE", "RUNNING")
    assert bi.parse_input("run:7").text == "run:7/output"
    assert bi.parse_input("run:7/model/./inputs/").text == "run:7/model/inputs"
    assert bi.parse_input("dataset:vision/mnist:2").dataset == "vision/mnist:2"
