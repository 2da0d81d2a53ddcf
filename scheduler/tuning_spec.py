"""A hyperparameter tuning's settings (EasyMaker's 하이퍼파라미터 튜닝), checked without I/O, and its states.

``parse_tuning`` turns a request body into a ``TuningSpec`` or raises ``SpecError``
with a message a person understands; the trial's own run fields (entry point,
arguments, CPUs ...) are returned apart, for the ordinary run checks.  The
states and their allowed transitions are the seed's, written down as tables
(as ``states.py`` does for runs).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..common.spec import HP_KEY
from .metrics import RuleError, parse_rules, rules_to_json
from .spec import NAME, SpecError, parse_duration

STRATEGIES = ("random", "grid", "bayesian")
TYPES = ("int", "double", "categorical")
GOALS = ("maximize", "minimize")
MAX_TRIALS = 1000
MAX_HYPERPARAMETERS = 32
MAX_VALUES = 1000
MAX_DESCRIPTION = 10_000
# A run's fields a tuning passes on to every trial; the rest are the tuning's own.
TRIAL_FIELDS = {"entry_point", "args", "hyperparameters", "cpus", "memory", "priority", "group", "preemptible",
                "datasets", "checkpoint"}
TUNING_FIELDS = {"name", "description", "experiment", "strategy", "random_seed", "hyperparameter_spec", "metrics",
                 "objective", "resources", "early_stopping", "archive"}

# ---------------------------------------------------------------- states (the seed's names)
CREATE_REQUESTED = "CREATE REQUESTED"
CREATE_IN_PROGRESS = "CREATE IN PROGRESS"
RUNNING = "RUNNING"
STOP_IN_PROGRESS = "STOP IN PROGRESS"
STOPPED = "STOPPED"
COMPLETE_IN_PROGRESS = "COMPLETE IN PROGRESS"
COMPLETE = "COMPLETE"
FAIL_IN_PROGRESS = "FAIL HYPERPARAMETER TUNING IN PROGRESS"
FAIL = "FAIL HYPERPARAMETER TUNING"
CREATE_FAILED = "CREATE FAILED"
TUNING_STATES = (CREATE_REQUESTED, CREATE_IN_PROGRESS, RUNNING, STOP_IN_PROGRESS, STOPPED, COMPLETE_IN_PROGRESS,
                 COMPLETE, FAIL_IN_PROGRESS, FAIL, CREATE_FAILED)
TUNING_TERMINAL = frozenset({STOPPED, COMPLETE, FAIL, CREATE_FAILED})
# The in-progress states that wind down: no new trials, the running ones are stopped, then the final state.
WINDING_DOWN = {STOP_IN_PROGRESS: STOPPED, COMPLETE_IN_PROGRESS: COMPLETE, FAIL_IN_PROGRESS: FAIL}
TUNING_TRANSITIONS: dict[str, frozenset[str]] = {
    CREATE_REQUESTED: frozenset({CREATE_IN_PROGRESS, CREATE_FAILED, STOP_IN_PROGRESS}),
    CREATE_IN_PROGRESS: frozenset({RUNNING, CREATE_FAILED, STOP_IN_PROGRESS}),
    RUNNING: frozenset({STOP_IN_PROGRESS, COMPLETE_IN_PROGRESS, COMPLETE, FAIL_IN_PROGRESS, FAIL}),
    STOP_IN_PROGRESS: frozenset({STOPPED}),
    COMPLETE_IN_PROGRESS: frozenset({COMPLETE}),
    FAIL_IN_PROGRESS: frozenset({FAIL}),
    STOPPED: frozenset(), COMPLETE: frozenset(), FAIL: frozenset(), CREATE_FAILED: frozenset(),
}
# Details of COMPLETE.
GOAL_REACHED = "GoalReached"
MAX_TRIALS_REACHED = "MaxTrialsReached"
SUGGESTION_END_REACHED = "SuggestionEndReached"

# Trial states.
T_CREATED = "CREATED"
T_RUNNING = "RUNNING"
T_SUCCEEDED = "SUCCEEDED"
T_KILLED = "KILLED"
T_FAILED = "FAILED"
T_METRICS_UNAVAILABLE = "METRICS_UNAVAILABLE"
T_EARLY_STOPPED = "EARLY_STOPPED"
TRIAL_STATES = (T_CREATED, T_RUNNING, T_SUCCEEDED, T_KILLED, T_FAILED, T_METRICS_UNAVAILABLE, T_EARLY_STOPPED)
TRIAL_ACTIVE = frozenset({T_CREATED, T_RUNNING})
# What counts against "max failed trials".
TRIAL_FAILED = frozenset({T_FAILED, T_METRICS_UNAVAILABLE})


def check_tuning_transition(current: str, target: str) -> None:
    if target not in TUNING_TRANSITIONS[current]:
        raise ValueError(f"a tuning cannot go from {current} to {target}")


def trial_state(run_state: str, stop_cause: str | None, objective: float | None, early_stop: bool) -> str:
    """A trial's state from its run's: the seed's trial states (pure, so the table is tested whole)."""
    if run_state in ("CREATE REQUESTED", "QUEUED", "CREATE IN PROGRESS"):
        return T_CREATED
    if run_state in ("RUNNING", "STOP IN PROGRESS"):
        return T_RUNNING
    if early_stop and run_state in ("STOPPED", "COMPLETE", "FAIL TRAIN"):
        return T_EARLY_STOPPED
    if run_state == "COMPLETE":
        return T_SUCCEEDED if objective is not None else T_METRICS_UNAVAILABLE
    if run_state == "STOPPED" or stop_cause in ("max_time", "preempt", "zombie", "storage_quota"):
        return T_KILLED
    return T_FAILED


