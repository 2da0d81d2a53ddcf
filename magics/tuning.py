"""Hyperparameter tunings from the client: the options of ``%%nothing_tune`` and ``nothing tune submit`` (one
declaration, :data:`TUNE_OPTIONS`, next to the run's), their translation into the service's JSON, and the
``nothing tune`` commands' printing.

A tuned hyperparameter is one ``--param``::

    --param lr:double:1e-4:1e-1:log        a range (int or double), optionally on a log scale
    --param layers:int:1:8:1               MIN:MAX:STEP (the step is what grid search walks)
    --param opt:categorical:sgd,adam       comma-separated values

The run options (``--gpus``, ``--hp``, ``--dataset``, ``--metric`` ...) describe every trial: ``--gpus`` is
the GPUs per trial, ``--max-time`` the limit per trial (``--total-time`` the tuning's).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from IPython.core.magic_arguments import argument

from .client import NothingClient
from .options import OptionError, _Parser, parse_run_args, spec_from_options
from .tracking_cli import table

TUNE_DESCRIPTION = ("Tune hyperparameters with Optuna: every trial is a run on the shared GPUs. Options go anywhere "
                    "before a --; everything after -- is passed to the code.")

TUNE_OPTIONS: tuple[argument, ...] = (
    argument("--strategy", default="random", choices=["random", "grid", "bayesian"],
             help="how the next trial is chosen: random, grid (every point of the ranges' steps) or bayesian "
                  "(Optuna's TPE); default random"),
    argument("--seed", type=int, default=None, help="random seed, for reproducible suggestions"),
    argument("--param", action="append", default=[], metavar="NAME:TYPE:SPEC",
             help="a hyperparameter to tune, repeatable: NAME:int|double:MIN:MAX[:STEP][:log] or "
                  "NAME:categorical:A,B,C, e.g. --param lr:double:1e-4:1e-1:log --param opt:categorical:sgd,adam"),
    argument("--objective", default=None, metavar="METRIC",
             help="the metric to optimise (its last value in each trial), e.g. loss; default: the only --metric"),
    argument("--goal", default="maximize", choices=["maximize", "minimize"], help="default maximize"),
    argument("--target", type=float, default=None, help="end the tuning (GoalReached) once a trial reaches it"),
    argument("--max-trials", type=int, default=10, help="trials in all (default 10)"),
    argument("--parallel", type=int, default=1, help="at most this many trials queued or running at once"),
    argument("--max-failed", type=int, default=None, help="end FAIL HYPERPARAMETER TUNING after this many failures"),
    argument("--total-time", default=None, help="stop the tuning after this long, e.g. 6h"),
    argument("--early-stopping", default=None, metavar="median:MIN_TRAININGS:START_STEP",
             help="median stopping, e.g. median:3:5: once 3 trials are done, a trial whose objective at a step "
                  "from 5 on is worse than the median of the others' at that step is stopped (EARLY_STOPPED)"),
    argument("--description", default="", help="what the tuning is for"),
)

# Run fields a trial may take (the service's TRIAL_FIELDS); the rest of a run's options do not apply.
_TRIAL_FIELDS = {"entry_point", "args", "hyperparameters", "cpus", "memory", "priority", "group", "preemptible",
                 "datasets", "checkpoint"}


def tune_options(func):
    """Stack :data:`TUNE_OPTIONS` onto a magic (above the run options it already has)."""
    for deco in reversed(TUNE_OPTIONS):
        func = deco(func)
    return func


def parse_param(text: str, strategy: str) -> dict[str, Any]:
    """``lr:double:1e-4:1e-1:log`` → ``{"name": "lr", "type": "double", "min": 0.0001, "max": 0.1, "log": true}``."""
    parts = text.split(":")
    example = "e.g. --param lr:double:1e-4:1e-1:log or --param opt:categorical:sgd,adam"
    if len(parts) < 3 or not parts[0]:
        raise OptionError(f"--param takes NAME:TYPE:SPEC, {example}; not {text[:80]!r}")
    name, kind, rest = parts[0], parts[1], parts[2:]
    if kind == "categorical":
        values = [v for v in ":".join(rest).split(",") if v != ""]
        if not values:
            raise OptionError(f"--param {name}: give the values, comma-separated, e.g. {name}:categorical:sgd,adam")
        return {"name": name, "type": "categorical", "values": values}
    if kind not in ("int", "double"):
        raise OptionError(f"--param {name}: unknown type {kind!r}; types are int, double, categorical")
    log = bool(rest) and rest[-1] == "log"
    if log:
        rest = rest[:-1]
    if len(rest) not in (2, 3):
        raise OptionError(f"--param {name}: a range is MIN:MAX[:STEP][:log], {example}; not {text[:80]!r}")
    try:
        nums = [int(v) if kind == "int" else float(v) for v in rest]
    except ValueError:
        raise OptionError(f"--param {name}: {':'.join(rest)!r} are not {kind} numbers") from None
    out: dict[str, Any] = {"name": name, "type": kind, "min": nums[0], "max": nums[1]}
    if len(nums) == 3:
        out["step"] = nums[2]
    if log:
        out["log"] = True
    return out


def parse_early_stopping(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    parts = text.split(":")
    if parts[0] != "median" or len(parts) not in (1, 3):
        raise OptionError(f"--early-stopping takes median or median:MIN_TRAININGS:START_STEP (e.g. median:3:5), "
                          f"not {text[:60]!r}")
    if len(parts) == 1:
        return {"name": "median"}
    try:
        return {"name": "median", "min_trainings_required": int(parts[1]), "start_step": int(parts[2])}
    except ValueError:
        raise OptionError(f"--early-stopping {text!r}: MIN_TRAININGS and START_STEP are whole numbers") from None


def tuning_from_options(ns: argparse.Namespace, entry_point: str, args: list[str] | None = None) -> dict[str, Any]:
    """The JSON tuning for the service (as docs/tuning.md), checked here as far as the client can."""
    run = spec_from_options(ns, entry_point, args)
    template = run.pop("template", None)
    other = sorted(k for k in run if k not in _TRIAL_FIELDS | {"gpus", "max_time", "name", "experiment", "metrics"})
    if other:
        raise OptionError(f"a tuning's trials are single-node runs: {', '.join(other)} do not apply")
    if not ns.param and not template:
        raise OptionError("give the hyperparameters to tune, e.g. --param lr:double:1e-4:1e-1:log")
    metrics = run.get("metrics") or []
    objective = ns.objective or (metrics[0]["name"] if len(metrics) == 1 else None)
    if not objective and not template:
        raise OptionError("--objective METRIC names the metric to optimise (e.g. --objective loss --goal minimize)")
    if ns.max_trials < 1 or ns.parallel < 1 or (ns.max_failed is not None and ns.max_failed < 1):
        raise OptionError("--max-trials, --parallel and --max-failed must be at least 1")
    resources: dict[str, Any] = {"max_trials": ns.max_trials, "parallel_trials": ns.parallel,
                                 "gpus_per_trial": run.get("gpus", 0)}
    if ns.max_failed is not None:
        resources["max_failed_trials"] = ns.max_failed
    if run.get("max_time"):
        resources["max_time_per_trial"] = run["max_time"]
    if ns.total_time:
        resources["max_time"] = ns.total_time
    body: dict[str, Any] = {k: v for k, v in run.items() if k in _TRIAL_FIELDS}
    body.update(strategy=ns.strategy, hyperparameter_spec=[parse_param(p, ns.strategy) for p in ns.param],
                objective={"metric": objective, "goal": ns.goal, **({"target": ns.target}
                                                                    if ns.target is not None else {})},
                resources=resources, experiment=run.get("experiment", "default"))
    for key, value in (("name", run.get("name")), ("random_seed", ns.seed), ("description", ns.description),
                       ("early_stopping", parse_early_stopping(ns.early_stopping))):
        if value not in (None, ""):
            body[key] = value
    if metrics:
        body["metrics"] = metrics
    return _only_given(body, ns, template) if template else body


# For --template: which tuning fields (and which of its resources) each option sets.
_TUNE_FIELDS = {"strategy": "strategy", "seed": "random_seed", "param": "hyperparameter_spec",
                "objective": "objective", "early_stopping": "early_stopping", "description": "description"}
_RESOURCE_FIELDS = {"max_trials": "max_trials", "parallel": "parallel_trials", "max_failed": "max_failed_trials",
                    "total_time": "max_time", "gpus": "gpus_per_trial", "max_time": "max_time_per_trial"}


def _only_given(body: dict[str, Any], ns: argparse.Namespace, template: str) -> dict[str, Any]:
    """The fields of the options given: the template's stand for the rest (the service merges them)."""
    given = getattr(ns, "given", set())
    if {"goal", "target"} & given and "objective" not in given:
        raise OptionError("with --template, --goal and --target go with --objective METRIC (the objective is "
                          "replaced whole)")
    out: dict[str, Any] = {"template": template}
    out.update({k: v for k, v in body.items() if k in _TRIAL_FIELDS | {"name", "experiment", "metrics"}})
    if "experiment" not in given:
        out.pop("experiment", None)
    out.update({field: body[field] for dest, field in _TUNE_FIELDS.items() if dest in given and field in body})
    resources = {field: body["resources"][field] for dest, field in _RESOURCE_FIELDS.items()
                 if dest in given and field in body["resources"]}
    if resources:
        out["resources"] = resources
    return out


