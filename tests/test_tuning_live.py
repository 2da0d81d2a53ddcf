"""Hyperparameter tunings in a live service: real Optuna studies of a noisy analytic function, each trial a run.

The trial maximises ``-(x-3)^2`` (plus a little noise) and prints ``score=...``; the optimum is x = 3.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import textwrap
from pathlib import Path

import optuna
import pytest

from .helpers import make_archive, wait_for_sync
from .hub import Hub
from .test_tracking_live import user

pytestmark = pytest.mark.hub
COMPLETE = optuna.trial.TrialState.COMPLETE

TRIAL = textwrap.dedent("""
    import os, random
    x = float(os.environ["EM_HP_X"])
    print(f"score={-(x - 3) ** 2 + random.gauss(0, 0.01)}", flush=True)
""")
FAILING = "raise SystemExit(3)\n"
STEPS = textwrap.dedent("""
    import os, time
    x = float(os.environ["EM_HP_X"])
    for step in range(8):
        print(f"score={-(x - 3) ** 2 - 1 / (step + 1)}", flush=True)
        time.sleep(0.4)
""")


@pytest.fixture(scope="module")
def hub():
    base = Path(tempfile.mkdtemp(prefix="nothing-tuning-hub-"))
    root = base / "hub"
    root.mkdir()
    config = root / "scheduler_config.py"
    config.write_text("c.Tracker.interval = 0.2\nc.TuningController.interval = 0.3\n")
    h = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=4",
                   "--NothingScheduler.node_cpus=16", "--NothingScheduler.kill_grace_seconds=2",
                   f"--NothingScheduler.config_file={config}"])
    h.start()
    yield h
    h.stop()
    shutil.rmtree(base, ignore_errors=True)


def create(api, code=TRIAL, **over):
    spec = {"name": "quad", "strategy": "random", "random_seed": 1, "entry_point": "train.py", "cpus": 0,
            "hyperparameter_spec": [{"name": "x", "type": "double", "min": 0, "max": 6}],
            "metrics": [{"name": "score", "regex": r"score=(\S+)"}],
            "objective": {"metric": "score", "goal": "maximize"},
            "resources": {"max_trials": 12, "parallel_trials": 3}}
    spec.update(over)
    r = api("POST", "/tunings", data={"spec": json.dumps(spec)},
            files={"archive": ("code.tar.gz", make_archive({"train.py": code}), "application/gzip")})
    assert r.status_code != 500, r.text
    return r


@pytest.fixture(autouse=True)
def hub_log_on_failure(hub, request):
    yield
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        print(hub.log()[-6000:])


def wait_ended(api, tuning_id, timeout=120):
    return wait_for_sync(lambda: (lambda t: t if t["state"] in ("COMPLETE", "STOPPED", "FAIL HYPERPARAMETER TUNING")
                                  else None)(api("GET", f"/tunings/{tuning_id}").json()),
                         timeout=timeout, interval=0.3, message=f"tuning {tuning_id} to end")


@pytest.mark.parametrize("strategy, trials, tolerance", [("random", 16, 0.5), ("bayesian", 16, 0.5)])
def test_each_strategy_finds_the_optimum_within_tolerance(hub, strategy, trials, tolerance):
    _, api = user(hub, strategy)
    r = create(api, strategy=strategy, resources={"max_trials": trials, "parallel_trials": 4})
    assert r.status_code == 201, r.text
    t = wait_ended(api, r.json()["id"], timeout=240)
    assert (t["state"], t["state_detail"]) == ("COMPLETE", "MaxTrialsReached"), t
    assert t["trials"]["total"] == trials and t["trials"]["by_state"] == {"SUCCEEDED": trials}
    assert abs(float(t["best_trial"]["hyperparameters"]["x"]) - 3) < tolerance, t["best_trial"]
    runs = api("GET", "/runs", params={"experiment": "default"}).json()["runs"]
    assert len(runs) == trials and {r["owner"] for r in runs} == {t["owner"]}
    assert most_at_once(runs) <= 4  # suggestions asked ahead wait: parallel trials stays a cap
    assert [s.state for s in study_of(hub, t["id"])] == [COMPLETE] * trials  # nor asked beyond max trials
    objectives = {x["number"]: x["objective"] for x in api("GET", f"/tunings/{t['id']}/trials").json()["trials"]}
    assert trial_rows(hub, t["id"]) == [(n, "COMPLETE", objectives[n]) for n in range(trials)]


def most_at_once(runs) -> int:
    """The most runs queued or running at one moment, from their submitted_at and ended_at."""
    edges = sorted([(r["submitted_at"], 1) for r in runs] + [(r["ended_at"], -1) for r in runs])
    most = now = 0
    for _, step in edges:  # at equal times the end (-1) comes first
        now += step
        most = max(most, now)
    return most


def db_url(hub) -> str:
    return f"sqlite:///{hub.root / 'var' / 'scheduler' / 'scheduler.sqlite'}"


def journal_of(hub, tuning_id: int) -> Path:
    return hub.root / "var" / "scheduler" / "tunings" / "studies" / f"tuning-{tuning_id}.journal"


def study_of(hub, tuning_id: int):
    """The tuning's Optuna study, read from the scheduler's database through its URL (the default storage)."""
    assert not journal_of(hub, tuning_id).exists()
    storage = optuna.storages.RDBStorage(db_url(hub), skip_table_creation=True)
    study = optuna.load_study(study_name=f"tuning-{tuning_id}", storage=storage)
    trials = study.trials
    storage.engine.dispose()
    return trials


def trial_rows(hub, tuning_id: int) -> list[tuple]:
    """The study's trials as rows of Optuna's tables in the scheduler's database: (number, state, value)."""
    from .test_tuning_spec import trial_rows as rows

    return rows(db_url(hub), f"tuning-{tuning_id}")


