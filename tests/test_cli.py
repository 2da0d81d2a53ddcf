"""The ``nothing`` command: the same client as the magics, from a terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hub

NOTHING = str(Path(sys.executable).parent / "nothing")


def nothing(hub, token, cwd, *args, check=True):
    env = dict(os.environ, NOTHING_SERVICE_URL=f"{hub.url}/services/nothing/", JUPYTERHUB_API_TOKEN=token)
    result = subprocess.run([NOTHING, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_submit_follow_logs_and_download_from_a_terminal(hub, tmp_path):
    hub.create_user("cliuser")
    token = hub.token_for("cliuser")
    (tmp_path / "train.py").write_text(
        "import os, sys\nprint('args', sys.argv[1:])\n"
        "open(os.path.join(os.environ['EM_MODEL_DIR'], 'm.txt'), 'w').write('ok')\n")
    out = nothing(hub, token, tmp_path, "submit", "--gpus", "1", "--hp", "lr=0.5", "train.py", "--", "--extra").stdout
    run_id = re.search(r"Run (\d+)", out).group(1)
    follow = nothing(hub, token, tmp_path, "logs", run_id, "--follow").stdout
    assert "args ['--extra', '--lr', '0.5']" in follow
    assert re.search(rf"Run {run_id} \| train.py \| COMPLETE", nothing(hub, token, tmp_path, "runs").stdout)
    nothing(hub, token, tmp_path, "download", run_id)
    assert (tmp_path / f"run-{run_id}" / "model" / "m.txt").read_text() == "ok"
    assert "Virtual GPU" in nothing(hub, token, tmp_path, "gpus").stdout


def test_errors_are_one_line_with_a_nonzero_exit(hub, tmp_path):
    hub.create_user("clierr")
    token = hub.token_for("clierr")
    (tmp_path / "train.py").write_text("pass")
    r = nothing(hub, token, tmp_path, "submit", "--gpus", "64", "train.py", check=False)
    assert r.returncode == 2
    assert r.stderr.strip() == "nothing: asks for 64 GPUs, but the largest node has 4; multi-node runs are not " \
                               "available on this cluster"
    r = nothing(hub, token, tmp_path, "cancel", "999999", check=False)
    assert (r.returncode, r.stderr.strip()) == (2, "nothing: run 999999 not found")
    r = nothing(hub, token, tmp_path, "submit", "missing.py", check=False)
    assert r.returncode == 2 and "missing.py is not a file" in r.stderr


def test_small_code_goes_as_json_and_large_code_as_multipart_and_both_run(hub, tmp_path):
    from nothing.magics.client import JSON_SUBMISSION_MAX_BYTES, NothingClient

    from .helpers import make_archive

    hub.create_user("encodings")
    client = NothingClient(f"{hub.url}/services/nothing/", hub.token_for("encodings"))
    sent = []

    def record_submissions(response, *args, **kwargs):
        if response.request.method == "POST":
            sent.append(response.request.headers["Content-Type"])

    client.session.hooks["response"].append(record_submissions)
    code = "print('ran')\n"
    small = make_archive({"t.py": code})
    large = make_archive({"t.py": code, "weights.bin": os.urandom(JSON_SUBMISSION_MAX_BYTES + 1)})
    runs = [client.submit({"entry_point": "t.py", "gpus": 0}, archive) for archive in (small, large)]
    assert sent[0] == "application/json" and sent[1].startswith("multipart/form-data")
    for run in runs:
        assert client.wait(run["id"], timeout=60)["state"] == "COMPLETE"
