"""The sidebar's Tunings section and "my usage over the period" in a real browser (Debian's chromium via
Playwright) against the session's hub.

A user's grid tuning (x in 1..5 by 1 and opt in sgd, adam: ten trials of one GPU that print their score at
once) ends COMPLETE (SuggestionEndReached); the sidebar shows it with its counts and best trial, its trials
table sorts by each column, its objective chart has a point per trial and the best so far, and its scatter
plots have a point per trial (x as a range, opt as two bands). Make model makes a model of the best trial,
which the Models section lists. A second tuning whose trial waits forever is stopped with Stop. The header's
usage chart has a bar per day of the period, today's with the trials' GPU-hours.
Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from .helpers import make_archive, wait_for_sync
from .test_browser import browser, login, shot  # noqa: F401  (browser is a fixture)
from .test_browser_serving import open_sidebar, start_server, wait_server
from .test_cluster_api import GATED

pytestmark = pytest.mark.hub

TRIAL = textwrap.dedent("""
    import os, pathlib
    x, opt = float(os.environ["EM_HP_X"]), os.environ["EM_HP_OPT"]
    out = pathlib.Path(os.environ["EM_MODEL_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "handler.py").write_text("def load(model_dir):\\n    return None\\n\\n"
                                    "def predict(model, instances):\\n    return instances\\n")
    print(f"score={-(x - 3) ** 2 + (0.5 if opt == 'adam' else 0.0)}", flush=True)
""")
SCORE = {"name": "score", "regex": r"score=(\S+)"}


def create(api, code: str, entry_point: str = "train.py", **over) -> dict:
    spec = {"name": "grid-ui", "strategy": "grid", "entry_point": entry_point, "cpus": 0,
            "hyperparameter_spec": [{"name": "x", "type": "double", "min": 1, "max": 5, "step": 1},
                                    {"name": "opt", "type": "categorical", "values": "sgd,adam"}],
            "metrics": [SCORE], "objective": {"metric": "score", "goal": "maximize"},
            "resources": {"max_trials": 50, "parallel_trials": 2, "gpus_per_trial": 1}}
    spec.update(over)
    r = api("POST", "/tunings", data={"spec": json.dumps(spec)},
            files={"archive": ("code.tar.gz", make_archive({entry_point: code}), "application/gzip")})
    assert r.status_code == 201, r.text
    return r.json()


def ended(api, tuning_id: int, timeout: float = 180) -> dict:
    return wait_for_sync(lambda: (lambda t: t if t["state"] in ("COMPLETE", "STOPPED", "FAIL HYPERPARAMETER TUNING")
                                  else None)(api("GET", f"/tunings/{tuning_id}").json()),
                         timeout=timeout, interval=0.5, message=f"tuning {tuning_id} to end")


def order(rows) -> list[int]:
    return [int(n) for n in rows.evaluate_all("rows => rows.map(r => r.dataset.trial)")]


def test_the_sidebar_shows_a_tuning_its_sortable_trials_and_charts_makes_a_model_and_stops_one(
        hub, make_user, browser):  # noqa: F811
    from playwright.sync_api import expect

    name, api = make_user("tuneui")
    start_server(hub, name)
    grid = create(api, TRIAL)
    done = ended(api, grid["id"])
    assert (done["state"], done["state_detail"]) == ("COMPLETE", "SuggestionEndReached"), done
    trials = api("GET", f"/tunings/{grid['id']}/trials").json()["trials"]
    assert len(trials) == 10 and {t["state"] for t in trials} == {"SUCCEEDED"}
    waiting = create(api, GATED, entry_point="hold.py", name="waits", strategy="random", random_seed=1,
                     hyperparameter_spec=[{"name": "x", "type": "double", "min": 0, "max": 1}],
                     resources={"max_trials": 5, "parallel_trials": 1})
    wait_for_sync(lambda: api("GET", f"/tunings/{waiting['id']}").json()["trials"]["running"] == 1, timeout=60,
                  message="the waiting tuning's trial")
    wait_server(hub, name)

    context, page = login(browser, hub, name)
    try:
        page.set_viewport_size({"width": 1400, "height": 1400})
        panel = open_sidebar(page, hub, name)
        section = panel.get_by_role("region", name="Tunings")
        item = section.get_by_label(f"Tuning {grid['id']} grid-ui", exact=True)
        expect(item.locator(".nai-run-head [data-state]")).to_have_text("COMPLETE (SuggestionEndReached)",
                                                                       timeout=30_000)
        expect(item.locator("[data-fact='trial-counts']")).to_have_text("10/50 trials: 10 ended, 0 running")
        expect(item.locator("[data-fact='best-trial']")).to_contain_text("score 0.5 · x=3.0, opt=adam")
        expect(item).to_contain_text("grid · maximize score · experiment default")
        expect(item.get_by_role("button", name=f"Stop tuning {grid['id']}")).to_have_count(0)

        item.get_by_role("button", name=f"Trials of tuning {grid['id']}").click()
        table = item.get_by_role("table", name=f"Trials of tuning {grid['id']}")
        rows = table.locator("tbody tr")
        expect(rows).to_have_count(10)
        assert order(rows) == sorted(t["number"] for t in trials)
        by_objective = [t["number"] for t in sorted(trials, key=lambda t: t["objective"])]
        table.locator("button[data-col='objective']").click()
        expect(table.locator("th[data-col='objective']")).to_have_attribute("aria-sort", "ascending")
        assert order(rows) == by_objective
        table.locator("button[data-col='objective']").click()
        expect(table.locator("th[data-col='objective']")).to_have_attribute("aria-sort", "descending")
        assert order(rows) == [t["number"] for t in sorted(trials, key=lambda t: -t["objective"])]
        table.locator("button[data-col='hp:x']").click()
        assert order(rows) == [t["number"] for t in sorted(trials, key=lambda t: float(t["hyperparameters"]["x"]))]
        table.locator("button[data-col='hp:opt']").click()
        assert order(rows) == [t["number"] for t in sorted(trials, key=lambda t: t["hyperparameters"]["opt"])]
        table.locator("button[data-col='state']").click()
        expect(table.locator("th[data-col='state']")).to_have_attribute("aria-sort", "ascending")
        table.locator("button[data-col='number']").click()
        assert order(rows) == sorted(t["number"] for t in trials)

        chart = item.get_by_role("img", name=f"score by trial of tuning {grid['id']}")
        expect(chart).to_have_attribute("data-points", "10")
        expect(chart.locator("circle.nai-trial-point")).to_have_count(10)
        best, running = [], None
        for t in sorted(trials, key=lambda t: t["number"]):
            running = t["objective"] if running is None else max(running, t["objective"])
            best.append(running)
        assert [float(v) for v in chart.locator("path.nai-best").get_attribute("data-best").split(",")] == best
        x_plot = item.get_by_role("img", name=f"score against x of tuning {grid['id']}")
        expect(x_plot).to_have_attribute("data-axis", "numeric")
        expect(x_plot.locator("circle.nai-trial-point")).to_have_count(10)
        opt_plot = item.get_by_role("img", name=f"score against opt of tuning {grid['id']}")
        expect(opt_plot).to_have_attribute("data-axis", "bands")
        expect(opt_plot.locator("rect.nai-band")).to_have_count(2)
        expect(opt_plot.locator("rect[data-band='sgd']")).to_have_count(1)
        expect(opt_plot.locator("circle.nai-trial-point")).to_have_count(10)
        item.scroll_into_view_if_needed()
        shot(page, "sidebar-tunings")

        item.get_by_role("button", name=f"Make model of tuning {grid['id']}").click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text(f"Make a model of tuning {grid['id']}'s best trial")
        expect(dialog.get_by_label("Model name")).to_have_value("grid-ui-best")
        dialog.get_by_label("Model name").fill("tuned-best")
        dialog.get_by_label("Framework").select_option("python")
        dialog.get_by_role("button", name="Make model").click()
        best_run = done["best_trial"]["run_id"]
        expect(section.locator(".nai-tuning-notice")).to_have_text(
            f"Model tuned-best made from tuning {grid['id']}'s best trial (run #{best_run}).")
        model = panel.get_by_role("region", name="Models").get_by_label("Model tuned-best", exact=True)
        expect(model).to_contain_text(f"from tuning #{grid['id']} (run #{best_run})", timeout=30_000)
        made = api("GET", "/models/tuned-best").json()
        assert made["source"]["tuning_id"] == grid["id"] and made["source"]["run_id"] == best_run

        stopping = section.get_by_label(f"Tuning {waiting['id']} waits", exact=True)
        expect(stopping.locator(".nai-run-head [data-state]")).to_have_text("RUNNING")
        expect(stopping.locator("[data-fact='best-trial']")).to_have_text("no succeeded trial yet")
        stopping.get_by_role("button", name=f"Stop tuning {waiting['id']}").click()
        expect(dialog).to_contain_text(f"Stop tuning {waiting['id']}?")
        dialog.get_by_role("button", name="Stop tuning").click()
        expect(stopping.locator(".nai-run-head [data-state]")).to_have_text("STOPPED", timeout=60_000)
        expect(stopping.get_by_role("button", name=f"Stop tuning {waiting['id']}")).to_have_count(0)
        expect(stopping.get_by_role("button", name=f"Make model of tuning {waiting['id']}")).to_have_count(0)
        stopped = api("GET", f"/tunings/{waiting['id']}").json()
        assert stopped["state"] == "STOPPED" and f"stopped by {name}" in stopped["reason"], stopped
        assert [t["state"] for t in api("GET", f"/tunings/{waiting['id']}/trials").json()["trials"]] == ["KILLED"]

        usage = api("GET", "/usage/me").json()
        bars = panel.get_by_role("img", name="My GPU-hours per day this period")
        expect(bars).to_have_attribute("data-days", str(len(usage["days"])))
        expect(bars.locator("rect.nai-usage-bar")).to_have_count(len(usage["days"]))
        today = bars.locator(f"rect[data-date='{usage['days'][-1]['date']}']")
        assert float(today.get_attribute("data-hours")) > 0  # the ten one-GPU trials
        expect(panel.locator("[data-fact='usage-period']")).to_contain_text(
            f"GPU-hours since {usage['period']['start'][:10]} (no budget set)")
        panel.locator(".nai-usage").scroll_into_view_if_needed()
        shot(page, "sidebar-usage")
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")
        api("POST", f"/tunings/{waiting['id']}/stop")
