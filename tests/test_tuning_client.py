"""``%%nothing_tune``, ``%nothing_tune script.py`` and ``nothing tune ...``: the options of a tuning, as JSON, and
against the session's live hub."""

from __future__ import annotations

import re
import secrets
import shlex
import textwrap
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nothing.magics.client import NothingClient
from nothing.magics.options import OptionError, RUN_OPTIONS
from nothing.magics.train import NothingMagics
from nothing.magics.tuning import TUNE_OPTIONS, parse_param, parse_tune_args, tuning_from_options

from .test_cli import nothing

TRIAL = textwrap.dedent("""
    import os
    x = float(os.environ["EM_HP_X"])
    print(f"loss={(x - 2) ** 2}", flush=True)
""")


def as_tuning(line: str) -> dict:
    ns = parse_tune_args(shlex.split(line))
    return tuning_from_options(ns, ns.script, ns.script_args)


def test_the_briefs_example_line_becomes_the_services_tuning():
    assert as_tuning("train.py --strategy bayesian --seed 1 --param lr:double:1e-4:1e-1:log "
                     "--param opt:categorical:sgd,adam --metric loss --objective loss --goal minimize --target 0.1 "
                     "--max-trials 20 --parallel 2 --max-failed 3 --early-stopping median:3:5 --gpus 1 "
                     "--dataset train=mnist:2 --hp epochs=3 --max-time 10m --total-time 2h --name sweep "
                     "-- --verbose") == {
        "entry_point": "train.py", "args": ["--verbose"], "hyperparameters": {"epochs": "3"}, "cpus": 1,
        "priority": 0, "datasets": {"train": "mnist:2"}, "strategy": "bayesian", "random_seed": 1,
        "hyperparameter_spec": [{"name": "lr", "type": "double", "min": 1e-4, "max": 0.1, "log": True},
                                {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]}],
        "objective": {"metric": "loss", "goal": "minimize", "target": 0.1},
        "resources": {"max_trials": 20, "parallel_trials": 2, "gpus_per_trial": 1, "max_failed_trials": 3,
                      "max_time_per_trial": "10m", "max_time": "2h"},
        "experiment": "default", "name": "sweep", "metrics": [{"name": "loss"}],
        "early_stopping": {"name": "median", "min_trainings_required": 3, "start_step": 5},
    }


def test_a_grid_param_takes_a_step_and_the_only_metric_is_the_default_objective():
    assert parse_param("layers:int:1:8:1", "grid") == {"name": "layers", "type": "int", "min": 1, "max": 8, "step": 1}
    t = as_tuning("t.py --strategy grid --param x:double:0:1:0.25 --metric acc")
    assert t["objective"] == {"metric": "acc", "goal": "maximize"}


