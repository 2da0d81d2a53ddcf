"""A tuning's settings checked without a service: every bad input a message, the grid exactly as asked."""

from __future__ import annotations

import pytest

from nothing.scheduler import tuning_spec as ts
from nothing.scheduler.spec import SpecError


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
