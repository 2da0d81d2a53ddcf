"""The one access rule as a matrix: every dataset endpoint, and the run, experiment, metrics and checkpoint
endpoints of the tracking API, × {owner, same-group member, other user, admin, anonymous, the owner's token
with reduced scopes}, each with the status it must get.

A caller who may not see an object gets exactly what they get for one that does not
exist (same status, same message but for the identifier they sent), so nothing leaks
through an error; listings and counts never show what the caller may not see.
One module-scoped hub with its own users and groups (``ownership`` is the rule under test).
"""

from __future__ import annotations

import hashlib
import re
import json
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest
import requests

from .hub import Api, Hub

pytestmark = pytest.mark.hub

CALLERS = ("owner", "member", "other", "admin", "anonymous", "reduced")
OWNER, MEMBER, OTHER, ADMIN = "mx-owner", "mx-member", "mx-other", "mx-admin"
GROUP, OTHER_GROUP = "mx-team", "mx-elsewhere"
SECRETS = ("mx-secret-own", "mx-secret-team", "mx-secret-exp")  # names nobody but those allowed may ever see
MISSING = 999999
AUTH_REQUIRED = "authentication required"
NO_SCOPE = "may not use this service"


class Anonymous(Api):
    def __init__(self, hub: Hub):
        self.base = hub.api_url
        self.session = requests.Session()


@pytest.fixture(scope="module")
def world():
    base = Path(tempfile.mkdtemp(prefix="nothing-matrix-hub-"))
    root = base / "hub"
    root.mkdir()
    hub = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=2",
                     "--NothingScheduler.node_cpus=8", "--NothingScheduler.kill_grace_seconds=2"])
    hub.start()
    try:
        for name, group in ((OWNER, GROUP), (MEMBER, GROUP), (OTHER, OTHER_GROUP), (ADMIN, None)):
            hub.create_user(name, admin=name == ADMIN)
            if group:
                r = hub.hub_api("POST", f"/groups/{group}/users", json={"users": [name]})
                if r.status_code == 404:
                    hub.hub_api("POST", f"/groups/{group}", json={"users": [name]}).raise_for_status()
                else:
                    r.raise_for_status()
        apis = {"owner": Api(hub, hub.token_for(OWNER)), "member": Api(hub, hub.token_for(MEMBER)),
                "other": Api(hub, hub.token_for(OTHER)), "admin": Api(hub, hub.token_for(ADMIN)),
                "anonymous": Anonymous(hub), "reduced": Api(hub, hub.token_for(OWNER, ["read:users:name!user"]))}
        yield hub, apis, make_objects(apis["owner"])
    finally:
        hub.stop()
        shutil.rmtree(base, ignore_errors=True)


def push(api: Api, name: str, data: bytes, group: str | None = None) -> dict:
    r = api("POST", "/datasets", json={"name": name, **({"group": group} if group else {})})
    assert r.status_code == 201, r.text
    d = r.json()
    upload = api("POST", f"/datasets/{d['id']}/uploads").json()["upload"]
    assert api("PUT", f"/datasets/{d['id']}/uploads/{upload}/files", params={"path": "f.txt"},
               data=data).status_code == 200
    r = api("POST", f"/datasets/{d['id']}/uploads/{upload}/commit")
    assert r.status_code == 201, r.text
    return r.json()


def make_objects(owner: Api) -> dict:
    own = push(owner, "mx-secret-own", b"own data")
    team = push(owner, "mx-secret-team", b"team data", group=GROUP)
    upload = owner("POST", f"/datasets/{team['id']}/uploads").json()["upload"]
    code = textwrap.dedent("""
        import os
        print("loss=0.5")
        open(os.path.join(os.environ["EM_CHECKPOINT_DIR"], "ckpt-1.pt"), "w").write("w")
    """)
    r = owner.submit({"train.py": code}, entry_point="train.py", experiment="mx-secret-exp",
                     datasets={"d": "mx-secret-own"})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    assert owner.wait_state(run_id, {"COMPLETE", "FAIL TRAIN"}, timeout=60)["state"] == "COMPLETE"
    return {"own": own["id"], "team": team["id"], "upload": upload, "run": run_id,
            "sha": hashlib.sha256(b"team data").hexdigest()}


