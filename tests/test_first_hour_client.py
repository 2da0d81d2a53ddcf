"""The first hour with the client, second pass: what a new user types from the README, sees in the widget and
the lists, and finds in a terminal, against a real hub (and a real kernel where it is a notebook's part)."""

from __future__ import annotations

import email.utils
import os
import re
import shlex
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import requests
from nbclient import NotebookClient

from nothing.hub_extension.service import SERVER_TOKEN_SCOPES

from .helpers import wait_for_sync

README = (Path(__file__).parent.parent / "README.md").read_text()
NOTHING = str(Path(sys.executable).parent / "nothing")
TRAIN_PY = "import sys\nprint('ARGS', sys.argv[1:])\n"


def readme_examples(prefix: str) -> list[str]:
    """The README's inline examples that start with ``prefix``, verbatim."""
    found = re.findall(r"`(" + re.escape(prefix) + r"[^`]*)`", README)
    assert found, f"the README has no example starting with {prefix!r}"
    return found


def expected_from(example: str) -> tuple[int, dict, list[str]]:
    """What the example asks for, by the documented rule: options before ``--``, the code's arguments after it."""
    words = shlex.split(example)
    own, rest = (words[:words.index("--")], words[words.index("--") + 1:]) if "--" in words else (words, [])
    gpus = int(own[own.index("--gpus") + 1]) if "--gpus" in own else 0
    hps = dict(own[i + 1].split("=", 1) for i, w in enumerate(own) if w == "--hp")
    return gpus, hps, rest


