"""The REST API through a real JupyterHub and its proxy: authentication, isolation, bad input, logs, outputs."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from openapi_spec_validator import validate

from .helpers import make_archive

pytestmark = pytest.mark.hub


def runs_dir(hub):
    return hub.root / "var" / "scheduler" / "runs"


def run_dirs(hub) -> set[str]:
    return {p.name for p in runs_dir(hub).iterdir()} if runs_dir(hub).exists() else set()


def test_openapi_document_is_valid(hub):
    import requests

    doc = requests.get(f"{hub.api_url}/openapi.json", timeout=10).json()
    validate(doc)
    assert {"/runs", "/runs/{run_id}", "/runs/{run_id}/logs", "/runs/{run_id}/outputs", "/gpus", "/summary",
            "/queue", "/admin/overview", "/runs/{run_id}/priority"} <= set(doc["paths"])


def test_requests_without_a_token_are_refused(hub):
    import requests

    r = requests.get(f"{hub.api_url}/runs", timeout=10)
    assert r.status_code == 403
    assert "authentication required" in r.json()["message"]


def test_token_without_access_to_the_service_is_refused(hub, make_user):
    name, _ = make_user()
    from .hub import Api

    narrow = Api(hub, hub.token_for(name, scopes=["read:users!user"]))
    assert narrow("GET", "/runs").status_code == 403


def test_run_completes_with_logs_and_outputs(hub, make_user):
    _, api = make_user("alice")
    code = """
