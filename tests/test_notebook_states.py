"""Notebook states named as in the EasyMaker seed, on the hub's home page."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from nothing.hub_extension.notebook_states import notebook_state

from .helpers import wait_for_sync
from .test_notebook_e2e import login


@pytest.mark.parametrize("pending,ready,active,failed,state", [
    ("spawn", False, True, False, "START IN PROGRESS"),
    ("stop", True, True, False, "STOP IN PROGRESS"),
    (None, True, True, False, "ACTIVE (HEALTHY)"),
    (None, False, True, False, "ACTIVE (UNHEALTHY)"),
    (None, False, False, True, "START FAILED"),
    (None, False, False, False, "STOPPED"),
])
def test_what_jupyterhub_knows_maps_to_the_seeds_states(pending, ready, active, failed, state):
    assert notebook_state(SimpleNamespace(pending=pending, ready=ready, active=active, _failed=failed)) == state


def states_on_home_page(hub, session) -> dict[str, str]:
    html = session.get(f"{hub.url}/hub/home", timeout=30).text
    return dict(re.findall(r'<tr data-notebook="([^"]+)"><td>[^<]*</td><td class="nothing-state">([^<]+)</td>', html))


@pytest.mark.hub
def test_pages_without_a_user_still_render(hub):
    import requests

    assert requests.get(f"{hub.url}/hub/login", timeout=30).status_code == 200


@pytest.mark.hub
def test_home_page_shows_each_notebooks_state(hub):
    name = "stateuser"
    browser = login(hub, name)
    assert states_on_home_page(hub, browser) == {"(default)": "STOPPED"}

    hub.hub_api("POST", f"/users/{name}/server")
    wait_for_sync(lambda: states_on_home_page(hub, browser).get("(default)") == "ACTIVE (HEALTHY)", timeout=60)

    # A notebook the scheduler cannot give 5 GPUs to fails to start, and says so.
    hub.hub_api("POST", f"/users/{name}/servers/big", json={"gpus": 5})
    wait_for_sync(lambda: states_on_home_page(hub, browser).get("big") == "START FAILED", timeout=60)

    hub.hub_api("DELETE", f"/users/{name}/server")
    wait_for_sync(lambda: states_on_home_page(hub, browser).get("(default)") == "STOPPED", timeout=60)