def call(api: Api, method: str, path: str, **kwargs) -> requests.Response:
    if method in ("POST", "PATCH") and "json" not in kwargs and "data" not in kwargs:
        kwargs["json"] = {}
    return api(method, path, **kwargs)


# What each caller may see (``ownership``): the owner and admins everything (an upload only its own maker),
# a member of the group the group's dataset, anyone else nothing.
VISIBLE = {"owner": {"own", "team", "run", "upload"}, "admin": {"own", "team", "run"}, "member": {"team"},
           "other": set()}
MISSING_IDS = {"own": str(MISSING), "team": str(MISSING), "run": str(MISSING), "upload": "0" * 32}


def check_denial(api: Api, caller: str, method: str, path: str, response: requests.Response, objects: dict,
                 **kwargs) -> None:
    """A 404 is the one a missing object gets, word for word but for the identifiers the caller may not see."""
    if response.status_code != 404 or caller not in VISIBLE:
        return
    hidden = [(f"/{objects[k]}", f"/{MISSING_IDS[k]}") for k in MISSING_IDS
              if k not in VISIBLE[caller] and f"/{objects[k]}" in path + "/"]
    if not hidden:
        return
    twin_path, message = path + "/", response.json()["message"]
    for real, missing in hidden:
        twin_path = twin_path.replace(real + "/", missing + "/")
        message = re.sub(rf"\b{re.escape(real[1:])}\b", missing[1:], message)  # whole ids, not digits of others
    twin = call(api, method, twin_path.rstrip("/"), **kwargs)
    assert twin.status_code == 404, (path, twin.text)
    assert message == twin.json()["message"], (response.text, twin.text)


def assert_no_secret(response: requests.Response, caller: str = "other", allowed: tuple[str, ...] = ()) -> None:
    """Names the caller may not see never appear in what they get."""
    shown = {"owner": SECRETS, "admin": SECRETS, "member": ("mx-secret-team",)}.get(caller, ())
    for name in SECRETS:
        if name not in allowed and name not in shown:
            assert name not in response.text, (caller, response.request.method, response.request.url, response.text)


# (id, method, path, body/params, {caller: status}); {own}, {team}, {upload}, {run}, {sha} are filled in.
# Every one of these leaves the objects as they were (the deletions are in the test after).
READS = [
    ("show own dataset", "GET", "/datasets/{own}", {},
     dict(owner=200, member=404, other=404, admin=200)),
    ("show group dataset", "GET", "/datasets/{team}", {},
     dict(owner=200, member=200, other=404, admin=200)),
    ("describe group dataset", "PATCH", "/datasets/{team}", {"json": {"description": "x"}},
     dict(owner=200, member=403, other=404, admin=200)),
    ("list a version's files", "GET", "/datasets/{team}/versions/1", {},
     dict(owner=200, member=200, other=404, admin=200)),
    ("a version that does not exist", "GET", "/datasets/{team}/versions/9", {},
     dict(owner=404, member=404, other=404, admin=404)),
    ("register a folder as a version", "POST", "/datasets/{team}/versions", {"json": {"path": "/nonexistent"}},
     dict(owner=403, member=403, other=404, admin=400)),
    ("open an upload", "POST", "/datasets/{team}/uploads", {},
     dict(owner=201, member=201, other=404, admin=201)),
    ("open an upload of own dataset", "POST", "/datasets/{own}/uploads", {},
     dict(owner=201, member=404, other=404, admin=201)),
    ("see an upload", "GET", "/datasets/{team}/uploads/{upload}", {},
     dict(owner=200, member=404, other=404, admin=404)),
    ("add a stored file by hash", "POST", "/datasets/{team}/uploads/{upload}/files",
     {"params": {"path": "by-hash.txt", "sha256": "{sha}", "size": "9"}},
     dict(owner=200, member=404, other=404, admin=404)),
    ("send a file", "PUT", "/datasets/{team}/uploads/{upload}/files", {"params": {"path": "sent.txt"}, "data": b"s"},
     dict(owner=200, member=404, other=404, admin=404)),
    ("a ticket to hand a file over locally", "POST", "/datasets/{team}/uploads/{upload}/tickets",
     {"params": {"path": "handed.txt"}}, dict(owner=201, member=404, other=404, admin=404)),
    ("show a run", "GET", "/runs/{run}", {}, dict(owner=200, member=404, other=404, admin=200)),
    ("a run's metrics", "GET", "/runs/{run}/metrics", {}, dict(owner=200, member=404, other=404, admin=200)),
    ("a run's checkpoints", "GET", "/runs/{run}/checkpoints", {}, dict(owner=200, member=404, other=404, admin=200)),
    ("an experiment", "GET", "/experiments/mx-secret-exp", {}, dict(owner=200, member=404, other=404, admin=404)),
    ("an experiment by owner", "GET", "/experiments/mx-secret-exp", {"params": {"owner": OWNER}},
     dict(owner=200, member=403, other=403, admin=200)),
]