def make_tune_parser(prog: str) -> argparse.ArgumentParser:
    """``nothing tune submit SCRIPT`` options: the tuning's, then the run's (of every trial)."""
    from .options import RUN_OPTIONS, SCRIPT

    p = _Parser(prog=prog, add_help=False, allow_abbrev=False, description=TUNE_DESCRIPTION,
                usage=f"{prog} SCRIPT --param NAME:TYPE:SPEC [options] [-- script arguments]")
    for deco in (*TUNE_OPTIONS, *RUN_OPTIONS, SCRIPT):
        deco.add_to_parser(p, None)
    return p


def parse_tune_args(argv: list[str], prog: str = "nothing tune submit") -> argparse.Namespace:
    return parse_run_args(make_tune_parser(prog), argv, prog=prog)


# ---------------------------------------------------------------- printing
def _value(v) -> str:
    return "-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))


def status_text(t: dict) -> str:
    """One line: ``tuning 3 'quad' RUNNING: 4/12 trials done, 3 running, 0 failed; best x=3.1 (score -0.01)``."""
    n = t["trials"]
    best = t.get("best_trial")
    best_text = (f"; best {', '.join(f'{k}={v}' for k, v in best['hyperparameters'].items())} "
                 f"({t['objective']['metric']} {_value(best['objective'])})") if best else ""
    return (f"tuning {t['id']} {t['name']!r} {t['shown_state']}: {n['completed']}/{t['resources']['max_trials']} "
            f"trials done, {n['running']} running, {n['failed']} failed{best_text}")