# ---------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    values: tuple = ()
    log: bool = False

    def grid(self) -> list:
        """The values a grid search takes (min, min + step, ... max), or the listed ones."""
        if self.type == "categorical":
            return list(self.values)
        assert self.min is not None and self.max is not None and self.step is not None
        count = int(round((self.max - self.min) / self.step)) + 1
        if self.type == "int":
            return [int(self.min) + k * int(self.step) for k in range(count)]
        return [_tidy(self.min + k * self.step) for k in range(count)]

    def as_text(self, value: Any) -> str:
        if self.type == "int":
            return str(int(value))
        if self.type == "double":
            return repr(float(value))
        return str(value)


@dataclass(frozen=True)
class TuningSpec:
    name: str
    description: str
    experiment: str
    strategy: str
    random_seed: int | None
    hyperparameters: tuple[Hyperparameter, ...]
    metrics: list | None
    objective_metric: str
    goal: str
    target: float | None
    max_trials: int
    max_failed_trials: int
    parallel_trials: int
    gpus_per_trial: int
    max_seconds_per_trial: int | None
    max_seconds: int | None
    early_stopping: dict | None = field(default=None)  # {"name": "median", "min_trainings_required", "start_step"}

    def grid_size(self) -> int | None:
        return math.prod(len(h.grid()) for h in self.hyperparameters) if self.strategy == "grid" else None

    def to_json(self) -> dict:
        data = asdict(self)
        data["hyperparameters"] = [dict(asdict(h), values=list(h.values)) for h in self.hyperparameters]
        return data

    @classmethod
    def from_json(cls, data: dict) -> TuningSpec:
        hps = tuple(Hyperparameter(**dict(h, values=tuple(h.get("values") or ()))) for h in data["hyperparameters"])
        return cls(**dict(data, hyperparameters=hps))

    def reached(self, value: float) -> bool:
        if self.target is None:
            return False
        return value >= self.target if self.goal == "maximize" else value <= self.target

    def better(self, a: float, b: float) -> bool:
        return a > b if self.goal == "maximize" else a < b


def _tidy(x: float) -> float:
    return float(f"{x:.12g}")


def _number(label: str, raw: Any, integer: bool) -> float | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise SpecError(f"{label} must be a number, not {str(raw)[:40]!r}")
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"{label} must be a number, not {str(raw)[:40]!r}") from None
    if not math.isfinite(value):
        raise SpecError(f"{label} must be a finite number")
    if integer and value != int(value):
        raise SpecError(f"{label} must be a whole number for an int hyperparameter, not {raw}")
    return value


