"""Models without a hub: field checks, the safe copy into the store, and the deletion rules on a real database."""

from __future__ import annotations

import base64
import os
import re
import stat
from datetime import datetime

import pytest

from nothing.scheduler import models as md
from nothing.scheduler import tracking_store
from nothing.scheduler import tuning as tc
from nothing.scheduler.db import Database
from nothing.scheduler.orm import BatchInference, Endpoint, EndpointStage, Run, StageResource
from nothing.scheduler.serving_states import ACTIVE, COMPLETE, CREATE_REQUESTED, RUNNING
from nothing.scheduler.states import RunState

from .helpers import make_archive

HANDLER = "def load(model_dir):\n    return 2\n\n\ndef predict(model, instances):\n    return [model * x for x in instances]\n"
NOW = datetime(2026, 12, 1, 8, 0)
OTHER_UID = 44777  # no account needs to exist: a file merely owned by another uid


def body(**over):
    return {"name": "mnist", "framework": "python", "source": {"run": 3}, **over}


# ---------------------------------------------------------------- fields
def test_a_model_body_is_parsed_with_its_source_and_defaults():
    new = md.parse_new_model(body(tags={"stage": "dev"}, framework_version="3.11", description="d", group="ml"))
    assert (new.name, new.framework, new.framework_version, new.description, new.group) == \
        ("mnist", "python", "3.11", "d", "ml")
    assert new.tags == {"stage": "dev"} and new.source == md.Source("run", run_id=3, path="model")
    assert md.parse_new_model(body(source={"run": "4", "path": "checkpoints//epoch-3/"})).source.path == \
        "checkpoints/epoch-3"
    assert md.parse_new_model(body(source={"tuning": 9})).source.tuning_id == 9
    upload = md.parse_new_model(body(source={"upload": base64.b64encode(b"tgz").decode()})).source
    assert (upload.kind, upload.upload) == ("upload", b"tgz")
    assert md.parse_new_model(body(source={"server_path": "/srv/m"})).source == md.Source("path", path="/srv/m")
    assert md.parse_new_model({"name": "m", "framework": "python"}, upload=b"x").source.upload == b"x"


@pytest.mark.parametrize("over, message", [
    ({"name": "a/b"}, "model name"), ({"name": "123"}, "not a number alone"), ({"name": ""}, "model name"),
    ({"name": "x" * 101}, "model name"), ({"framework": "onnx"}, "is not one of tensorflow, pytorch, python"),
    ({"framework_version": "v" * 65}, "at most 64"), ({"description": "d" * 10_001}, "at most 10000"),
    ({"tags": {f"k{i}": "v" for i in range(11)}}, "at most 10 tags, not 11"), ({"tags": {"": "v"}}, "tag key"),
    ({"tags": {"k" * 65: "v"}}, "tag key"), ({"tags": {"k": "v" * 257}}, "at most 256"),
    ({"tags": {"k": 1}}, "must be text"), ({"tags": ["k=v"]}, "tags must be an object"),
    ({"owner": "me"}, "unknown field(s) owner"), ({"source": None}, "source must be one of"),
    ({"source": {"run": 1, "tuning": 2}}, "source must be one of"), ({"source": {"tuning": 1, "path": "x"}}, "one of"),
    ({"source": {"run": -1}}, "must be the id of a run"), ({"source": {"run": True}}, "must be the id of a run"),
    ({"source": {"run": 1, "path": "../other-run"}}, "inside the run's folder"),
    ({"source": {"run": 1, "path": "/etc"}}, "inside the run's folder"),
    ({"source": {"upload": "not base64!"}}, "not valid base64"),
    ({"source": {"server_path": "relative"}}, "absolute server path"), ({"group": 3}, "group must be"),
])
def test_bad_fields_are_refused_with_what_is_wrong(over, message):
    with pytest.raises(md.ModelError) as e:
        md.parse_new_model(body(**over))
    assert message in str(e.value) and e.value.status == 400


