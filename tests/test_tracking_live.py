"""What a run leaves behind, in a live service: metrics, checkpoints, experiments, deletion and storage quotas.

One real JupyterHub with its proxy and the scheduler; the runs execute as their
users' Unix accounts.  User ``dora`` has a storage quota of 1 MB.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from nothing.scheduler.checkpoints import CheckpointIndex

from .hub import Api, Hub
from .helpers import wait_for_sync

pytestmark = pytest.mark.hub

QUOTA_BYTES = 1_000_000


@pytest.fixture(scope="module")
def hub():
    base = Path(tempfile.mkdtemp(prefix="nothing-tracking-hub-"))
    root = base / "hub"
    root.mkdir()
    config = root / "scheduler_config.py"
    config.write_text(textwrap.dedent(f"""
        c.NothingScheduler.quota_config = {{"users": {{"dora": {{"storage_bytes": {QUOTA_BYTES}}}}}}}
        c.Tracker.interval = 0.2
        c.Tracker.disk_interval = 0.5
        c.Tracker.max_points_per_run = 50000
    """))
    h = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=4",
                   "--NothingScheduler.node_cpus=16", "--NothingScheduler.kill_grace_seconds=2",
                   f"--NothingScheduler.config_file={config}"])
    h.start()
    yield h
    h.stop()
    shutil.rmtree(base, ignore_errors=True)


def user(hub, prefix="user", admin=False, name=None) -> tuple[str, Api]:
    name = name or f"{prefix}-{secrets.token_hex(3)}"
    hub.create_user(name, admin=admin)
    return name, Api(hub, hub.token_for(name))


def submit(api: Api, code: str, **spec) -> int:
    r = api.submit({"train.py": textwrap.dedent(code)}, entry_point="train.py", **spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def finished(api: Api, run_id: int, timeout: float = 60) -> dict:
    run = api.wait_state(run_id, {"COMPLETE", "FAIL TRAIN", "STOPPED", "CREATE FAILED"}, timeout=timeout)
    assert run["state"] == "COMPLETE", (run["reason"], api("GET", f"/runs/{run_id}/logs").text)
    return run


def metrics(api: Api, run_id: int, **params) -> dict:
    r = api("GET", f"/runs/{run_id}/metrics", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def files_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


PRINTS_AND_REPORTS = """
import math
from nothing import report
for step in range(20):
    loss = 1.0 / (step + 1)
    print(f"step={step} loss={loss!r} acc={step / 20!r}", flush=True)
    report(step=step, lr=0.1 * 0.9 ** step, grad=float("nan") if step == 3 else 1.0)
