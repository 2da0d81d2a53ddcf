"""GPU notebooks get their GPUs from the scheduler, hold them while they run, and count like runs do."""

from __future__ import annotations

import re

import pytest

from .helpers import wait_for_sync

pytestmark = pytest.mark.hub


def server(hub, name, server_name=""):
    return hub.hub_api("GET", f"/users/{name}").json()["servers"].get(server_name, {})


def environ(pid: int) -> dict[str, str]:
    raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_gpu_notebook_holds_scheduler_gpus_until_it_stops(hub, make_user):
    name, api = make_user("gpunb")
    _, other = make_user("other")
    assert hub.hub_api("POST", f"/users/{name}/server", json={"gpus": 2}).status_code in (201, 202)
    wait_for_sync(lambda: server(hub, name).get("ready"), timeout=60, message="the notebook to start")

    gpus = api("GET", "/gpus").json()["nodes"][0]["gpus"]
    held = [g["index"] for g in gpus if g["holder_kind"] == "notebook"]
    assert len(held) == 2 and all(g["owner"] == name for g in gpus if g["holder_kind"] == "notebook")
    pid = server(hub, name)["state"]["pid"]
    assert environ(pid)["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, held))
    assert api("GET", "/notebooks").json()["notebooks"][0]["gpus"] == held

    # Runs see the notebook's GPUs as taken.
    run = other.submit({"t.py": "pass"}, entry_point="t.py", gpus=3).json()["id"]
    waiting = wait_for_sync(lambda: (lambda r: r if r["reason"] else None)(other.run(run)), timeout=10)
    assert waiting["state"] == "QUEUED" and waiting["reason"].startswith("Resources")

    # A second notebook that cannot get its GPUs does not start, and holds nothing.
    r = hub.hub_api("POST", f"/users/{name}/servers/big", json={"gpus": 3})
    wait_for_sync(lambda: not server(hub, name, "big").get("pending"), timeout=30)
    assert not server(hub, name, "big").get("ready")
    assert r.status_code >= 400 or "big" not in hub.hub_api("GET", f"/users/{name}").json()["servers"]
    assert len(api("GET", "/notebooks").json()["notebooks"]) == 1

    assert hub.hub_api("DELETE", f"/users/{name}/server").status_code in (202, 204)
    wait_for_sync(lambda: not server(hub, name), timeout=60, message="the notebook to stop")
    assert api("GET", "/notebooks").json()["notebooks"] == []
    assert other.wait_state(run, "COMPLETE", timeout=30)["exit_code"] == 0


def test_cpu_notebook_sees_no_gpus(hub, make_user):
    name, _ = make_user("cpunb")
    hub.hub_api("POST", f"/users/{name}/server")
    wait_for_sync(lambda: server(hub, name).get("ready"), timeout=60)
    assert environ(server(hub, name)["state"]["pid"])["CUDA_VISIBLE_DEVICES"] == ""
    hub.hub_api("DELETE", f"/users/{name}/server")
    wait_for_sync(lambda: not server(hub, name), timeout=60)


def test_notebook_gpu_requests_are_checked(hub, make_user):
    _, api = make_user("nbcheck")
    assert api("POST", "/notebooks", json={"gpus": 0}).status_code == 400
    r = api("POST", "/notebooks", json={"gpus": 5})
    assert r.status_code == 400 and "the largest node has 4" in r.json()["message"]
    assert api("DELETE", "/notebooks", params={"server": "nope"}).status_code == 404


def test_releasing_gpus_needs_the_holds_token(hub, make_user):
    import requests

    name, api = make_user("nbrelease")
    assert hub.hub_api("POST", f"/users/{name}/server", json={"gpus": 1}).status_code in (201, 202)
    try:
        wait_for_sync(lambda: server(hub, name).get("ready"), timeout=60, message="the notebook to start")
        token = server(hub, name)["state"]["gpu_release_token"]
        assert "release_token" not in api("GET", "/notebooks").json()["notebooks"][0]
        url = f"{hub.api_url}/notebooks/release"
        bad = requests.post(url, json={"owner": name, "server": "", "release_token": "0" * 64}, timeout=10)
        assert bad.status_code == 404
        assert len(api("GET", "/notebooks").json()["notebooks"]) == 1
        good = requests.post(url, json={"owner": name, "server": "", "release_token": token}, timeout=10)
        assert good.status_code == 204
        assert api("GET", "/notebooks").json()["notebooks"] == []
    finally:
        hub.hub_api("DELETE", f"/users/{name}/server")
        wait_for_sync(lambda: not server(hub, name), timeout=60, message="the notebook to stop")


def test_a_gpu_notebook_that_dies_on_its_own_gives_its_gpus_back(hub, make_user):
    import os
    import signal

    name, api = make_user("nbdies")
    assert hub.hub_api("POST", f"/users/{name}/server", json={"gpus": 1}).status_code in (201, 202)
    wait_for_sync(lambda: server(hub, name).get("ready"), timeout=60, message="the notebook to start")
    assert len(api("GET", "/notebooks").json()["notebooks"]) == 1
    os.kill(server(hub, name)["state"]["pid"], signal.SIGKILL)
    # The hub notices at its next poll of the server and never calls stop(); poll() gives the GPUs back.
    hub.hub_api("GET", f"/users/{name}")
    wait_for_sync(lambda: api("GET", "/notebooks").json()["notebooks"] == [], timeout=60,
                  message="the dead notebook's GPUs to go back")


def gpu_choices(html: str) -> list[str]:
    select = re.search(r'<select id="nothing-gpus" name="gpus"[^>]*>(.*?)</select>', html, re.S)
    assert select, html[:2000]
    return re.findall(r'<option value="(\d+)">', select.group(1))


def test_the_spawn_form_offers_only_counts_the_largest_node_has(hub, make_user):
    import requests

    # The test hub's one node has 4 GPUs; max_notebook_gpus is the default 8.
    r = requests.get(f"{hub.url}/services/nothing/api/gpus/shape", timeout=30)  # no token: the form has none yet
    assert (r.status_code, r.json()) == (200, {"nodes": 1, "largest_node_gpus": 4})
    name, _ = make_user("nbform")
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    r = s.post(f"{hub.url}/hub/login", data={"username": name, "password": "nothing", "_xsrf": s.cookies["_xsrf"]},
               timeout=30, allow_redirects=False)
    assert r.status_code == 302, r.text
    page = s.get(f"{hub.url}/hub/spawn/{name}", timeout=30)
    assert page.status_code == 200
    assert gpu_choices(page.text) == ["0", "1", "2", "3", "4"]


async def test_the_form_falls_back_to_max_notebook_gpus_when_the_scheduler_cannot_say():
    from nothing.spawner.local import NothingLocalSpawner

    closed = {"NOTHING_SERVICE_URL": "http://127.0.0.1:9/services/nothing/"}  # nothing listens on port 9
    assert gpu_choices(await NothingLocalSpawner(environment=closed, max_notebook_gpus=3).get_options_form()) == [
        "0", "1", "2", "3"]
    assert await NothingLocalSpawner(environment=closed, max_notebook_gpus=0).get_options_form() == ""
