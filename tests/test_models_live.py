"""Models (모델) in the session's live hub: made from a COMPLETE run, a tuning's best trial, an upload or an allowed
server folder; the copy is the store's own; edit, access, the deletion rules, the CLI."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import stat
import textwrap
from pathlib import Path

import pytest

from nothing.magics.tracking_cli import human_bytes

from .conftest import MODELS_ALLOWED_ROOT
from .helpers import make_archive, wait_for_sync
from .test_cli import nothing

pytestmark = pytest.mark.hub

HANDLER = textwrap.dedent("""
    def load(model_dir):
        return 2


    def predict(model, instances):
        return [model * x for x in instances]
""")
# A training that leaves a plain-Python model in EM_MODEL_DIR, and two links a copy must not follow.
TRAIN = textwrap.dedent(f"""
    import os
    model = os.environ["EM_MODEL_DIR"]
    open(os.path.join(model, "handler.py"), "w").write({HANDLER!r})
    open(os.path.join(model, "weights.bin"), "wb").write(b"w" * 1000)
    os.makedirs(os.path.join(model, "assets"))
    open(os.path.join(model, "assets", "labels.txt"), "w").write("cat\\ndog\\n")
    os.symlink("/etc/hostname", os.path.join(model, "leak.txt"))
    os.symlink("..", os.path.join(model, "up"))
    print("trained", flush=True)
