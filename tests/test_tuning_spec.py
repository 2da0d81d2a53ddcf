"""A tuning's settings checked without a service: every bad input a message, the grid exactly as asked; and
its Optuna studies on real files: rows of the scheduler's database, journal files, the studies of earlier versions
kept where they are, a crash's leftovers."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time

import optuna
import pytest

from sqlalchemy import create_engine, inspect, text

from nothing.scheduler import tuning_spec as ts
from nothing.scheduler.db import VERSION_TABLE, Database
from nothing.scheduler.spec import SpecError
from nothing.scheduler.tuning_studies import Studies, database_storage, distributions

COMPLETE, RUNNING = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING


def body(**over):
    b = {"strategy": "random", "entry_point": "train.py",
         "hyperparameter_spec": [{"name": "x", "type": "double", "min": 0, "max": 6}],
         "metrics": [{"name": "score", "regex": r"score=(\S+)"}],
         "objective": {"metric": "score", "goal": "maximize"}, "resources": {"max_trials": 5}}
    b.update(over)
    return b


@pytest.mark.parametrize("over, message", [
    ({"strategy": "annealing"}, "unknown strategy 'annealing'"),
    ({"hyperparameter_spec": [{"name": "x", "type": "double", "min": 5, "max": 1}]}, "min (5) is greater than max (1)"),
    ({"hyperparameter_spec": [{"name": "x", "type": "double", "min": 0, "max": 1, "step": 0.3}]},
     "does not divide the range"),
    ({"strategy": "grid"}, "needs a step"),
    ({"objective": {"metric": "loss", "goal": "minimize"}}, "is not among the metrics"),
    ({"resources": {"max_trials": 0}}, "max_trials must be between 1 and 1000, not 0"),
    ({"resources": {"max_trials": 100_000}}, "not 100000"),
    ({"resources": {"parallel_trials": 5, "gpus_per_trial": 1}}, "above your cap of 4"),
    ({"metrics": [{"name": "score", "regex": "score=(\\d+"}]}, "does not compile"),
    ({"hyperparameter_spec": [{"name": "x", "type": "float", "min": 0, "max": 1}]}, "type must be one of"),
])
def test_bad_input_is_refused_with_a_message_naming_it(over, message):
    with pytest.raises(SpecError, match=None) as e:
        ts.parse_tuning(body(**over), gpu_cap=4)
    assert message in str(e.value)


def test_grid_enumerates_min_to_max_by_step_and_categorical_values():
    spec, trial = ts.parse_tuning(body(strategy="grid", hyperparameter_spec=[
        {"name": "x", "type": "double", "min": 0, "max": 1, "step": 0.25},
        {"name": "n", "type": "int", "min": 1, "max": 3},
        {"name": "opt", "type": "categorical", "values": "sgd, adam"}]), gpu_cap=None)
    assert spec.hyperparameters[0].grid() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert spec.hyperparameters[1].grid() == [1, 2, 3]
    assert spec.hyperparameters[2].grid() == ["sgd", "adam"]
    assert spec.grid_size() == 30 == len(ts.grid_points(spec))
    assert trial == {"entry_point": "train.py"}
    assert ts.TuningSpec.from_json(spec.to_json()) == spec


def test_trial_body_is_a_run_with_the_suggestion_and_the_tunings_resources():
    spec, trial = ts.parse_tuning(body(hyperparameters={"epochs": "3"},
                                       resources={"gpus_per_trial": 1, "max_time_per_trial": "2m"}), gpu_cap=4)
    b = ts.trial_body(spec, trial, 7, {"x": "1.5"})
    assert b["hyperparameters"] == {"epochs": "3", "x": "1.5"}
    assert (b["gpus"], b["max_time"], b["name"]) == (1, "120s", "tuning-trial-7")
    assert b["metrics"] == [{"name": "score", "regex": r"score=(\S+)", "goal": ""}]


@pytest.mark.parametrize("run_state, cause, objective, early, expected", [
    ("QUEUED", None, None, False, "CREATED"),
    ("RUNNING", None, None, False, "RUNNING"),
    ("COMPLETE", None, 1.0, False, "SUCCEEDED"),
    ("COMPLETE", None, None, False, "METRICS_UNAVAILABLE"),
    ("FAIL TRAIN", None, None, False, "FAILED"),
    ("FAIL TRAIN", "max_time", None, False, "KILLED"),
    ("STOPPED", "cancel", None, False, "KILLED"),
    ("STOPPED", "cancel", None, True, "EARLY_STOPPED"),
])
def test_trial_states_follow_the_seed(run_state, cause, objective, early, expected):
    assert ts.trial_state(run_state, cause, objective, early) == expected


def test_tuning_transitions_end_only_through_their_in_progress_states():
    ts.check_tuning_transition(ts.RUNNING, ts.COMPLETE)
    ts.check_tuning_transition(ts.STOP_IN_PROGRESS, ts.STOPPED)
    with pytest.raises(ValueError):
        ts.check_tuning_transition(ts.STOPPED, ts.RUNNING)


@pytest.mark.parametrize("strategy, finished, unfinished, ahead", [
    ("random", 40, 4, True), ("grid", 0, 0, True),
    ("bayesian", 0, 0, True), ("bayesian", 6, 3, True),  # still sampling at random, whatever the 3 give
    ("bayesian", 7, 3, False), ("bayesian", 10, 0, False),  # the next one learns from what is told
])
def test_only_suggestions_the_trials_in_flight_cannot_change_are_asked_ahead(strategy, finished, unfinished, ahead):
    assert ts.may_ask_ahead(strategy, finished, unfinished) is ahead


def spec_of(**over) -> ts.TuningSpec:
    return ts.parse_tuning(body(random_seed=1, **over), gpu_cap=None)[0]


@pytest.fixture
def db_url(tmp_path):
    """The scheduler's database as the service leaves it at start: our schema at its head revision."""
    db = Database(f"sqlite:///{tmp_path / 'scheduler.sqlite'}")
    db.upgrade()
    db.close()
    return db.url


