"""The first hour on the platform, second pass: what a new user and an admin see, and that it is right.

API checks through a real hub (admin totals that add up, every user with work in the
usage table, run list filters and pages, the service's root page, login redirects
for browsers), pure checks of TensorBoard labels and of the spawner's refusal, and
browser checks (Debian's chromium through Playwright) of the spawn form's reason, the
admin page's priority box, and the sidebar's filters and pages.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
import requests
from nothing.scheduler.api.tensorboard import board_name
from nothing.spawner.gpu_hold import SchedulerRefusal

from .helpers import wait_for_sync
from .test_browser import SHOTS, browser, login, shot  # noqa: F401 (the browser fixture)
from .test_cluster_api import GATED, release, wait_all_gpus_free

TOTALS = ("queued_runs", "running_runs", "completed_runs", "stopped_runs", "failed_runs")


def test_board_label_names_the_run_and_its_hyperparameters_without_tensorboard_separators():
    run = SimpleNamespace(id=7, name="resnet", hyperparameters={"lr": 0.1, "opt": "a:b,c", "batch": 32})
    assert board_name(run) == "run-7 resnet batch=32 lr=0.1 opt=a_b_c"
    assert board_name(SimpleNamespace(id=8, name="", hyperparameters={})) == "run-8"
    assert len(board_name(SimpleNamespace(id=9, name="x" * 500, hyperparameters=None))) == 160


def test_scheduler_refusal_carries_the_reason_jupyterhub_shows_on_the_spawn_page():
    refusal = SchedulerRefusal(400, "the notebook asks for 5 GPUs, but the largest node has 4")
    assert refusal.status_code == 400 and str(refusal) == "the notebook asks for 5 GPUs, but the largest node has 4"
    assert refusal.jupyterhub_message.endswith("the largest node has 4")
    assert SchedulerRefusal(599 + 1, "odd").status_code == 500


@pytest.mark.hub
def test_admin_totals_count_stopped_runs_and_add_up_and_gpu_hours_are_rounded(hub, make_user):
    _, api = make_user("tot")
    _, admin = make_user("totadmin", admin=True)
    run_id = api.submit({"hold.py": GATED}, entry_point="hold.py", name="to-stop", gpus=0).json()["id"]
    api.wait_state(run_id, "RUNNING")
    assert api("POST", f"/runs/{run_id}/cancel").status_code == 200
    api.wait_state(run_id, "STOPPED", timeout=30)
    overview = admin("GET", "/admin/overview").json()
    totals = overview["totals"]
    assert totals["stopped_runs"] >= 1
    assert sum(totals[k] for k in TOTALS) == totals["total_runs"]
    hours = [totals["gpu_hours_this_period"]] + [u["usage_gpu_hours"] for u in overview["users"]]
    hours += [g["usage_gpu_hours"] for g in overview["groups"] or ()]
    assert all(h == round(h, 1) for h in hours), hours


@pytest.mark.hub
def test_a_user_whose_runs_all_wait_is_in_the_usage_table(hub, make_user):
    _, holder = make_user("holder")
    waiter, api = make_user("waiter")
    _, admin = make_user("useadmin", admin=True)
    wait_all_gpus_free(holder)
    blocker = holder.submit({"hold.py": GATED}, entry_point="hold.py", gpus=4).json()["id"]
    try:
        holder.wait_state(blocker, "RUNNING")
        waiting = api.submit({"t.py": "pass"}, entry_point="t.py", gpus=1, experiment="wait-exp").json()["id"]
        api.wait_state(waiting, "QUEUED")
        overview = admin("GET", "/admin/overview").json()
        users = {u["name"]: u for u in overview["users"]}
        assert users[waiter]["queued_runs"] == 1 and users[waiter]["gpus_in_use"] == 0
        entry = next(q for q in overview["queue"] if q["id"] == waiting)
        assert entry["tensorboard_url"] == f"/services/nothing/tensorboard/run/{waiting}/"
        assert entry["experiment_tensorboard_url"] == f"/services/nothing/tensorboard/experiment/{waiter}/wait-exp/"
    finally:
        release(hub, blocker)


@pytest.mark.hub
def test_run_list_filters_by_state_experiment_and_submission_time_and_counts_every_page(hub, make_user):
    _, api = make_user("filt")
    ids = [api.submit({"t.py": "pass"}, entry_point="t.py", gpus=0, experiment=e).json()["id"]
           for e in ("e1", "e1", "e2")]
    for run_id in ids:
        api.wait_state(run_id, "COMPLETE", timeout=60)
    page = api("GET", "/runs", params={"experiment": "e1", "limit": 1}).json()
    assert page["total"] == 2 and [r["id"] for r in page["runs"]] == [ids[1]]
    second = api("GET", "/runs", params={"experiment": "e1", "limit": 1, "offset": 1}).json()
    assert [r["id"] for r in second["runs"]] == [ids[0]]
    assert api("GET", "/runs", params={"state": "COMPLETE", "experiment": "e2"}).json()["total"] == 1
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    assert api("GET", "/runs", params={"since": tomorrow}).json() == {"runs": [], "total": 0, "limit": 100,
                                                                       "offset": 0}
    hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert api("GET", "/runs", params={"since": hour_ago}).json()["total"] == 3
    bad = api("GET", "/runs", params={"since": "last tuesday"})
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["message"]


@pytest.mark.hub
def test_service_root_is_a_page_for_browsers_and_json_for_api_clients(hub, make_user):
    _, api = make_user("root")
    root = f"{hub.url}/services/nothing/"
    described = api.session.get(root, headers={"Accept": "application/json"}, timeout=30)
    assert described.headers["Content-Type"].startswith("application/json")
    assert described.json()["api"] == "/services/nothing/api/"
    # A browser that has not logged in to the service yet is sent to the hub's OAuth login, not refused.
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for url in (root, f"{hub.url}/services/nothing/api/runs", f"{hub.url}/services/nothing/api/summary"):
        r = requests.get(url, headers=html, allow_redirects=False, timeout=30)
        assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"], (url, r.status_code)
    # API clients without a token still get the JSON refusal.
    r = requests.get(f"{hub.url}/services/nothing/api/runs", timeout=30)
    assert r.status_code == 403 and "authentication required" in r.json()["message"]


@pytest.mark.hub
def test_spawn_form_shows_why_a_notebook_cannot_get_its_gpus(hub, make_user, browser):  # noqa: F811
    from playwright.sync_api import expect

    name, _ = make_user("spawnerr")
    context, page = login(browser, hub, name)
    try:
        page.goto(f"{hub.url}/hub/spawn/{name}")
        choice = page.get_by_label("GPUs for this notebook")
        # Only what the largest node (4 GPUs) can give is offered ...
        assert choice.locator("option").all_inner_texts() == ["0", "1", "2", "3", "4"]
        # ... and a form drawn before the cluster shrank still gets the scheduler's reason, not a 500.
        choice.evaluate("select => select.add(new Option('5', '5'))")
        choice.select_option("5")
        page.get_by_role("button", name=re.compile("Start")).click()
        expect(page.get_by_text(re.compile("the largest node has 4"))).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Internal Server Error")).to_have_count(0)
        shot(page, "spawn-too-many-gpus")
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")


@pytest.mark.hub
def test_services_menu_leads_to_the_platform_page_and_api_urls_open_after_login(hub, make_user, browser):  # noqa: F811
    from playwright.sync_api import expect

    name, _ = make_user("home")
    context, page = login(browser, hub, name)
    try:
        page.goto(f"{hub.url}/hub/home")
        page.get_by_role("button", name="Services").click()
        page.get_by_role("link", name="nothing").click()
        expect(page.get_by_role("heading", name="NothingAI GPU platform")).to_be_visible(timeout=30_000)
        nav = page.get_by_role("navigation", name="Platform")
        expect(nav.get_by_role("link", name="My runs", exact=True)).to_be_visible()
        expect(nav.get_by_role("link", name="API docs")).to_be_visible()
        expect(nav.get_by_role("link", name="GPU cluster")).to_have_count(0)
        shot(page, "service-home")
    finally:
        context.close()
    # A fresh browser session goes straight to an API URL: it logs in to the service and gets the JSON.
    context, page = login(browser, hub, name)
    try:
        response = page.goto(f"{hub.url}/services/nothing/api/summary")
        assert response.status == 200 and response.headers["content-type"].startswith("application/json")
        assert f'"user": "{name}"' in page.locator("body").inner_text()
    finally:
        context.close()


@pytest.mark.hub
def test_admin_priority_box_keeps_what_is_typed_across_refreshes_and_confirms(hub, make_user, browser):  # noqa: F811
    from playwright.sync_api import expect

    _, api = make_user("prio-owner")
    admin_name, _ = make_user("prio-admin", admin=True)
    wait_all_gpus_free(api)
    blocker = api.submit({"hold.py": GATED}, entry_point="hold.py", name="blocker", gpus=4).json()["id"]
    api.wait_state(blocker, "RUNNING")
    queued = api.submit({"t.py": "pass"}, entry_point="t.py", name="waits", gpus=1).json()["id"]
    context, page = login(browser, hub, admin_name)
    try:
        page.goto(f"{hub.url}/services/nothing/admin")
        box = page.get_by_label(f"priority of run {queued}")
        expect(box).to_be_enabled(timeout=20_000)
        box.fill("42")
        updated = page.locator("#nai-updated").text_content()
        # Two 5 s refreshes go by while the admin has typed but not set it.
        expect(page.locator("#nai-updated")).not_to_have_text(updated, timeout=15_000)
        page.wait_for_timeout(5500)
        expect(box).to_have_value("42")
        expect(box).to_be_focused()
        page.get_by_role("button", name="Set priority").click()
        expect(page.get_by_role("status")).to_have_text(f"Priority of run {queued} set to 42")
        assert api.run(queued)["priority"] == 42
        expect(page.get_by_label(f"priority of run {queued}")).to_have_value("42")
        expect(page.get_by_role("link", name="TensorBoard").first).to_be_visible()
        expect(page.locator("[data-total='Stopped runs']")).to_be_visible()
    finally:
        context.close()
        release(hub, blocker)


@pytest.mark.hub
def test_sidebar_filters_my_runs_and_pages_through_them(hub, make_user, browser):  # noqa: F811
    from playwright.sync_api import expect

    name, api = make_user("lab-filter")
    ids = [api.submit({"t.py": "pass"}, entry_point="t.py", name=f"r{i}", gpus=0,
                      experiment="big" if i < 22 else "small").json()["id"] for i in range(24)]
    for run_id in ids:
        api.wait_state(run_id, "COMPLETE", timeout=120)
    assert hub.hub_api("POST", f"/users/{name}/server").status_code in (201, 202)
    wait_for_sync(lambda: hub.hub_api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"),
                  timeout=60, message="the single-user server")
    context, page = login(browser, hub, name)
    try:
        page.goto(f"{hub.url}/user/{name}/lab?reset")
        tab = page.locator("li.lm-TabBar-tab[data-id='nothing-runs']")
        tab.wait_for(timeout=60_000)
        if "lm-mod-current" not in (tab.get_attribute("class") or ""):
            tab.click()
        panel = page.locator("#nothing-runs")
        runs = panel.get_by_role("list", name="Runs").get_by_role("listitem")
        expect(runs).to_have_count(20, timeout=30_000)
        expect(panel.get_by_text("runs 1-20 of 24")).to_be_visible()
        panel.get_by_role("button", name="Next page").click()
        expect(runs).to_have_count(4)
        expect(panel.get_by_text("runs 21-24 of 24")).to_be_visible()
        expect(panel.get_by_role("button", name="Next page")).to_be_disabled()

        panel.get_by_label("Experiment", exact=True).fill("small")
        panel.get_by_label("Experiment", exact=True).press("Enter")
        expect(runs).to_have_count(2)
        expect(panel.get_by_role("button", name=f"Experiment small board of run {ids[23]}")).to_be_visible()
        panel.get_by_label("State", exact=True).select_option("FAIL TRAIN")
        expect(panel.get_by_text("No runs match these filters.")).to_be_visible()
        panel.get_by_label("State", exact=True).select_option("")
        tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
        panel.get_by_label("Submitted since").fill(tomorrow)
        expect(panel.get_by_text("No runs match these filters.")).to_be_visible()
        panel.get_by_label("Submitted since").fill("")
        expect(runs).to_have_count(2)
        shot(page, "sidebar-filters")
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")


def teardown_module(module):
    """Keep the docs' copies of this module's screenshots fresh when the run made them."""
    docs = SHOTS.parent.parent / "docs" / "screenshots"
    if os.environ.get("NOTHING_UPDATE_DOC_SCREENSHOTS") and SHOTS.is_dir():
        for name in ("spawn-too-many-gpus", "sidebar-filters"):
            if (SHOTS / f"{name}.png").exists():
                shutil.copy(SHOTS / f"{name}.png", docs / f"{name}.png")