def cli(hub, token, cwd, *args):
    env = dict(os.environ, NOTHING_SERVICE_URL=f"{hub.url}/services/nothing/", JUPYTERHUB_API_TOKEN=token)
    return subprocess.run([NOTHING, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def run_notebook(hub, user: str, folder: Path, cells: list[str], failing: set[int] = frozenset()):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    for i in failing:
        nb.cells[i].metadata["tags"] = ["raises-exception"]
    env = dict(NOTHING_SERVICE_URL=f"{hub.url}/services/nothing/",
               JUPYTERHUB_API_TOKEN=hub.token_for(user, scopes=SERVER_TOKEN_SCOPES),
               JPY_SESSION_NAME=str(folder / "first-hour.ipynb"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    nbformat.write(nb, folder / "first-hour.ipynb")
    return nbformat.read(folder / "first-hour.ipynb", as_version=4)  # what a reopened notebook has


def text(cell) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_the_client_imports_and_parses_without_the_scheduler_package():
    code = textwrap.dedent("""
        import importlib.abc, sys

        class NoScheduler(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "nothing.scheduler" or name.startswith("nothing.scheduler."):
                    raise ImportError(f"{name} is not shipped with the client")
                return None

        sys.meta_path.insert(0, NoScheduler())
        import nothing.magics, nothing.magics.cli, nothing.magics.train, nothing.magics.widget
        import nothing.magics.serverext, nothing.magics.snapshot, nothing.magics.failure
        from nothing.magics.options import make_parser, parse_run_args, spec_from_options
        ns = parse_run_args(make_parser("nothing submit", True),
                            ["t.py", "--gpus", "1", "--memory", "8G", "--max-time", "2h", "--hp", "lr=0.1"])
        spec = spec_from_options(ns, "t.py", ns.script_args)
        assert spec["gpus"] == 1 and spec["hyperparameters"] == {"lr": "0.1"}, spec
        assert not [m for m in sys.modules if m.startswith("nothing.scheduler")]
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), r.stderr


def test_elapsed_counts_on_the_services_clock_not_the_kernels():
    from nothing.magics.client import NothingClient
    from nothing.magics.widget import elapsed

    client = NothingClient("http://127.0.0.1:9/services/nothing/", "token")
    answer = requests.Response()
    answer.headers["Date"] = email.utils.formatdate(time.time() + 3600, usegmt=True)  # the service is 1 h ahead
    client._note_clock(answer)
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600 - 65)) + "Z"
    assert elapsed({"started_at": started, "ended_at": None}, client.server_now()) in ("0:01:05", "0:01:06")


def test_gpus_read_as_indexes_once_assigned_and_as_a_count_before():
    from nothing.magics.widget import gpu_text, status_line

    assert gpu_text({"assigned_gpus": [0], "gpus": 1}) == "GPU #0"
    assert gpu_text({"assigned_gpus": [0, 1], "gpus": 2}) == "GPUs #0,#1"
    assert gpu_text({"assigned_gpus": [], "gpus": 1}) == "1 GPU"
    assert gpu_text({"assigned_gpus": None, "gpus": 2}) == "2 GPUs"
    run = {"id": 3, "name": "", "entry_point": "t.py", "state": "RUNNING", "assigned_gpus": [0], "gpus": 1,
           "experiment": "resnet", "started_at": None, "reason": ""}
    assert status_line(run) == "Run 3 | t.py | RUNNING | GPU #0 | elapsed - | experiment resnet"


@pytest.mark.hub
def test_the_readme_submit_examples_queue_with_their_gpus_hyperparameters_and_arguments(hub, make_user, tmp_path):
    user, api = make_user("readmecli")
    token = hub.token_for(user)
    (tmp_path / "train.py").write_text(TRAIN_PY)
    examples = readme_examples("nothing submit ")
    assert "nothing submit train.py --gpus 1 --hp lr=0.1" in examples
    for example in examples:
        gpus, hps, args = expected_from(example)
        r = cli(hub, token, tmp_path, *shlex.split(example)[1:])
        assert r.returncode == 0, (example, r.stderr)
        run_id = int(re.search(r"Run (\d+)", r.stdout).group(1))
        run = api.wait_state(run_id, "COMPLETE", timeout=60)
        assert (run["gpus"], run["hyperparameters"], run["args"]) == (gpus, hps, args), example
        flags = [x for k, v in hps.items() for x in (f"--{k}", v)]
        assert f"ARGS {args + flags!r}" in cli(hub, token, tmp_path, "logs", str(run_id)).stdout
        listed = cli(hub, token, tmp_path, "runs").stdout
        assert re.search(rf"Run {run_id} \| train.py \| COMPLETE \| GPU #\d+ \|", listed) or gpus != 1, listed


@pytest.mark.hub
def test_an_option_the_platform_does_not_know_says_to_put_it_after_the_separator(hub, make_user, tmp_path):
    user, _ = make_user("cliunknown")
    (tmp_path / "train.py").write_text(TRAIN_PY)
    r = cli(hub, hub.token_for(user), tmp_path, "submit", "train.py", "--epochs", "3")
    assert r.returncode == 2
    assert r.stderr.strip() == ("nothing: nothing submit: unknown option --epochs 3; arguments for the code go "
                                "after --, e.g. nothing submit train.py [options] -- --epochs 3")


@pytest.mark.hub
def test_downloading_an_unknown_run_says_so_and_leaves_no_folder(hub, make_user, tmp_path):
    user, _ = make_user("cliunknownrun")
    r = cli(hub, hub.token_for(user), tmp_path, "download", "999999")
    assert (r.returncode, r.stderr.strip()) == (2, "nothing: run 999999 not found")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.hub
def test_a_syntax_error_in_a_script_is_refused_before_upload(hub, make_user, tmp_path):
    user, api = make_user("clisyntax")
    (tmp_path / "train.py").write_text("print('a'\n")
    r = cli(hub, hub.token_for(user), tmp_path, "submit", "train.py")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("nothing: train.py has a SyntaxError, not sent: line 1:"), r.stderr
    assert api("GET", "/runs").json()["runs"] == []


@pytest.mark.hub
def test_the_readme_line_magic_example_and_the_cell_magic_in_a_real_kernel(hub, make_user, tmp_path):
    user, api = make_user("readmenb")
    (tmp_path / "train.py").write_text(TRAIN_PY)
    line_example = next(e for e in readme_examples("%nothing_train ") if "--gpus" in e)
    gpus, hps, args = expected_from(line_example)
    cells = [
        line_example,                                                                   # 0
        "r = nothing_last_run.wait(timeout=60)\n"
        "print('GOT', r['gpus'], r['hyperparameters'], r['args'], r['state'])",         # 1
        "%%nothing_train --experiment firsthour\nprint('hello')",                       # 2
        "ok = nothing_last_run.wait(timeout=60)\nprint('NAME', ok['name'])",            # 3
        "%%nothing_train\nimport nothing_such_module_xyz",                              # 4
        "bad = nothing_last_run.wait(timeout=60)\nprint('BAD', bad['id'], bad['state'])",  # 5
        "%%nothing_train\nprint('unclosed'\n",                                          # 6
        "print('LAST', nothing_last_run.id)",                                           # 7
        "%nothing_download {ok['id']}",                                                 # 8
        "%nothing_download 999999",                                                     # 9
        "%nothing_runs",                                                                # 10
    ]
    nb = run_notebook(hub, user, tmp_path, cells, failing={6, 9})

    assert f"GOT {gpus} {hps!r} {args!r} COMPLETE" in text(nb.cells[1])
    first_id = int(re.search(r"Run (\d+)", text(nb.cells[0])).group(1))
    flags = [x for k, v in hps.items() for x in (f"--{k}", v)]
    assert f"ARGS {args + flags!r}" in api("GET", f"/runs/{first_id}/logs").text

    # The saved widget: its model is gone in a reopened notebook; its text says the end and how to see it again.
    widget_output = next(o for o in nb.cells[2].outputs
                         if "application/vnd.jupyter.widget-view+json" in o.get("data", {}))
    saved = widget_output["data"]["text/plain"]
    ok_id = int(re.search(r"Run (\d+)", saved).group(1))
    assert "| COMPLETE |" in saved and "experiment firsthour" in saved, saved
    assert f"%nothing_watch {ok_id}" in saved and "final state COMPLETE" in saved, saved
    assert "NAME first-hour cell 3" in text(nb.cells[3])

    bad_saved = text(nb.cells[4])
    assert "FAIL TRAIN" in bad_saved, bad_saved
    assert "ModuleNotFoundError: No module named 'nothing_such_module_xyz'" in bad_saved, bad_saved
    assert "add nothing_such_module_xyz to requirements.txt" in bad_saved, bad_saved
    bad_id = int(re.search(r"BAD (\d+)", text(nb.cells[5])).group(1))

    syntax = text(nb.cells[6]).strip()
    assert syntax.startswith("UsageError: the cell has a SyntaxError, not sent: line 1:"), syntax
    assert f"LAST {bad_id}" in text(nb.cells[7])  # nothing was queued for the cell that does not compile

    assert text(nb.cells[8]).strip() == f"run {ok_id} has no outputs"
    assert not (tmp_path / f"run-{ok_id}").exists()
    assert text(nb.cells[9]).strip() == "UsageError: run 999999 not found"
    assert not (tmp_path / "run-999999").exists()
    listed = text(nb.cells[10])
    assert re.search(rf"{bad_id}\s+FAIL TRAIN .*ModuleNotFoundError: No module named 'nothing_such_module_xyz'",
                     listed), listed


@pytest.mark.hub
def test_a_stale_handle_shows_the_current_state_or_says_last_seen(hub, make_user):
    from nothing.magics.client import NothingClient
    from nothing.magics.run import RunHandle

    from .helpers import make_archive

    user, _ = make_user("stalehandle")
    client = NothingClient(f"{hub.url}/services/nothing/", hub.token_for(user))
    record = client.submit({"entry_point": "t.py", "gpus": 0}, make_archive({"t.py": "pass\n"}))
    client.wait(record["id"], timeout=60)
    handle = RunHandle(dict(record, state="QUEUED"), client)
    assert repr(handle) == f"<RunHandle {record['id']} COMPLETE>"
    handle.client = NothingClient("http://127.0.0.1:9/services/nothing/", "token", retry_seconds=0)
    assert re.fullmatch(rf"<RunHandle {record['id']} COMPLETE \(last seen at \d\d:\d\d:\d\d UTC; now: .*\)>",
                        repr(handle))


@pytest.mark.hub
def test_a_terminal_of_a_notebook_server_finds_the_nothing_command(hub, make_user):
    import pwd

    from .hub import processes_of

    user, _ = make_user("pathuser")
    r = hub.hub_api("POST", f"/users/{user}/server")
    assert r.status_code in (201, 202), r.text
    try:
        wait_for_sync(lambda: hub.hub_api("GET", f"/users/{user}").json()["servers"].get("", {}).get("ready"),
                      timeout=60, message="the single-user server to be ready")
        account = pwd.getpwnam(hub.account_prefix + user)
        environs = []
        for pid in processes_of(account.pw_uid):
            try:
                raw = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
            if "JUPYTERHUB_SERVICE_PREFIX" in env:
                environs.append(env)
        assert environs, "no single-user server process found"
        env = environs[0]  # what the server gives its terminals (terminado starts shells with its environment)
        first = env["PATH"].split(os.pathsep)[0]
        nothing = Path(first, "nothing")
        assert nothing.is_file() and nothing.stat().st_mode & stat.S_IXOTH, env["PATH"]
        found = subprocess.run(["sh", "-c", "command -v nothing"], env={"PATH": env["PATH"]},
                               capture_output=True, text=True, timeout=30)
        assert (found.returncode, found.stdout.strip()) == (0, str(nothing))
    finally:
        hub.hub_api("DELETE", f"/users/{user}/server")
