"""The admin page's charts in a real browser (Debian's chromium via Playwright): the cluster over time and
GPU-hours against budgets.

On the session's hub (a sample a second, ``SCHEDULER_TEST_ARGS``) a run holds 2 of the 4 GPUs and another
waits: within seconds the page draws one line of GPUs held per node (no utilisation on virtual GPUs), the
queue chart's four lines and one bar per user and group, and the latest moment's hover title says
"2 of 4 GPUs held".  Neither the window an admin picked nor a priority being typed is reset by the
refreshes that bring new points.

A second hub starts on a database that already holds a day: samples of a two-node cluster (the second,
which has since left, with NVML utilisation) and the period's ended runs of users and groups with
GPU-hour budgets, as a service restarted on a cluster's database finds them.  Its page shows the day with
the live minutes after it, utilisation on the node that had it, and bars against the budgets (over a
budget in red).  Its screenshots are the docs' (``docs/ui.md``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from .helpers import wait_for_sync
from .hub import Api, Hub
from .test_browser import SHOTS, browser, login, shot  # noqa: F401  (browser is a fixture)
from .test_cluster_api import GATED, release, wait_all_gpus_free

pytestmark = pytest.mark.hub

NODES_CHART = "GPUs held per node over time"
QUEUE_CHART = "Queue length, running runs and waiting time over time"
TOP_BARS = 12  # admin.js shows the users (and groups) with the most GPU-hours, this many at most


def history_section(page):
    return page.locator("section[aria-labelledby='nai-history-title']")


def last_moment(chart):
    """The hover column of the newest point in time of a chart."""
    return chart.locator("rect.nai-hover").last


def test_charts_show_every_node_the_queue_and_each_users_bar_and_keep_what_is_being_edited(
        hub, make_user, browser):  # noqa: F811
    from playwright.sync_api import expect

    owner, api = make_user("hist-owner")
    admin_name, admin = make_user("hist-admin", admin=True)
    wait_all_gpus_free(api)
    held = api.submit({"hold.py": GATED}, entry_point="hold.py", name="holds-2", gpus=2).json()["id"]
    waiting = api.submit({"hold.py": GATED}, entry_point="hold.py", name="waits-4", gpus=4).json()["id"]
    context, page = login(browser, hub, admin_name)
    try:
        api.wait_state(held, "RUNNING")
        wait_for_sync(lambda: api.run(waiting)["queue_position"] == 1, message="the 4-GPU run to wait")
        page.goto(f"{hub.url}/services/nothing/admin")
        page.get_by_label("Window").select_option("1")  # the last hour: points of 13 s
        nodes = page.get_by_role("img", name=NODES_CHART)
        queue = page.get_by_role("img", name=QUEUE_CHART)
        expect(nodes).to_be_visible(timeout=30_000)
        overview = admin("GET", "/admin/overview").json()
        expect(nodes.locator("path[data-series]")).to_have_count(len(overview["nodes"]))  # no utilisation lines
        expect(page.locator("#nai-chart-nodes-legend li")).to_have_count(len(overview["nodes"]))
        expect(page.locator("#nai-chart-nodes-note")).to_contain_text("Utilisation n/a")
        expect(queue.locator("path[data-series]")).to_have_count(4)
        expect(page.locator("#nai-chart-queue-legend li")).to_have_text(
            ["runs running", "runs waiting", re.compile(r"^median wait \((s|min|h)\)$"), re.compile(r"^p95 wait")])
        # The newest point, once its whole bucket saw the run: 2 of 4 held, the big run waiting.
        expect(last_moment(nodes).locator("title")).to_contain_text("2 of 4 GPUs held", timeout=30_000)
        expect(last_moment(queue).locator("title")).to_contain_text("1 waiting", timeout=30_000)
        expect(nodes.get_by_text("GPUs held", exact=True)).to_be_visible()  # the axes say their units
        expect(queue.get_by_text("time (local)")).to_be_visible()

        users = page.locator("#nai-chart-usage-users [data-bar]")
        expect(users).to_have_count(min(len(overview["users"]), TOP_BARS))
        groups = overview["groups"] or []
        expect(page.locator("#nai-chart-usage-groups [data-bar]")).to_have_count(min(len(groups), TOP_BARS))
        expect(users.first.locator("title")).to_contain_text("no quota set")

        # An admin types a priority and has not set it yet: new points come, the box and the window stay.
        box = page.get_by_label(f"priority of run {waiting}")
        box.fill("7")
        before = int(last_moment(nodes).get_attribute("data-time"))
        wait_for_sync(lambda: int(last_moment(nodes).get_attribute("data-time")) > before + 5, timeout=30,
                      message="the charts to get newer points")
        expect(box).to_have_value("7")
        expect(box).to_be_focused()
        expect(page.get_by_label("Window")).to_have_value("1")
        expect(page.locator("#nai-queue-paused")).to_be_visible()
        history_section(page).screenshot(path=str(SHOTS / "admin-history-live.png"))
        box.press("Escape")
    finally:
        context.close()
        api("POST", f"/runs/{waiting}/cancel")  # before the held GPUs free up: it never starts
        release(hub, held)


# ------------------------------------------------------------------ a day of history, with budgets
QUOTAS = {
    "users": {"ana": {"gpu_hours_per_period": 40}, "ben": {"gpu_hours_per_period": 60}},
    "groups": {"vision": {"gpu_hours_per_period": 150}, "nlp": {"gpu_hours_per_period": 50}},
}
MEMBERS = {"vision": ["ana", "ben"], "nlp": ["cleo", "dev"]}
# GPU-hours each user's ended runs used this period: ben and nlp (cleo + dev: 57) are over their budgets.
USED = {"ana": 28.0, "ben": 75.0, "cleo": 12.0, "dev": 45.0}
GONE_NODE = "gpu-b"  # a node of 8 GPUs with NVML, in the day's samples only


def day_of_samples(now: int, node: str, step: int = 120) -> tuple[list[dict], list[dict]]:
    """A working day on two nodes: busy from 8:00 to 19:00 (UTC), a queue by day, quiet nights."""
    node_rows, cluster_rows = [], []
    for t in range(now - 86400, now - 600, step):  # ten minutes before the service starts
        hour = t % 86400 / 3600
        day = 8 <= hour < 19
        wave = (t // 2400) % 3  # some change every 40 minutes
        held_a = (3 + wave % 2) if day else 1
        held_b = (6 + wave) if day else 2
        node_rows += [
            dict(at=t, node=node, gpus_total=4, gpus_allocated=min(4, held_a), utilization=None),
            dict(at=t, node=GONE_NODE, gpus_total=8, gpus_allocated=min(8, held_b),
                 utilization=round(held_b / 8 * 80 + (t // step * 37) % 12, 1)),
        ]
        queued = (2 + 2 * wave) if day else 0
        cluster_rows.append(dict(at=t, queue_length=queued,
                                 wait_p50_seconds=(300.0 + 400 * wave) if queued else None,
                                 wait_p95_seconds=(1200.0 + 900 * wave) if queued else None,
                                 running_runs=(4 + wave) if day else 2))
    return node_rows, cluster_rows


def seed(root: Path, now: int) -> None:
    """The database of a cluster a day old: its samples and the period's ended runs (with empty run folders)."""
    from sqlalchemy import insert

    from nothing.scheduler.db import Database
    from nothing.scheduler.orm import ClusterSample, NodeSample, Run
    from nothing.scheduler.states import RunState

    data = root / "var" / "scheduler"
    (data / "runs").mkdir(parents=True)
    db = Database(f"sqlite:///{data / 'scheduler.sqlite'}")
    db.upgrade()
    period = 30 * 86400  # ClusterView.period_seconds
    span = max(60, min(20 * 3600, now - math.floor(now / period) * period - 120))
    group_of = {u: g for g, users in MEMBERS.items() for u in users}
    runs = []
    for i, (user, hours) in enumerate(USED.items(), start=1):
        gpus = math.ceil(hours * 3600 / span)
        ended = datetime.fromtimestamp(now - 60, timezone.utc).replace(tzinfo=None)
        started = datetime.fromtimestamp(now - 60 - hours * 3600 / gpus, timezone.utc).replace(tzinfo=None)
        run_dir = data / "runs" / str(i)
        run_dir.mkdir()
        (run_dir / "output.log").write_text("")
        runs.append(dict(id=i, owner=user, group=group_of[user], entry_point="train.py", gpus=gpus,
                         state=RunState.COMPLETE, reason="exited with code 0", submitted_at=started,
                         started_at=started, ended_at=ended, run_dir=str(run_dir),
                         log_path=str(run_dir / "output.log"), exit_code=0))
    node_rows, cluster_rows = day_of_samples(now, socket.gethostname())

    def write(session):
        session.execute(insert(Run), runs)
        session.execute(insert(NodeSample), node_rows)
        session.execute(insert(ClusterSample), cluster_rows)

    db.run_sync(write)
    db.close()