def test_grid_enumerates_exactly_the_grid_and_ends_suggestion_end_reached(hub):
    _, api = user(hub, "grid")
    r = create(api, strategy="grid", hyperparameter_spec=[{"name": "x", "type": "double", "min": 1, "max": 5,
                                                           "step": 1}], resources={"max_trials": 50,
                                                                                    "parallel_trials": 2})
    assert r.status_code == 201, r.text
    t = wait_ended(api, r.json()["id"])
    assert (t["state"], t["state_detail"]) == ("COMPLETE", "SuggestionEndReached"), t
    trials = api("GET", f"/tunings/{t['id']}/trials").json()["trials"]
    assert sorted(float(x["hyperparameters"]["x"]) for x in trials) == [1, 2, 3, 4, 5]
    assert t["best_trial"]["hyperparameters"] == {"x": "3.0"}


def test_a_target_value_ends_goal_reached(hub):
    _, api = user(hub, "goal")
    r = create(api, strategy="grid", hyperparameter_spec=[{"name": "x", "type": "int", "min": 3, "max": 9}],
               objective={"metric": "score", "goal": "maximize", "target": -0.5},
               resources={"max_trials": 7, "parallel_trials": 1})
    t = wait_ended(api, r.json()["id"])
    assert (t["state"], t["state_detail"]) == ("COMPLETE", "GoalReached"), t
    assert t["trials"]["total"] < 7


def test_max_failed_trials_ends_fail_hyperparameter_tuning(hub):
    _, api = user(hub, "failing")
    r = create(api, code=FAILING, resources={"max_trials": 10, "max_failed_trials": 2, "parallel_trials": 1})
    t = wait_ended(api, r.json()["id"])
    assert t["state"] == "FAIL HYPERPARAMETER TUNING", t
    assert t["trials"]["by_state"] == {"FAILED": 2}


def test_median_stopping_stops_bad_trials_early_but_not_the_best(hub):
    _, api = user(hub, "median")
    r = create(api, code=STEPS, strategy="grid",
               hyperparameter_spec=[{"name": "x", "type": "double", "min": 0, "max": 3, "step": 0.5}],
               early_stopping={"name": "median", "min_trainings_required": 1, "start_step": 2},
               resources={"max_trials": 7, "parallel_trials": 1}, random_seed=0)
    assert r.status_code == 201, r.text
    t = wait_ended(api, r.json()["id"], timeout=240)
    trials = api("GET", f"/tunings/{t['id']}/trials").json()["trials"]
    stopped = [x for x in trials if x["state"] == "EARLY_STOPPED"]
    assert len(stopped) >= 2, trials
    best = max((x for x in trials if x["state"] == "SUCCEEDED"), key=lambda x: x["objective"])
    assert float(best["hyperparameters"]["x"]) == 3.0


