"""The sidebar's Datasets section in a real browser (Debian's chromium via Playwright) against a real hub.

A user with a dataset of their own (two versions) and one of their group sees both,
with their sizes and versions, and not another group's; Attach copies the
``--dataset`` option for the next ``%%nothing_train`` and shows it. The screenshot
goes to ``test-artifacts/screenshots/`` and, with ``NOTHING_UPDATE_DOC_SCREENSHOTS=1``,
to ``docs/screenshots/`` (``docs/ui.md`` shows it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .helpers import wait_for_sync
from .test_browser import SHOTS, browser, login  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.hub


def push(api, name: str, files: dict[str, bytes], group: str | None = None, dataset_id: int | None = None):
    if dataset_id is None:
        r = api("POST", "/datasets", json={"name": name, **({"group": group} if group else {})})
        assert r.status_code == 201, r.text
        dataset_id = r.json()["id"]
    upload = api("POST", f"/datasets/{dataset_id}/uploads").json()["upload"]
    for path, data in files.items():
        assert api("PUT", f"/datasets/{dataset_id}/uploads/{upload}/files", params={"path": path},
                   data=data).status_code == 200
    r = api("POST", f"/datasets/{dataset_id}/uploads/{upload}/commit")
    assert r.status_code == 201, r.text
    return r.json()


def join_group(hub, name: str, group: str) -> None:
    r = hub.hub_api("POST", f"/groups/{group}/users", json={"users": [name]})
    if r.status_code == 404:
        hub.hub_api("POST", f"/groups/{group}", json={"users": [name]}).raise_for_status()
    else:
        r.raise_for_status()


def test_the_datasets_section_lists_mine_and_my_groups_and_attach_copies_the_option(hub, make_user,
                                                                                     browser):  # noqa: F811
    from playwright.sync_api import expect

    name, api = make_user("dsview")
    mate, mate_api = make_user("dsmate")
    stranger, stranger_api = make_user("dsstranger")
    group = f"dsgroup-{name[-6:]}"
    join_group(hub, name, group)
    join_group(hub, mate, group)
    join_group(hub, stranger, f"dsother-{name[-6:]}")
    mnist = push(api, "mnist", {"train.csv": b"1" * 1500, "test.csv": b"2" * 500})
    push(api, "mnist", {"train.csv": b"1" * 1500, "test.csv": b"3" * 2500}, dataset_id=mnist["id"])
    push(mate_api, "shared-images", {"a.png": b"p" * 3000}, group=group)
    push(stranger_api, "not-for-you", {"x": b"x"})

    r = hub.hub_api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text
    wait_for_sync(lambda: hub.hub_api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"),
                  timeout=60, message="the single-user server")
    context, page = login(browser, hub, name)
    try:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.url)
        page.set_viewport_size({"width": 1400, "height": 1100})
        page.goto(f"{hub.url}/user/{name}/lab?reset")
        tab = page.locator("li.lm-TabBar-tab[data-id='nothing-runs']")
        tab.wait_for(timeout=60_000)
        if "lm-mod-current" not in (tab.get_attribute("class") or ""):
            tab.click()
        panel = page.locator("#nothing-runs")
        section = panel.get_by_role("region", name="Datasets")
        items = section.get_by_role("list", name="Datasets").locator("li.nai-dataset")
        expect(items).to_have_count(2, timeout=30_000)
        mine = section.get_by_label("Dataset mnist", exact=True)
        expect(mine).to_contain_text("mine · latest v2 · 2 files · v1 2.0 kB, v2 4.0 kB")
        expect(mine.locator(".nai-dataset-size")).to_have_text("6.0 kB")
        theirs = section.get_by_label(f"Dataset {group}/shared-images", exact=True)
        expect(theirs).to_contain_text(f"group {group} · latest v1 · 1 file · v1 3.0 kB")
        expect(section).not_to_contain_text("not-for-you")

        theirs.get_by_role("button", name=f"Attach dataset {group}/shared-images").click()
        option = f"--dataset shared_images={group}/shared-images:1"
        expect(section.locator("code.nai-dataset-option")).to_have_text(option)
        assert page.evaluate("navigator.clipboard.readText()") == option
        mine.get_by_role("button", name="Attach dataset mnist").click()
        expect(section.locator("code.nai-dataset-option")).to_have_text("--dataset mnist=mnist:2")
        assert page.evaluate("navigator.clipboard.readText()") == "--dataset mnist=mnist:2"
        section.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "sidebar-datasets.png"))
        if os.environ.get("NOTHING_UPDATE_DOC_SCREENSHOTS") == "1":
            docs = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
            shutil.copy(SHOTS / "sidebar-datasets.png", docs / "sidebar-datasets.png")
    finally:
        context.close()
        hub.hub_api("DELETE", f"/users/{name}/server")
