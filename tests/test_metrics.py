"""``/services/nothing/metrics``: Prometheus' text format from the live service, read back with prometheus_client's
own parser; a token by default (as JupyterHub's ``/hub/metrics``), none with ``authenticate_prometheus = False``."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .helpers import wait_for_sync
from .hub import free_port
from .test_single_scheduler import start_scheduler

LONG = {"train.py": "import time; time.sleep(60)"}


def scrape(url: str, token: str | None = None) -> dict[str, dict[tuple, float]]:
    """``{sample name: {labels as sorted pairs: value}}`` of every sample the endpoint exposes."""
    headers = {"Authorization": f"token {token}"} if token else {}
    r = requests.get(url, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=")  # prometheus_client.CONTENT_TYPE_LATEST
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


@pytest.mark.hub
def test_metrics_follow_the_queue_the_gpus_and_the_submissions(hub, make_user):
    url = f"{hub.url}/services/nothing/metrics"
    refused = requests.get(url, timeout=30)
    assert refused.status_code == 403 and "authentication required" in refused.json()["message"]

    user, api = make_user("metrics")
    token = hub.token_for(user)
    before = scrape(url, token)
    assert sum(before["nothing_gpus"].values()) == 4  # the test hub's one node of 4 virtual GPUs
    submitted = before["nothing_submit_duration_seconds_count"][()]

    holder = api.submit(LONG, entry_point="train.py", gpus=4).json()["id"]
    api.wait_state(holder, "RUNNING")
    waiting = api.submit(LONG, entry_point="train.py", gpus=1).json()["id"]
    try:
        now = wait_for_sync(lambda: (lambda m: m if m["nothing_queue_length"][()] >= 1 else None)(scrape(url, token)),
                            message="the second run to show as queued")
        assert api.run(waiting)["state"] == "QUEUED"
        assert sum(now["nothing_gpus_allocated"].values()) == 4
        assert sum(now["nothing_gpus_idle"].values()) == 0
        assert now["nothing_runs"][(("state", "QUEUED"),)] == now["nothing_queue_length"][()]
        assert now["nothing_runs"][(("state", "RUNNING"),)] >= 1
        assert {dict(k)["state"] for k in now["nothing_runs"]} >= {"QUEUED", "RUNNING", "COMPLETE", "STOPPED",
                                                                   "FAIL TRAIN", "CREATE FAILED"}
        assert now["nothing_submit_duration_seconds_count"][()] == submitted + 2
        assert 0 < now["nothing_submit_duration_seconds_sum"][()] - before["nothing_submit_duration_seconds_sum"][()]
        assert now["nothing_schedule_pass_duration_seconds_count"][()] > before[
            "nothing_schedule_pass_duration_seconds_count"][()]
        assert now["nothing_schedule_pass_duration_seconds_bucket"][(("le", "+Inf"),)] == now[
            "nothing_schedule_pass_duration_seconds_count"][()]
    finally:
        for run_id in (waiting, holder):
            api("POST", f"/runs/{run_id}/cancel")
    api.wait_state(holder, "STOPPED")
    after = wait_for_sync(lambda: (lambda m: m if sum(m["nothing_gpus_idle"].values()) == 4 else None)(
        scrape(url, token)), message="the GPUs to be idle again")
    assert after["nothing_runs"][(("state", "STOPPED"),)] >= before["nothing_runs"][(("state", "STOPPED"),)] + 2


def test_metrics_need_no_token_where_authenticate_prometheus_is_off(tmp_path):
    port = free_port()
    proc = start_scheduler(tmp_path / "data", port, tmp_path / "scheduler.log",
                           "--PrometheusMetrics.authenticate_prometheus=False")
    try:
        url = f"http://127.0.0.1:{port}/services/nothing/metrics"

        def answered():
            try:
                return scrape(url)
            except requests.ConnectionError:
                return None

        found = wait_for_sync(answered, timeout=60, message="the scheduler to serve its metrics")
        assert found["nothing_queue_length"] == {(): 0.0}
        assert sum(found["nothing_gpus"].values()) == 4
        # The API itself still needs a token (the hub behind this scheduler is not even there).
        assert requests.get(f"http://127.0.0.1:{port}/services/nothing/api/runs", timeout=30).status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)
