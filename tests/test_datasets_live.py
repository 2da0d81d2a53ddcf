"""Datasets in a live service: push, versions stored once, read-only in runs, groups, refusals.

One real JupyterHub with its proxy and the scheduler; runs execute as their users'
Unix accounts.  ``/…/allowed`` is the folder admins may register datasets from.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import pytest

from .hub import Api, Hub
from .helpers import wait_for_sync

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def hub():
    base = Path(tempfile.mkdtemp(prefix="nothing-datasets-hub-"))
    root = base / "hub"
    root.mkdir()
    allowed = base / "allowed"
    (allowed / "imagenet-mini").mkdir(parents=True)
    (allowed / "imagenet-mini" / "labels.txt").write_text("cat\ndog\n")
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text("no")
    (allowed / "escape").symlink_to(base / "outside")
    config = root / "scheduler_config.py"
    config.write_text(f"c.Datasets.allowed_roots = [{str(allowed)!r}]\n")
    h = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=4",
                   "--NothingScheduler.node_cpus=16", "--NothingScheduler.kill_grace_seconds=2",
                   f"--NothingScheduler.config_file={config}"])
    h.start()
    h.allowed = allowed
    for name, group in (("dana", "vision"), ("vic", "vision"), ("olga", "nlp")):
        h.create_user(name)
        r = h.hub_api("POST", f"/groups/{group}/users", json={"users": [name]})
        if r.status_code == 404:
            h.hub_api("POST", f"/groups/{group}", json={"users": [name]}).raise_for_status()
        else:
            r.raise_for_status()
    yield h
    h.stop()
    shutil.rmtree(base, ignore_errors=True)


def user(hub, name=None, admin=False) -> Api:
    name = name or f"user-{secrets.token_hex(3)}"
    if name not in ("dana", "vic", "olga"):
        hub.create_user(name, admin=admin)
    return Api(hub, hub.token_for(name))


def push(api: Api, name: str, files: dict[str, bytes], group: str | None = None, dataset_id: int | None = None):
    """Create (or add to) a dataset and upload ``files`` as its next version; returns the dataset."""
    if dataset_id is None:
        r = api("POST", "/datasets", json={"name": name, **({"group": group} if group else {})})
        assert r.status_code == 201, r.text
        dataset_id = r.json()["id"]
    upload = api("POST", f"/datasets/{dataset_id}/uploads").json()["upload"]
    for path, data in files.items():
        r = api("PUT", f"/datasets/{dataset_id}/uploads/{upload}/files", params={"path": path}, data=data,
                headers={"X-Content-SHA256": hashlib.sha256(data).hexdigest()})
        assert r.status_code == 200, r.text
    r = api("POST", f"/datasets/{dataset_id}/uploads/{upload}/commit")
    assert r.status_code == 201, r.text
    return r.json()


def submit(api: Api, code: str, **spec) -> int:
    r = api.submit({"train.py": textwrap.dedent(code)}, entry_point="train.py", **spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def output(api: Api, run_id: int, name: str):
    r = api("GET", f"/runs/{run_id}/outputs/model/{name}")
    assert r.status_code == 200, (r.text, api("GET", f"/runs/{run_id}/logs").text)
    return json.loads(r.content)


def objects(hub) -> int:
    return sum(1 for p in Path(hub.root, "var", "scheduler", "datasets", "objects").rglob("*") if p.is_file())


READS = """
import errno, json, os
folder = os.environ["EM_DATASET_TRAIN"]
seen = {"files": {}, "datasets": json.loads(os.environ["EM_DATASETS"])}
for base, _, names in os.walk(folder):
    for n in names:
        p = os.path.join(base, n)
        data = open(p, "rb").read()
        seen["files"][os.path.relpath(p, folder)] = data.decode() if len(data) < 100 else len(data)
for target in (os.path.join(folder, "a.csv"), os.path.join(folder, "new.txt")):
    try:
        open(target, "a").write("x")
        seen[os.path.basename(target)] = "written"
    except OSError as e:
        seen[os.path.basename(target)] = errno.errorcode[e.errno]
