"""``--template NAME`` on ``%%nothing_train``, ``nothing submit`` and tunings, and ``nothing template ...``:
only the options given replace a template's fields; against the session's live hub."""

from __future__ import annotations

import re
import secrets
import shlex
import textwrap

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nothing.magics.client import NothingClient
from nothing.magics.options import make_parser, parse_run_args, spec_from_options
from nothing.magics.train import NothingMagics

from .test_cli import nothing
from .test_tuning_client import as_tuning, wait_ended

CODE = textwrap.dedent("""
    import os
    x = float(os.environ.get("EM_HP_X", "0"))
    print(f"lr={os.environ.get('EM_HP_LR')} score={-(x - 1) ** 2}", flush=True)
""")


def run_spec(line: str) -> dict:
    ns = parse_run_args(make_parser("nothing submit", with_script=True), shlex.split(line))
    return spec_from_options(ns, ns.script or "", ns.script_args)


def test_with_a_template_only_the_options_given_are_sent():
    assert run_spec("--template base --hp lr=0.5 --gpus 0") == {"template": "base", "hyperparameters": {"lr": "0.5"},
                                                                "gpus": 0}
    assert run_spec("train.py --template base -- --epochs 2") == {"template": "base", "entry_point": "train.py",
                                                                  "args": ["--epochs", "2"]}
    assert as_tuning("--template sweep --max-trials 2 --gpus 1 --strategy grid") == {
        "template": "sweep", "strategy": "grid", "resources": {"max_trials": 2, "gpus_per_trial": 1}}


def test_without_a_template_every_default_is_sent():
    assert run_spec("train.py")["cpus"] == 1 and run_spec("train.py")["experiment"] == "default"


@pytest.mark.hub
def test_save_list_use_copy_and_remove_templates_from_the_cli_and_the_magic(hub, tmp_path, monkeypatch, capsys):
    name = f"tplcli-{secrets.token_hex(3)}"
    hub.create_user(name)
    token = hub.token_for(name)
    (tmp_path / "train.py").write_text(CODE)
    out = nothing(hub, token, tmp_path, "template", "save", "base", "train.py", "--hp", "lr=0.1", "--cpus", "0",
                  "--metric", "score", "--max-time", "10m").stdout
    assert re.search(r"template \d+ 'base' saved \(run, with code\)", out), out
    assert re.search(r"^\d+\s+base\s+" + re.escape(name) + r"\s+-\s+run\s+yes\s+lr$",
                     nothing(hub, token, tmp_path, "template", "ls").stdout, re.M)
    client = NothingClient(f"{hub.url}/services/nothing/", token)

    out = nothing(hub, token, tmp_path / "..", "submit", "--template", "base", "--hp", "lr=0.5").stdout
    run_id = int(re.search(r"Run (\d+)", out).group(1))
    assert client.wait(run_id, timeout=60)["state"] == "COMPLETE"
    assert "lr=0.5 score=-1" in client.logs(run_id)[0]
    assert client.run(run_id)["max_seconds"] == 600 and client.run(run_id)["cpus"] == 0

    out = nothing(hub, token, tmp_path / "..", "tune", "submit", "--template", "base", "--strategy", "grid",
                  "--param", "x:int:0:2", "--objective", "score", "--max-trials", "3", "--parallel", "3").stdout
    tid = int(re.search(r"tuning (\d+)", out).group(1))
    t = wait_ended(client, tid)
    assert (t["state"], t["best_trial"]["hyperparameters"]) == ("COMPLETE", {"x": "1"}), t

    monkeypatch.setenv("NOTHING_SERVICE_URL", f"{hub.url}/services/nothing/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell.instance()
    ip.register_magics(NothingMagics)
    try:
        ip.run_cell_magic("nothing_train", "--template base --hp lr=0.9", "import os\nprint('cell', "
                          "os.environ['EM_HP_LR'])\n")
        cell_run = ip.user_ns["nothing_last_run"].record["id"]
        ip.run_line_magic("nothing_train", "--template base")
        line_run = ip.user_ns["nothing_last_run"].record["id"]
    finally:
        InteractiveShell.clear_instance()
    assert client.wait(cell_run, timeout=60)["state"] == "COMPLETE" and "cell 0.9" in client.logs(cell_run)[0]
    assert client.wait(line_run, timeout=60)["state"] == "COMPLETE" and "lr=0.1" in client.logs(line_run)[0]
    capsys.readouterr()

    out = nothing(hub, token, tmp_path, "template", "copy", "base", "--name", "bigger", "--set", '{"cpus": 2}').stdout
    assert "'bigger' saved" in out
    assert client.template("bigger")["settings"]["cpus"] == 2 and client.template("bigger")["has_code"]
    nothing(hub, token, tmp_path, "template", "rm", "base")
    assert [t["name"] for t in client.templates()] == ["bigger"]
    r = nothing(hub, token, tmp_path, "submit", "--template", "base", check=False)
    assert r.returncode == 2 and "template 'base' not found" in r.stderr