def _whole(body: dict, key: str, default: int | None, low: int, high: int, label: str) -> int | None:
    raw = body.get(key, default)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(f"{label} must be a whole number, not {str(raw)[:40]!r}")
    if not low <= raw <= high:
        raise SpecError(f"{label} must be between {low} and {high}, not {raw}")
    return raw


def parse_hyperparameter(i: int, raw: Any, strategy: str) -> Hyperparameter:
    if not isinstance(raw, dict) or set(raw) - {"name", "type", "min", "max", "step", "values", "log"}:
        raise SpecError(f"hyperparameter_spec[{i}] must be an object with name, type and min/max/step or values "
                        "(and optionally log)")
    name = raw.get("name")
    if not isinstance(name, str) or not HP_KEY.fullmatch(name):
        raise SpecError(f"hyperparameter_spec[{i}]: name {str(name)[:60]!r} must be letters, digits, _, . or -")
    kind = raw.get("type")
    if kind not in TYPES:
        raise SpecError(f"hyperparameter {name!r}: type must be one of {', '.join(TYPES)}, not {str(kind)[:40]!r}")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"hyperparameter {name!r}: log must be true or false")
    if kind == "categorical":
        values = raw.get("values")
        if isinstance(values, str):
            values = [v.strip() for v in values.split(",")]
        if not isinstance(values, list) or not values or not all(isinstance(v, (str, int, float)) and
                                                                 not isinstance(v, bool) for v in values):
            raise SpecError(f"hyperparameter {name!r}: categorical values must be comma-separated, e.g. sgd,adam")
        values = [v for v in values if v != ""]
        if not values or len(values) > MAX_VALUES or len(set(map(str, values))) != len(values):
            raise SpecError(f"hyperparameter {name!r}: give 1 to {MAX_VALUES} distinct values, e.g. sgd,adam")
        if log or any(raw.get(k) is not None for k in ("min", "max", "step")):
            raise SpecError(f"hyperparameter {name!r}: a categorical one takes values, not min/max/step/log")
        return Hyperparameter(name, kind, values=tuple(str(v) for v in values))
    if raw.get("values") is not None:
        raise SpecError(f"hyperparameter {name!r}: an {kind} one takes min and max (and step), not values")
    integer = kind == "int"
    low, high = _number(f"{name}: min", raw.get("min"), integer), _number(f"{name}: max", raw.get("max"), integer)
    step = _number(f"{name}: step", raw.get("step"), integer)
    if low is None or high is None:
        raise SpecError(f"hyperparameter {name!r}: an {kind} one needs min and max")
    if low > high:
        raise SpecError(f"hyperparameter {name!r}: min ({_show(low)}) is greater than max ({_show(high)})")
    if step is not None:
        if step <= 0:
            raise SpecError(f"hyperparameter {name!r}: step must be greater than 0, not {_show(step)}")
        if log:
            raise SpecError(f"hyperparameter {name!r}: a log-scale range takes no step")
        count = (high - low) / step
        if abs(count - round(count)) > 1e-9 * max(1.0, count):
            raise SpecError(f"hyperparameter {name!r}: step {_show(step)} does not divide the range "
                            f"{_show(low)}..{_show(high)} (its length {_show(high - low)} is not a multiple of it)")
        if round(count) + 1 > MAX_VALUES * 10:
            raise SpecError(f"hyperparameter {name!r}: step {_show(step)} makes {round(count) + 1} values; "
                            f"at most {MAX_VALUES * 10}")
    if log and low <= 0:
        raise SpecError(f"hyperparameter {name!r}: a log-scale range needs min above 0, not {_show(low)}")
    if strategy == "grid" and step is None:
        if integer:
            step = 1.0
        else:
            raise SpecError(f"hyperparameter {name!r}: grid search over the continuous range "
                            f"{_show(low)}..{_show(high)} needs a step (e.g. step {_show((high - low) / 10)})")
    return Hyperparameter(name, kind, low, high, step, log=log)