def tunings_table(rows: list[dict]) -> str:
    if not rows:
        return "no tunings"
    return table([[str(t["id"]), t["name"] or "-", t["shown_state"], t["strategy"],
                   f"{t['trials']['completed']}/{t['resources']['max_trials']}",
                   _value((t.get("best_trial") or {}).get("objective"))] for t in rows],
                 ["ID", "NAME", "STATE", "STRATEGY", "TRIALS", "BEST"])


def trials_table(t: dict, trials: list[dict]) -> str:
    names = [h["name"] for h in t["hyperparameter_spec"]]
    return table([[str(x["number"]), str(x["run_id"] or "-"), x["state"], _value(x["objective"]),
                   *[str(x["hyperparameters"].get(n, "-")) for n in names]] for x in trials],
                 ["TRIAL", "RUN", "STATE", t["objective"]["metric"].upper(), *names])


def tune_command(client: NothingClient, args: argparse.Namespace) -> int:
    """``nothing tune ls|show|trials|stop|copy|rm`` (``submit`` is parsed by :func:`parse_tune_args`)."""
    cmd = args.tune_command
    if cmd == "ls":
        print(tunings_table(client.tunings()))
    elif cmd == "show":
        print(json.dumps(client.tuning(args.tuning), indent=2) if args.json else status_text(client.tuning(args.tuning)))
    elif cmd == "trials":
        print(trials_table(client.tuning(args.tuning), client.tuning_trials(args.tuning)))
    elif cmd == "stop":
        print(status_text(client.stop_tuning(args.tuning)))
    elif cmd == "copy":
        over: dict[str, Any] = json.loads(args.set) if args.set else {}
        if args.name:
            over["name"] = args.name
        if args.max_trials:
            over.setdefault("resources", {})["max_trials"] = args.max_trials
        print(status_text(client.copy_tuning(args.tuning, over)))
    elif cmd == "rm":
        client.delete_tuning(args.tuning)
        print(f"tuning {args.tuning} deleted")
    return 0


def add_tune_parser(sub) -> None:
    """``nothing tune ...`` sub-commands (``submit`` is handled before argparse, as ``nothing submit``)."""
    tune = sub.add_parser("tune", help="hyperparameter tunings: submit, ls, show, trials, stop, copy, rm")
    ts = tune.add_subparsers(dest="tune_command", required=True)
    ts.add_parser("submit", help="tune SCRIPT with the current folder as its code (see nothing tune submit --help)",
                  add_help=False)
    ts.add_parser("ls", help="your tunings")
    show = ts.add_parser("show", help="a tuning's state, counts and best trial")
    show.add_argument("tuning", type=int)
    show.add_argument("--json", action="store_true")
    ts.add_parser("trials", help="a tuning's trials").add_argument("tuning", type=int)
    ts.add_parser("stop", help="stop a tuning and its running trials").add_argument("tuning", type=int)
    copy = ts.add_parser("copy", help="a new tuning with the same settings and code")
    copy.add_argument("tuning", type=int)
    copy.add_argument("--name", default=None)
    copy.add_argument("--max-trials", type=int, default=None)
    copy.add_argument("--set", default=None, metavar="JSON", help='fields to change, e.g. \'{"strategy": "grid"}\'')
    ts.add_parser("rm", help="delete an ended tuning").add_argument("tuning", type=int)