@pytest.mark.parametrize("over, message", [
    ({"strategy": "annealing"}, "unknown strategy"),
    ({"hyperparameter_spec": [{"name": "x", "type": "int", "min": 9, "max": 1}]}, "greater than max"),
    ({"strategy": "grid"}, "needs a step"),
    ({"objective": {"metric": "loss", "goal": "minimize"}}, "not among the metrics"),
    ({"resources": {"max_trials": 100000}}, "max_trials"),
    ({"resources": {"parallel_trials": 5, "gpus_per_trial": 1}}, "above your cap"),
    ({"metrics": [{"name": "score", "regex": "(a"}]}, "does not compile"),
    ({"entry_point": "../x.py"}, ""),
])
def test_bad_input_is_a_4xx_and_leaves_nothing(hub, over, message):
    _, api = user(hub, "bad")
    r = create(api, **over)
    assert 400 <= r.status_code < 500 and message in r.json()["message"], r.text
    assert api("GET", "/tunings").json()["tunings"] == []
    assert api("GET", "/runs").json()["total"] == 0


def test_stop_copy_and_delete(hub):
    _, api = user(hub, "ops")
    r = create(api, code=STEPS, resources={"max_trials": 4, "parallel_trials": 2})
    tid = r.json()["id"]
    assert api("DELETE", f"/tunings/{tid}").status_code == 409
    assert api("POST", f"/tunings/{tid}/stop").status_code == 200
    t = wait_ended(api, tid)
    assert t["state"] == "STOPPED"
    c = api("POST", f"/tunings/{tid}/copy", json={"name": "again", "resources": {"max_trials": 1}})
    assert c.status_code == 201, c.text
    assert c.json()["name"] == "again" and c.json()["strategy"] == "random"
    assert api("DELETE", f"/tunings/{tid}").status_code == 204
    assert api("GET", f"/tunings/{tid}").status_code == 404


SLOW = textwrap.dedent("""
    import os, time
    x = float(os.environ["EM_HP_X"])
    time.sleep(1.5)
    print(f"score={-(x - 3) ** 2}", flush=True)
""")


def test_a_sigkilled_scheduler_during_parallel_trials_runs_each_trial_once(hub):
    """After the restart: max_trials trials in all, each Optuna number and each suggestion once, every run a trial."""
    import os
    import signal

    from .test_restart import _pid_or_none

    _, api = user(hub, "restart")
    r = create(api, code=SLOW, resources={"max_trials": 8, "parallel_trials": 3})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    wait_for_sync(lambda: api("GET", f"/tunings/{tid}").json()["trials"]["by_state"].get("RUNNING", 0) >= 2,
                  timeout=60, interval=0.1, message="two trials to run")
    old = hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)
    wait_for_sync(lambda: _pid_or_none(hub.scheduler_pid) not in (old, None), timeout=30, interval=0.05,
                  message="the supervisor to start the scheduler again")
    wait_for_sync(lambda: _answers(api, f"/tunings/{tid}"), timeout=30, message="the API to answer again")

    t = wait_ended(api, tid, timeout=180)
    assert (t["state"], t["state_detail"]) == ("COMPLETE", "MaxTrialsReached"), t
    trials = api("GET", f"/tunings/{tid}/trials").json()["trials"]
    assert sorted(x["number"] for x in trials) == list(range(8)), trials
    assert len({x["hyperparameters"]["x"] for x in trials}) == 8, trials
    assert {x["state"] for x in trials} == {"SUCCEEDED"}, trials
    runs = api("GET", "/runs", params={"limit": 100}).json()["runs"]
    assert sorted(r["id"] for r in runs) == sorted(x["run_id"] for x in trials), (runs, trials)
    assert [(n, state) for n, state, _ in trial_rows(hub, tid)] == [(n, "COMPLETE") for n in range(8)]


