"""Training templates (학습 템플릿) in the session's live hub: save, list, use for a run and a tuning with
overrides, share with a group, copy, delete, refusals."""

from __future__ import annotations

import base64
import secrets
import textwrap

import pytest

from .helpers import make_archive, wait_for_sync

pytestmark = pytest.mark.hub

CODE = textwrap.dedent("""
    import os
    x = float(os.environ.get("EM_HP_X", "0"))
    print(f"lr={os.environ.get('EM_HP_LR')} score={-(x - 1) ** 2}", flush=True)
""")
SETTINGS = {"entry_point": "train.py", "hyperparameters": {"lr": "0.1", "x": "0"}, "gpus": 1, "cpus": 0,
            "metrics": [{"name": "score", "regex": r"score=(\S+)"}], "max_time": "10m"}


def save(api, name, settings=SETTINGS, code=CODE, **extra):
    body = {"name": name, "settings": settings, **extra}
    if code is not None:
        body["archive"] = base64.b64encode(make_archive({"train.py": code})).decode()
    return api("POST", "/templates", json=body)


def log_of(api, run_id):
    return api("GET", f"/runs/{run_id}/logs").text


def test_a_run_starts_from_a_template_with_its_code_and_overridden_fields(make_user):
    _, api = make_user("tpl")
    r = save(api, "base", description="the usual")
    assert r.status_code == 201, r.text
    t = r.json()
    assert (t["name"], t["kind"], t["has_code"], t["hyperparameters"]) == ("base", "run", True, ["lr", "x"])
    assert [x["name"] for x in api("GET", "/templates").json()["templates"]] == ["base"]
    assert api("GET", "/templates/base").json()["id"] == t["id"]

    r = api("POST", "/runs", json={"template": "base", "hyperparameters": {"lr": "0.5"}, "gpus": 0})
    assert r.status_code == 201, r.text
    run = api.wait_state(r.json()["id"], {"COMPLETE", "FAIL TRAIN"})
    assert run["state"] == "COMPLETE" and "lr=0.5 score=-1" in log_of(api, run["id"])
    assert run["gpus"] == 0 and run["hyperparameters"] == {"lr": "0.5", "x": "0"}
    assert run["max_seconds"] == 600

    # Its own code replaces the template's; the template's other fields stay.
    r = api.submit({"train.py": "print('own code')"}, template="base", gpus=0)
    assert r.status_code == 201, r.text
    assert "own code" in log_of(api, api.wait_state(r.json()["id"], "COMPLETE")["id"])


def test_a_tuning_starts_from_a_template(make_user):
    _, api = make_user("tpltune")
    tuning_settings = {**SETTINGS, "hyperparameters": {"lr": "0.1"}, "gpus": 0, "strategy": "grid",
                       "hyperparameter_spec": [{"name": "x", "type": "int", "min": 0, "max": 2}],
                       "objective": {"metric": "score", "goal": "maximize"}, "resources": {"max_trials": 3}}
    assert save(api, "sweep", tuning_settings).status_code == 201
    r = api("POST", "/tunings", json={"template": "sweep", "name": "from-template",
                                      "resources": {"parallel_trials": 3}})
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["strategy"] == "grid" and t["resources"]["max_trials"] == 3 and t["resources"]["parallel_trials"] == 3
    assert t["resources"]["max_time_per_trial"] == 600
    done = wait_for_sync(lambda: (lambda x: x if x["state"] == "COMPLETE" else None)(
        api("GET", f"/tunings/{t['id']}").json()), timeout=90, interval=0.3, message="the tuning to end")
    assert done["best_trial"]["hyperparameters"] == {"x": "1"}


def test_a_groups_template_is_for_its_members_to_use_and_its_owner_to_delete(hub, make_user):
    group = f"tg{secrets.token_hex(3)}"
    owner, api = make_user("tplown")
    member, other_member = make_user("tplmem")
    _, outsider = make_user("tplout")
    hub.hub_api("POST", f"/groups/{group}", json={"users": [owner, member]}).raise_for_status()
    r = save(api, "shared", group=group)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert [x["id"] for x in other_member("GET", "/templates").json()["templates"]] == [tid]
    r = other_member("POST", "/runs", json={"template": "shared", "gpus": 0})
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == member
    assert outsider("GET", f"/templates/{tid}").status_code == 404
    assert outsider("GET", "/templates").json()["templates"] == []
    assert outsider("POST", "/runs", json={"template": str(tid)}).status_code == 404
    assert other_member("DELETE", f"/templates/{tid}").status_code == 403
    c = other_member("POST", f"/templates/{tid}/copy", json={"name": "mine", "settings": {"gpus": 0}})
    assert c.status_code == 201, c.text
    assert (c.json()["owner"], c.json()["group"], c.json()["settings"]["gpus"], c.json()["has_code"]) == (
        member, "", 0, True)
    assert api("DELETE", f"/templates/{tid}").status_code == 204
    assert api("GET", f"/templates/{tid}").status_code == 404
    assert [x["name"] for x in other_member("GET", "/templates").json()["templates"]] == ["mine"]


@pytest.mark.parametrize("body, status, message", [
    ({"name": "x", "settings": {"gpu": 1}}, 400, "unknown template field"),
    ({"name": "12", "settings": {}}, 400, "not a number alone"),
    ({"name": "x/y", "settings": {}}, 400, "must be 1-100 letters"),
    ({"name": "x", "settings": {}, "group": "not-mine"}, 403, "not a member"),
])
def test_bad_templates_are_refused(make_user, body, status, message):
    _, api = make_user("tplbad")
    r = api("POST", "/templates", json=body)
    assert r.status_code == status and message in r.json()["message"], r.text
    assert api("GET", "/templates").json()["templates"] == []


def test_duplicates_missing_code_and_bad_merged_fields_are_refused(make_user):
    _, api = make_user("tplref")
    assert save(api, "nocode", code=None).status_code == 201
    assert save(api, "nocode").status_code == 409
    r = api("POST", "/runs", json={"template": "nocode"})
    assert r.status_code == 400 and "holds no code" in r.json()["message"]
    r = api("POST", "/runs", json={"template": "absent"})
    assert r.status_code == 404 and "template 'absent' not found" in r.json()["message"]
    assert save(api, "big", {**SETTINGS, "nodes": 2, "gpus_per_node": 1}).status_code == 201
    r = api("POST", "/tunings", json={"template": "big"})
    assert r.status_code == 400 and "do not apply to a tuning" in r.json()["message"]
    r = api("POST", "/runs", json={"template": "big", "gpus": 64, "nodes": 1, "gpus_per_node": 0})
    assert r.status_code == 400, r.text  # the merged run goes through a run's checks
    assert api("GET", "/runs").json()["total"] == 0 and api("GET", "/tunings").json()["tunings"] == []
