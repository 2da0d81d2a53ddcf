"""The sidebar's Models and Endpoints sections and the admin page's Endpoints in a real browser (Debian's chromium
via Playwright) against the session's hub, with a real model server.

A user trains a plain-Python model with a run, makes a model of it and an endpoint serving it on one GPU.
In JupyterLab's sidebar they see the model (framework, source run, tags), the endpoint becoming ACTIVE with
its URL (the copy button copies it), its default stage marked DEFAULT with its replica ready, and after
some calls the stage's request count of the last hour. An admin sees the endpoint on the GPU cluster page
with its owner, replicas and GPU, and among the top endpoints. A batch inference of the model over a folder
the run wrote ends COMPLETE in the Batch inference section with its files and records counted. Screenshots go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import textwrap

import pytest
import requests

from .helpers import wait_for_sync
from .test_browser import browser, login, shot  # noqa: F401  (browser is a fixture)
from .test_cluster_api import wait_all_gpus_free

pytestmark = pytest.mark.hub

TRAIN = textwrap.dedent("""
    import os, pathlib
    out = pathlib.Path(os.environ["EM_MODEL_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "handler.py").write_text(
        "def load(model_dir):\\n    return None\\n\\n"
        "def predict(model, instances):\\n    return [sum(x) for x in instances]\\n")
    records = pathlib.Path(os.environ["EM_CHECKPOINT_DIR"]) / "records"
    records.mkdir(parents=True, exist_ok=True)
    (records / "part-0.jsonl").write_text("[1, 2]\\n[3, 4]\\n[5, 6]\\n")
""")

CALLS = 3


def make_model(api) -> int:
    """The run that trains the adder (and writes records for a batch inference), and the model "adder" of it."""
    run = api.submit({"train.py": TRAIN}, entry_point="train.py", name="make-adder", gpus=0)
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    assert api.wait_state(run_id, {"COMPLETE", "FAIL TRAIN"}, timeout=60)["state"] == "COMPLETE"
    r = api("POST", "/models", json={"name": "adder", "framework": "python", "source": {"run": run_id},
                                     "tags": {"team": "ui"}})
    assert r.status_code == 201, r.text
    return run_id


def start_server(hub, name: str) -> None:
    r = hub.hub_api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text


def wait_server(hub, name: str) -> None:
    wait_for_sync(lambda: hub.hub_api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"),
                  timeout=60, message="the single-user server")


def open_sidebar(page, hub, name: str):
    page.goto(f"{hub.url}/user/{name}/lab?reset")
    tab = page.locator("li.lm-TabBar-tab[data-id='nothing-runs']")
    tab.wait_for(timeout=60_000)
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    return page.locator("#nothing-runs")


def test_the_sidebar_shows_a_model_and_its_endpoint_with_stats_and_the_admin_page_lists_it(hub, make_user,
                                                                                          browser):  # noqa: F811
    from playwright.sync_api import expect

    name, api = make_user("srvui")
    admin, _ = make_user("srvadmin", admin=True)
    wait_all_gpus_free(api)
    start_server(hub, name)
    run_id = make_model(api)
    endpoint = f"sum-{name[-6:]}"
    r = api("POST", "/endpoints", json={"name": endpoint, "model": "adder", "cpus": 0, "gpus": 1})
    assert r.status_code == 201, r.text
    url = r.json()["url"]
    assert url == f"/services/nothing/serve/{endpoint}"
    wait_server(hub, name)
    try:
        check_sidebar_and_admin_page(hub, browser, api, name, admin, endpoint, url, run_id, expect)
    finally:  # nothing keeps serving after the test, whatever failed (the fuzz tests wait for an empty queue)
        r = api("DELETE", f"/endpoints/{endpoint}")
        assert r.status_code == 202, r.text
        wait_for_sync(lambda: api("GET", f"/endpoints/{endpoint}").status_code == 404, timeout=60,
                      message=f"endpoint {endpoint} to be deleted")


def check_sidebar_and_admin_page(hub, browser, api, name, admin, endpoint, url, run_id, expect) -> None:  # noqa: F811
    context, page = login(browser, hub, name)
    try:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.url)
        page.set_viewport_size({"width": 1400, "height": 1100})
        panel = open_sidebar(page, hub, name)
        model = panel.get_by_role("region", name="Models").get_by_label("Model adder", exact=True)
        expect(model).to_contain_text(f"python / python · from run #{run_id} make-adder · {name}", timeout=30_000)
        expect(model.locator(".nai-tag")).to_have_text("team=ui")

        item = panel.get_by_role("region", name="Endpoints").get_by_label(f"Endpoint {endpoint}", exact=True)
        expect(item.locator(".nai-run-head [data-state]").first).to_have_text("ACTIVE", timeout=60_000)
        expect(item.locator("[data-fact='endpoint-url']")).to_have_text(url)
        expect(item).to_contain_text("default stage default · 1/1 replicas ready · 1 GPU")
        stage = item.get_by_label(f"Stage default of endpoint {endpoint}", exact=True)
        expect(stage.locator("[data-fact='default']")).to_have_text("DEFAULT")
        expect(stage.locator("[data-resource='/inference'] [data-fact='replicas']")).to_have_text("1/1 ready")

        for i in range(CALLS):
            r = requests.post(f"{hub.url}{url}/inference", json={"instances": [[1, 2], [i, 10]]},
                              headers=api.session.headers, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json() == {"predictions": [3, i + 10]}
        expect(stage.locator("[data-stat='requests']")).to_have_text(str(CALLS), timeout=40_000)
        expect(stage.locator("[data-stat='errors']")).to_have_text("0")
        expect(stage.locator("[data-stat='p50']")).not_to_have_text("-")
        chart = stage.get_by_role("img", name=f"Requests per minute and p50/p99 latency of stage default of "
                                              f"{endpoint}, last hour")
        assert sum(int(n) for n in chart.get_attribute("data-requests").split(",")) == CALLS
        expect(chart.locator("path[data-series='p99']")).to_have_count(1)

        item.get_by_role("button", name=f"Copy URL of endpoint {endpoint}").click()
        assert page.evaluate("navigator.clipboard.readText()") == hub.url + url
        item.scroll_into_view_if_needed()
        shot(page, "sidebar-endpoints")
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")

    context, page = login(browser, hub, admin)
    try:
        page.goto(f"{hub.url}/services/nothing/admin")
        row = page.locator(f"#nai-endpoints tr[data-endpoint='{endpoint}']")
        expect(row).to_contain_text(name)
        expect(row).to_contain_text("ACTIVE")
        expect(row.locator("[data-replicas]")).to_have_text("1 / 1")
        expect(row.locator("[data-gpus]")).to_have_text("1")
        top = page.locator(f"#nai-top-endpoints tr[data-top='{endpoint}/default']")
        expect(top.locator("[data-requests]")).to_have_text(str(CALLS))
        page.locator("#nai-endpoints").scroll_into_view_if_needed()
        shot(page, "admin-endpoints")
    finally:
        context.close()


def test_the_sidebar_shows_a_batch_inference_ending_with_its_records_counted(hub, make_user, browser):  # noqa: F811
    from playwright.sync_api import expect

    name, api = make_user("batchui")
    start_server(hub, name)
    run_id = make_model(api)
    r = api("POST", "/batch-inferences", json={"name": "nightly", "model": "adder", "cpus": 0,
                                                "input_path": f"run:{run_id}/checkpoints/records",
                                                "input_type": "JSONL"})
    assert r.status_code == 201, r.text
    wait_server(hub, name)
    context, page = login(browser, hub, name)
    try:
        panel = open_sidebar(page, hub, name)
        batch = panel.get_by_role("region", name="Batch inference").get_by_label("Batch inference nightly",
                                                                                 exact=True)
        expect(batch.locator("[data-state]")).to_have_text("COMPLETE", timeout=60_000)
        expect(batch).to_contain_text("model adder · run #")
        expect(batch.locator("[data-fact='batch-progress']")).to_have_text("1 file · 3 records · 0 errors")
        batch.scroll_into_view_if_needed()
        shot(page, "sidebar-batch")
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")