def trial_rows(url: str, name: str) -> list[tuple]:
    """A study's trials as rows of Optuna's tables, read through the scheduler's database URL."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT t.number, t.state, v.value FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "LEFT JOIN trial_values v ON v.trial_id = t.trial_id WHERE s.study_name = :n ORDER BY t.number"),
                {"n": name})]
    finally:
        engine.dispose()


def test_a_new_study_is_rows_of_the_schedulers_database(tmp_path, db_url):
    spec = spec_of()
    studies = Studies(tmp_path, db_url)
    number, _ = studies.ask("tuning-1", spec)
    studies.tell("tuning-1", spec, number, "complete", 2.0, [])
    waiting = studies.ask("tuning-1", spec)
    assert studies.where("tuning-1") == "database" and not studies.folder.exists()
    assert trial_rows(db_url, "tuning-1") == [(0, "COMPLETE", 2.0), (1, "RUNNING", None)]

    again = Studies(tmp_path, db_url)  # the service restarted
    frozen = again.trials("tuning-1", spec)
    assert [(t.number, t.state) for t in frozen] == [(0, COMPLETE), (1, RUNNING)]
    assert (frozen[1].number, frozen[1].params) == waiting
    again.tell("tuning-1", spec, 0, "fail", None, [])  # told before the restart: not told again
    assert trial_rows(db_url, "tuning-1")[0] == (0, "COMPLETE", 2.0)
    again.delete("tuning-1")
    assert trial_rows(db_url, "tuning-1") == [] and again.where("tuning-1") is None


def test_optunas_tables_and_ours_share_no_name(db_url):
    """Optuna's tables live beside ours: no table or index name in common, each revision in its own table."""
    engine = create_engine(db_url)
    ours = inspect(engine)
    our_tables = set(ours.get_table_names())
    our_indexes = {i["name"] for t in our_tables for i in ours.get_indexes(t)}
    database_storage(db_url).engine.dispose()
    after = inspect(engine)
    optuna_tables = set(after.get_table_names()) - our_tables
    optuna_indexes = {i["name"] for t in optuna_tables for i in after.get_indexes(t)}
    assert {"studies", "trials", "trial_params", "version_info", "alembic_version"} <= optuna_tables
    assert VERSION_TABLE in our_tables and not our_indexes & optuna_indexes
    engine.dispose()


def test_optunas_tables_made_by_an_older_optuna_are_upgraded_in_place(db_url):
    """An Optuna newer than its tables upgrades them (here from v3.0.0.d, before the index 3.2 added) rather than
    refusing every study; the scheduler's loggers keep working."""
    import logging

    database_storage(db_url).engine.dispose()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'v3.0.0.d'"))
    storage = database_storage(db_url)
    assert storage.get_current_version() == storage.get_head_version()
    assert "trials_study_id_key" in {i["name"] for i in inspect(engine).get_indexes("trials")}
    assert not logging.getLogger("nothing.scheduler.tuning_studies").disabled
    storage.engine.dispose()
    engine.dispose()


