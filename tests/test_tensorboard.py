"""TensorBoard on demand: real TensorBoard processes, event files written with tensorboard's own writer (no TF)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import requests
from tornado.httpclient import AsyncHTTPClient

from nothing.scheduler.tensorboard import TensorBoardManager, logdir_arguments

# The training script the hub tests submit: it logs a scalar "loss" for steps 0-4 to
# EM_TENSORBOARD_LOG_DIR, printing each step; with a "gate" file name as its first
# argument it waits for that file (in its working folder) before it finishes.
TB_TRAIN = '''import os, sys, time
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

writer = EventFileWriter(os.environ["EM_TENSORBOARD_LOG_DIR"])
for step in range(5):
    loss = 1.0 / (step + 1)
    value = Summary.Value(tag="loss", simple_value=loss)
    writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=[value])))
    writer.flush()
    print(f"step {step} loss {loss:.4f}", flush=True)
writer.close()
gate = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else None  # not a hyperparameter
while gate and not os.path.exists(gate):
    time.sleep(0.1)
print("training done", flush=True)
'''


def write_scalars(folder: Path, tag: str = "loss", values=(1.0, 0.5, 0.25)) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    for step, value in enumerate(values):
        writer.add_event(Event(wall_time=time.time(), step=step,
                               summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))
    writer.close()


def test_one_logdir_is_passed_as_logdir_and_several_side_by_side_as_a_spec():
    assert logdir_arguments({"run-1": "/d/1"}) == ["--logdir", "/d/1"]
    assert logdir_arguments({"run-2 b": "/d/2", "run-1 a": "/d/1"}) == ["--logdir_spec", "run-1 a:/d/1,run-2 b:/d/2"]
    with pytest.raises(ValueError):
        logdir_arguments({"a:b": "/d/1", "c": "/d/2"})


async def test_manager_starts_a_board_that_serves_the_scalar_and_stops_it_when_idle(tmp_path):
    write_scalars(tmp_path / "logs")
    manager = TensorBoardManager(idle_timeout=60)
    try:
        board = await asyncio.wait_for(manager.ensure("run/1", {"run-1": str(tmp_path / "logs")}), 60)
        again = await manager.ensure("run/1", {"run-1": str(tmp_path / "logs")})
        assert again is board, "a second request must reuse the running board"
        r = await AsyncHTTPClient().fetch(f"{board.url}/data/plugin/scalars/scalars?tag=loss&run=.")
        points = json.loads(r.body)
        assert [(p[1], p[2]) for p in points] == [(0, 1.0), (1, 0.5), (2, 0.25)]
        assert await manager.stop_idle() == [], "a board used just now is not idle"
        assert await manager.stop_idle(now=time.monotonic() + 61) == ["run/1"]
        await asyncio.wait_for(board.process.wait(), 10)
        assert board.process.returncode is not None and manager.boards == {}
    finally:
        await manager.stop_all()


async def test_changed_folders_restart_the_board_and_the_oldest_board_makes_room(tmp_path):
    for name in ("a", "b", "c"):
        write_scalars(tmp_path / name)
    manager = TensorBoardManager(max_instances=2)
    try:
        first = await manager.ensure("experiment/x", {"run-1": str(tmp_path / "a")})
        second = await manager.ensure("experiment/x", {"run-1": str(tmp_path / "a"), "run-2": str(tmp_path / "b")})
        assert second is not first and first.process.returncode is not None
        r = await AsyncHTTPClient().fetch(f"{second.url}/data/runs")
        assert sorted(json.loads(r.body)) == ["run-1/.", "run-2/."]
        await manager.ensure("run/3", {"run-3": str(tmp_path / "c")})
        await manager.ensure("run/4", {"run-4": str(tmp_path / "c")})
        assert sorted(manager.boards) == ["run/3", "run/4"], "the least recently used board was stopped"
    finally:
        await manager.stop_all()


# ---------------------------------------------------------------- through the real hub
@pytest.mark.hub
def test_run_board_is_served_to_its_owner_and_admins_only(hub, make_user):
    owner, api = make_user("tb")
    _, other = make_user("tbother")
    _, admin = make_user("tbadmin", admin=True)
    r = api.submit({"train.py": TB_TRAIN}, entry_point="train.py", name="scalars", experiment="tb-exp", gpus=1)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    assert api.wait_state(run_id, "COMPLETE", timeout=60)["state"] == "COMPLETE"

    board = f"{hub.url}/services/nothing/tensorboard/run/{run_id}/"
    page = api.session.get(board, timeout=90)
    assert page.status_code == 200 and "tb-relative-root" in page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    scalars = api.session.get(board + "data/plugin/scalars/scalars", params={"tag": "loss", "run": "."}, timeout=30)
    assert [(p[1], round(p[2], 4)) for p in scalars.json()] == [(s, round(1 / (s + 1), 4)) for s in range(5)]
    assert other.session.get(board, timeout=30).status_code == 404
    assert admin.session.get(board + "data/runs", timeout=90).status_code == 200
    # The stable URL without its slash redirects to the board; a browser without a login goes to the hub.
    bare = api.session.get(board.rstrip("/"), allow_redirects=False, timeout=30)
    assert bare.status_code == 302 and bare.headers["Location"].endswith(f"/tensorboard/run/{run_id}/")
    anonymous = requests.get(board, allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302 and "/hub/api/oauth2/authorize" in anonymous.headers["Location"]

    # An experiment board shows the experiment's runs side by side.
    r = api.submit({"train.py": TB_TRAIN}, entry_point="train.py", name="again", experiment="tb-exp", gpus=0,
                   hyperparameters={"lr": 0.1, "batch": 32})
    second = r.json()["id"]
    api.wait_state(second, "COMPLETE", timeout=60)
    exp_board = f"{hub.url}/services/nothing/tensorboard/experiment/{owner}/tb-exp/"
    runs = api.session.get(exp_board + "data/runs", timeout=90).json()
    # Each run is labelled with its id, name and hyperparameters (TensorBoard adds "/." for its own folder).
    assert sorted(runs) == sorted([f"run-{run_id} scalars/.", f"run-{second} again batch=32 lr=0.1/."])
    assert other.session.get(exp_board + "data/runs", timeout=30).status_code == 404
    listed = admin("GET", "/tensorboards").json()["tensorboards"]
    assert {f"run/{run_id}", f"experiment/{owner}/tb-exp"} <= {b["key"] for b in listed}
    assert other("GET", "/tensorboards").status_code == 403


async def test_boards_left_by_a_scheduler_that_died_are_stopped_by_the_next_one(tmp_path):
    from nothing.scheduler.helper_process import process_start_time

    write_scalars(tmp_path / "logs")
    state = tmp_path / "tensorboard"
    died = TensorBoardManager(state_dir=str(state))
    board = await asyncio.wait_for(died.ensure("run/1", {"run-1": str(tmp_path / "logs")}), 60)
    pid = board.process.pid
    assert (state / f"{pid}.pid").exists()
    # The scheduler holding `died` is gone without stopping its board; the next one starts.
    successor = TensorBoardManager(state_dir=str(state))
    assert await successor.stop_orphans() == [pid]
    await asyncio.wait_for(board.process.wait(), 10)
    assert process_start_time(pid) is None and list(state.iterdir()) == []
    assert await successor.stop_orphans() == []