json.dump(seen, open(os.path.join(os.environ["EM_MODEL_DIR"], "seen.json"), "w"))
"""


def test_a_run_trains_on_a_pushed_dataset_then_on_version_2_read_only_and_stored_once(hub):
    api = user(hub)
    before = objects(hub)
    data = push(api, "mnist", {"a.csv": b"1,2\n", "sub/b.csv": b"3,4\n", "big.bin": os.urandom(300000)})
    assert data["latest"] == 1 and data["files"] == 3 and data["bytes"] == 300008
    assert objects(hub) == before + 3
    first = submit(api, READS, datasets={"train": "mnist"})
    assert api.wait_state(first, {"COMPLETE", "FAIL TRAIN", "CREATE FAILED"})["state"] == "COMPLETE", (api.run(first)["reason"], api("GET", f"/runs/{first}/logs").text)
    seen = output(api, first, "seen.json")
    assert seen["files"]["a.csv"] == "1,2\n" and seen["files"]["sub/b.csv"] == "3,4\n"
    assert seen["a.csv"] in ("EROFS", "EACCES") and seen["new.txt"] in ("EROFS", "EACCES")
    assert [{k: d[k] for k in ("name", "dataset", "version")} for d in seen["datasets"]] == [
        {"name": "train", "dataset": "mnist", "version": 1}]
    assert api.run(first)["datasets"] == [{"name": "train", "dataset": "mnist", "version": 1}]

    # Version 2 changes one file: the store gains one object, not three.
    v2 = push(api, "mnist", {"a.csv": b"9,9\n", "sub/b.csv": b"3,4\n"}, dataset_id=data["id"])
    assert v2["latest"] == 2 and objects(hub) == before + 4
    second = submit(api, READS, datasets=["train=mnist"])
    api.wait_state(second, "COMPLETE")
    assert output(api, second, "seen.json")["files"] == {"a.csv": "9,9\n", "sub/b.csv": "3,4\n"}
    assert api.run(second)["datasets"][0]["version"] == 2
    pinned = submit(api, READS, datasets={"train": "mnist:1"})
    api.wait_state(pinned, "COMPLETE")
    assert "big.bin" in output(api, pinned, "seen.json")["files"]

    shown = api("GET", f"/datasets/{data['id']}").json()
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert {u["run"] for u in shown["used_by"]} == {first, second, pinned}
    r = api("GET", f"/datasets/{data['id']}/versions/2").json()
    assert sorted(f["path"] for f in r["listing"]) == ["a.csv", "sub/b.csv"]

    # Deleting version 1 frees what only it held.
    r = api("DELETE", f"/datasets/{data['id']}/versions/1")
    assert r.status_code == 200 and r.json()["freed_bytes"] == 300004
    assert objects(hub) == before + 2


def test_deleting_what_a_queued_or_running_run_uses_is_refused(hub):
    api = user(hub)
    data = push(api, "inuse", {"x.txt": b"x"})
    run_id = submit(api, "import os, time\nwhile not os.path.exists('release'):\n    time.sleep(0.05)\n",
                    datasets={"train": "inuse"})
    api.wait_state(run_id, "RUNNING")
    for path in (f"/datasets/{data['id']}", f"/datasets/{data['id']}/versions/1"):
        r = api("DELETE", path)
        assert r.status_code == 409 and f"run {run_id} (RUNNING)" in r.json()["message"], r.text
    assert api("POST", f"/runs/{run_id}/cancel").status_code == 200
    api.wait_state(run_id, "STOPPED")
    assert api("DELETE", f"/datasets/{data['id']}").status_code == 204
    assert api("GET", f"/datasets/{data['id']}").status_code == 404


def test_a_groups_dataset_is_for_its_members_and_admins_only(hub):
    dana, vic, olga = user(hub, "dana"), user(hub, "vic"), user(hub, "olga")
    admin = user(hub, f"admin-{secrets.token_hex(2)}", admin=True)
    data = push(dana, "shared", {"f.txt": b"group data"}, group="vision")
    assert data["ref"] == "vision/shared" and data["group"] == "vision"
    run_id = submit(vic, "import os\nprint(open(os.path.join(os.environ['EM_DATASET_D'], 'f.txt')).read())",
                    datasets={"d": "vision/shared"})
    vic.wait_state(run_id, "COMPLETE")
    assert "group data" in vic("GET", f"/runs/{run_id}/logs").text
    # A member may add a version, not delete the dataset.
    push(vic, "shared", {"f.txt": b"v2"}, dataset_id=data["id"])
    assert vic("DELETE", f"/datasets/{data['id']}").status_code == 403
    assert "shared" in [d["name"] for d in vic("GET", "/datasets").json()["datasets"]]
    for method, path in (("GET", f"/datasets/{data['id']}"), ("DELETE", f"/datasets/{data['id']}"),
                         ("POST", f"/datasets/{data['id']}/uploads"),
                         ("GET", f"/datasets/{data['id']}/versions/1")):
        r = olga(method, path)
        assert r.status_code == 404 and "shared" not in r.text, (method, path, r.text)
    assert "shared" not in json.dumps(olga("GET", "/datasets").json())
    r = olga.submit({"train.py": "pass"}, entry_point="train.py", datasets={"d": "vision/shared"})
    assert r.status_code == 400 and "not found" in r.json()["message"]
    assert admin("GET", f"/datasets/{data['id']}").status_code == 200
    assert any(d["id"] == data["id"] for d in admin("GET", "/datasets", params={"all": "1"}).json()["datasets"])
    assert dana("DELETE", f"/datasets/{data['id']}").status_code == 204


def test_an_admin_registers_a_server_folder_and_nothing_outside_the_allowed_roots(hub):
    admin = user(hub, f"admin-{secrets.token_hex(2)}", admin=True)
    plain = user(hub)
    r = admin("POST", "/datasets", json={"name": "imagenet", "path": str(hub.allowed / "imagenet-mini")})
    assert r.status_code == 201 and r.json()["versions"][0]["source"] == "folder"
    run_id = submit(admin, "import os\nprint(open(os.environ['EM_DATASET_IMG'] + '/labels.txt').read())",
                    datasets={"img": "imagenet"})
    admin.wait_state(run_id, "COMPLETE")
    assert "cat\ndog" in admin("GET", f"/runs/{run_id}/logs").text
    for path in (str(hub.allowed / "escape"), str(hub.allowed / ".." / "outside"), "/etc", "relative/path"):
        r = admin("POST", "/datasets", json={"name": "bad", "path": path})
        assert r.status_code == 400, (path, r.text)
    r = plain("POST", "/datasets", json={"name": "mine", "path": str(hub.allowed / "imagenet-mini")})
    assert r.status_code == 403
    assert "bad" not in json.dumps(admin("GET", "/datasets").json())


@pytest.mark.parametrize("name", ["a/b", "..", "with space", "x" * 200, "", "-lead"])
def test_bad_dataset_names_are_refused(hub, name):
    api = user(hub)
    r = api("POST", "/datasets", json={"name": name})
    assert r.status_code == 400 and "dataset name" in r.json()["message"]
    assert api("GET", "/datasets").json()["datasets"] == []


@pytest.mark.parametrize("datasets, message", [
    ({"train": "nope"}, "dataset 'nope' not found"),
    ({"train": "known:7"}, "has no version 7 (versions: 1)"),
    ({"bad name": "known"}, "must be a letter"),
    ({f"d{i}": "known" for i in range(11)}, "at most 10 datasets"),
    ({"train": "a/b/c"}, "must be NAME"),
])
def test_bad_dataset_references_are_refused_at_submit(hub, datasets, message):
    api = user(hub)
    push(api, "known", {"k": b"k"})
    r = api.submit({"train.py": "pass"}, entry_point="train.py", datasets=datasets)
    assert r.status_code == 400 and message in r.json()["message"], r.text
    assert api("GET", "/runs").json()["total"] == 0


def test_a_cut_off_upload_leaves_nothing_and_the_file_can_be_sent_again(hub):
    api = user(hub)
    data = api("POST", "/datasets", json={"name": "cut"}).json()
    upload = api("POST", f"/datasets/{data['id']}/uploads").json()["upload"]
    incoming = Path(hub.root, "var", "scheduler", "datasets", "incoming")
    url = urlparse(f"{hub.api_url}/datasets/{data['id']}/uploads/{upload}/files?path=half.bin")
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall((f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: 10000000\r\n"
                   f"Authorization: {api.session.headers['Authorization']}\r\n\r\n").encode() + b"x" * 100000)
        wait_for_sync(lambda: any(incoming.iterdir()), message="the upload to start")
    wait_for_sync(lambda: not any(incoming.iterdir()), message="the cut-off file to be removed")
    assert api("GET", f"/datasets/{data['id']}/uploads/{upload}").json()["files"] == []
    assert api("POST", f"/datasets/{data['id']}/uploads/{upload}/commit").status_code == 400  # nothing to commit
    r = api("PUT", f"/datasets/{data['id']}/uploads/{upload}/files", params={"path": "half.bin"}, data=b"y" * 1000,
            headers={"X-Content-SHA256": "0" * 64})
    assert r.status_code == 400 and "SHA-256" in r.json()["message"]
    body = b"y" * 1000
    assert api("PUT", f"/datasets/{data['id']}/uploads/{upload}/files", params={"path": "half.bin"},
               data=body).status_code == 200
    # A file the store already has is added by its hash, without sending it.
    digest = hashlib.sha256(body).hexdigest()
    r = api("POST", f"/datasets/{data['id']}/uploads/{upload}/files",
            params={"path": "copy.bin", "sha256": digest, "size": 1000})
    assert r.status_code == 200
    r = api("POST", f"/datasets/{data['id']}/uploads/{upload}/files",
            params={"path": "other.bin", "sha256": "1" * 64, "size": 5})
    assert r.status_code == 404
    for bad in ("../x", "/abs", "a/../../b", ""):
        r = api("PUT", f"/datasets/{data['id']}/uploads/{upload}/files", params={"path": bad}, data=b"z")
        assert r.status_code == 400, (bad, r.text)
    done = api("POST", f"/datasets/{data['id']}/uploads/{upload}/commit").json()
    assert done["latest"] == 1 and done["files"] == 2 and done["bytes"] == 2000
    assert not any(incoming.iterdir())


@pytest.fixture
def small_disk_hub():
    """A hub whose dataset store is a 2 MB tmpfs: the disk fills during an upload."""
    import subprocess

    base = Path(tempfile.mkdtemp(prefix="nothing-datasets-full-"))
    store = base / "store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(store)], check=True)
    root = base / "hub"
    root.mkdir()
    config = root / "scheduler_config.py"
    config.write_text(f"c.Datasets.store_dir = {str(store)!r}\n")
    h = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=1",
                   f"--NothingScheduler.config_file={config}"])
    h.start()
    h.store = store
    try:
        yield h
    finally:
        h.stop()
        subprocess.run(["umount", str(store)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_disk_that_fills_during_an_upload_is_a_clear_refusal_and_loses_nothing(small_disk_hub):
    hub = small_disk_hub
    api = user(hub)
    kept = push(api, "full", {"small.txt": b"s" * 1000})
    upload = api("POST", f"/datasets/{kept['id']}/uploads").json()["upload"]
    r = api("PUT", f"/datasets/{kept['id']}/uploads/{upload}/files", params={"path": "big.bin"},
            data=os.urandom(3 * 1024 * 1024))
    assert r.status_code == 413 and "disk is full" in r.json()["message"], r.text
    assert not any((hub.store / "incoming").iterdir())
    assert api("GET", f"/datasets/{kept['id']}/uploads/{upload}").json()["files"] == []
    assert api("GET", f"/datasets/{kept['id']}").json()["versions"][0]["bytes"] == 1000
    run_id = submit(api, "import os\nprint(open(os.environ['EM_DATASET_D'] + '/small.txt').read()[:3])",
                    datasets={"d": "full"})
    api.wait_state(run_id, "COMPLETE")
    assert "sss" in api("GET", f"/runs/{run_id}/logs").text


def direct(api: Api, hub) -> Api:
    """The same user's API on the service's own listener (what ``direct_url`` names), not through the proxy."""
    other = Api(hub, api.session.headers["Authorization"].split(" ", 1)[1])
    other.base = hub.service_url + "api"
    return other


def test_an_upload_names_the_services_own_listener_and_a_file_sent_there_is_in_the_version(hub):
    api = user(hub)
    data = api("POST", "/datasets", json={"name": "fast"}).json()
    opened = api("POST", f"/datasets/{data['id']}/uploads").json()
    assert opened["direct_url"] == hub.service_url  # the listener the proxy forwards to: loopback here
    body = os.urandom(5 * 1024 * 1024 + 3)  # more than one batch of the writing thread
    r = direct(api, hub)("PUT", f"/datasets/{data['id']}/uploads/{opened['upload']}/files", params={"path": "f.bin"},
                         data=body, headers={"X-Content-SHA256": hashlib.sha256(body).hexdigest()})
    assert r.status_code == 200, r.text
    done = api("POST", f"/datasets/{data['id']}/uploads/{opened['upload']}/commit").json()
    assert done["latest"] == 1 and done["bytes"] == len(body)
    r = direct(api, hub)("PUT", f"/datasets/{data['id']}/uploads/{opened['upload']}/files", params={"path": "g"},
                         data=b"late")
    assert r.status_code == 404  # committed: the upload is gone on every path


def test_the_direct_listener_refuses_exactly_what_the_proxy_refuses(hub):
    dana, olga, stranger = user(hub, "dana"), user(hub, "olga"), user(hub)
    data = dana("POST", "/datasets", json={"name": "guarded", "group": "vision"}).json()
    upload = dana("POST", f"/datasets/{data['id']}/uploads").json()["upload"]
    files = f"/datasets/{data['id']}/uploads/{upload}/files"
    vic = user(hub, "vic")
    nobody = Api(hub, "not-a-token")
    cases = [
        (olga, "PUT", files, {"params": {"path": "x"}, "data": b"x"}),  # not in the group: 404, as if absent
        (vic, "PUT", files, {"params": {"path": "x"}, "data": b"x"}),  # a member, but not the upload's owner
        (stranger, "POST", files, {"params": {"path": "x", "sha256": "0" * 64, "size": 1}}),
        (stranger, "POST", f"/datasets/{data['id']}/uploads/{upload}/commit", {}),
        (nobody, "PUT", files, {"params": {"path": "x"}, "data": b"x"}),  # no valid token
        (dana, "PUT", files, {"params": {"path": "../x"}, "data": b"x"}),
        (dana, "PUT", files, {"params": {"path": "x"}, "data": b"x", "headers": {"X-Content-SHA256": "1" * 64}}),
    ]
    for caller, method, path, kwargs in cases:
        via_proxy = caller(method, path, **kwargs)
        straight = direct(caller, hub)(method, path, **kwargs)
        assert via_proxy.status_code >= 400 and (straight.status_code, straight.json()) == \
            (via_proxy.status_code, via_proxy.json()), (method, path, via_proxy.text, straight.text)
    assert dana("GET", f"/datasets/{data['id']}/uploads/{upload}").json()["files"] == []


def test_a_put_cut_off_on_the_direct_listener_leaves_nothing(hub):
    api = user(hub)
    data = api("POST", "/datasets", json={"name": "cut-direct"}).json()
    upload = api("POST", f"/datasets/{data['id']}/uploads").json()["upload"]
    incoming = Path(hub.root, "var", "scheduler", "datasets", "incoming")
    url = urlparse(f"{hub.service_url}api/datasets/{data['id']}/uploads/{upload}/files?path=half.bin")
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall((f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: 100000000\r\n"
                   f"Authorization: {api.session.headers['Authorization']}\r\n\r\n").encode())
        for _ in range(12):  # past a few batches of the writing thread
            s.sendall(b"x" * 1024 * 1024)
        wait_for_sync(lambda: any(incoming.iterdir()), message="the upload to start")
    wait_for_sync(lambda: not any(incoming.iterdir()), message="the cut-off file to be removed")
    assert api("GET", f"/datasets/{data['id']}/uploads/{upload}").json()["files"] == []
    assert api("POST", f"/datasets/{data['id']}/uploads/{upload}/commit").status_code == 400