def test_studies_of_earlier_versions_continue_where_they_are_and_new_ones_go_to_the_database(tmp_path, db_url):
    """The RDB storage in ``optuna.sqlite`` (before journal files) and journal files (before the database) keep
    their studies, trials, asks and tells; deleting a tuning deletes its study there."""
    spec = spec_of()
    legacy = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.sqlite'}")
    old = optuna.create_study(storage=legacy, study_name="tuning-1", direction="maximize")
    old.tell(old.ask(distributions(spec)), 1.0)
    waiting = old.ask(distributions(spec))  # asked, its row never written: submitted after the upgrade
    before = Studies(tmp_path, db_url, "journal")  # the version that kept its studies in journal files
    before.tell("tuning-2", spec, before.ask("tuning-2", spec)[0], "complete", 2.0, [])
    before.ask("tuning-2", spec)

    studies = Studies(tmp_path, db_url)  # upgraded
    frozen = studies.trials("tuning-1", spec)
    assert [(t.number, t.state) for t in frozen] == [(0, COMPLETE), (1, RUNNING)]
    assert frozen[1].params == waiting.params
    assert studies.ask("tuning-1", spec)[0] == 2
    assert len(optuna.load_study(study_name="tuning-1", storage=legacy).trials) == 3
    assert [(t.number, t.state, t.value) for t in studies.trials("tuning-2", spec)] == [(0, COMPLETE, 2.0),
                                                                                        (1, RUNNING, None)]
    studies.tell("tuning-2", spec, 1, "complete", 3.0, [])
    assert studies.ask("tuning-2", spec)[0] == 2
    assert studies.ask("tuning-3", spec)[0] == 0
    assert [studies.where(f"tuning-{i}") for i in (1, 2, 3)] == ["legacy", "journal", "database"]
    assert trial_rows(db_url, "tuning-1") == trial_rows(db_url, "tuning-2") == []
    assert [s.study_name for s in legacy.get_all_studies()] == ["tuning-1"]

    again = Studies(tmp_path, db_url)  # restarted after the upgrade
    assert [t.value for t in again.trials("tuning-2", spec)] == [2.0, 3.0, None]
    for i in (1, 2, 3):
        again.delete(f"tuning-{i}")
    assert legacy.get_all_studies() == [] and not again.journal_path("tuning-2").exists()
    assert trial_rows(db_url, "tuning-3") == []


def test_with_journal_files_chosen_new_studies_are_files_and_the_databases_studies_stay_there(tmp_path, db_url):
    spec = spec_of()
    journal = Studies(tmp_path, db_url, "journal")
    journal.tell("tuning-1", spec, journal.ask("tuning-1", spec)[0], "complete", 1.0, [])
    path = journal.journal_path("tuning-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    engine = create_engine(db_url)
    assert "studies" not in inspect(engine).get_table_names()  # looked for without making Optuna's tables
    engine.dispose()

    Studies(tmp_path, db_url).ask("tuning-2", spec)  # made in the database before the setting changed
    again = Studies(tmp_path, db_url, "journal")
    assert again.ask("tuning-2", spec)[0] == 1 and again.where("tuning-2") == "database"
    assert not again.journal_path("tuning-2").exists()
    assert [t.state for t in again.trials("tuning-1", spec)] == [COMPLETE]


def test_a_journal_line_cut_short_by_a_crash_is_dropped_and_the_study_continues(tmp_path, db_url):
    spec = spec_of()
    studies = Studies(tmp_path, db_url, "journal")
    studies.tell("tuning-3", spec, studies.ask("tuning-3", spec)[0], "complete", 1.0, [])
    with open(studies.journal_path("tuning-3"), "ab") as f:
        f.write(b'{"op_code":4,"worker_id":"x","trial_id')
    again = Studies(tmp_path, db_url, "journal")
    assert [t.state for t in again.trials("tuning-3", spec)] == [COMPLETE]
    assert again.ask("tuning-3", spec)[0] == 1
    assert [t.state for t in Studies(tmp_path, db_url).trials("tuning-3", spec)] == [COMPLETE, RUNNING]


def test_a_scheduler_killed_while_writing_leaves_no_lock_behind(tmp_path, db_url):
    """The journal's lock is flock(2): a SIGKILLed holder's lock goes with it (Optuna's symlink lock would stay
    and make the next start wait 30 s)."""
    spec = spec_of()
    studies = Studies(tmp_path, db_url, "journal")
    studies.ask("tuning-4", spec)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(studies.journal_path('tuning-4'))!r}, os.O_RDWR)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    started = time.monotonic()
    assert Studies(tmp_path, db_url).ask("tuning-4", spec)[0] == 1
    assert time.monotonic() - started < 5