print("epoch done: val_acc 0.875 (best)")
print("not a metric line, loss is what we minimise; garbage=abc")
report(step=99, big=float("inf"))
"""


def test_metrics_from_stdout_and_report_are_stored_exactly_as_printed(hub):
    _, api = user(hub)
    run_id = submit(api, PRINTS_AND_REPORTS)
    finished(api, run_id)
    series = metrics(api, run_id)["series"]  # whole as soon as the run's end is visible: read a last time first
    assert [p[0] for p in series["loss"]] == list(range(20))
    assert [p[2] for p in series["loss"]] == [1.0 / (s + 1) for s in range(20)]
    assert [p[2] for p in series["acc"]] == [s / 20 for s in range(20)]
    assert [p[2] for p in series["lr"]] == [0.1 * 0.9 ** s for s in range(20)]
    assert series["grad"][3][2] == "NaN" and series["grad"][4][2] == 1.0
    assert series["big"] == [[99, series["big"][0][1], "Infinity"]]
    assert "garbage" not in series and "val_acc" not in series  # not name=number
    assert abs(series["lr"][0][1] - time.time()) < 120  # wall time of the report
    summary = api.run(run_id)["metric_summary"]
    assert summary["loss"] == {"latest": 0.05, "step": 19, "min": 0.05, "max": 1.0, "count": 20,
                               "goal": "minimize", "best": 0.05}
    assert summary["acc"]["goal"] == "maximize" and summary["acc"]["best"] == 19 / 20
    assert summary["grad"]["latest"] == 1.0 and summary["grad"]["min"] == 1.0  # NaN is never a min

    r = api("GET", f"/runs/{run_id}/metrics", params={"format": "csv", "name": "acc"})
    assert r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(int(x["step"]), float(x["value"])) for x in rows] == [(s, s / 20) for s in range(20)]


def test_named_metrics_use_their_regular_expression(hub):
    _, api = user(hub)
    run_id = submit(api, """
        for epoch in range(3):
            print(f"epoch {epoch}: val acc {0.5 + epoch / 10:.2f}, loss={9 - epoch}")
    """, metrics=[{"name": "val_acc", "regex": r"val acc ([0-9.]+)"}, {"name": "loss"}])
    finished(api, run_id)
    series = wait_for_sync(lambda: metrics(api, run_id)["series"] or None)
    assert {k: [p[2] for p in v] for k, v in series.items()} == {"val_acc": [0.5, 0.6, 0.7], "loss": [9, 8, 7]}
    assert api.run(run_id)["metrics"][0] == {"name": "val_acc", "regex": r"val acc ([0-9.]+)", "goal": ""}


@pytest.mark.parametrize("rule, message", [
    ({"name": "x", "regex": "(a"}, "does not compile"),
    ({"name": "x", "regex": r"(a)\1"}, "does not compile"),  # backreferences: RE2 refuses them
    ({"name": "x", "regex": "abc"}, "needs a group"),
    ({"name": "../x"}, "must start with a letter"),
])
def test_bad_metric_rules_are_refused_at_submit(hub, rule, message):
    _, api = user(hub)
    r = api.submit({"train.py": "pass"}, entry_point="train.py", metrics=[rule])
    assert r.status_code == 400 and message in r.json()["message"], r.text
    assert api("GET", "/runs").json()["total"] == 0  # nothing half-made


def test_a_flood_of_metric_lines_and_names_is_bounded_and_the_service_keeps_answering(hub):
    _, api = user(hub)
    # 1,000 distinct names (100 are kept) and 120,000 points (50,000 are stored: the hub's cap).
    run_id = submit(api, """
        import sys
        out = sys.stdout
        for i in range(120000):
            out.write(f"step={i} loss={i}\\n")
        out.write("x" * 200000 + " loss=5\\n")  # a line past the 64 KiB bound: skipped
        out.write("".join(f"name{i}=1 " for i in range(1000)) + "\\n")
    """)
    slowest = 0.0
    while api.run(run_id)["state"] not in ("COMPLETE", "FAIL TRAIN"):
        started = time.monotonic()
        assert api("GET", "/runs").status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.1)
    assert slowest < 5, f"an API call took {slowest:.1f} s while metrics were read"
    summary = wait_for_sync(lambda: (lambda s: s if s.get("loss", {}).get("count") == 120000 else None)(
        api.run(run_id)["metric_summary"]), message="every loss point to be summarised")
    assert len(summary) == 100
    assert summary["loss"] == {"latest": 119999, "step": 119999, "min": 0, "max": 119999, "count": 120000,
                               "goal": "minimize", "best": 0}
    assert api.run(run_id)["metric_summary"]["loss"]["count"] == 120000
    stored = metrics(api, run_id, name="loss", limit=1000000)
    assert len(stored["series"]["loss"]) == 50000  # the cap; the later names are summarised only
    assert summary["name98"]["count"] == 1 and "name99" not in summary
    events = api("GET", f"/runs/{run_id}/events").json()["events"]
    assert events[-1]["to"] == "COMPLETE"
    log = api("GET", f"/runs/{run_id}/logs", params={"tail": 1}).text
    assert "more than 50,000 points" in log


CHECKPOINTS = """
import os
from nothing import report, save
out = os.environ["EM_CHECKPOINT_DIR"]
for epoch, size in ((1, 1000), (2, 30000), (3, 5)):
    report(step=epoch, loss=1 / epoch)
    with open(os.path.join(out, f"epoch-{epoch}.pt"), "wb") as f:
        f.write(os.urandom(size))
    save(f"epoch-{epoch}.pt", step=epoch)