def restart(hub, api, path: str = "/tunings") -> None:
    """SIGKILL the scheduler and wait for its supervisor's next start to answer (it reads its config anew)."""
    import os
    import signal

    from .test_restart import _pid_or_none

    old = hub.scheduler_pid()
    os.kill(old, signal.SIGKILL)
    wait_for_sync(lambda: _pid_or_none(hub.scheduler_pid) not in (old, None), timeout=30, interval=0.05,
                  message="the supervisor to start the scheduler again")
    wait_for_sync(lambda: _answers(api, path), timeout=30, message="the API to answer again")


def test_a_tuning_whose_study_is_a_journal_file_continues_in_it_after_the_upgrade(hub):
    """The version before kept each study in a journal file. A tuning running across the upgrade (a restart with
    the database storage, the default now) continues in its file: its trials once each, none lost; a tuning
    made after it is in the database."""
    _, api = user(hub, "upgrade")
    config = hub.root / "scheduler_config.py"
    default = config.read_text()
    config.write_text(default + 'c.TuningController.study_storage = "journal"\n')
    try:
        restart(hub, api)
        r = create(api, code=SLOW, resources={"max_trials": 6, "parallel_trials": 2})
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        wait_for_sync(lambda: api("GET", f"/tunings/{tid}").json()["trials"]["by_state"].get("RUNNING", 0) == 2,
                      timeout=60, interval=0.1, message="two trials to run")
        assert journal_of(hub, tid).exists()
    finally:
        config.write_text(default)
    restart(hub, api, f"/tunings/{tid}")
    after = create(api, resources={"max_trials": 2, "parallel_trials": 2})
    assert after.status_code == 201, after.text

    t = wait_ended(api, tid, timeout=180)
    assert (t["state"], t["state_detail"], t["trials"]["by_state"]) == ("COMPLETE", "MaxTrialsReached",
                                                                         {"SUCCEEDED": 6}), t
    trials = api("GET", f"/tunings/{tid}/trials").json()["trials"]
    assert sorted(x["number"] for x in trials) == list(range(6)), trials
    assert len({x["hyperparameters"]["x"] for x in trials}) == 6, trials
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal_of(hub, tid))))
    assert [s.state for s in optuna.load_study(study_name=f"tuning-{tid}", storage=storage).trials] == [COMPLETE] * 6
    assert trial_rows(hub, tid) == []

    second = wait_ended(api, after.json()["id"])
    assert second["trials"]["by_state"] == {"SUCCEEDED": 2}, second
    assert [s.state for s in study_of(hub, second["id"])] == [COMPLETE] * 2
    trials += api("GET", f"/tunings/{second['id']}/trials").json()["trials"]
    runs = api("GET", "/runs", params={"limit": 100}).json()["runs"]
    assert sorted(r["id"] for r in runs) == sorted(x["run_id"] for x in trials), (runs, trials)