def fill(value, objects: dict):
    if isinstance(value, str):
        return value.format(**objects)
    if isinstance(value, dict):
        return {k: fill(v, objects) for k, v in value.items()}
    return value


@pytest.mark.parametrize("what, method, path, kwargs, expected", READS, ids=[r[0] for r in READS])
def test_every_caller_gets_the_status_the_rule_gives(world, what, method, path, kwargs, expected):
    _, apis, objects = world
    path, kwargs = fill(path, objects), fill(kwargs, objects)
    expected = dict(expected, anonymous=403, reduced=403)
    got = {}
    for caller in CALLERS:
        r = call(apis[caller], method, path, **kwargs)
        got[caller] = r.status_code
        if caller == "anonymous":
            assert AUTH_REQUIRED in r.json()["message"], r.text
        elif caller == "reduced":
            assert NO_SCOPE in r.json()["message"], r.text
        assert_no_secret(r, caller, SECRETS[2:] if "experiments/" in path else ())
        check_denial(apis[caller], caller, method, path, r, objects, **kwargs)
    assert got == expected


def test_listings_and_counts_show_only_what_the_caller_may_see(world):
    _, apis, objects = world
    seen = {c: apis[c]("GET", "/datasets") for c in CALLERS}
    assert {c: r.status_code for c, r in seen.items()} == dict(owner=200, member=200, other=200, admin=200,
                                                                 anonymous=403, reduced=403)
    names = {c: sorted(d["name"] for d in seen[c].json()["datasets"]) for c in ("owner", "member", "other", "admin")}
    assert names["owner"] == ["mx-secret-own", "mx-secret-team"]
    assert names["member"] == ["mx-secret-team"] and "mx-secret-own" not in seen["member"].text
    assert names["other"] == [] and names["admin"] == []
    for c in ("member", "other", "anonymous", "reduced"):
        assert_no_secret(seen[c], c)
    everyone = apis["admin"]("GET", "/datasets", params={"all": "1"})
    assert {objects["own"], objects["team"]} <= {d["id"] for d in everyone.json()["datasets"]}
    for c in ("owner", "member", "other"):
        r = apis[c]("GET", "/datasets", params={"all": "1"})
        assert r.status_code == 403 and "mx-secret" not in r.text
    # The run's record shows the dataset it read only to those who may see the run.
    for c in ("member", "other"):
        runs = apis[c]("GET", "/runs")
        assert runs.status_code == 200 and runs.json()["total"] == 0 and runs.json()["runs"] == []
        assert_no_secret(runs)
        r = apis[c]("GET", "/experiments")
        assert r.status_code == 200 and r.json()["experiments"] == []
        assert_no_secret(r)
        assert apis[c]("GET", "/runs", params={"all": "1"}).status_code == 403
    assert apis["owner"]("GET", "/runs").json()["total"] == 1
    assert [e["name"] for e in apis["owner"]("GET", "/experiments").json()["experiments"]] == ["mx-secret-exp"]
    r = apis["other"]("POST", "/datasets", json={"name": "intruder", "group": GROUP})
    assert r.status_code == 403
    r = apis["other"].submit({"train.py": "pass"}, entry_point="train.py", datasets={"d": f"{GROUP}/mx-secret-team"})
    twin = apis["other"].submit({"train.py": "pass"}, entry_point="train.py", datasets={"d": f"{GROUP}/nope"})
    assert r.status_code == twin.status_code == 400
    assert r.json()["message"].replace("mx-secret-team", "nope") == twin.json()["message"]
    for c in ("anonymous", "reduced"):
        assert apis[c]("POST", "/datasets", json={"name": "x"}).status_code == 403
        assert apis[c]("GET", "/runs").status_code == 403