os.makedirs(os.path.join(out, "saved_model", "variables"))
open(os.path.join(out, "saved_model", "saved_model.pb"), "wb").write(b"p" * 700)
open(os.path.join(out, "saved_model", "variables", "v.data"), "wb").write(b"v" * 4096)
"""


def test_checkpoints_are_listed_with_exact_sizes_and_removing_them_frees_exactly_that(hub):
    _, api = user(hub)
    run_id = submit(api, CHECKPOINTS)
    finished(api, run_id)
    listing = wait_for_sync(lambda: (lambda c: c if c["checkpoints"] and c["checkpoints"][0]["summary"] else None)(
        api("GET", f"/runs/{run_id}/checkpoints").json()), message="checkpoints with summaries")
    by_name = {c["checkpoint"]: c for c in listing["checkpoints"]}
    assert {n: c["bytes"] for n, c in by_name.items()} == {
        "epoch-1.pt": 1000, "epoch-2.pt": 30000, "epoch-3.pt": 5, "saved_model": 4796}
    assert listing["total_bytes"] == 35801
    assert by_name["epoch-2.pt"]["step"] == 2 and by_name["epoch-2.pt"]["summary"] == {"loss": 0.5}
    assert by_name["saved_model"]["kind"] == "folder"
    assert all(c["elapsed_seconds"] is not None and c["elapsed_seconds"] >= -1 for c in listing["checkpoints"])

    run_dir = Path(hub.root, "var", "scheduler", "runs", str(run_id))
    before = files_bytes(run_dir)
    r = api("DELETE", f"/runs/{run_id}/checkpoints", params={"name": "epoch-[12]*"})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["removed"]) == ["epoch-1.pt", "epoch-2.pt"]
    assert [c["checkpoint"] for c in r.json()["checkpoints"]] == ["epoch-3.pt", "saved_model"] or \
        sorted(c["checkpoint"] for c in r.json()["checkpoints"]) == ["epoch-3.pt", "saved_model"]
    assert files_bytes(run_dir) == before - 31000
    r = api("DELETE", f"/runs/{run_id}/checkpoints", params={"name": "*"})
    assert r.json()["checkpoints"] == [] and r.json()["total_bytes"] == 0
    assert files_bytes(run_dir) == before - 35801
    assert api("DELETE", f"/runs/{run_id}/checkpoints", params={"name": "*"}).status_code == 404
    assert api("DELETE", f"/runs/{run_id}/checkpoints", params={"name": "../x"}).status_code == 400


MANY_CHECKPOINTS = """
import os, time
d = os.environ["EM_CHECKPOINT_DIR"]
for i in range(25):
    open(os.path.join(d, f"step-{i:03d}.pt"), "wb").write(b"c" * (i + 1))
    os.utime(os.path.join(d, f"step-{i:03d}.pt"), (1000 + i, 1000 + i))