def _show(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def parse_tuning(body: dict, gpu_cap: int | None) -> tuple[TuningSpec, dict]:
    """The tuning's settings and the trial's run fields; ``gpu_cap`` is the most GPUs its owner may hold."""
    if not isinstance(body, dict):
        raise SpecError("a tuning is a JSON object")
    unknown = sorted(set(body) - TUNING_FIELDS - TRIAL_FIELDS)
    if unknown:
        raise SpecError(f"unknown field(s) {', '.join(map(str, unknown))[:200]}; allowed: "
                        f"{', '.join(sorted(TUNING_FIELDS - {'archive'} | TRIAL_FIELDS))}")
    name = body.get("name") or ""
    for label, value in (("name", name), ("experiment", body.get("experiment") or "default")):
        if value and (not isinstance(value, str) or not NAME.fullmatch(value)):
            raise SpecError(f"{label} {str(value)[:60]!r} must be 1-100 letters, digits, spaces, _, . or -, "
                            "starting with a letter or digit")
    description = body.get("description") or ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise SpecError(f"description must be text of at most {MAX_DESCRIPTION} characters")
    strategy = body.get("strategy")
    if strategy not in STRATEGIES:
        raise SpecError(f"unknown strategy {str(strategy)[:40]!r}; strategies are: {', '.join(STRATEGIES)} "
                        "(bayesian is Optuna's TPE)")
    seed = _whole(body, "random_seed", None, 0, 2**32 - 1, "random_seed")
    raw_hps = body.get("hyperparameter_spec")
    if not isinstance(raw_hps, list) or not raw_hps:
        raise SpecError("hyperparameter_spec must list the hyperparameters to tune, e.g. "
                        '[{"name": "lr", "type": "double", "min": 0.001, "max": 0.1, "log": true}]')
    if len(raw_hps) > MAX_HYPERPARAMETERS:
        raise SpecError(f"a tuning takes at most {MAX_HYPERPARAMETERS} hyperparameters, not {len(raw_hps)}")
    hps = tuple(parse_hyperparameter(i, h, strategy) for i, h in enumerate(raw_hps))
    names = [h.name for h in hps]
    if len(set(names)) != len(names):
        raise SpecError(f"hyperparameter {next(n for n in names if names.count(n) > 1)!r} is named twice")
    fixed = body.get("hyperparameters") or {}
    if isinstance(fixed, dict) and set(fixed) & set(names):
        raise SpecError(f"hyperparameter {sorted(set(fixed) & set(names))[0]!r} is both fixed and tuned")
    try:
        rules = parse_rules(body.get("metrics"))
    except RuleError as e:
        raise SpecError(str(e)) from None
    objective = body.get("objective")
    if not isinstance(objective, dict) or set(objective) - {"metric", "goal", "target"}:
        raise SpecError('objective must be {"metric": NAME, "goal": "maximize" or "minimize", "target": optional}')
    metric = objective.get("metric")
    if rules is not None and metric not in {r.name for r in rules}:
        raise SpecError(f"the objective metric {str(metric)[:60]!r} is not among the metrics "
                        f"({', '.join(r.name for r in rules)})")
    if not isinstance(metric, str) or not metric:
        raise SpecError("objective.metric must name the metric to optimise")
    goal = objective.get("goal")
    if goal not in GOALS:
        raise SpecError(f"objective.goal must be maximize or minimize, not {str(goal)[:40]!r}")
    target = _number("objective.target", objective.get("target"), False)
    resources = body.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"max_trials", "max_failed_trials", "parallel_trials",
                                                            "gpus_per_trial", "max_time_per_trial", "max_time"}:
        raise SpecError("resources takes max_trials, max_failed_trials, parallel_trials, gpus_per_trial, "
                        "max_time_per_trial and max_time")
    max_trials = _whole(resources, "max_trials", 10, 1, MAX_TRIALS, "resources.max_trials")
    assert max_trials is not None
    max_failed = _whole(resources, "max_failed_trials", max_trials, 1, MAX_TRIALS, "resources.max_failed_trials")
    parallel = _whole(resources, "parallel_trials", 1, 1, MAX_TRIALS, "resources.parallel_trials")
    gpus = _whole(resources, "gpus_per_trial", 0, 0, 1024, "resources.gpus_per_trial")
    assert max_failed is not None and parallel is not None and gpus is not None
    parallel = min(parallel, max_trials)
    if gpus and gpu_cap is not None and parallel * gpus > gpu_cap:
        raise SpecError(f"{parallel} parallel trials of {gpus} GPU{'s' if gpus > 1 else ''} need {parallel * gpus} "
                        f"GPUs at once, above your cap of {gpu_cap}: lower parallel_trials to at most "
                        f"{gpu_cap // gpus}")
    per_trial = _duration(resources.get("max_time_per_trial"), "resources.max_time_per_trial")
    total = _duration(resources.get("max_time"), "resources.max_time")
    stopping = body.get("early_stopping")
    if stopping is not None:
        if not isinstance(stopping, dict) or set(stopping) - {"name", "min_trainings_required", "start_step"}:
            raise SpecError('early_stopping must be {"name": "median", "min_trainings_required": N, '
                            '"start_step": N}')
        if stopping.get("name", "median") != "median":
            raise SpecError(f"early_stopping.name must be median, not {str(stopping.get('name'))[:40]!r}")
        stopping = {"name": "median",
                    "min_trainings_required": _whole(stopping, "min_trainings_required", 3, 1, MAX_TRIALS,
                                                     "early_stopping.min_trainings_required"),
                    "start_step": _whole(stopping, "start_step", 4, 0, 10**9, "early_stopping.start_step")}
    spec = TuningSpec(name, description, body.get("experiment") or "default", strategy, seed, hps,
                      rules_to_json(rules), metric, goal, target, max_trials, max_failed, parallel, gpus, per_trial,
                      total, stopping)
    trial = {k: v for k, v in body.items() if k in TRIAL_FIELDS}
    return spec, trial


