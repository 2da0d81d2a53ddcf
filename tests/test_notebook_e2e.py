"""From a notebook cell to the GPUs and back, with every part real.

A user logs in to a real JupyterHub through its proxy, their single-user server is
spawned, and a real notebook runs in a real IPython kernel (nbclient): it trains a
small model in a ``%%nothing_train`` cell with two ``--hp`` values, waits for
COMPLETE, reads the log, downloads the model the run wrote to ``EM_MODEL_DIR`` and
loads it.  The kernel gets exactly what the platform gives a notebook: the
service address and a token with the single-user server's scopes; the magics are
not loaded by the notebook, the platform's kernel config loads them.
"""

from __future__ import annotations

import os
import re

import nbformat
import pytest
import requests
from nbclient import NotebookClient

from nothing.hub_extension.service import SERVER_TOKEN_SCOPES

from .helpers import wait_for_sync

pytestmark = pytest.mark.hub

TRAIN_CELL = '''%%nothing_train --gpus 1 --experiment linreg --name fit-line --hp lr=0.1 --hp epochs=300
import argparse, os
import numpy as np
from data import make_data

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--epochs", type=int)
args = parser.parse_args()
x, y = make_data()
w, b = 0.0, 0.0
for epoch in range(args.epochs):
    err = w * x + b - y
    w -= args.lr * 2 * np.mean(err * x)
    b -= args.lr * 2 * np.mean(err)
print(f"lr={args.lr} epochs={args.epochs} EM_HP_LR={os.environ['EM_HP_LR']} gpus={os.environ['CUDA_VISIBLE_DEVICES']}")
print(f"final loss {np.mean((w * x + b - y) ** 2):.6f}")
np.savez(os.path.join(os.environ["EM_MODEL_DIR"], "model.npz"), w=w, b=b)
'''

DATA_MODULE = '''import numpy as np

def make_data():
    x = np.linspace(-1, 1, 200)
    return x, 3.0 * x - 0.5
'''


def login(hub, name: str, password: str = "nothing") -> requests.Session:
    s = requests.Session()
    assert s.get(f"{hub.url}/hub/login", timeout=30).status_code == 200
    r = s.post(f"{hub.url}/hub/login", data={"username": name, "password": password, "_xsrf": s.cookies["_xsrf"]},
               timeout=30, allow_redirects=False)
    assert r.status_code == 302, r.text
    return s


def test_notebook_trains_on_the_gpus_and_gets_its_model_back(hub, tmp_path):
    name = "nbuser"
    browser = login(hub, name)
    assert browser.get(f"{hub.url}/hub/home", timeout=30).status_code == 200

    r = hub.hub_api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text
    wait_for_sync(lambda: hub.hub_api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"),
                  timeout=60, message="the single-user server to be ready")
    user_token = hub.token_for(name)
    status = requests.get(f"{hub.url}/user/{name}/api/status", headers={"Authorization": f"token {user_token}"},
                          timeout=30)
    assert status.status_code == 200, status.text

    home = hub.root / "var" / "users" / name  # the user's persistent folder, the server's notebook dir
    assert home.is_dir()
    (home / "data.py").write_text(DATA_MODULE)
    (home / "big.bin").write_bytes(os.urandom(3_000_000))
    (home / ".nothingignore").write_text("big.bin\n")

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(TRAIN_CELL),
        nbformat.v4.new_code_cell("run = nothing_last_run\nfinal = run.wait(timeout=120)\nprint('STATE', final['state'])"),
        nbformat.v4.new_code_cell("print(run.logs())"),
        nbformat.v4.new_code_cell("%nothing_download {run.id}"),
        nbformat.v4.new_code_cell(
            "import numpy as np\nmodel = np.load(f'run-{run.id}/model/model.npz')\n"
            "print('W', round(float(model['w']), 3), 'B', round(float(model['b']), 3))"),
        nbformat.v4.new_code_cell("%nothing_runs"),
        nbformat.v4.new_code_cell("%nothing_train --gpus 99 train.py"),
    ]
    nb.cells[-1].metadata["tags"] = ["raises-exception"]
    env_token = hub.token_for(name, scopes=SERVER_TOKEN_SCOPES)
    os.environ.update(NOTHING_SERVICE_URL=f"{hub.url}/services/nothing/", JUPYTERHUB_API_TOKEN=env_token)
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(home)}}).execute()
    finally:
        os.environ.pop("NOTHING_SERVICE_URL"), os.environ.pop("JUPYTERHUB_API_TOKEN")
    nbformat.write(nb, tmp_path / "executed.ipynb")

    def text(cell):
        return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)

    submitted = text(nb.cells[0])
    assert re.search(r"Run \d+ \| fit-line \| (QUEUED|CREATE IN PROGRESS|RUNNING|COMPLETE)", submitted), submitted
    assert "STATE COMPLETE" in text(nb.cells[1])
    log = text(nb.cells[2])
    assert "lr=0.1 epochs=300 EM_HP_LR=0.1 gpus=" in log
    assert "final loss 0.000000" in log
    run_id = int(re.search(r"Run (\d+)", submitted).group(1))
    assert f"run-{run_id}/model/model.npz" in text(nb.cells[3])
    assert (home / f"run-{run_id}" / "model" / "model.npz").is_file()
    assert "W 3.0 B -0.5" in text(nb.cells[4])
    assert re.search(rf"{run_id}\s+COMPLETE", text(nb.cells[5]))
    # A mistake is one clear line, not a traceback.
    assert text(nb.cells[6]).strip() == f"UsageError: train.py is not a file in the notebook's folder {home}"

    # The snapshot left out what .nothingignore lists.
    src = hub.root / "var" / "scheduler" / "runs" / str(run_id) / "src"
    assert (src / "data.py").is_file() and (src / "nothing_cell.py").is_file()
    assert not (src / "big.bin").exists()

    hub.hub_api("DELETE", f"/users/{name}/server")