"""


def test_checkpoints_are_listed_a_page_at_a_time_with_the_count_and_total_of_all(hub):
    _, api = user(hub)
    run_id = submit(api, MANY_CHECKPOINTS)
    finished(api, run_id)
    url = f"/runs/{run_id}/checkpoints"
    whole = api("GET", url).json()
    assert [c["checkpoint"] for c in whole["checkpoints"]] == [f"step-{i:03d}.pt" for i in range(25)]
    assert whole["count"] == 25 and whole["total_bytes"] == sum(range(1, 26)) and whole["offset"] == 0
    for _ in range(2):  # the same answer whether the folder is read again or comes from the index
        page = api("GET", url, params={"offset": 20, "limit": 10}).json()
        assert page["checkpoints"] == whole["checkpoints"][20:]
        assert (page["count"], page["total_bytes"], page["offset"], page["limit"]) == (25, 325, 20, 10)
    assert api("GET", url, params={"offset": 30, "limit": 5}).json()["checkpoints"] == []
    for bad in ({"limit": 0}, {"limit": "x"}, {"offset": -1}):
        r = api("GET", url, params=bad)
        assert r.status_code == 400, (bad, r.text)
    time.sleep(CheckpointIndex.settle_seconds + 0.5)  # the folder settled: kept in the index, the answer with it
    assert api("GET", url).json() == whole and api("GET", url).json() == whole
    assert api("GET", url, params={"offset": 20, "limit": 10}).json()["checkpoints"] == whole["checkpoints"][20:]
    removed = api("DELETE", url, params={"name": "step-02*"})
    assert removed.status_code == 200 and removed.json()["count"] == 20
    page = api("GET", url, params={"limit": 3}).json()  # the listing after a removal shows what is left
    assert [c["checkpoint"] for c in page["checkpoints"]] == ["step-000.pt", "step-001.pt", "step-002.pt"]
    assert page["count"] == 20 and page["total_bytes"] == sum(range(1, 21))
    assert api("GET", url).json()["checkpoints"] == whole["checkpoints"][:20]


def test_a_run_starts_read_only_from_another_runs_checkpoint(hub):
    _, api = user(hub)
    source = submit(api, CHECKPOINTS)
    finished(api, source)
    reader = submit(api, """
        import os, time
        while not os.path.exists("release"):
            time.sleep(0.05)
    """, checkpoint=f"{source}:epoch-2.pt")
    run = api.wait_state(reader, "RUNNING")
    assert run["checkpoint"] == f"{source}:epoch-2.pt"
    # The source must stay while a run reads it.
    r = api("DELETE", f"/runs/{source}")
    assert r.status_code == 409 and f"run {reader} (RUNNING) starts from its checkpoints" in r.json()["message"]
    assert api("DELETE", f"/runs/{reader}", params={"stop": "true"}).status_code == 204
    assert api("GET", f"/runs/{reader}").status_code == 404
    assert api("DELETE", f"/runs/{source}").status_code == 204
    r = api.submit({"train.py": "pass"}, entry_point="train.py", checkpoint=f"{source}")
    assert r.status_code == 400 and f"run {source} not found" in r.json()["message"]


def test_checkpoint_input_cannot_be_written(hub):
    _, api = user(hub)
    source = submit(api, CHECKPOINTS)
    finished(api, source)
    reader = submit(api, """
        import errno, json, os
        folder = os.environ["EM_CHECKPOINT_INPUT_DIR"]
        result = {"files": sorted(os.listdir(folder)), "size": os.path.getsize(os.path.join(folder, "epoch-2.pt"))}
        for name in ("epoch-2.pt", "new"):
            try:
                open(os.path.join(folder, name), "ab").write(b"x")
                result[name] = "written"
            except OSError as e:
                result[name] = errno.errorcode[e.errno]
        json.dump(result, open(os.path.join(os.environ["EM_MODEL_DIR"], "seen.json"), "w"))
    """, checkpoint=f"{source}:epoch-2.pt")
    finished(api, reader)
    seen = json.loads(api("GET", f"/runs/{reader}/outputs/model/seen.json").content)
    assert seen == {"files": ["epoch-2.pt"], "size": 30000, "epoch-2.pt": "EROFS", "new": "EACCES"}
    whole = submit(api, """
        import os
        print(sorted(os.listdir(os.environ["EM_CHECKPOINT_INPUT_DIR"])))
    """, checkpoint=str(source))
    finished(api, whole)
    assert "['epoch-1.pt', 'epoch-2.pt', 'epoch-3.pt', 'saved_model']" in api("GET", f"/runs/{whole}/logs").text
    r = api.submit({"train.py": "pass"}, entry_point="train.py", checkpoint=f"{source}:nope.pt")
    assert r.status_code == 400 and "has no checkpoint 'nope.pt'" in r.json()["message"]


def test_experiments_are_made_by_runs_counted_renamed_and_deleted_only_when_empty(hub):
    _, api = user(hub)
    first = submit(api, "print('loss=0.5')", experiment="resnet")
    second = submit(api, "print('loss=0.25')\nraise SystemExit(1)", experiment="resnet")
    api.wait_state(second, "FAIL TRAIN")
    finished(api, first)
    wait_for_sync(lambda: all(api.run(i)["metric_summary"] for i in (first, second)))
    found = api("GET", "/experiments", params={"metric": "loss"}).json()["experiments"]
    assert [(e["name"], e["runs"], e["runs_by_state"], e["metric"]) for e in found] == [
        ("resnet", 2, {"COMPLETE": 1, "FAIL TRAIN": 1}, {"name": "loss", "best": 0.25})]
    assert api("POST", "/experiments", json={"name": "resnet"}).status_code == 409
    r = api("POST", "/experiments", json={"name": "vit", "description": "patches"})
    assert r.status_code == 201 and r.json()["runs"] == 0 and r.json()["description"] == "patches"
    r = api("DELETE", "/experiments/resnet")
    assert r.status_code == 409 and "still has 2 runs" in r.json()["message"]
    r = api("PATCH", "/experiments/resnet", json={"name": "resnet50", "description": "bigger"})
    assert r.status_code == 200 and r.json()["name"] == "resnet50" and r.json()["runs"] == 2
    assert api.run(first)["experiment"] == "resnet50"
    assert api("PATCH", "/experiments/resnet50", json={"name": "vit"}).status_code == 409
    for run_id in (first, second):
        assert api("DELETE", f"/runs/{run_id}").status_code == 204
    assert api("DELETE", "/experiments/resnet50").status_code == 204
    assert [e["name"] for e in api("GET", "/experiments").json()["experiments"]] == ["vit"]
    assert api("POST", "/experiments", json={"name": "../x"}).status_code == 400


def test_an_experiments_metric_rules_are_the_default_of_its_runs(hub):
    _, api = user(hub)
    r = api("POST", "/experiments", json={"name": "bert", "metrics": [{"name": "f1", "regex": r"F1 ([0-9.]+)",
                                                                       "goal": "maximize"}]})
    assert r.status_code == 201 and r.json()["metrics"][0]["name"] == "f1"
    assert api("POST", "/experiments", json={"name": "x", "metrics": [{"name": "a", "regex": "("}]}).status_code == 400
    default = submit(api, "print('F1 0.75 loss=3')", experiment="bert")
    own = submit(api, "print('F1 0.75 loss=3')", experiment="bert", metrics=[{"name": "loss"}])
    for run_id in (default, own):
        finished(api, run_id)
    assert wait_for_sync(lambda: metrics(api, default)["series"] or None) == {"f1": [[0, pytest.approx(time.time(),
                                                                                     abs=120), 0.75]]}
    assert set(wait_for_sync(lambda: metrics(api, own)["series"] or None)) == {"loss"}
    r = api("PATCH", "/experiments/bert", json={"metrics": None})
    assert r.status_code == 200 and r.json()["metrics"] is None


def test_deleting_a_run_removes_its_rows_and_files_and_frees_the_disk(hub):
    _, api = user(hub)
    run_id = submit(api, """
        import os, time
        open(os.path.join(os.environ["EM_MODEL_DIR"], "w.bin"), "wb").write(os.urandom(300000))
        open(os.path.join(os.environ["EM_TENSORBOARD_LOG_DIR"], "events.out"), "wb").write(b"e" * 1000)
        print("loss=1", flush=True)
        while not os.path.exists("release"):
            time.sleep(0.05)
    """)
    api.wait_state(run_id, "RUNNING")
    wait_for_sync(lambda: metrics(api, run_id)["series"].get("loss"))
    data = Path(hub.root, "var", "scheduler")
    before = files_bytes(data / "runs")
    r = api("DELETE", f"/runs/{run_id}")
    assert r.status_code == 409 and "stop it first" in r.json()["message"]
    assert api("DELETE", f"/runs/{run_id}", params={"stop": "true"}).status_code == 204
    assert api("GET", f"/runs/{run_id}").status_code == 404
    assert api("GET", f"/runs/{run_id}/metrics").status_code == 404
    assert not (data / "runs" / str(run_id)).exists() and not (data / "control" / str(run_id)).exists()
    assert before - files_bytes(data / "runs") >= 301000


def test_a_user_over_the_storage_quota_is_warned_and_refused_until_they_free_space(hub):
    _, api = user(hub, name="dora")
    big = submit(api, """
        import os, time
        open(os.path.join(os.environ["EM_CHECKPOINT_DIR"], "big.pt"), "wb").write(os.urandom(1200000))
        while not os.path.exists(os.path.join(os.environ["EM_SOURCE_DIR"], "release")) and \\
                "storage quota" not in open(os.path.join(os.environ["HOME"], "output.log")).read():
            time.sleep(0.1)
    """)
    finished(api, big)
    assert "nothing: storage quota exceeded: you use" in api("GET", f"/runs/{big}/logs").text
    r = api.submit({"train.py": "pass"}, entry_point="train.py")
    assert r.status_code == 403
    message = r.json()["message"]
    assert "of your 1.0 MB" in message and "nothing model rm" in message and "nothing model ls" in message
    storage = api("GET", "/storage").json()
    assert storage["user"]["quota_bytes"] == QUOTA_BYTES and storage["user"]["used_bytes"] > QUOTA_BYTES
    assert api("DELETE", f"/runs/{big}/checkpoints", params={"name": "*"}).json()["freed_bytes"] >= 1200000
    assert api("GET", "/storage").json()["user"]["used_bytes"] < QUOTA_BYTES
    assert api.submit({"train.py": "pass"}, entry_point="train.py").status_code == 201


def test_another_user_sees_none_of_it_and_an_admin_sees_all(hub):
    owner, api = user(hub)
    _, other = user(hub)
    _, admin = user(hub, "admin", admin=True)
    run_id = submit(api, CHECKPOINTS, experiment="private-exp")
    finished(api, run_id)
    for method, path, params in (("GET", f"/runs/{run_id}/metrics", {}),
                                 ("GET", f"/runs/{run_id}/checkpoints", {}),
                                 ("DELETE", f"/runs/{run_id}/checkpoints", {"name": "*"}),
                                 ("DELETE", f"/runs/{run_id}", {}),
                                 ("GET", "/experiments/private-exp", {}),
                                 ("DELETE", "/experiments/private-exp", {})):
        r = other(method, path, params=params)
        assert r.status_code == 404, (method, path, r.status_code)
        assert "private-exp" not in r.text or "experiment" in path
    assert other("GET", "/experiments").json()["experiments"] == []
    assert other("GET", "/experiments", params={"all": "1"}).status_code == 403
    assert other("GET", "/storage", params={"all": "1"}).status_code == 403
    r = other.submit({"train.py": "pass"}, entry_point="train.py", checkpoint=str(run_id))
    assert r.status_code == 400 and "not found" in r.json()["message"]
    assert len(api("GET", f"/runs/{run_id}/checkpoints").json()["checkpoints"]) == 4  # nothing was removed
    series = admin("GET", f"/runs/{run_id}/metrics").json()["series"]["loss"]
    assert series[0][2] == 1.0
    everyone = admin("GET", "/experiments", params={"all": "1"}).json()["experiments"]
    assert ("private-exp", owner) in {(e["name"], e["owner"]) for e in everyone}
    assert admin("GET", "/experiments/private-exp", params={"owner": owner}).status_code == 200
    assert any(u["name"] == owner for u in admin("GET", "/storage", params={"all": "1"}).json()["users"])


def test_nan_and_infinity_in_the_summary_are_json_safe(hub):
    _, api = user(hub)
    run_id = submit(api, "print('a=nan b=inf c=-inf d=1e309')")
    finished(api, run_id)
    summary = wait_for_sync(lambda: api.run(run_id)["metric_summary"] or None)
    assert summary["a"]["latest"] == "NaN" and summary["a"]["min"] is None
    assert summary["b"]["latest"] == "Infinity" and summary["c"]["min"] == "-Infinity"
    assert summary["d"]["latest"] == "Infinity"  # overflows to infinity, as float() reads it


def test_the_cli_lists_metrics_and_checkpoints_and_removes_them(hub, tmp_path):
    from .test_cli import nothing as run_cli

    def nothing(*args, check=True):
        result = run_cli(*args, check=check)
        return result.stdout + result.stderr

    name, api = user(hub)
    token = hub.token_for(name)
    (tmp_path / "train.py").write_text(textwrap.dedent(CHECKPOINTS) + "\nprint('val_loss=0.125 acc=0.5')\n")
    out = nothing(hub, token, tmp_path, "submit", "train.py", "--experiment", "cli-exp", "--metric", "val_loss",
                  "--metric", "acc=acc=([0-9.]+)")
    run_id = api("GET", "/runs").json()["runs"][0]["id"]
    assert out.startswith(f"Run {run_id} | train.py | QUEUED")
    finished(api, run_id)
    wait_for_sync(lambda: api("GET", f"/runs/{run_id}/checkpoints").json()["checkpoints"][0]["summary"] or None)
    listing = nothing(hub, token, tmp_path, "model", "ls", str(run_id))
    assert listing.splitlines()[0].split() == ["CHECKPOINT", "LAST", "MODIFIED", "ELAPSED", "SUMMARY", "SIZE"]
    assert "epoch-2.pt" in listing and "loss=0.5" in listing and "30.0 kB" in listing
    assert f"run {run_id}: 4 checkpoints, 35.8 kB in total" in listing
    wait_for_sync(lambda: api.run(run_id)["metric_summary"].get("acc"))
    table = nothing(hub, token, tmp_path, "metrics", str(run_id))
    assert [line.split() for line in table.splitlines()] == [
        ["METRIC", "LATEST", "STEP", "MIN", "MAX", "POINTS"], ["acc", "0.5", "0", "0.5", "0.5", "1"],
        ["loss", "0.333333", "3", "0.333333", "1", "3"], ["val_loss", "0.125", "0", "0.125", "0.125", "1"]]
    removed = nothing(hub, token, tmp_path, "model", "rm", str(run_id), "epoch-*")
    assert removed.startswith("removed epoch-1.pt, epoch-2.pt, epoch-3.pt")
    assert f"run {run_id}: 1 checkpoint, 4.8 kB in total" in removed
    assert "cli-exp" in nothing(hub, token, tmp_path, "experiments")
    assert "still has 1 run" in nothing(hub, token, tmp_path, "experiments", "rm", "cli-exp", check=False)
    assert nothing(hub, token, tmp_path, "rm", str(run_id)).strip() == f"run {run_id} deleted"
    assert nothing(hub, token, tmp_path, "experiments", "rm", "cli-exp").strip() == "experiment cli-exp deleted"
    assert "(no quota)" in nothing(hub, token, tmp_path, "storage")