def _duration(raw: Any, label: str) -> int | None:
    if raw in (None, "", 0):
        return None
    try:
        return parse_duration(raw)
    except SpecError as e:
        raise SpecError(f"{label}: {e}") from None


def trial_body(spec: TuningSpec, trial_fields: dict, number: int, params: dict[str, str]) -> dict:
    """The run submission of one trial: the trial fields, the suggestion, the tuning's resources and metrics."""
    body = {k: v for k, v in trial_fields.items() if not k.startswith("_")}
    body["hyperparameters"] = {**(trial_fields.get("hyperparameters") or {}), **params}
    body.update(name=f"{spec.name or 'tuning'}-trial-{number}"[:100], experiment=spec.experiment,
                gpus=spec.gpus_per_trial)
    if spec.metrics is not None:
        body["metrics"] = [{"name": r["name"], "regex": r["regex"], "goal": r.get("goal") or ""}
                           for r in spec.metrics]
    if spec.max_seconds_per_trial:
        body["max_time"] = f"{spec.max_seconds_per_trial}s"
    return body


def sample_params(spec: TuningSpec) -> dict[str, str]:
    """A suggestion of the first value of each range, to check the trial's run fields at creation."""
    first = {}
    for h in spec.hyperparameters:
        first[h.name] = h.as_text(h.values[0] if h.type == "categorical" else h.min)
    return first


def grid_points(spec: TuningSpec) -> list[dict]:
    """Every point of a grid search (for tests and the docs' counts)."""
    axes = [[(h.name, v) for v in h.grid()] for h in spec.hyperparameters]
    return [dict(p) for p in itertools.product(*axes)]


# Trials TPE samples at random before it models the results (Optuna's default, passed explicitly).
TPE_STARTUP_TRIALS = 10


def may_ask_ahead(strategy: str, finished: int, unfinished: int) -> bool:
    """Whether the next suggestion may be asked now, before the trials in flight end, without changing it.

    Random and grid suggestions never depend on results. TPE's do once it has ``TPE_STARTUP_TRIALS``
    finished (complete or pruned) trials; before that it samples at random, from its own seeded
    generator, so a suggestion asked while ``finished + unfinished`` (every asked, untold trial could
    finish first) is still below that is the same one it would give after those trials were told.
    Past that point it is asked only after the ended trial is told, so that it learns from it.
    """
    if strategy in ("random", "grid"):
        return True
    return finished + unfinished < TPE_STARTUP_TRIALS
