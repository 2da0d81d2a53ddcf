"""A submission carries an Idempotency-Key: repeating it (a client's retry) returns the same run, never a second one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from nothing.scheduler import store
from nothing.scheduler.db import Database, alembic_config, current_revision

from .conftest import running_dispatcher
from .helpers import make_archive, wait_for_sync
from .test_database import HEAD

CODE = make_archive({"train.py": "print('once')"})


def values(**kw):
    base = dict(owner="alice", name="", experiment="default", entry_point="train.py", args=[], hyperparameters={},
                gpus=0, cpus=1, memory_bytes=0, priority=0, max_seconds=None, snapshot_bytes=0)
    base.update(kw)
    return base


def run_folders(data_dir) -> set[str]:
    return {p.name for p in (data_dir / "runs").iterdir()}


# ---------------------------------------------------------------------- the schema
def test_a_database_at_revision_0003_is_upgraded_with_its_runs_and_no_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    command.upgrade(alembic_config(url), "0003")
    with create_engine(url).begin() as conn:
        for owner in ("old", "old"):
            conn.execute(text(
                "insert into runs (owner, name, experiment, entry_point, args, hyperparameters, snapshot_bytes, "
                "gpus, cpus, memory_bytes, priority, state, reason, submitted_at, assigned_gpus, run_dir, log_path) "
                f"values ('{owner}', '', 'default', 't.py', '[]', '{{}}', 0, 1, 1, 0, 0, 'COMPLETE', 'done', "
                "'2026-01-01 00:00:00', '[]', '/x', '/x/output.log')"))
    db = Database(url)
    try:
        assert db.upgrade() == HEAD
        assert [db.run_sync(store.get_run, i).client_key for i in (1, 2)] == [None, None]
        indexes = {i["name"]: i for i in inspect(db.engine).get_indexes("runs")}
        assert indexes["uq_runs_owner_client_key"]["unique"]
        assert indexes["uq_runs_owner_client_key"]["column_names"] == ["owner", "client_key"]
    finally:
        db.close()


def test_the_unique_key_is_per_owner_and_runs_without_a_key_never_collide(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.sqlite'}"
    db = Database(url)
    db.upgrade()
    insert = ("insert into runs (owner, name, experiment, entry_point, args, hyperparameters, snapshot_bytes, gpus, "
              "cpus, memory_bytes, priority, state, reason, submitted_at, assigned_gpus, run_dir, log_path, "
              "client_key) values (:owner, '', 'default', 't.py', '[]', '{}', 0, 1, 1, 0, 0, 'QUEUED', '', "
              "'2026-01-01 00:00:00', '[]', '/x', '/x/output.log', :key)")
    try:
        with db.engine.begin() as conn:
            for owner, key in (("a", None), ("a", None), ("a", "k1"), ("b", "k1")):
                conn.execute(text(insert), {"owner": owner, "key": key})
        with pytest.raises(IntegrityError), db.engine.begin() as conn:
            conn.execute(text(insert), {"owner": "a", "key": "k1"})
    finally:
        db.close()


def test_downgrade_to_0003_removes_the_client_key(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    db = Database(url)
    db.upgrade()
    db.close()
    command.downgrade(alembic_config(url), "0003")
    engine = create_engine(url)
    assert current_revision(engine) == "0003"
    assert "client_key" not in {c["name"] for c in inspect(engine).get_columns("runs")}
    assert "uq_runs_owner_client_key" not in {i["name"] for i in inspect(engine).get_indexes("runs")}


# ---------------------------------------------------------------------- the dispatcher
async def test_a_repeated_key_returns_the_first_run_and_stores_nothing_more(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        first = await d.submit(values(client_key="k-1"), CODE)
        with pytest.raises(store.DuplicateSubmission) as again:
            await d.submit(values(client_key="k-1"), CODE)
        assert again.value.run.id == first.id
        other_owner = await d.submit(values(owner="bob", client_key="k-1"), CODE)
        unkeyed = [await d.submit(values(), CODE) for _ in range(2)]
        assert len({first.id, other_owner.id, *(r.id for r in unkeyed)}) == 4
        assert run_folders(tmp_path) == {str(r.id) for r in (first, other_owner, *unkeyed)}


async def test_two_racing_submissions_with_one_key_make_one_run_and_leave_no_folder_behind(tmp_path, monkeypatch):
    collisions = []
    real = store.is_integrity_error
    monkeypatch.setattr(store, "is_integrity_error", lambda e: collisions.append(e) or real(e))
    async with running_dispatcher(tmp_path) as d:
        results = await asyncio.gather(*(d.submit(values(client_key="race"), CODE) for _ in range(2)),
                                       return_exceptions=True)
        made = [r for r in results if not isinstance(r, BaseException)]
        repeats = [r for r in results if isinstance(r, store.DuplicateSubmission)]
        assert len(made) == 1 and len(repeats) == 1, results
        assert repeats[0].run.id == made[0].id
        assert run_folders(tmp_path) == {str(made[0].id)}
        assert len(await d.db.run(store.list_runs, "alice", None, 10, 0)) == 1
    assert len(collisions) == 1 and real(collisions[0]), "both passed the lookup; the unique index decided"


async def test_a_key_is_remembered_across_a_restart(tmp_path):
    async with running_dispatcher(tmp_path) as d:
        first = await d.submit(values(client_key="before-restart"), CODE)
    async with running_dispatcher(tmp_path) as d:
        with pytest.raises(store.DuplicateSubmission) as again:
            await d.submit(values(client_key="before-restart"), CODE)
        assert again.value.run.id == first.id
        assert len(await d.db.run(store.list_runs, "alice", None, 10, 0)) == 1


# ---------------------------------------------------------------------- the API, through the hub
def _post(api, key: str | None, code: str = "print('keyed')"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api("POST", "/runs", data={"spec": json.dumps({"entry_point": "train.py", "gpus": 0})},
               files={"archive": ("code.tar.gz", make_archive({"train.py": code}), "application/gzip")},
               headers=headers)


def _runs_of(api) -> list[dict]:
    r = api("GET", "/runs")
    assert r.status_code == 200
    return r.json()["runs"]


@pytest.mark.hub
def test_api_answers_a_repeated_key_with_200_and_the_same_run(hub, make_user):
    _, api = make_user("idem")
    key = str(uuid.uuid4())
    first = _post(api, key)
    assert first.status_code == 201, first.text
    again = _post(api, f'"{key}"')  # the draft's quoted sf-string form is the same key
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert [r["id"] for r in _runs_of(api)] == [first.json()["id"]]
    _, other = make_user("idem-other")
    assert _post(other, key).status_code == 201, "keys are per owner"


@pytest.mark.hub
@pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9", "tab\there"])
def test_api_refuses_a_malformed_key_with_400(hub, make_user, key):
    _, api = make_user("badkey")
    r = api("POST", "/runs", data={"spec": json.dumps({"entry_point": "train.py"})},
            files={"archive": ("code.tar.gz", CODE, "application/gzip")},
            headers={"Idempotency-Key": key.encode("latin-1")})
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["message"]
    assert _runs_of(api) == []


@pytest.mark.hub
def test_api_racing_repeats_make_one_run(hub, make_user):
    _, api = make_user("racer")
    key, answers = str(uuid.uuid4()), []
    threads = [threading.Thread(target=lambda: answers.append(_post(api, key))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(_runs_of(api)) == 1


@pytest.mark.hub
def test_api_a_key_sent_before_a_scheduler_crash_returns_the_same_run_after_it(hub, make_user):
    _, api = make_user("crashkey")
    key = str(uuid.uuid4())
    first = _post(api, key)
    assert first.status_code == 201
    old = hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)
    wait_for_sync(lambda: _answering(api), timeout=30, interval=0.1, message="the scheduler to be back")
    assert hub.scheduler_pid() != old
    again = _post(api, key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert len(_runs_of(api)) == 1


def _answering(api) -> bool:
    try:
        return api("GET", "/runs", timeout=5).status_code == 200
    except Exception:  # noqa: BLE001 - connection refused while it restarts
        time.sleep(0.05)
        return False