import os, sys
print("training with", sys.argv[1:])
open(os.path.join(os.environ["EM_MODEL_DIR"], "model.txt"), "w").write("weights")
os.makedirs(os.path.join(os.environ["EM_CHECKPOINT_DIR"], "epoch-1"))
open(os.path.join(os.environ["EM_CHECKPOINT_DIR"], "epoch-1", "ckpt.bin"), "wb").write(b"x" * 1000)
"""
    r = api.submit({"train.py": code}, entry_point="train.py", hyperparameters={"lr": "0.1"}, name="first")
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["state"] in ("QUEUED", "CREATE IN PROGRESS", "RUNNING", "COMPLETE")
    done = api.wait_state(run["id"], "COMPLETE")
    assert done["exit_code"] == 0 and done["name"] == "first"

    log = api("GET", f"/runs/{run['id']}/logs")
    assert "training with ['--lr', '0.1']" in log.text
    assert int(log.headers["X-Log-Offset"]) == len(log.content)
    assert api("GET", f"/runs/{run['id']}/logs", params={"tail": 1}).text.strip() == "training with ['--lr', '0.1']"
    followed = api("GET", f"/runs/{run['id']}/logs", params={"follow": 1})
    assert followed.text == log.text

    outputs = api("GET", f"/runs/{run['id']}/outputs").json()
    assert outputs["files"] == [{"path": "model/model.txt", "href": "outputs/?path=model/model.txt", "size": 7},
                                {"path": "checkpoints/epoch-1/ckpt.bin", "size": 1000,
                                 "href": "outputs/?path=checkpoints/epoch-1/ckpt.bin"}]
    assert api("GET", f"/runs/{run['id']}/outputs/model/model.txt").content == b"weights"
    archive = api("GET", f"/runs/{run['id']}/outputs.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        assert sorted(tar.getnames()) == ["checkpoints/epoch-1/ckpt.bin", "model/model.txt"]
    assert api("GET", f"/runs/{run['id']}/outputs/model/../../src/train.py").status_code == 404

    events = api("GET", f"/runs/{run['id']}/events").json()["events"]
    assert [e["to"] for e in events][-1] == "COMPLETE"


def test_json_submission_with_base64_archive(hub, make_user):
    import base64

    _, api = make_user()
    body = {"entry_point": "run.py", "archive": base64.b64encode(make_archive({"run.py": "print(1)"})).decode()}
    r = api("POST", "/runs", json=body)
    assert r.status_code == 201, r.text
    assert api.wait_state(r.json()["id"], "COMPLETE")["exit_code"] == 0


def test_other_users_cannot_see_or_touch_a_run_but_admins_can(hub, make_user):
    owner, alice = make_user("alice")
    _, bob = make_user("bob")
    _, admin = make_user("admin", admin=True)
    run = alice.submit({"train.py": "import time; time.sleep(30)"}, entry_point="train.py").json()
    rid = run["id"]
    try:
        assert rid not in [r["id"] for r in bob("GET", "/runs").json()["runs"]]
        assert bob("GET", "/runs", params={"all": 1}).status_code == 403
        assert bob("GET", "/runs", params={"owner": owner}).status_code == 403
        for method, path in [("GET", f"/runs/{rid}"), ("GET", f"/runs/{rid}/logs"), ("POST", f"/runs/{rid}/cancel"),
                             ("GET", f"/runs/{rid}/outputs"), ("GET", f"/runs/{rid}/events"),
                             ("GET", f"/runs/{rid}/outputs.tar.gz")]:
            r = bob(method, path)
            assert r.status_code == 404, (method, path, r.status_code)
            assert r.json()["message"] == f"run {rid} not found"
        assert alice.run(rid)["state"] != "STOPPED"

        assert rid in [r["id"] for r in admin("GET", "/runs", params={"all": 1}).json()["runs"]]
        assert admin("GET", f"/runs/{rid}").json()["owner"] == owner
        assert admin("POST", f"/runs/{rid}/cancel").status_code == 200
        stopped = alice.wait_state(rid, "STOPPED")
        assert stopped["reason"].startswith("cancelled by admin-")
    finally:
        alice("POST", f"/runs/{rid}/cancel")


def test_cancelling_an_ended_run_is_a_conflict(hub, make_user):
    _, api = make_user()
    rid = api.submit({"t.py": "pass"}, entry_point="t.py").json()["id"]
    api.wait_state(rid, "COMPLETE")
    r = api("POST", f"/runs/{rid}/cancel")
    assert r.status_code == 409 and "already ended (COMPLETE)" in r.json()["message"]


BAD_SUBMISSIONS = [
    ({"entry_point": "t.py", "gpu": 1}, 400, "unknown field: gpu"),
    ({"entry_point": "t.py", "gpus": 5}, 400, "asks for 5 GPUs, but the largest node has 4"),
    ({"entry_point": "t.py", "gpus": -1}, 400, "gpus must be at least 0"),
    ({"entry_point": "t.py", "gpus": "two"}, 400, "gpus must be a whole number"),
    ({"entry_point": "t.py", "cpus": 17}, 400, "asks for 17 CPUs, but the largest node has 16"),
    ({"entry_point": "t.py", "memory": "lots"}, 400, "memory must be a size like 8G"),
    ({"entry_point": "t.py", "max_time": "soon"}, 400, "max time must be a duration like 2h"),
    ({"entry_point": "t.py", "priority": 10}, 400, "only admins may raise a run's priority"),
    ({"entry_point": "t.py", "hyperparameters": {"bad key": "1"}}, 400, "hyperparameter name 'bad key'"),
    ({"entry_point": "../t.py"}, 400, "must be a path inside the snapshot"),
    ({}, 400, "entry_point is required"),
    ({"entry_point": "missing.py"}, 400, "the entry point 'missing.py' is not a file in the uploaded snapshot"),
]


@pytest.mark.parametrize("spec,status,message", BAD_SUBMISSIONS)
def test_bad_submission_is_refused_and_leaves_nothing_behind(hub, make_user, spec, status, message):
    _, api = make_user()
    before_dirs, before_runs = run_dirs(hub), api("GET", "/runs").json()["runs"]
    r = api.submit({"t.py": "pass"}, **spec)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]
    assert run_dirs(hub) == before_dirs
    assert api("GET", "/runs").json()["runs"] == before_runs


def _tar(build) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        build(tar)
    return buf.getvalue()


def _add(tar, name, data=b"x", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


MALICIOUS = {
    "path traversal": (lambda t: (_add(t, "t.py"), _add(t, "../../escape.py")), "points outside the snapshot"),
    "absolute path": (lambda t: (_add(t, "t.py"), _add(t, "/tmp/abs.py")), "points outside the snapshot"),
    "symlink outside": (lambda t: (_add(t, "t.py"), _add(t, "passwd", b"", type=tarfile.SYMTYPE,
                                                          linkname="/etc/passwd")), "is a link to '/etc/passwd'"),
    "relative symlink escaping": (lambda t: (_add(t, "t.py"), _add(t, "up", b"", type=tarfile.SYMTYPE,
                                                                   linkname="../../..")), "outside the snapshot"),
    "hard link outside": (lambda t: (_add(t, "t.py"), _add(t, "h", b"", type=tarfile.LNKTYPE,
                                                           linkname="../x")), "not a file earlier in the snapshot"),
    "device node": (lambda t: (_add(t, "t.py"), _add(t, "dev", b"", type=tarfile.CHRTYPE)), "not a regular file"),
    "archive bomb": (lambda t: (_add(t, "t.py"), _add(t, "big.bin", b"\0" * 6_000_000)), "unpacks to more than"),
}


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_malicious_archive_is_refused_and_leaves_nothing_behind(hub, make_user, case):
    build, message = MALICIOUS[case]
    _, api = make_user()
    before = run_dirs(hub)
    r = api.submit({}, archive=_tar(build), entry_point="t.py")
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert run_dirs(hub) == before
    assert api("GET", "/runs").json()["runs"] == []
    assert not os.path.exists("/tmp/abs.py")


def test_archive_over_the_upload_limit_is_413(hub, make_user):
    _, api = make_user()
    before = run_dirs(hub)
    r = api.submit({}, archive=os.urandom(2_100_000), entry_point="t.py")
    assert r.status_code == 413
    assert "the limit is 2000000 bytes" in r.json()["message"]
    assert run_dirs(hub) == before


def test_garbage_archive_is_refused(hub, make_user):
    _, api = make_user()
    r = api.submit({}, archive=b"not a tarball", entry_point="t.py")
    assert r.status_code == 400 and "not a readable tar archive" in r.json()["message"]


def test_multipart_without_spec_is_refused(hub, make_user):
    _, api = make_user()
    r = api("POST", "/runs", files={"archive": ("a.tgz", make_archive({"t.py": ""}))})
    assert r.status_code == 400 and "'spec' field" in r.json()["message"]
    r = api("POST", "/runs", data={"spec": json.dumps({"entry_point": "t.py"})})
    assert r.status_code == 400 and "'archive' file" in r.json()["message"]


def test_gpus_lists_virtual_gpus_and_hides_other_users_runs(hub, make_user):
    _, alice = make_user("alice")
    _, bob = make_user("bob")
    rid = alice.submit({"t.py": "import time; time.sleep(30)"}, entry_point="t.py", gpus=1).json()["id"]
    try:
        alice.wait_state(rid, "RUNNING")
        mine = alice("GET", "/gpus").json()
        theirs = bob("GET", "/gpus").json()
        assert mine["total"] == 4 and mine["nodes"][0]["mode"] == "virtual"
        held = [g for g in mine["nodes"][0]["gpus"] if g["run_id"] == rid]
        assert len(held) == 1
        seen_by_bob = [g for g in theirs["nodes"][0]["gpus"] if g["index"] == held[0]["index"]][0]
        assert seen_by_bob["busy"] and seen_by_bob["run_id"] is None and seen_by_bob["owner"] is None
    finally:
        alice("POST", f"/runs/{rid}/cancel")
        alice.wait_state(rid, "STOPPED")