""")
COPIED = {"handler.py": len(HANDLER), "weights.bin": 1000, "assets/labels.txt": 8}


def data_dir(hub) -> Path:
    return Path(hub.root, "var", "scheduler")


def store_entries(hub) -> set[str]:
    return {p.name for p in (data_dir(hub) / "models").iterdir()}


def files_of(folder) -> dict[str, int]:
    out = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(root, name)
            if not os.path.isdir(path) or os.path.islink(path):
                out[os.path.relpath(path, folder)] = os.lstat(path).st_size
    return out


def trained(api, code=TRAIN, state="COMPLETE") -> int:
    r = api.submit({"train.py": code}, entry_point="train.py", cpus=0)
    assert r.status_code == 201, r.text
    run = api.wait_state(r.json()["id"], {"COMPLETE", "FAIL TRAIN", "STOPPED"}, timeout=60)
    assert run["state"] == state, api("GET", f"/runs/{run['id']}/logs").text
    return run["id"]


def create(api, name="digits", **over):
    return api("POST", "/models", json={"name": name, "framework": "python", **over})


def test_a_complete_runs_model_folder_becomes_a_model_with_a_copy_of_its_own(hub, make_user):
    owner, api = make_user("mdl")
    run_id = trained(api)
    r = create(api, framework_version="3.11", description="digits, doubled", tags={"stage": "dev"},
               source={"run": run_id})
    assert r.status_code == 201, r.text
    m = r.json()
    assert r.headers["Location"].endswith(f"/api/models/{m['id']}")
    assert {k: m[k] for k in ("owner", "group", "name", "description", "framework", "framework_version", "format",
                              "size_bytes", "tags")} == {
        "owner": owner, "group": "", "name": "digits", "description": "digits, doubled", "framework": "python",
        "framework_version": "3.11", "format": "python", "size_bytes": sum(COPIED.values()), "tags": {"stage": "dev"}}
    assert m["source"] == {"kind": "run", "run_id": run_id, "run_name": "", "tuning_id": None, "path": "model"}
    artifact = Path(m["artifact_path"])
    assert artifact.parent == data_dir(hub) / "models" and artifact.name.startswith(f"{m['id']}-")
    # Regular files and folders only: the links the run left (one to /etc/hostname) were not followed.
    assert files_of(artifact) == COPIED
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o755 and artifact.stat().st_uid == 0
    assert stat.S_IMODE((artifact / "handler.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((data_dir(hub) / "models").stat().st_mode) == 0o700
    # The run's folder changing afterwards changes nothing of the model.
    run_model = data_dir(hub) / "runs" / str(run_id) / "model"
    (run_model / "handler.py").write_text("broken")
    shutil.rmtree(run_model / "assets")
    assert (artifact / "handler.py").read_text() == HANDLER and files_of(artifact) == COPIED

    assert [x["id"] for x in api("GET", "/models").json()["models"]] == [m["id"]]
    assert api("GET", "/models/digits").json() == m == api("GET", f"/models/{m['id']}").json()
    assert create(api, source={"run": run_id}).status_code == 409  # one name per owner

    r = api("DELETE", f"/runs/{run_id}")
    assert r.status_code == 409 and f"model {m['id']} 'digits'" in r.json()["message"], r.text
    assert api("DELETE", "/models/digits").status_code == 204
    assert not artifact.exists() and api("GET", f"/models/{m['id']}").status_code == 404
    assert api("DELETE", f"/runs/{run_id}").status_code == 204


def test_only_a_complete_run_becomes_a_model_and_a_refusal_stores_nothing(hub, make_user):
    _, api = make_user("mdlstate")
    before = store_entries(hub)
    failed = trained(api, "raise SystemExit(3)\n", state="FAIL TRAIN")
    r = create(api, source={"run": failed})
    assert r.status_code == 409 and "is FAIL TRAIN: only a COMPLETE run" in r.json()["message"], r.text
    r = api.submit({"train.py": "import time\ntime.sleep(60)\n"}, entry_point="train.py", cpus=0)
    running = api.wait_state(r.json()["id"], "RUNNING")["id"]
    r = create(api, source={"run": running})
    assert r.status_code == 409 and "is RUNNING" in r.json()["message"], r.text
    api("POST", f"/runs/{running}/cancel")
    assert create(api, source={"run": 10**9}).status_code == 404

    weights_only = trained(api, "import os\nopen(os.environ['EM_MODEL_DIR'] + '/w.bin', 'wb').write(b'x')\n")
    for over, message in (({"framework": "onnx"}, "is not one of tensorflow, pytorch, python"),
                          ({}, "a python model needs handler.py"),
                          ({"framework": "tensorflow"}, "saved_model.pb is missing"),
                          ({"framework": "pytorch"}, "missing: model.py, handler.py"),
                          ({"tags": {f"k{i}": "v" for i in range(11)}}, "at most 10 tags, not 11"),
                          ({"source": {"run": weights_only, "path": "../1"}}, "inside the run's folder"),
                          ({"source": {"run": weights_only, "path": "nope"}}, "has no folder 'nope'"),
                          ({"group": "not-mine"}, "is not one of your groups")):
        r = create(api, **{"source": {"run": weights_only}, **over})
        assert r.status_code == 400 and message in r.json()["message"], (over, r.text)
    assert api("GET", "/models").json()["models"] == [] and store_entries(hub) == before


def test_a_complete_tunings_best_trial_becomes_a_model_and_keeps_the_tuning(make_user):
    _, api = make_user("mdltune")
    code = textwrap.dedent(f"""
        import os
        x = int(os.environ["EM_HP_X"])
        open(os.path.join(os.environ["EM_MODEL_DIR"], "handler.py"), "w").write({HANDLER!r} + f"X = {{x}}\\n")
        print(f"score={{-(x - 1) ** 2}}", flush=True)
    """)
    spec = {"name": "sweep", "strategy": "grid", "entry_point": "train.py", "cpus": 0,
            "hyperparameter_spec": [{"name": "x", "type": "int", "min": 0, "max": 2}],
            "metrics": [{"name": "score", "regex": r"score=(\S+)"}],
            "objective": {"metric": "score", "goal": "maximize"}, "resources": {"max_trials": 3, "parallel_trials": 3}}
    r = api("POST", "/tunings", data={"spec": json.dumps(spec)},
            files={"archive": ("code.tar.gz", make_archive({"train.py": code}), "application/gzip")})
    assert r.status_code == 201, r.text
    tuning_id = r.json()["id"]
    early = create(api, "best", source={"tuning": tuning_id})
    assert early.status_code == 409 and "only a COMPLETE tuning" in early.json()["message"], early.text
    t = wait_for_sync(lambda: (lambda x: x if x["state"] == "COMPLETE" else None)(
        api("GET", f"/tunings/{tuning_id}").json()), timeout=90, interval=0.3, message="the tuning to end")
    best = t["best_trial"]
    assert best["hyperparameters"] == {"x": "1"}
    r = create(api, "best", source={"tuning": tuning_id})
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["source"] == {"kind": "tuning", "run_id": best["run_id"], "run_name": m["source"]["run_name"],
                           "tuning_id": tuning_id, "path": "model"}
    assert (Path(m["artifact_path"]) / "handler.py").read_text().endswith("X = 1\n")
    r = api("DELETE", f"/tunings/{tuning_id}")
    assert r.status_code == 409 and f"model {m['id']} 'best'" in r.json()["message"], r.text
    r = api("DELETE", f"/runs/{best['run_id']}")
    assert r.status_code == 409 and "'best'" in r.json()["message"], r.text
    assert api("DELETE", "/models/best").status_code == 204
    assert api("DELETE", f"/tunings/{tuning_id}").status_code == 204


def test_an_uploaded_folder_becomes_a_model_without_its_links(hub, make_user):
    _, api = make_user("mdlup")
    before = store_entries(hub)
    archive = make_archive({"handler.py": HANDLER, "data/table.json": "{}"}, links={"alias.py": "handler.py"})
    r = create(api, "up", source={"upload": base64.b64encode(archive).decode()})
    assert r.status_code == 201, r.text
    m = r.json()
    assert (m["format"], m["source"]["kind"], m["source"]["run_id"]) == ("python", "upload", None)
    assert files_of(m["artifact_path"]) == {"handler.py": len(HANDLER), "data/table.json": 2}
    r = api("POST", "/models", data={"spec": json.dumps({"name": "multi", "framework": "python"})},
            files={"archive": ("m.tar.gz", archive, "application/gzip")})
    assert r.status_code == 201 and r.json()["size_bytes"] == len(HANDLER) + 2, r.text
    for source, message in (({"upload": base64.b64encode(b"not a tar").decode()}, "not a readable"),
                            ({"upload": base64.b64encode(make_archive({"w.bin": "x"})).decode()}, "handler.py"),
                            ({"upload": base64.b64encode(make_archive({"../x": "x"})).decode()}, "outside")):
        r = create(api, "bad", source=source)
        assert r.status_code == 400 and message in r.json()["message"], r.text
    assert store_entries(hub) - before == {Path(x["artifact_path"]).name for x in api("GET", "/models").json()["models"]}


def test_server_folders_only_from_the_allowed_roots(make_user, tmp_path):
    _, api = make_user("mdlpath")
    folder = MODELS_ALLOWED_ROOT / secrets.token_hex(4)
    folder.mkdir(parents=True)
    try:
        (folder / "handler.py").write_text(HANDLER)
        (folder / "escape").symlink_to(tmp_path)
        r = create(api, "shared-path", source={"server_path": str(folder)})
        assert r.status_code == 201, r.text
        m = r.json()
        assert m["source"] == {"kind": "path", "run_id": None, "run_name": None, "tuning_id": None,
                               "path": str(folder.resolve())}
        assert files_of(m["artifact_path"]) == {"handler.py": len(HANDLER)}
        for path in ("/etc", str(folder / "escape"), str(folder / ".." / ".." / "etc")):
            r = create(api, "refused", source={"server_path": path})
            assert r.status_code == 403 and "not under a folder models may be registered from" in \
                r.json()["message"], (path, r.text)
    finally:
        shutil.rmtree(folder)


def test_name_description_and_tags_change_and_nothing_else(make_user):
    _, api = make_user("mdledit")
    archive = base64.b64encode(make_archive({"handler.py": HANDLER})).decode()
    mid = create(api, "first", source={"upload": archive}).json()["id"]
    assert create(api, "second", source={"upload": archive}).status_code == 201
    r = api("PATCH", "/models/first", json={"name": "renamed", "description": "new", "tags": {"a": "1", "b": "2"}})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["description"], r.json()["tags"]) == ("renamed", "new", {"a": "1", "b": "2"})
    assert r.json()["updated_at"] >= r.json()["created_at"]
    assert api("GET", "/models/renamed").json()["id"] == mid and api("GET", "/models/first").status_code == 404
    for change, status, message in (({"tags": {f"k{i}": "v" for i in range(11)}}, 400, "at most 10 tags"),
                                    ({"framework": "pytorch"}, 400, "only name, description and tags"),
                                    ({"name": "second"}, 409, "already has a model named 'second'")):
        r = api("PATCH", f"/models/{mid}", json=change)
        assert r.status_code == status and message in r.json()["message"], r.text
    assert api("GET", f"/models/{mid}").json()["tags"] == {"a": "1", "b": "2"}


def test_others_get_404_and_a_groups_model_is_seen_by_members_but_deleted_by_its_owner(hub, make_user):
    group = f"mg{secrets.token_hex(3)}"
    owner, api = make_user("mdlown")
    member, other_member = make_user("mdlmem")
    _, outsider = make_user("mdlout")
    _, admin = make_user("mdladm", admin=True)
    hub.hub_api("POST", f"/groups/{group}", json={"users": [owner, member]}).raise_for_status()
    archive = base64.b64encode(make_archive({"handler.py": HANDLER})).decode()
    private = create(api, "private", source={"upload": archive}).json()
    r = create(api, "shared", group=group, source={"upload": archive})
    assert r.status_code == 201 and r.json()["group"] == group, r.text
    shared = r.json()
    for ref in (str(private["id"]), str(shared["id"]), "shared"):
        assert outsider("GET", f"/models/{ref}").status_code == 404
        assert outsider("PATCH", f"/models/{ref}", json={"description": "x"}).status_code == 404
        assert outsider("DELETE", f"/models/{ref}").status_code == 404
    assert outsider("GET", "/models").json()["models"] == []
    assert outsider("GET", "/models", params={"all": "1"}).status_code == 403
    assert [m["id"] for m in other_member("GET", "/models").json()["models"]] == [shared["id"]]
    assert other_member("GET", "/models/shared").json()["id"] == shared["id"]
    assert other_member("GET", f"/models/{private['id']}").status_code == 404
    assert other_member("PATCH", "/models/shared", json={"description": "x"}).status_code == 403
    r = other_member("DELETE", "/models/shared")
    assert r.status_code == 403 and "only the owner" in r.json()["message"]
    assert {private["id"], shared["id"]} <= {m["id"] for m in admin("GET", "/models", params={"all": "1"}).json()[
        "models"]}
    assert admin("DELETE", f"/models/{private['id']}").status_code == 204
    assert api("DELETE", "/models/shared").status_code == 204
    assert api("GET", "/models").json()["models"] == []


def test_models_from_the_cli_as_docs_models_md_shows(hub, make_user, tmp_path):
    name, api = make_user("mdlcli")
    token = hub.token_for(name)
    run_id = trained(api)

    def cli(*args, check=True):
        result = nothing(hub, token, tmp_path, "model", *args, check=check)
        return result.stdout + result.stderr

    out = cli("create", "digits", "--framework", "python", "--run", str(run_id), "--tag", "stage=dev",
              "--description", "doubles its input")
    size = re.escape(human_bytes(sum(COPIED.values())))
    assert re.fullmatch(rf"model \d+ 'digits' created: python \(python\), {size}, from run {run_id}\n", out), out
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "handler.py").write_text(HANDLER)
    assert "'exported' created" in cli("create", "exported", "--framework", "python", "--upload",
                                       str(tmp_path / "exported"))
    listing = cli("ls").splitlines()
    assert listing[0].split() == ["ID", "NAME", "OWNER", "GROUP", "FRAMEWORK", "FORMAT", "SIZE", "SOURCE", "TAGS"]
    assert re.search(rf"digits\s+{name}\s+-\s+python\s+python\s+{size}\s+run {run_id}\s+stage=dev$", listing[1])
    assert re.search(r"exported\s+.*\s+upload\s+-$", listing[2])
    assert "model" in cli("edit", "digits", "--tag", "owner=ml", "--name", "doubler")
    assert json.loads(cli("show", "doubler"))["tags"] == {"stage": "dev", "owner": "ml"}
    cli("edit", "doubler", "--clear-tags")
    assert json.loads(cli("show", "doubler"))["tags"] == {}
    refused = nothing(hub, token, tmp_path, "rm", str(run_id), check=False)
    assert refused.returncode == 2 and "'doubler'" in refused.stderr and "delete the model first" in refused.stderr
    assert cli("rm", "doubler") == "model doubler deleted\n"
    assert f"run {run_id}: 0 checkpoints" in cli("ls", str(run_id))  # the checkpoint listing is still there
    bad = nothing(hub, token, tmp_path, "model", "create", "x", "--framework", "python", "--run", "999999999",
                  check=False)
    assert bad.returncode == 2 and "run 999999999 not found" in bad.stderr
