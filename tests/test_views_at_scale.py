"""The polled views (/api/queue, /api/summary) are versioned: ETags, 304s, pages, per-viewer visibility."""

from __future__ import annotations

import pytest

from .helpers import wait_for_sync
from .test_cluster_api import GATED, release, wait_all_gpus_free

pytestmark = pytest.mark.hub


def ids(response) -> list[int]:
    return [r["id"] for r in response.json()["runs"]]


def test_queue_pages_answer_304_until_a_run_is_submitted_or_ends(hub, make_user):
    owner, alice = make_user("va")
    bob_name, bob = make_user("vb")
    _, carol = make_user("vc")
    wait_all_gpus_free(alice)
    big = alice.submit({"hold.py": GATED}, entry_point="hold.py", name="secret-big", gpus=4).json()["id"]
    queued = [alice.submit({"hold.py": GATED}, entry_point="hold.py", name=f"secret-{i}", gpus=1,
                           experiment="views-exp").json()["id"] for i in range(3)]
    bobs = bob.submit({"hold.py": GATED}, entry_point="hold.py", name="bobs-own", gpus=1).json()["id"]
    mine = [big, *queued, bobs]
    try:
        alice.wait_state(big, "RUNNING")
        wait_for_sync(lambda: all(alice.run(i)["queue_position"] is not None for i in queued)
                      and bob.run(bobs)["queue_position"] is not None,
                      message="the small runs to wait in the queue")

        whole = bob("GET", "/queue")
        assert whole.status_code == 200 and whole.headers["ETag"]
        everything = ids(whole)
        assert set(mine) <= set(everything) and whole.json()["total"] == len(everything)
        # Pages of 2 put together are the whole queue, in order, each saying the total.
        pages = [bob("GET", "/queue", params={"limit": 2, "offset": o}) for o in range(0, len(everything), 2)]
        assert [i for p in pages for i in ids(p)] == everything
        assert {p.json()["total"] for p in pages} == {len(everything)} and all(len(ids(p)) <= 2 for p in pages)

        # The same question with the ETag it was answered with: 304, no body; a different page: 200.
        first = pages[0]
        again = bob("GET", "/queue", params={"limit": 2, "offset": 0}, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == first.headers["ETag"]
        other = bob("GET", "/queue", params={"limit": 2, "offset": 2}, headers={"If-None-Match": first.headers["ETag"]})
        assert other.status_code == 200 and other.headers["ETag"] != first.headers["ETag"]

        # Visibility holds per viewer on the same cached page: bob sees his run's name and not alice's; carol
        # (same viewer class, asking right after bob) sees neither; alice sees hers.
        by_bob = {r["id"]: r for r in bob("GET", "/queue").json()["runs"]}
        by_carol = {r["id"]: r for r in carol("GET", "/queue").json()["runs"]}
        by_alice = {r["id"]: r for r in alice("GET", "/queue").json()["runs"]}
        assert by_bob[bobs]["name"] == "bobs-own" and by_bob[bobs]["mine"] is True
        assert by_bob[queued[0]]["name"] is None and by_bob[queued[0]]["owner"] == owner
        assert by_carol[bobs]["name"] is None and by_carol[bobs]["mine"] is False
        assert by_carol[bobs]["owner"] == bob_name and by_carol[bobs]["reason"] == "waiting"
        assert by_alice[queued[0]]["name"] == "secret-0" and by_alice[bobs]["name"] is None
        assert ids(bob("GET", "/queue", params={"mine": "1", "limit": 10})) == [bobs]

        # Renaming an experiment changes what the queue shows: a new ETag with the new name.
        named = alice("GET", "/queue")
        assert alice("PATCH", "/experiments/views-exp", json={"name": "views-exp2"}).status_code == 200
        renamed = alice("GET", "/queue", headers={"If-None-Match": named.headers["ETag"]})
        assert renamed.status_code == 200
        assert {r["id"]: r for r in renamed.json()["runs"]}[queued[0]]["experiment"] == "views-exp2"

        # A submission makes a new version: the old ETag no longer matches and the run is in the answer.
        summary = bob("GET", "/summary")
        assert bob("GET", "/summary", headers={"If-None-Match": summary.headers["ETag"]}).status_code == 304
        before = bob("GET", "/queue")
        extra = bob.submit({"hold.py": GATED}, entry_point="hold.py", name="extra", gpus=1).json()["id"]
        mine.append(extra)
        after = bob("GET", "/queue", headers={"If-None-Match": before.headers["ETag"]})
        assert after.status_code == 200 and after.headers["ETag"] != before.headers["ETag"]
        assert extra in ids(after) and after.json()["total"] == before.json()["total"] + 1
        changed = bob("GET", "/summary", headers={"If-None-Match": summary.headers["ETag"]})
        assert changed.status_code == 200 and changed.json()["my_runs"]["queued"] == 2
        header = bob("GET", "/summary", params={"my_active": "0"})
        assert "my_active" not in header.json() and header.json()["my_runs"] == changed.json()["my_runs"]
        assert header.headers["ETag"] != changed.headers["ETag"]
        assert [e["id"] for e in changed.json()["my_active"]] == [bobs, extra]

        # A run that ends leaves the view under a new ETag.
        seen = bob("GET", "/queue")
        release(hub, big)
        alice.wait_state(big, "COMPLETE")

        def gone():
            r = bob("GET", "/queue", headers={"If-None-Match": seen.headers["ETag"]})
            return r.status_code == 200 and big not in ids(r)

        wait_for_sync(gone, message="the ended run to leave the queue under a new ETag")

        assert bob("GET", "/queue", params={"limit": 0}).status_code == 400
        assert bob("GET", "/queue", params={"offset": "-1"}).status_code == 400
    finally:
        for run_id in mine:  # whoever owns it cancels it; the other's request is refused
            for api in (alice, bob):
                api("POST", f"/runs/{run_id}/cancel")