def test_deletions_follow_the_rule_and_refusals_change_nothing(world):
    _, apis, objects = world
    owner, admin = apis["owner"], apis["admin"]
    team, own, run = objects["team"], objects["own"], objects["run"]
    upload = owner("POST", f"/datasets/{team}/uploads").json()["upload"]
    owner("PUT", f"/datasets/{team}/uploads/{upload}/files", params={"path": "v2.txt"}, data=b"v2")
    doomed = owner("POST", f"/datasets/{team}/uploads").json()["upload"]
    steps = [  # (method, path, params, {caller: status}) for callers that must be refused, then who may
        ("POST", f"/datasets/{team}/uploads/{upload}/commit", {}, dict(member=404, other=404, admin=404), "owner", 201),
        ("DELETE", f"/datasets/{team}/uploads/{doomed}", {}, dict(member=404, other=404, admin=404), "owner", 204),
        ("DELETE", f"/runs/{run}/checkpoints", {"name": "*"}, dict(member=404, other=404), "owner", 200),
        ("DELETE", f"/datasets/{team}/versions/1", {}, dict(member=403, other=404), "owner", 200),
        ("DELETE", f"/datasets/{team}", {}, dict(member=403, other=404), "owner", 204),
        ("DELETE", f"/datasets/{own}", {}, dict(member=404, other=404), None, None),
        ("DELETE", f"/runs/{run}", {}, dict(member=404, other=404), "owner", 204),
        ("DELETE", f"/datasets/{own}", {}, dict(member=404, other=404), "admin", 204),
        ("DELETE", "/experiments/mx-secret-exp", {}, dict(member=404, other=404, admin=404), "owner", 204),
    ]
    for method, path, params, refused, allowed, status in steps:
        refused = dict(refused, anonymous=403, reduced=403)
        for caller, expected in refused.items():
            r = apis[caller](method, path, params=params)
            assert r.status_code == expected, (caller, method, path, r.text)
            assert_no_secret(r, caller, SECRETS[2:] if "experiments/" in path else ())
            check_denial(apis[caller], caller, method, path, r, dict(objects, upload=upload), params=params)
        if allowed:
            r = apis[allowed](method, path, params=params)
            assert r.status_code == status, (allowed, method, path, r.text)
        if path == f"/datasets/{own}" and allowed is None:
            # While the owner's run (which read it) exists, the dataset is still there and in use.
            assert owner("GET", path).status_code == 200
    assert owner("GET", "/datasets").json()["datasets"] == []
    assert admin("GET", f"/runs/{run}").status_code == 404
    assert json.dumps(admin("GET", "/datasets", params={"all": "1"}).json()).count("mx-secret") == 0