@pytest.mark.parametrize("line, message", [
    ("t.py --metric loss", "give the hyperparameters to tune"),
    ("t.py --param x:double:0:1", "--objective METRIC"),
    ("t.py --param x --objective loss", "NAME:TYPE:SPEC"),
    ("t.py --param x:float:0:1 --objective loss", "unknown type 'float'"),
    ("t.py --param x:int:a:b --objective loss", "are not int numbers"),
    ("t.py --param x:categorical: --objective loss", "give the values"),
    ("t.py --param x:double:0:1 --objective loss --early-stopping mean:1:2", "--early-stopping takes median"),
    ("t.py --param x:double:0:1 --objective loss --nodes 2 --gpus-per-node 1", "single-node runs"),
    ("t.py --param x:double:0:1 --objective loss --max-trials 0", "at least 1"),
    ("t.py --param x:double:0:1 --objective loss --strategy annealing", "invalid choice"),
])
def test_bad_tuning_options_are_one_clear_error(line, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        as_tuning(line)


def test_the_magic_declares_the_tuning_and_the_run_options():
    declared = {s for arg in (*TUNE_OPTIONS, *RUN_OPTIONS) for s in arg.args if s.startswith("-")}
    parser = NothingMagics.nothing_tune.parser
    assert {s for a in parser._actions for s in a.option_strings} >= declared
    assert "--param" in parser.format_help() and "median:MIN_TRAININGS:START_STEP" in parser.format_help()


@pytest.fixture
def ip(hub, monkeypatch, tmp_path):
    name = f"tunemagic-{secrets.token_hex(3)}"
    hub.create_user(name)
    monkeypatch.setenv("NOTHING_SERVICE_URL", f"{hub.url}/services/nothing/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub.token_for(name))
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.register_magics(NothingMagics)
    yield shell
    InteractiveShell.clear_instance()


def wait_ended(client: NothingClient, tuning_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        t = client.tuning(tuning_id)
        if t["state"] in ("COMPLETE", "STOPPED", "FAIL HYPERPARAMETER TUNING"):
            return t
        assert time.monotonic() < deadline, t
        time.sleep(0.3)


@pytest.mark.hub
def test_the_cell_magic_tunes_the_cell_and_prints_a_status_line(ip, capsys):
    ip.run_cell_magic("nothing_tune", "--strategy grid --param x:int:0:4:1 --metric loss --objective loss "
                      "--goal minimize --max-trials 10 --parallel 2 --name cellsweep", TRIAL)
    out = capsys.readouterr().out
    assert re.search(r"tuning \d+ 'cellsweep' (CREATE IN PROGRESS|RUNNING)", out), out
    tuning = ip.user_ns["nothing_last_tuning"]
    t = wait_ended(NothingClient(), tuning["id"])
    assert (t["state"], t["state_detail"]) == ("COMPLETE", "SuggestionEndReached"), t
    assert t["best_trial"]["hyperparameters"] == {"x": "2"} and t["trials"]["total"] == 5


@pytest.mark.hub
def test_the_line_magic_tunes_a_script_and_refuses_bad_options_before_sending(ip, tmp_path, capsys):
    (tmp_path / "train.py").write_text(TRIAL)
    with pytest.raises(UsageError, match="give the hyperparameters"):
        ip.run_line_magic("nothing_tune", "train.py --objective loss")
    with pytest.raises(UsageError, match="is not a file"):
        ip.run_line_magic("nothing_tune", "absent.py --param x:int:0:4 --objective loss")
    assert NothingClient().tunings() == []
    ip.run_line_magic("nothing_tune", "train.py --param x:double:0:4 --metric loss --objective loss --goal minimize "
                      "--max-trials 2 --seed 3")
    t = wait_ended(NothingClient(), ip.user_ns["nothing_last_tuning"]["id"])
    assert (t["state"], t["trials"]["by_state"]) == ("COMPLETE", {"SUCCEEDED": 2}), t
    assert t["random_seed"] == 3 and t["trial_fields"]["entry_point"] == "train.py"


@pytest.mark.hub
def test_the_cli_submits_lists_shows_trials_stops_copies_and_removes(hub, tmp_path):
    name = f"tunecli-{secrets.token_hex(3)}"
    hub.create_user(name)
    token = hub.token_for(name)
    (tmp_path / "train.py").write_text("import time\n" + TRIAL + "time.sleep(30)\n")
    out = nothing(hub, token, tmp_path, "tune", "submit", "train.py", "--param", "x:double:0:4", "--metric", "loss",
                  "--objective", "loss", "--goal", "minimize", "--max-trials", "3", "--name", "clisweep").stdout
    tid = int(re.search(r"tuning (\d+) 'clisweep'", out).group(1))
    assert re.search(rf"^{tid}\s+clisweep\s+(CREATE IN PROGRESS|RUNNING)\s+random\s+0/3", nothing(
        hub, token, tmp_path, "tune", "ls").stdout, re.M)
    assert '"strategy": "random"' in nothing(hub, token, tmp_path, "tune", "show", str(tid), "--json").stdout
    assert re.search(r"^TRIAL\s+RUN\s+STATE\s+LOSS\s+x$", nothing(hub, token, tmp_path, "tune", "trials",
                                                                   str(tid)).stdout, re.M)
    r = nothing(hub, token, tmp_path, "tune", "rm", str(tid), check=False)
    assert r.returncode == 2 and "stop it first" in r.stderr
    assert re.search(r"STOP IN PROGRESS|STOPPED", nothing(hub, token, tmp_path, "tune", "stop", str(tid)).stdout)
    client = NothingClient(f"{hub.url}/services/nothing/", token)
    assert wait_ended(client, tid)["state"] == "STOPPED"
    out = nothing(hub, token, tmp_path, "tune", "copy", str(tid), "--name", "again", "--max-trials", "1").stdout
    copy_id = int(re.search(r"tuning (\d+) 'again'", out).group(1))
    assert client.tuning(copy_id)["resources"]["max_trials"] == 1
    client.stop_tuning(copy_id)
    nothing(hub, token, tmp_path, "tune", "rm", str(tid))
    assert [t["id"] for t in client.tunings()] == [copy_id]
    r = nothing(hub, token, tmp_path, "tune", "submit", "train.py", "--param", "x:double:4:0", "--objective", "loss",
                check=False)
    assert r.returncode == 2 and "greater than max" in r.stderr, r.stderr
