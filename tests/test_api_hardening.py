"""The API's input and auth holes stay closed: every bad request is a 4xx with a message, never a 5xx.

Most tests go through the real hub and its proxy (``hub``/``make_user``); the pure
checks of ``nothing.scheduler.spec`` and the header builders are tested directly.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import tarfile

import pytest
import requests

from nothing.scheduler.auth import is_admin
from nothing.scheduler.api.runs import content_disposition
from nothing.scheduler.spec import MAX_LAUNCH_BYTES, SpecError, parse_submission

from .helpers import make_archive
from .hub import Api

SERVICE = "/services/nothing"


def _json_post(api: Api, path: str, raw: str | bytes) -> requests.Response:
    return api("POST", path, data=raw, headers={"Content-Type": "application/json"})


def _submission(files: dict, **spec) -> dict:
    return {"archive": base64.b64encode(make_archive(files)).decode(), **spec}


# ---------------------------------------------------------------- 1. one access rule, admin needs an admin token
@pytest.mark.hub
def test_every_handler_refuses_a_token_without_the_service_scope(hub, make_user):
    name, _ = make_user("narrow")
    token = hub.token_for(name, scopes=["read:users!user"])
    headers = {"Authorization": f"token {token}"}
    for path in ("/api/runs", "/tensorboard/run/1/", f"/tensorboard/experiment/{name}/default/", "/admin"):
        r = requests.get(f"{hub.url}{SERVICE}{path}", headers=headers, allow_redirects=False, timeout=30)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
        assert "may not use this service" in r.text, path


def test_admin_power_needs_an_admin_user_and_an_admin_scope_on_the_token():
    assert is_admin({"admin": True, "scopes": ["admin:users", "access:services"]})
    assert is_admin({"admin": True, "scopes": ["admin-ui", "access:services!service=nothing"]})
    assert not is_admin({"admin": True, "scopes": ["access:services!service=nothing", "read:users:name!user=a"]})
    assert not is_admin({"admin": False, "scopes": ["admin:users"]})
    assert not is_admin(None)


@pytest.mark.hub
def test_an_admins_token_with_only_the_access_scope_has_no_admin_power(hub, make_user):
    owner, alice = make_user("victim")
    admin_name, full = make_user("boss", admin=True)
    narrow = Api(hub, hub.token_for(admin_name, scopes=["access:services!service=nothing"]))
    rid = alice.submit({"t.py": "pass"}, entry_point="t.py").json()["id"]

    assert full("GET", "/admin/overview").status_code == 200
    assert full("GET", f"/runs/{rid}").status_code == 200
    assert narrow("GET", "/admin/overview").status_code == 403
    assert narrow("GET", "/runs", params={"all": 1}).status_code == 403
    assert narrow("GET", f"/runs/{rid}").status_code == 404
    assert narrow("POST", f"/runs/{rid}/priority", json={"priority": 5}).status_code == 403
    assert narrow("GET", "/summary").json()["admin"] is False
    page = narrow.session.get(f"{hub.url}{SERVICE}/admin", timeout=30)
    assert page.status_code == 403 and "does not carry admin rights" in page.text
    board = narrow.session.get(f"{hub.url}{SERVICE}/tensorboard/run/{rid}/", timeout=30)
    assert board.status_code == 404


def _browser_login(hub, name: str) -> requests.Session:
    """Log in through the hub's form, as a browser does (cookies, XSRF field)."""
    s = requests.Session()
    form = s.get(f"{hub.url}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text).group(1)
    r = s.post(f"{hub.url}/hub/login", data={"username": name, "password": "nothing", "_xsrf": xsrf}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    return s


@pytest.mark.hub
def test_an_admin_logged_in_through_the_browser_reaches_the_admin_page_with_samesite_cookies(hub, make_user):
    admin_name, _ = make_user("webadmin", admin=True)
    plain, _ = make_user("webplain")
    s = _browser_login(hub, admin_name)
    page = s.get(f"{hub.url}{SERVICE}/admin", timeout=30)
    assert page.status_code == 200 and "GPU cluster" in page.text
    assert s.get(f"{hub.url}{SERVICE}/api/admin/overview", timeout=30).status_code == 200
    # The service's credentials (its OAuth token and the login's state), not deletions of them.
    set_cookies = [h for r in page.history for k, h in r.raw.headers.items() if k.lower() == "set-cookie"]
    credentials = [h for h in set_cookies if h.startswith("service-nothing") and not h.split(";")[0].endswith('=""')]
    assert {h.split("=")[0] for h in credentials} == {"service-nothing", "service-nothing-oauth-state"}, set_cookies
    assert all("samesite=lax" in h.lower() for h in credentials), credentials
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert page.headers["X-Frame-Options"] == "DENY"

    refused = _browser_login(hub, plain).get(f"{hub.url}{SERVICE}/admin", timeout=30)
    assert refused.status_code == 403 and "is not a JupyterHub admin" in refused.text
    assert refused.headers["X-Frame-Options"] == "DENY"


@pytest.mark.hub
def test_tensorboard_pages_may_not_be_framed(hub, make_user):
    _, api = make_user("frames")
    r = api.session.get(f"{hub.url}{SERVICE}/tensorboard/run/999999/", timeout=30)
    assert r.status_code == 404
    assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'" and r.headers["X-Frame-Options"] == "DENY"


# ---------------------------------------------------------------- 2. notebook GPUs: the server's own token, a real server
@pytest.mark.hub
def test_a_users_own_token_cannot_hold_notebook_gpus(hub, make_user):
    name, api = make_user("nbuser")
    r = api("POST", "/notebooks", json={"server": "", "gpus": 1})
    assert r.status_code == 403 and "with its own token" in r.json()["message"]
    assert api("GET", "/notebooks").json()["notebooks"] == []


@pytest.mark.hub
def test_notebook_gpus_for_a_server_the_hub_does_not_know_are_refused(hub, make_user):
    name, _ = make_user("nbghost")
    ghost = Api(hub, hub.token_for(name, scopes=[f"access:servers!server={name}/ghost",
                                                 "access:services!service=nothing"]))
    r = ghost("POST", "/notebooks", json={"server": "ghost", "gpus": 1})
    assert r.status_code == 409 and f"no server {name}/ghost" in r.json()["message"]
    # A server's token is for that server only.
    r = ghost("POST", "/notebooks", json={"server": "other", "gpus": 1})
    assert r.status_code == 403
    assert ghost("GET", "/notebooks").json()["notebooks"] == []


@pytest.mark.hub
@pytest.mark.parametrize("body", [{"gpus": 10**6, "external": True}, {"gpus": 2**70, "external": True},
                                  {"gpus": 10**30}, {"gpus": 5}, {"gpus": 1, "server": "x" * 300},
                                  {"gpus": 1, "extra": 1}])
def test_notebook_gpu_requests_out_of_range_are_400(hub, make_user, body):
    _, api = make_user("nbcount")
    r = api("POST", "/notebooks", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["message"]


@pytest.mark.hub
def test_a_release_token_that_is_not_ascii_is_not_found(hub):
    r = requests.post(f"{hub.api_url}/notebooks/release", json={"owner": "x", "server": "", "release_token": "é"},
                      timeout=30)
    assert r.status_code == 404


# ---------------------------------------------------------------- 3. numbers out of range
@pytest.mark.hub
@pytest.mark.parametrize("path", ["/runs/{}", "/runs/{}/events", "/runs/{}/logs", "/runs/{}/outputs",
                                  "/runs/{}/outputs.tar.gz", "/runs/{}/outputs/model/x"])
def test_run_ids_beyond_64_bits_are_not_found(hub, make_user, path):
    _, api = make_user("bigid")
    for run_id in (2**63, 2**64 + 5, 10**40):
        r = api("GET", path.format(run_id))
        assert r.status_code == 404, (path, run_id, r.status_code)
        assert "not found" in r.json()["message"]
    assert api("POST", f"/runs/{2**63}/cancel").status_code == 404
    assert api("POST", f"/runs/{10**30}/copy").status_code == 404
    assert api.session.get(f"{hub.url}{SERVICE}/tensorboard/run/{2**64}/", timeout=30).status_code == 404


@pytest.mark.hub
@pytest.mark.parametrize("spec,message", [
    ({"memory": 2**60}, "memory must be at most"),
    ({"memory": "9" * 20 + "T"}, "memory must be at most"),
    ({"memory": 10**400}, "memory must be at most"),
    ({"memory": "1" * 400}, "memory must be a size"),
    ({"max_time": 10**20}, "max time must be at most 365 days"),
    ({"max_time": "400d"}, "max time must be at most 365 days"),
    ({"max_time": 1e300}, "max time must be at most 365 days"),
    ({"max_time": "9" * 5000}, "max time must be a duration"),
    ({"gpus": "9" * 30}, "gpus must be a whole number"),
    ({"cpus": 2**64}, "asks for"),
    ({"priority": -(2**70)}, "priority must be between -1000 and 1000"),
])
def test_numbers_beyond_the_columns_are_refused(hub, make_user, spec, message):
    _, api = make_user("bignum")
    r = api("POST", "/runs", json=_submission({"t.py": "pass"}, entry_point="t.py", **spec))
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]


@pytest.mark.hub
@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
def test_json_infinity_and_nan_are_refused_everywhere(hub, make_user, constant):
    _, api = make_user("nan")
    _, admin = make_user("nanadmin", admin=True)
    rid = api.submit({"t.py": "pass"}, entry_point="t.py").json()["id"]
    archive = base64.b64encode(make_archive({"t.py": "pass"})).decode()
    refusals = [
        _json_post(api, "/runs", f'{{"entry_point": "t.py", "archive": "{archive}", "memory": {constant}}}'),
        _json_post(api, "/notebooks", f'{{"gpus": {constant}}}'),
        _json_post(admin, f"/runs/{rid}/priority", f'{{"priority": {constant}}}'),
    ]
    for r in refusals:
        assert r.status_code == 400 and f"{constant.lstrip('-')} is not a number JSON allows" in r.text, r.text
    r = api("POST", "/runs", data={"spec": f'{{"entry_point": "t.py", "max_time": {constant}}}'},
            files={"archive": ("a.tgz", make_archive({"t.py": "pass"}))})
    assert r.status_code == 400 and "the 'spec' field is not valid JSON" in r.json()["message"]


@pytest.mark.hub
def test_deeply_nested_json_is_a_400(hub, make_user):
    _, api = make_user("nested")
    r = _json_post(api, "/notebooks", "[" * 200_000 + "]" * 200_000)
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]


@pytest.mark.hub
@pytest.mark.parametrize("params", [{"limit": "abc"}, {"limit": "-1"}, {"limit": "0"}, {"limit": str(10**30)},
                                    {"limit": "5000"}, {"offset": "-1"}, {"offset": str(2**63)},
                                    {"offset": "1e3"}, {"limit": "٣"}])
def test_bad_list_paging_is_400_with_the_range(hub, make_user, params):
    _, api = make_user("paging")
    r = api("GET", "/runs", params=params)
    assert r.status_code == 400, r.text
    assert "must be a whole number from" in r.json()["message"]


@pytest.mark.hub
def test_log_offsets_and_tails_out_of_range_are_400(hub, make_user):
    _, api = make_user("logs")
    rid = api.submit({"t.py": "print('hello')"}, entry_point="t.py").json()["id"]
    api.wait_state(rid, "COMPLETE")
    for params in ({"offset": str(2**64)}, {"offset": "-5"}, {"tail": "x"}, {"tail": str(10**12)}, {"tail": "0"}):
        r = api("GET", f"/runs/{rid}/logs", params=params)
        assert r.status_code == 400 and "must be a whole number from" in r.json()["message"], params
    past_end = api("GET", f"/runs/{rid}/logs", params={"offset": str(2**40)})
    assert past_end.status_code == 200 and past_end.content == b""


# ---------------------------------------------------------------- 4. output files with odd names
ODD_NAMES = '''import os
d = os.environ["EM_MODEL_DIR"]
open(os.path.join(d, 'we"ird\\nname.bin'), "wb").write(b"quote and newline")
open(os.path.join(os.fsencode(d), b"\\xff\\xfe.bin"), "wb").write(b"not utf-8")
open(os.path.join(d, "a#b %20.txt"), "wb").write(b"url characters")
'''


def test_content_disposition_is_printable_ascii_with_the_exact_name_in_rfc5987_form():
    header = content_disposition('we"ird\nname\u00e9.bin')
    assert header == "attachment; filename=\"we_ird_name_.bin\"; filename*=UTF-8''we%22ird%0Aname%C3%A9.bin"
    assert content_disposition("\udcff\udcfe.bin").endswith("filename*=UTF-8''%EF%BF%BD%EF%BF%BD.bin")


@pytest.mark.hub
def test_outputs_with_quotes_newlines_and_invalid_utf8_names_are_listed_and_downloaded(hub, make_user):
    _, api = make_user("odd")
    rid = api.submit({"t.py": ODD_NAMES}, entry_point="t.py").json()["id"]
    assert api.wait_state(rid, {"COMPLETE", "FAIL TRAIN"})["exit_code"] == 0
    listing = api("GET", f"/runs/{rid}/outputs")
    assert listing.status_code == 200, listing.text
    files = {f["path"]: f for f in listing.json()["files"]}
    assert set(files) == {'model/we"ird\nname.bin', "model/\ufffd\ufffd.bin", "model/a#b %20.txt"}
    assert files["model/\ufffd\ufffd.bin"]["href"] == "outputs/?path=model/%FF%FE.bin"
    expected = {'model/we"ird\nname.bin': b"quote and newline", "model/\ufffd\ufffd.bin": b"not utf-8",
                "model/a#b %20.txt": b"url characters"}
    for path, content in expected.items():
        r = api("GET", f"/runs/{rid}/{files[path]['href']}")
        assert r.status_code == 200 and r.content == content, (path, r.status_code)
        disposition = r.headers["Content-Disposition"]
        assert disposition.isascii() and "\n" not in disposition and disposition.count('"') == 2
        assert "filename*=UTF-8''" in disposition
    archive = api("GET", f"/runs/{rid}/outputs.tar.gz")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        names = {n.encode("utf-8", "surrogateescape") for n in tar.getnames()}
    assert names == {b'model/we"ird\nname.bin', b"model/\xff\xfe.bin", b"model/a#b %20.txt"}
    assert api("GET", f"/runs/{rid}/outputs/a%20b").text.count("no output") == 1
    for bad in ("model/a%00b", "model/" + "x" * 5000, "model/../../src/t.py", "", "model/"):
        assert api("GET", f"/runs/{rid}/outputs/?path={bad}").status_code == 404, bad
    assert api("GET", f"/runs/{rid}/outputs/model/a%00b").status_code == 404


# ---------------------------------------------------------------- 5. options, trailing newlines
@pytest.mark.parametrize("entry_point", ["-c", "-m.py", "-", "sub/-x.py", "./-c.py", "a/../-b"])
def test_entry_points_with_a_part_starting_with_a_dash_are_refused(entry_point):
    with pytest.raises(SpecError, match="may start with '-'"):
        parse_submission({"entry_point": entry_point}, 4, 8, is_admin=False)


@pytest.mark.parametrize("field,value", [("name", "run\n"), ("experiment", "exp\n"), ("name", "a\nb"),
                                         ("hyperparameters", {"lr\n": "1"})])
def test_names_and_keys_with_a_trailing_newline_are_refused(field, value):
    with pytest.raises(SpecError):
        parse_submission({"entry_point": "t.py", field: value}, 4, 8, is_admin=False)


@pytest.mark.hub
def test_a_dash_entry_point_is_refused_by_the_service(hub, make_user):
    _, api = make_user("dash")
    r = api.submit({"-c.py": "print(1)"}, entry_point="-c.py")
    assert r.status_code == 400 and "may start with '-'" in r.json()["message"]


# ---------------------------------------------------------------- 6. what fits a command line and an environment
@pytest.mark.parametrize("spec,message", [
    ({"hyperparameters": {"big": "x" * (128 * 1024)}}, "longer than 4096 bytes"),
    ({"args": ["x" * 4097]}, "args[0] is longer than 4096 bytes"),
    ({"args": ["a"] * 257}, "at most 256 args"),
    ({"hyperparameters": {f"k{i}": "1" for i in range(257)}}, "at most 256 hyperparameters"),
    ({"hyperparameters": {f"k{i}": "x" * 4000 for i in range(6)}}, f"the limit is {MAX_LAUNCH_BYTES}"),
    ({"args": ["a\0b"]}, "NUL"),
    ({"hyperparameters": {"lr": "\ud800"}}, "not valid Unicode"),
])
def test_args_and_hyperparameters_must_fit_the_runs_command_line_and_environment(spec, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_submission({"entry_point": "t.py", **spec}, 4, 8, is_admin=False)


def test_args_and_hyperparameters_just_inside_the_limits_are_accepted():
    values = parse_submission({"entry_point": "t.py", "args": ["x" * 4096] * 4,
                               "hyperparameters": {"lr": "y" * 4096}}, 4, 8, is_admin=False)
    assert len(values["args"]) == 4 and len(values["hyperparameters"]["lr"]) == 4096


@pytest.mark.hub
def test_a_128_kib_hyperparameter_is_refused_at_submit(hub, make_user):
    _, api = make_user("e2big")
    r = api.submit({"t.py": "pass"}, entry_point="t.py", hyperparameters={"big": "x" * (128 * 1024)})
    assert r.status_code == 400 and "longer than 4096 bytes" in r.json()["message"]


# ---------------------------------------------------------------- 7. bodies are capped per handler
@pytest.mark.hub
def test_a_body_over_the_handlers_limit_is_413_without_being_read(hub, make_user):
    name, api = make_user("big")
    r = _json_post(api, "/notebooks", b" " * (1024**2 + 1))
    assert r.status_code == 413 and "accepts at most 1048576" in r.json()["message"]
    # Declared only: the scheduler answers before a byte of the body arrives.
    token = api.session.headers["Authorization"]
    with socket.create_connection(("127.0.0.1", hub.service_port), timeout=10) as s:
        s.sendall(f"POST {SERVICE}/api/runs HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nExpect: 100-continue\r\n"
                  "Content-Type: application/json\r\nContent-Length: 50000000000\r\n\r\n".encode())
        head = s.recv(65536).decode()
    assert head.startswith("HTTP/1.1 413") and "accepts at most" in head
    # Without a length, the body is counted as it arrives.
    r = api("POST", "/notebooks", data=(b" " * 65536 for _ in range(20)), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over 1048576 bytes" in r.json()["message"]
    # A refusal in front of a body (here: no access) still comes back whole through the proxy.
    narrow = Api(hub, hub.token_for(name, scopes=["read:users!user"]))
    r = narrow("POST", "/runs", data=b"x" * (3 * 1024**2), headers={"Content-Type": "application/json"})
    assert r.status_code == 403
    assert api("GET", "/gpus").status_code == 200


@pytest.mark.hub
def test_submissions_up_to_the_snapshot_limit_fit_their_larger_body_limit(hub, make_user):
    _, api = make_user("bigsub")
    padding = bytes(range(256)) * 5000  # 1.28 MB that gzip cannot shrink much, over the 1 MiB default
    files = {"t.py": "pass", "data.bin": padding}
    r = api("POST", "/runs", json=_submission(files, entry_point="t.py"))
    assert r.status_code == 201, r.text
    assert api.submit(files, entry_point="t.py").status_code == 201


# ---------------------------------------------------------------- 9. the document lists what is answered
@pytest.mark.hub
def test_unknown_api_paths_are_a_json_404(hub, make_user):
    _, api = make_user("lost")
    for method, path in [("GET", "/nope"), ("POST", "/runs/abc"), ("GET", "/runs/-1"), ("DELETE", "/gpus/x")]:
        r = api(method, path)
        assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json"), (method, path)
        assert "no API endpoint" in r.json()["message"]
    r = api("PUT", "/runs")
    assert r.status_code == 405 and r.json()["status"] == 405
    doc = requests.get(f"{hub.api_url}/openapi.json", timeout=30).json()
    post_runs = doc["paths"]["/runs"]["post"]["responses"]
    assert {"201", "400", "403", "413"} <= set(post_runs)
    assert {"201", "400", "403", "409", "413", "503"} <= set(doc["paths"]["/notebooks"]["post"]["responses"])
    assert json.dumps(doc).count('"$ref": "#/components/schemas/Error"') > 20