def test_only_name_description_and_tags_can_change():
    assert md.parse_changes({"name": "b", "tags": {}, "description": ""}) == {"name": "b", "tags": {}, "description": ""}
    for bad, message in (({"framework": "pytorch"}, "only name, description and tags"), ({}, "send the fields"),
                         ({"tags": {f"k{i}": "v" for i in range(11)}}, "at most 10 tags")):
        with pytest.raises(md.ModelError, match=message):
            md.parse_changes(bad)


# ---------------------------------------------------------------- the copy
def tree(root) -> dict[str, tuple[str, int]]:
    """``{relative path: (kind, mode)}`` of everything below ``root``, links included."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            kind = "link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "file"
            out[os.path.relpath(path, root)] = (kind, stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def run_dir(tmp_path):
    """A run's folder as a run leaves it: a model folder with a handler, weights, a subfolder and traps."""
    run = tmp_path / "runs" / "7"
    model = run / "model"
    (model / "assets").mkdir(parents=True)
    (model / "handler.py").write_text(HANDLER)
    (model / "weights.bin").write_bytes(b"w" * 1000)
    (model / "assets" / "vocab.txt").write_text("a\nb\n")
    (tmp_path / "secret.txt").write_text("root's")
    (model / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (model / "up").symlink_to("..")
    os.mkfifo(model / "pipe")
    (run / "checkpoints" / "epoch-1").mkdir(parents=True)
    (run / "checkpoints" / "epoch-1" / "handler.py").write_text(HANDLER)
    for path in (run, model, model / "assets", model / "handler.py", model / "weights.bin",
                 model / "assets" / "vocab.txt", run / "checkpoints", run / "checkpoints" / "epoch-1",
                 run / "checkpoints" / "epoch-1" / "handler.py"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    return run


def test_a_run_folder_is_copied_as_regular_files_and_folders_readable_by_runs(run_dir, tmp_path):
    dest = str(tmp_path / "store" / "m")
    (tmp_path / "store").mkdir()
    copied = md.copy_folder(str(run_dir), "model", dest, 10_000, 100, None, "run 7's folder")
    assert tree(dest) == {"handler.py": ("file", 0o644), "weights.bin": ("file", 0o644),
                          "assets": ("dir", 0o755), "assets/vocab.txt": ("file", 0o644)}
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    assert (copied.files, copied.bytes) == (3, len(HANDLER) + 1000 + 4)
    assert sorted(copied.skipped) == ["leak.txt", "pipe", "up"] and "leak.txt" in copied.note()
    # A copy: the run changing its files later changes nothing of the model.
    (run_dir / "model" / "handler.py").write_text("changed")
    assert (tmp_path / "store" / "m" / "handler.py").read_text() == HANDLER


def test_another_folder_inside_the_run_can_be_the_artifact(run_dir, tmp_path):
    dest = str(tmp_path / "m")
    md.copy_folder(str(run_dir), "checkpoints/epoch-1", dest, 10_000, 100, None, "run 7's folder")
    assert tree(dest) == {"handler.py": ("file", 0o644)}


def test_a_model_folder_that_is_a_link_is_refused_and_nothing_is_made(run_dir, tmp_path):
    (run_dir / "elsewhere").symlink_to(tmp_path)
    for relative, message in (("elsewhere", "is not a folder (a link is never followed)"),
                              ("model/handler.py", "is not a folder"), ("missing", "has no folder 'missing'")):
        with pytest.raises(md.ModelError, match=re.escape(message)):
            md.copy_folder(str(run_dir), relative, str(tmp_path / "m"), 10_000, 100, None, "run 7's folder")
        assert not (tmp_path / "m").exists()


def test_files_of_another_owner_than_the_runs_account_are_not_copied(run_dir, tmp_path):
    """A hard link the run made to someone else's file (or any file not its own) is not copied."""
    assert os.geteuid() == 0, "files of another owner need root to make (the suite runs as root: CONTRIBUTING.md)"
    uid = os.stat(run_dir).st_uid
    os.chown(run_dir / "model" / "weights.bin", OTHER_UID, OTHER_UID)
    copied = md.copy_folder(str(run_dir), "model", str(tmp_path / "m"), 10_000, 100, uid, "run 7's folder")
    assert "weights.bin" in copied.skipped and not (tmp_path / "m" / "weights.bin").exists()
    os.chown(run_dir / "model", OTHER_UID, OTHER_UID)
    with pytest.raises(md.ModelError, match="not the run's own folder"):
        md.copy_folder(str(run_dir), "model", str(tmp_path / "m2"), 10_000, 100, uid, "run 7's folder")


@pytest.mark.parametrize("max_bytes, max_files, message", [(500, 100, "more than 500 bytes"),
                                                          (10_000, 2, "more than 2 files")])
def test_a_copy_stops_at_the_limits_and_leaves_nothing(run_dir, tmp_path, max_bytes, max_files, message):
    with pytest.raises(md.ModelError, match=message):
        md.copy_folder(str(run_dir), "model", str(tmp_path / "m"), max_bytes, max_files, None, "run 7's folder")
    assert not (tmp_path / "m").exists()


def test_an_upload_is_unpacked_safely_without_its_links(tmp_path):
    data = make_archive({"handler.py": HANDLER, "sub/w.bin": b"x" * 10}, links={"inside": "handler.py"})
    copied = md.unpack_upload(data, str(tmp_path / "m"), 10_000, 100)
    assert tree(tmp_path / "m") == {"handler.py": ("file", 0o644), "sub": ("dir", 0o755),
                                    "sub/w.bin": ("file", 0o644)}
    assert (copied.files, copied.bytes, copied.skipped) == (2, len(HANDLER) + 10, ["inside"])
    for bad, message in ((make_archive({"../x": "x"}), "points outside"), (b"not a tar", "not a readable"),
                         (make_archive({"big": b"x" * 20_000}), "more than 10000 bytes")):
        with pytest.raises(md.ModelError, match=message):
            md.unpack_upload(bad, str(tmp_path / "bad"), 10_000, 100)
        assert not (tmp_path / "bad").exists()


def test_a_model_error_from_the_helper_process_keeps_its_status():
    import pickle

    error = pickle.loads(pickle.dumps(md.ModelError("no", 403)))
    assert (str(error), error.status) == ("no", 403)


def test_server_folders_only_under_the_allowed_roots(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "resnet").mkdir(parents=True)
    (allowed / "file").write_text("x")
    (tmp_path / "outside").mkdir()
    (allowed / "escape").symlink_to(tmp_path / "outside")
    assert md.allowed_folder(str(allowed / "resnet"), [str(allowed)]) == str(allowed / "resnet")
    for path, status in ((allowed / "escape", 403), (allowed / ".." / "outside", 403), ("/etc", 403),
                         (allowed / "file", 400)):
        with pytest.raises(md.ModelError) as e:
            md.allowed_folder(str(path), [str(allowed)])
        assert e.value.status == status, path
    with pytest.raises(md.ModelError, match="c.Models.allowed_roots is empty"):
        md.allowed_folder(str(allowed / "resnet"), [])


def test_the_store_is_roots_alone_and_forgets_half_made_copies(tmp_path):
    store = md.Models(str(tmp_path))
    store.prepare()
    leftover = store.staging()
    os.mkdir(leftover)
    store.prepare()
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700 and not os.path.exists(leftover)


# ---------------------------------------------------------------- the database rules
@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'models.sqlite'}")
    database.upgrade()
    yield database
    database.close()


def add_model(db, name="mnist", owner="alice", group="", run_id=None, tuning_id=None):
    values = dict(owner=owner, group=group, name=name, description="", framework="python", framework_version="",
                  artifact_format="python", size_bytes=1, tags={}, source_kind="run" if run_id else "upload",
                  source_run_id=run_id, source_tuning_id=tuning_id, source_path="model", created_at=NOW,
                  updated_at=NOW)
    return db.run_sync(md.insert_model, values, "/store", "abc")


def test_names_are_unique_per_owner_and_found_own_first_then_the_groups(db):
    mine = add_model(db)
    assert mine.artifact_path == f"/store/{mine.id}-abc"
    with pytest.raises(md.ModelError) as e:
        add_model(db)
    assert e.value.status == 409
    shared = add_model(db, owner="bob", group="vision")
    add_model(db, owner="carol", group="nlp")
    assert db.run_sync(md.find_own, "alice", "mnist").id == mine.id
    assert [m.id for m in db.run_sync(md.models_named, "mnist", ["vision"])] == [shared.id]
    assert len(db.run_sync(md.models_named, "mnist", ["vision", "nlp"])) == 2
    assert [m.owner for m in db.run_sync(md.list_models, "alice", ["vision"])] == ["alice", "bob"]
    assert len(db.run_sync(md.list_models, None, [])) == 3
    renamed = db.run_sync(md.update_model, shared.id, {"name": "resnet", "tags": {"a": "b"}}, NOW)
    assert (renamed.name, renamed.tags) == ("resnet", {"a": "b"})
    add_model(db, name="other", owner="bob")
    with pytest.raises(md.ModelError, match="bob already has a model named 'other'"):
        db.run_sync(md.update_model, shared.id, {"name": "other"}, NOW)


def serve(db, model_id: int) -> int:
    def insert(session):
        endpoint = Endpoint(owner="alice", name="digits", state=ACTIVE, tags={}, created_at=NOW, updated_at=NOW)
        session.add(endpoint)
        session.flush()
        stage = EndpointStage(endpoint_id=endpoint.id, name="prod", state=ACTIVE, created_at=NOW, updated_at=NOW)
        session.add(stage)
        session.flush()
        resource = StageResource(stage_id=stage.id, model_id=model_id, resource_path="/predict",
                                 state=CREATE_REQUESTED, created_at=NOW, updated_at=NOW)
        session.add(resource)
        session.flush()
        return resource.id

    return db.run_sync(insert)


def batch(db, model_id: int, state: str) -> int:
    def insert(session):
        row = BatchInference(owner="alice", name="nightly", model_id=model_id, input_path="/in", input_type="JSONL",
                             state=state, created_at=NOW)
        session.add(row)
        session.flush()
        return row.id

    return db.run_sync(insert)


def test_a_model_an_endpoint_serves_or_a_running_batch_inference_reads_is_not_deleted(db):
    model = add_model(db)
    resource = serve(db, model.id)
    job = batch(db, model.id, RUNNING)
    batch(db, model.id, COMPLETE)  # ended: not in the way
    blockers = db.run_sync(md.delete_model, model.id)
    assert blockers == ["endpoint 'digits' stage 'prod' serves it at /predict (delete that stage resource first)",
                        f"batch inference {job} 'nightly' is RUNNING (wait for it to end, or stop it)"]
    assert db.run_sync(md.get_model, model.id) is not None

    def free(session):
        session.delete(session.get(StageResource, resource))
        session.get(BatchInference, job).state = COMPLETE

    db.run_sync(free)
    assert db.run_sync(md.delete_model, model.id) == []
    assert db.run_sync(md.get_model, model.id) is None


def add_run(db) -> int:
    def insert(session):
        row = Run(owner="alice", entry_point="train.py", state=RunState.COMPLETE, submitted_at=NOW, run_dir="/r",
                  log_path="/r/output.log")
        session.add(row)
        session.flush()
        return row.id

    return db.run_sync(insert)


def test_a_model_is_not_made_from_a_run_deleted_meanwhile(db):
    with pytest.raises(md.ModelError, match="run 12 was deleted while the model was being made"):
        add_model(db, run_id=12)


def test_the_run_and_the_tuning_a_model_was_made_from_are_not_deleted(db):
    run_id = add_run(db)
    model = add_model(db, run_id=run_id, tuning_id=4)
    reason = f"model {model.id} 'mnist' (of alice) was made from it: delete the model first"
    assert db.run_sync(tracking_store.run_deletion_blockers, run_id) == [reason]
    assert db.run_sync(tracking_store.delete_run, run_id) is False
    assert db.run_sync(tc.deletion_blockers, 4) == [reason]
    assert db.run_sync(tracking_store.run_deletion_blockers, run_id + 1) == []
    assert db.run_sync(tc.deletion_blockers, 5) == []
    db.run_sync(md.delete_model, model.id)
    assert db.run_sync(tracking_store.run_deletion_blockers, run_id) == []
    assert db.run_sync(tracking_store.delete_run, run_id) is True
