"""The sidebar's experiment view in a real browser (Debian's chromium via Playwright) against a real hub.

Two runs of one experiment with different hyperparameters print ``step=N loss=...``
lines; the metric view overlays them, with exactly the printed points on each
path; the runs table shows the hyperparameters and the final loss and sorts by a
clicked header; a checkpoint deleted from the sidebar is gone from the service's
listing. Screenshots go to ``test-artifacts/screenshots/`` and, with
``NOTHING_UPDATE_DOC_SCREENSHOTS=1``, to ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from .helpers import wait_for_sync
from .test_browser import SHOTS, browser, login  # noqa: F401  (browser is a fixture)
from .test_cluster_api import wait_all_gpus_free

pytestmark = pytest.mark.hub

TRAIN = """
import os
lr = float(os.environ["EM_HP_LR"])
out = os.environ["EM_CHECKPOINT_DIR"]
for step in range(5):
    print(f"step={step} loss={lr / (step + 1)!r}", flush=True)
for name, size in (("ckpt-1.pt", 1500), ("ckpt-2.pt", 2500)):
    with open(os.path.join(out, name), "wb") as f:
        f.write(b"w" * size)
"""

LINE = re.compile(r"step=(\d+) loss=(\S+)")


def printed(api, run_id: int) -> tuple[list[int], list[float]]:
    log = api("GET", f"/runs/{run_id}/logs").text
    pairs = [(int(m.group(1)), float(m.group(2))) for m in LINE.finditer(log)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def table_order(panel) -> list[int]:
    return [int(x) for x in panel.locator(".nai-runs-table tbody tr[data-run-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.runId)")]


def test_metric_view_overlays_the_printed_points_and_the_table_sorts_and_deletes_checkpoints(hub, make_user,
                                                                                             browser):  # noqa: F811
    from playwright.sync_api import expect

    name, api = make_user("tracker")
    wait_all_gpus_free(api)
    runs = {}
    for lr in ("0.3", "0.1"):
        r = api.submit({"train.py": TRAIN}, entry_point="train.py", name=f"lr-{lr}", experiment="sweep",
                       hyperparameters={"lr": lr}, gpus=1)
        assert r.status_code == 201, r.text
        runs[lr] = r.json()["id"]
    for run_id in runs.values():
        assert api.wait_state(run_id, {"COMPLETE", "FAIL TRAIN"}, timeout=60)["state"] == "COMPLETE"
        wait_for_sync(lambda run_id=run_id: api.run(run_id)["metric_summary"].get("loss", {}).get("count") == 5,
                      timeout=30, message="five loss points on the run")
    expected = {run_id: printed(api, run_id) for run_id in runs.values()}
    for steps, values in expected.values():
        assert steps == [0, 1, 2, 3, 4] and len(values) == 5

    r = hub.hub_api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text
    wait_for_sync(lambda: hub.hub_api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"),
                  timeout=60, message="the single-user server")
    context, page = login(browser, hub, name)
    try:
        page.set_viewport_size({"width": 1400, "height": 1100})
        page.goto(f"{hub.url}/user/{name}/lab?reset")
        tab = page.locator("li.lm-TabBar-tab[data-id='nothing-runs']")
        tab.wait_for(timeout=60_000)
        if "lm-mod-current" not in (tab.get_attribute("class") or ""):
            tab.click()
        panel = page.locator("#nothing-runs")
        expect(panel.locator("[data-fact='storage']")).to_have_text(re.compile(r"^you use \d"), timeout=30_000)

        view = panel.get_by_role("region", name="Experiments")
        expect(view.get_by_label("Experiment to compare", exact=True)).to_have_value("sweep", timeout=30_000)
        expect(view.get_by_label("Metric", exact=True)).to_have_value("loss", timeout=30_000)
        paths = panel.locator("svg.nai-chart-svg path.nai-curve")
        expect(paths).to_have_count(2, timeout=30_000)
        for run_id, (steps, values) in expected.items():
            path = panel.locator(f"path.nai-curve[data-run-id='{run_id}']")
            assert [int(s) for s in path.get_attribute("data-steps").split(",")] == steps
            assert [float(v) for v in path.get_attribute("data-values").split(",")] == values
            assert len(re.findall(r"[ML]", path.get_attribute("d"))) == 5
            expect(panel.locator(f".nai-legend li[data-run-id='{run_id}']")).to_contain_text(f"#{run_id}")

        # Smoothing changes the drawn curve, never the data it carries.
        first = runs["0.3"]
        curve = panel.locator(f"path.nai-curve[data-run-id='{first}']")
        raw_d = curve.get_attribute("d")
        view.get_by_label("Smoothing").fill("0.6")
        expect(curve).not_to_have_attribute("d", raw_d)
        smoothed = [float(v) for v in curve.get_attribute("data-smoothed").split(",")]
        values = expected[first][1]
        last, ema = 0.0, []
        for i, v in enumerate(values, 1):
            last = last * 0.6 + 0.4 * v
            ema.append(last / (1 - 0.6 ** i))
        assert smoothed == pytest.approx(ema)
        assert smoothed[0] == pytest.approx(values[0])
        panel.locator(".nai-chart").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "sidebar-metrics.png"))

        # The runs table: hyperparameters and the final (latest) loss; sorting by a header.
        table = panel.get_by_role("table", name="Runs of the experiment")
        for lr, run_id in runs.items():
            row = table.locator(f"tr[data-run-id='{run_id}']")
            expect(row.locator("td[data-col='hp:lr']")).to_have_text(lr)
            final = expected[run_id][1][-1]
            assert float(row.locator("td[data-col='metric:loss']").inner_text()) == pytest.approx(final, rel=1e-5)
        assert table_order(panel) == sorted(runs.values())
        table.locator("th[data-col='hp:lr'] button").click()
        expect(table.locator("th[data-col='hp:lr']")).to_have_attribute("aria-sort", "ascending")
        assert table_order(panel) == [runs["0.1"], runs["0.3"]]
        table.locator("th[data-col='metric:loss'] button").click()
        table.locator("th[data-col='metric:loss'] button").click()
        expect(table.locator("th[data-col='metric:loss']")).to_have_attribute("aria-sort", "descending")
        assert table_order(panel) == [runs["0.3"], runs["0.1"]]  # 0.06 then 0.02

        # Checkpoints of one run: listed with sizes; one deleted after confirming.
        victim = runs["0.1"]
        table.get_by_role("button", name=f"Checkpoints of run {victim}").click()
        box = panel.locator(f".nai-checkpoints[data-run-id='{victim}']")
        expect(box.locator("li[data-checkpoint]")).to_have_count(2, timeout=30_000)
        expect(box.locator("li[data-checkpoint='ckpt-1.pt']")).to_contain_text("1.5 kB")
        expect(box).to_contain_text("total 4.0 kB")
        table.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "sidebar-runs-table.png"))
        box.get_by_role("button", name=f"Delete checkpoint ckpt-1.pt of run {victim}").click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Delete checkpoint ckpt-1.pt?")
        dialog.get_by_role("button", name="Keep").click()
        assert {c["checkpoint"] for c in api("GET", f"/runs/{victim}/checkpoints").json()["checkpoints"]} == {
            "ckpt-1.pt", "ckpt-2.pt"}
        box.get_by_role("button", name=f"Delete checkpoint ckpt-1.pt of run {victim}").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Delete").click()
        expect(box.locator("li[data-checkpoint]")).to_have_count(1, timeout=30_000)
        expect(box.locator("li[data-checkpoint='ckpt-2.pt']")).to_be_visible()
        listing = api("GET", f"/runs/{victim}/checkpoints").json()
        assert [c["checkpoint"] for c in listing["checkpoints"]] == ["ckpt-2.pt"]
        assert listing["total_bytes"] == 2500
        other = api("GET", f"/runs/{runs['0.3']}/checkpoints").json()
        assert len(other["checkpoints"]) == 2
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")

    # Another user's sidebar shows none of it: no experiment, no curve, no run.
    stranger, _ = make_user("stranger")
    r = hub.hub_api("POST", f"/users/{stranger}/server")
    assert r.status_code in (201, 202), r.text
    wait_for_sync(lambda: hub.hub_api("GET", f"/users/{stranger}").json()["servers"].get("", {}).get("ready"),
                  timeout=60, message="the other user's server")
    context, page = login(browser, hub, stranger)
    try:
        page.goto(f"{hub.url}/user/{stranger}/lab?reset")
        tab = page.locator("li.lm-TabBar-tab[data-id='nothing-runs']")
        tab.wait_for(timeout=60_000)
        if "lm-mod-current" not in (tab.get_attribute("class") or ""):
            tab.click()
        panel = page.locator("#nothing-runs")
        expect(panel.locator("[data-fact='storage']")).to_have_text(re.compile(r"^you use \d"), timeout=30_000)
        view = panel.get_by_role("region", name="Experiments")
        expect(view).to_be_visible()
        expect(view.locator("option[value='sweep']")).to_have_count(0)
        expect(panel.locator("path.nai-curve")).to_have_count(0)
        for run_id in runs.values():
            expect(panel.locator(f"[data-run-id='{run_id}']")).to_have_count(0)
        assert "lr-0.3" not in panel.inner_text() and "sweep" not in panel.inner_text()
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{stranger}/server")


def teardown_module(module):
    """Keep the docs' copies of the screenshots fresh when the run made them."""
    docs = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    if os.environ.get("NOTHING_UPDATE_DOC_SCREENSHOTS"):
        docs.mkdir(parents=True, exist_ok=True)
        for shot in ("sidebar-metrics", "sidebar-runs-table"):
            if (SHOTS / f"{shot}.png").exists():
                shutil.copy(SHOTS / f"{shot}.png", docs / f"{shot}.png")
