"""The images' entrypoint scripts, run directly on this machine.

``jupyterhub-singleuser`` is replaced by a fake earlier in ``PATH`` that only records
its arguments and process id (a real server is not the point here); the cont-init
runner and ``python3`` are the real ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "images" / "notebook" / "entrypoint.sh"
TRAINING = REPO / "images" / "training" / "entrypoint.sh"


def make_executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


@pytest.fixture
def box(tmp_path):
    """An easymaker folder with one start-up script, a fake server and the environment to run in."""
    trace = tmp_path / "trace"
    easymaker = tmp_path / "easymaker"
    make_executable(easymaker / "cont-init.d" / "10-mark", f'#!/bin/sh\necho cont-init >> "{trace}"\n')
    fakebin = tmp_path / "fakebin"
    make_executable(fakebin / "jupyterhub-singleuser", '#!/bin/sh\n{ echo "server pid=$$"; '
                    'for a in "$@"; do printf "arg=%s\\n" "$a"; done; } >> "$TRACE"\n')
    env = {**os.environ, "TRACE": str(trace), "NOTHING_EASYMAKER_DIR": str(easymaker),
           "PATH": os.pathsep.join([str(fakebin), os.path.dirname(sys.executable), os.environ["PATH"]])}
    return {"trace": trace, "easymaker": easymaker, "fakebin": fakebin, "env": env}


def run(script: Path, args: list[str], env: dict) -> tuple[int, int, str]:
    """(pid, exit status, stderr): the pid is the process the script started as."""
    proc = subprocess.Popen([str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, err = proc.communicate(timeout=60)
    return proc.pid, proc.returncode, err


@pytest.mark.parametrize("args", [["--ServerApp.default_url=/lab", "two words"],
                                  ["jupyterhub-singleuser", "--ServerApp.default_url=/lab", "two words"]])
def test_notebook_runs_cont_init_then_becomes_the_server_with_its_options(box, args):
    pid, code, err = run(NOTEBOOK, args, box["env"])

    assert code == 0, err
    assert box["trace"].read_text().splitlines() == [
        "cont-init", f"server pid={pid}", "arg=--ServerApp.default_url=/lab", "arg=two words"]
    assert "exit 10-mark: 0\n" in (box["easymaker"] / "cont-init.output").read_text()
    assert "cont-init: run 10-mark" in err


def test_notebook_without_arguments_starts_the_server(box):
    pid, code, _ = run(NOTEBOOK, [], box["env"])
    assert code == 0
    assert box["trace"].read_text().splitlines() == ["cont-init", f"server pid={pid}"]


def test_notebook_starts_even_when_a_script_hangs_and_another_fails(box):
    make_executable(box["easymaker"] / "cont-init.d" / "05-hang", "#!/bin/sh\nsleep 60\n")
    make_executable(box["easymaker"] / "cont-init.d" / "07-fail", "#!/bin/sh\nexit 4\n")
    pid, code, _ = run(NOTEBOOK, ["--debug"], {**box["env"], "NOTHING_CONT_INIT_TIMEOUT": "1"})

    assert code == 0
    assert box["trace"].read_text().splitlines() == ["cont-init", f"server pid={pid}", "arg=--debug"]
    folder = box["easymaker"] / "cont-init.d"
    assert [(folder / f"{n}.exitcode").read_text() for n in ("05-hang", "07-fail", "10-mark")] == [
        "143\n", "4\n", "0\n"]


def test_notebook_starts_even_when_the_runner_cannot(box):
    make_executable(box["fakebin"] / "python3", "#!/bin/sh\nexit 70\n")
    pid, code, err = run(NOTEBOOK, [], box["env"])

    assert code == 0
    assert box["trace"].read_text().splitlines() == [f"server pid={pid}"]
    assert "nothing: the cont-init runner failed (exit 70); starting the server anyway" in err


def test_notebook_starts_without_an_easymaker_folder(box, tmp_path):
    pid, code, _ = run(NOTEBOOK, [], {**box["env"], "NOTHING_EASYMAKER_DIR": str(tmp_path / "none")})
    assert code == 0
    assert box["trace"].read_text().splitlines() == [f"server pid={pid}"]
    assert not (tmp_path / "none").exists()


def test_training_runs_cont_init_then_becomes_the_command(box):
    command = ["sh", "-c", 'echo "train pid=$$ args=$*" >> "$TRACE"; exit 3', "train", "--epochs", "2 3"]
    pid, code, _ = run(TRAINING, command, box["env"])

    assert code == 3, "the command's exit status is the container's"
    assert box["trace"].read_text().splitlines() == ["cont-init", f"train pid={pid} args=--epochs 2 3"]


def test_training_without_a_command_is_a_usage_error(box):
    _, code, err = run(TRAINING, [], box["env"])
    assert code == 2
    assert "usage:" in err
    assert not box["trace"].exists(), "nothing ran"
