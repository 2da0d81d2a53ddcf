"""A user's notebook folder (their /root/easymaker) survives stop and start through the hub, with
their start-up scripts run on every start and their environments offered as kernels."""

from __future__ import annotations

import os

import pytest
import requests

from .helpers import wait_for_sync
from .hub import users_python
from .test_kernels import make_venv

pytestmark = pytest.mark.hub


def server_ready(hub, name):
    return hub.hub_api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready")


def start(hub, name):
    assert hub.hub_api("POST", f"/users/{name}/server").status_code in (201, 202)
    wait_for_sync(lambda: server_ready(hub, name), timeout=60, message="the server to start")


def stop(hub, name):
    assert hub.hub_api("DELETE", f"/users/{name}/server").status_code in (202, 204)
    wait_for_sync(lambda: not hub.hub_api("GET", f"/users/{name}").json()["servers"], timeout=60,
                  message="the server to stop")


def test_files_scripts_and_envs_survive_stop_and_start(hub):
    name = "persist"
    hub.create_user(name)
    home = hub.root / "var" / "users" / name
    start(hub, name)
    token = hub.token_for(name)

    (home / "notes.txt").write_text("keep me")
    scripts = home / "cont-init.d"
    (scripts / "10-mark").write_text("#!/bin/sh\necho started >> \"$NOTHING_EASYMAKER_DIR/starts.txt\"\n")
    os.chmod(scripts / "10-mark", 0o755)
    # Made with a Python the user's account can run, as the user would in a terminal.
    make_venv(home / "custom-conda-envs" / "myenv", with_ipykernel=True, python=users_python())
    stop(hub, name)
    start(hub, name)

    assert (home / "notes.txt").read_text() == "keep me"
    assert (home / "starts.txt").read_text() == "started\n"
    assert (scripts / "10-mark.exitcode").read_text().strip() == "0"
    # The scripts are the user's code: they ran as the user's account, which owns what they wrote.
    assert (home / "starts.txt").stat().st_uid == (scripts / "10-mark.exitcode").stat().st_uid == home.stat().st_uid != 0
    assert "10-mark" in (home / "cont-init.output").read_text()
    specs = requests.get(f"{hub.url}/user/{name}/api/kernelspecs", headers={"Authorization": f"token {token}"},
                         timeout=30).json()["kernelspecs"]
    env_specs = [s for s in specs.values() if "myenv" in s["spec"]["display_name"]]
    assert len(env_specs) == 1
    assert env_specs[0]["spec"]["argv"][0] == str(home / "custom-conda-envs" / "myenv" / "bin" / "python")
    stop(hub, name)