@pytest.fixture(scope="module")
def day_hub():
    base = Path(tempfile.mkdtemp(prefix="nothing-history-hub-"))  # not under pytest's folder (see ``hub``)
    root = base / "hub"
    root.mkdir()
    seed(root, int(time.time()))
    config = root / "scheduler_config.py"
    config.write_text(f"c.NothingScheduler.quota_config = {json.dumps(QUOTAS)}\n")
    hub = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=4",
                     "--NothingScheduler.node_cpus=16", "--NothingScheduler.kill_grace_seconds=2",
                     "--ClusterHistory.interval=1", f"--NothingScheduler.config_file={config}"])
    hub.start()
    try:
        for group, users in MEMBERS.items():
            for user in users:
                hub.create_user(user)
            hub.hub_api("POST", f"/groups/{group}", json={"users": users}).raise_for_status()
        hub.create_user("eve")
        hub.create_user("boss", admin=True)
        yield hub
    finally:
        hub.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_day_of_history_and_usage_against_budgets(day_hub, browser):  # noqa: F811
    from playwright.sync_api import expect

    eve = Api(day_hub, day_hub.token_for("eve"))
    held = eve.submit({"hold.py": GATED}, entry_point="hold.py", name="holds-2", gpus=2).json()["id"]
    waiting = eve.submit({"hold.py": GATED}, entry_point="hold.py", name="waits-4", gpus=4).json()["id"]
    context, page = login(browser, day_hub, "boss")
    try:
        eve.wait_state(held, "RUNNING")
        page.goto(f"{day_hub.url}/services/nothing/admin")
        # The last hour first (points of 13 s): the newest shows the live run's GPUs.
        page.get_by_label("Window").select_option("1")
        expect(last_moment(page.get_by_role("img", name=NODES_CHART)).locator("title")).to_contain_text(
            "2 of 4 GPUs held", timeout=30_000)
        page.get_by_label("Window").select_option("24")
        nodes = page.get_by_role("img", name=f"{NODES_CHART}, with utilisation")
        expect(nodes).to_be_visible(timeout=30_000)
        # Two nodes held GPUs; the one with NVML also drew its utilisation (dashed, on the right axis).
        expect(nodes.locator("path[data-series]")).to_have_count(3)
        legend = {socket.gethostname(): ["GPUs held (of 4)"], GONE_NODE: ["GPUs held (of 8)", "utilisation %"]}
        expect(page.locator("#nai-chart-nodes-legend li")).to_have_text(
            [f"{name}: {what}" for name in sorted(legend) for what in legend[name]])
        expect(nodes.get_by_text("utilisation (%)")).to_be_visible()
        expect(page.locator("#nai-history-note")).to_contain_text("each point averages")
        queue = page.get_by_role("img", name=QUEUE_CHART)
        expect(queue.locator("path[data-series]")).to_have_count(4)
        expect(page.locator("#nai-chart-queue-legend li").nth(2)).to_have_text("median wait (min)")
        expect(last_moment(nodes).locator("title")).to_contain_text(f"{GONE_NODE}: no sample")  # it has left

        users = page.locator("#nai-chart-usage-users [data-bar]")
        expect(users).to_have_count(5)
        assert [users.nth(i).get_attribute("data-bar") for i in range(5)] == [
            "user:ben", "user:dev", "user:ana", "user:cleo", "user:eve"]
        ben, ana, cleo = (page.locator(f"[data-bar='user:{u}']") for u in ("ben", "ana", "cleo"))
        expect(ben.locator("rect.nai-bar-over")).to_have_count(1)
        expect(ben.locator("title")).to_contain_text("75.0 GPU-hours of a budget of 60 (125 % of the budget)")
        expect(ana.locator("rect.nai-bar-budget")).to_have_count(1)
        expect(ana.locator("rect.nai-bar-over")).to_have_count(0)
        expect(ana).to_contain_text("28.0 of 40 GPU-h")
        expect(cleo).to_contain_text("12.0 GPU-h, no quota set")
        groups = page.locator("#nai-chart-usage-groups [data-bar]")
        expect(groups).to_have_count(2)
        expect(page.locator("[data-bar='group:nlp'] rect.nai-bar-over")).to_have_count(1)
        expect(page.locator("[data-bar='group:vision']")).to_contain_text("103.0 of 150 GPU-h")

        page.wait_for_timeout(500)
        history_section(page).screenshot(path=str(SHOTS / "admin-history.png"))
        page.locator("figure:has(#nai-chart-usage-title)").screenshot(path=str(SHOTS / "admin-usage-bars.png"))
        page.evaluate("window.scrollTo(0, 0)")
        shot(page, "admin-page-charts")
    finally:
        context.close()
        eve("POST", f"/runs/{waiting}/cancel")
        release(day_hub, held)


def teardown_module(module):
    """Keep the docs' copies of the screenshots fresh when the run made them."""
    docs = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    if os.environ.get("NOTHING_UPDATE_DOC_SCREENSHOTS") and SHOTS.is_dir():
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("admin-history", "admin-usage-bars"):
            if (SHOTS / f"{name}.png").exists():
                shutil.copy(SHOTS / f"{name}.png", docs / f"{name}.png")