@pytest.mark.parametrize("stopped", [False, True])
def test_a_trial_run_made_just_before_a_kill_is_adopted_after_the_restart_not_made_again(hub, stopped):
    """The service killed after a trial's run was stored but before its trial row: the restarted service finds the
    run by the trial's key (``tuning:ID:NUMBER``) and adopts it, also when the tuning was being stopped (the run is
    then a trial that is cancelled, not a run left to itself). The supervisor is paused so that the row can be
    removed while no scheduler runs, which is the state such a kill leaves."""
    import os
    import signal
    import sqlite3

    from .test_restart import _pid_or_none

    _, api = user(hub, f"adopt{int(stopped)}")
    r = create(api, code=SLOW, resources={"max_trials": 5, "parallel_trials": 2})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    wait_for_sync(lambda: api("GET", f"/tunings/{tid}").json()["trials"]["by_state"].get("RUNNING", 0) == 2,
                  timeout=60, interval=0.1, message="two trials to run")
    supervisor, old = hub.supervisor_pid(), hub.scheduler_pid()
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(old, signal.SIGKILL)
        wait_for_sync(lambda: _gone(old), timeout=30, interval=0.05, message="the scheduler to die")
        with sqlite3.connect(hub.root / "var" / "scheduler" / "scheduler.sqlite") as db:
            number, run_id = db.execute("SELECT number, run_id FROM tuning_trials WHERE tuning_id = ? "
                                        "ORDER BY number DESC LIMIT 1", (tid,)).fetchone()
            db.execute("DELETE FROM tuning_trials WHERE tuning_id = ? AND number = ?", (tid, number))
            if stopped:
                db.execute("UPDATE tunings SET state = 'STOP IN PROGRESS', reason = 'stopped by its owner' "
                           "WHERE id = ?", (tid,))
    finally:
        os.kill(supervisor, signal.SIGCONT)
    wait_for_sync(lambda: _pid_or_none(hub.scheduler_pid) not in (old, None), timeout=30, interval=0.05,
                  message="the supervisor to start the scheduler again")
    wait_for_sync(lambda: _answers(api, f"/tunings/{tid}"), timeout=30, message="the API to answer again")

    t = wait_ended(api, tid, timeout=180)
    trials = api("GET", f"/tunings/{tid}/trials").json()["trials"]
    if stopped:
        assert t["state"] == "STOPPED", t
        assert number in {x["number"] for x in trials}, trials
    else:
        assert (t["state"], t["state_detail"], t["trials"]["by_state"]) == ("COMPLETE", "MaxTrialsReached",
                                                                             {"SUCCEEDED": 5}), t
        assert sorted(x["number"] for x in trials) == list(range(5)), trials
    assert {x["number"]: x["run_id"] for x in trials}[number] == run_id
    runs = api("GET", "/runs", params={"limit": 100}).json()["runs"]
    assert sorted(r["id"] for r in runs) == sorted(x["run_id"] for x in trials), (runs, trials)
    assert most_at_once(runs) <= 2


def _gone(pid: int) -> bool:
    """Whether ``pid`` has died (a zombie until its paused parent reaps it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _answers(api, path) -> bool:
    try:
        return api("GET", path, timeout=5).status_code == 200
    except Exception:  # noqa: BLE001 - the service is starting
        return False


DATA = textwrap.dedent("""
    import os
    x = float(os.environ["EM_HP_X"])
    offset = float(open(os.path.join(os.environ["EM_DATASET_TRAIN"], "offset.txt")).read())
    print(f"score={offset - (x - 3) ** 2}", flush=True)
""")


def test_trials_read_the_tunings_datasets_at_the_version_resolved_at_creation(hub):
    from .test_datasets_live import push

    _, api = user(hub, "data")
    data = push(api, "offsets", {"offset.txt": b"100"})
    r = create(api, code=DATA, datasets={"train": "offsets"}, resources={"max_trials": 3, "parallel_trials": 1})
    assert r.status_code == 201, r.text
    push(api, "offsets", {"offset.txt": b"-100"}, dataset_id=data["id"])  # version 2, after the tuning was made
    t = wait_ended(api, r.json()["id"])
    assert t["trials"]["by_state"] == {"SUCCEEDED": 3}, t
    trials = api("GET", f"/tunings/{t['id']}/trials").json()["trials"]
    assert all(x["objective"] > 90 for x in trials), trials
    for x in trials:
        assert api.run(x["run_id"])["datasets"] == [{"name": "train", "dataset": "offsets", "version": 1}]


@pytest.mark.parametrize("datasets, message", [
    ({"train": "absent"}, "dataset 'absent' not found"),
    ({"train": "offsets2:7"}, "has no version 7"),
    ({"bad name": "offsets2"}, "must be a letter"),
])
def test_a_tuning_with_a_dataset_a_run_could_not_use_is_refused_and_leaves_nothing(hub, datasets, message):
    from .test_datasets_live import push

    _, api = user(hub, "baddata")
    push(api, "offsets2", {"offset.txt": b"1"})
    r = create(api, code=DATA, datasets=datasets)
    assert 400 <= r.status_code < 500 and message in r.json()["message"], r.text
    assert api("GET", "/tunings").json()["tunings"] == []
    assert api("GET", "/runs").json()["total"] == 0
