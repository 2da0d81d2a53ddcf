"""The UI in a real browser: Debian's chromium driven by Playwright, against a real hub.

A user logs in through the hub's form, opens JupyterLab, and watches a run in the
NothingAI sidebar go from QUEUED to RUNNING to COMPLETE; they open its live log and
its TensorBoard (which shows the run's scalar).  An admin opens the GPU cluster page
from the hub's navigation bar and sees the GPUs and the run; a non-admin is refused.
Screenshots go to ``test-artifacts/screenshots/`` (kept by CI as artifacts).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from .helpers import wait_for_sync
from .test_cluster_api import GATED, release, wait_all_gpus_free
from .test_tensorboard import TB_TRAIN

pytestmark = pytest.mark.hub

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    # scripts/test.sh installs Debian's chromium; without it these tests fail rather than skip.
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (apt-get install -y chromium)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def login(browser, hub, name: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("nothing")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/(hub/home|hub/spawn|user/.*)"))
    return context, page


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_sidebar_follows_a_run_and_opens_its_log_and_tensorboard(hub, make_user, browser):
    from playwright.sync_api import expect

    name, api = make_user("lab")
    r = hub.hub_api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text
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
        expect(panel.get_by_text("GPUs you are guaranteed")).to_be_visible()
        expect(panel.locator("[data-fact='guaranteed']")).to_have_text("no quota set")

        # A blocker holds every GPU, so the run waits in the queue first.
        wait_all_gpus_free(api)
        blocker = api.submit({"hold.py": GATED}, entry_point="hold.py", name="blocker", gpus=4).json()["id"]
        api.wait_state(blocker, "RUNNING")
        r = api.submit({"train.py": TB_TRAIN}, entry_point="train.py", name="sidebar-demo", experiment="ui",
                       gpus=1, args=["gate"])
        run_id = r.json()["id"]
        row = panel.locator(f"li[data-run-id='{run_id}']")
        expect(row.locator("[data-state]")).to_have_text("QUEUED", timeout=20_000)
        expect(row).to_contain_text("position 1")
        expect(row).to_contain_text("estimated start")
        shot(page, "sidebar-queued")

        release(hub, blocker)
        expect(row.locator("[data-state]")).to_have_text("RUNNING", timeout=30_000)
        row.get_by_role("button", name=f"Logs run {run_id}").click()
        log = page.get_by_label(f"log of run {run_id}")
        expect(log).to_contain_text("step 4 loss 0.2000", timeout=30_000)
        shot(page, "sidebar-running-log")

        gate = hub.root / "var" / "scheduler" / "runs" / str(run_id) / "src" / "gate"
        gate.write_text("")
        expect(row.locator("[data-state]")).to_have_text("COMPLETE", timeout=30_000)
        expect(log).to_contain_text("training done", timeout=30_000)
        expect(page.locator(".nai-LogView-status")).to_contain_text("COMPLETE", timeout=30_000)
        shot(page, "sidebar-complete")

        panel.get_by_role("button", name="Everyone's queue").click()
        expect(panel.locator("[aria-pressed='true']")).to_have_text("Everyone's queue")
        panel.get_by_role("button", name="My runs").click()

        with context.expect_page(timeout=30_000) as popup:
            row.get_by_role("button", name=f"TensorBoard run {run_id}").click()
        board = popup.value
        board.wait_for_load_state()
        # TensorBoard may already have added its own fragment (#timeseries) to the URL.
        assert board.url.split("#")[0].endswith(f"/services/nothing/tensorboard/run/{run_id}/"), board.url
        # Headless chromium draws no chart lines; the card title and the data table show the scalar.
        expect(board.get_by_text("loss").first).to_be_visible(timeout=60_000)
        board.wait_for_timeout(1500)
        board.screenshot(path=str(SHOTS / "tensorboard.png"))
        board.close()
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")


def test_everyones_queue_is_pushed_on_one_stream_and_not_polled(hub, make_user, browser):
    """The sidebar shows the queue from the view stream: runs appear and change state without a poll."""
    from playwright.sync_api import expect

    name, api = make_user("lab")
    r = hub.hub_api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text
    wait_for_sync(lambda: hub.hub_api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"),
                  timeout=60, message="the single-user server")
    context, page = login(browser, hub, name)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    blocker = queued = None
    try:
        page.goto(f"{hub.url}/user/{name}/lab?reset")
        tab = page.locator("li.lm-TabBar-tab[data-id='nothing-runs']")
        tab.wait_for(timeout=60_000)
        if "lm-mod-current" not in (tab.get_attribute("class") or ""):
            tab.click()
        panel = page.locator("#nothing-runs")
        panel.get_by_role("button", name="Everyone's queue").click()
        wait_all_gpus_free(api)
        blocker = api.submit({"hold.py": GATED}, entry_point="hold.py", name="blocker", gpus=4).json()["id"]
        queued = api.submit({"hold.py": GATED}, entry_point="hold.py", name="pushed", gpus=1).json()["id"]
        row = panel.locator(f"li[data-run-id='{queued}']")
        expect(row.locator("[data-state]")).to_have_text("QUEUED", timeout=20_000)
        expect(row).to_contain_text("pushed")
        expect(panel).to_have_attribute("data-updates", "pushed", timeout=20_000)
        assert any("/nothing/api/views/stream?views=summary,queue" in u for u in requests), requests

        # While the stream is live the panel asks for nothing: several poll periods pass without a request ...
        polled = len([u for u in requests if "/nothing/api/queue" in u or "/nothing/api/summary" in u])
        page.wait_for_timeout(7_000)
        release(hub, blocker)
        # ... and the run's start still reaches it.
        expect(row.locator("[data-state]")).to_have_text("RUNNING", timeout=30_000)
        assert len([u for u in requests if "/nothing/api/queue" in u or "/nothing/api/summary" in u]) == polled
    finally:
        for run_id in (blocker, queued):
            if run_id is not None:
                api("POST", f"/runs/{run_id}/cancel")
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")


def test_admin_page_shows_gpus_and_the_queue_and_refuses_non_admins(hub, make_user, browser):
    from playwright.sync_api import expect

    owner, api = make_user("adm-owner")
    admin_name, _ = make_user("admin-ui", admin=True)
    plain, _ = make_user("plain")
    wait_all_gpus_free(api)
    run_id = api.submit({"hold.py": GATED}, entry_point="hold.py", name="on-gpu", gpus=2).json()["id"]
    api.wait_state(run_id, "RUNNING")
    context, page = login(browser, hub, admin_name)
    try:
        page.goto(f"{hub.url}/hub/home")
        page.get_by_role("link", name="GPU cluster").click()
        page.wait_for_url(re.compile(r".*/services/nothing/admin"))
        expect(page.get_by_role("heading", name="GPU cluster")).to_be_visible()
        gpus = page.locator("#nai-gpus tbody tr")
        expect(gpus).to_have_count(4)
        expect(gpus.nth(0)).to_contain_text(f"run {run_id} ({owner})")
        expect(gpus.nth(0)).to_contain_text("n/a")
        queue_row = page.locator(f"#nai-queue tr[data-run='{run_id}']")
        expect(queue_row).to_contain_text("on-gpu")
        expect(queue_row).to_contain_text("RUNNING")
        expect(page.locator("[data-total='Active notebooks']")).not_to_have_text("")
        shot(page, "admin-page")
        page.once("dialog", lambda d: d.accept())
        queue_row.get_by_role("button", name="Cancel").click()
        assert api.wait_state(run_id, "STOPPED", timeout=30)["state"] == "STOPPED"
    finally:
        release(hub, run_id)
        context.close()

    context, page = login(browser, hub, plain)
    try:
        expect(page.get_by_role("link", name="GPU cluster")).to_have_count(0)
        response = page.goto(f"{hub.url}/services/nothing/admin")
        assert response.status == 403
        expect(page.get_by_role("alert")).to_contain_text("admins only")
        shot(page, "admin-refused")
    finally:
        context.close()


def teardown_module(module):
    """Keep the docs' copies of the screenshots fresh when the run made them."""
    docs = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    if os.environ.get("NOTHING_UPDATE_DOC_SCREENSHOTS") and SHOTS.is_dir():
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("sidebar-queued", "sidebar-running-log", "tensorboard", "admin-page"):
            if (SHOTS / f"{name}.png").exists():
                shutil.copy(SHOTS / f"{name}.png", docs / f"{name}.png")
