"""A user's notebook cannot touch other users' folders or the hub's own state, with everything real.

Two hub users' single-user servers are spawned through the hub; code runs in a
kernel of user A's server (the Jupyter server's REST API and kernel websocket,
through the hub's proxy, as the browser does) and tries to read and write user B's
persistent folder, the hub's database and cookie secret, the scheduler's
database, and the environments of the hub, the scheduler and B's server. Each
attempt must fail with EACCES while A's own folder works, A's code runs as A's
account with umask 077, and the server sits in a cgroup of its own that goes away
when it stops.
"""

from __future__ import annotations

import json
import os
import pwd
import uuid

import pytest
import requests
import websocket
from traitlets.config import Config

from nothing.scheduler.accounts import UnixAccounts

from .helpers import wait_for_sync
from .hub import TEST_UID_RANGE, processes_of

pytestmark = pytest.mark.hub

PROBE = r'''
import errno, json, os, subprocess

def attempt(action, path):
    try:
        if action == "list":
            os.listdir(path)
        elif action == "read":
            with open(path, "rb") as f:
                f.read(1)
        elif action == "write":
            with open(path, "ab") as f:
                f.write(b"x")
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

own = os.environ["NOTHING_EASYMAKER_DIR"]
with open(os.path.join(own, "mine.txt"), "w") as f:
    f.write("mine")
old = os.umask(0)
os.umask(old)
report = {
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "id -u": subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip(),
    "umask": oct(old), "shell umask": subprocess.run(["sh", "-c", "umask"], capture_output=True, text=True).stdout.strip(),
    "own": open(os.path.join(own, "mine.txt")).read(),
    "own mode": oct(os.stat(os.path.join(own, "mine.txt")).st_mode & 0o777),
    "cgroup": open("/proc/self/cgroup").read(),
    "attempts": {f"{action} {path}": attempt(action, path) for action, path in TARGETS},
}
print("REPORT " + json.dumps(report))
'''


def server(hub, name: str) -> dict:
    return hub.hub_api("GET", f"/users/{name}").json()["servers"].get("", {})


def start(hub, name: str) -> dict:
    assert hub.hub_api("POST", f"/users/{name}/server").status_code in (201, 202)
    return wait_for_sync(lambda: (lambda s: s if s.get("ready") else None)(server(hub, name)), timeout=60,
                         message=f"{name}'s server to start")


def stop(hub, name: str) -> None:
    hub.hub_api("DELETE", f"/users/{name}/server")
    wait_for_sync(lambda: not server(hub, name), timeout=60, message=f"{name}'s server to stop")


def run_in_kernel(hub, name: str, token: str, code: str, timeout: float = 60) -> str:
    """Run ``code`` in a new kernel of ``name``'s server; returns what it printed."""
    headers = {"Authorization": f"token {token}"}
    base = f"{hub.url}/user/{name}/api/kernels"
    r = requests.post(base, json={"name": "python3"}, headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    ws_url = base.replace("http://", "ws://") + f"/{kernel}/channels?session_id={uuid.uuid4().hex}"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout,
                                     suppress_origin=True)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": name,
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out, done = [], False
        while not done:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                out.append("\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                done = True
        return "".join(out)
    finally:
        ws.close()
        requests.delete(f"{base}/{kernel}", headers=headers, timeout=30)


def test_a_notebook_cannot_reach_other_users_or_the_hubs_state(hub, make_user):
    a, _ = make_user("isoa")
    b, _ = make_user("isob")
    var = hub.root / "var"
    a_home, b_home = var / "users" / a, var / "users" / b
    start(hub, a)
    b_pid = start(hub, b)["state"]["pid"]
    (b_home / "secret.txt").write_text("b's")  # written as root: only B's folder's mode guards it

    targets = [
        ("list", b_home), ("read", b_home / "secret.txt"), ("write", b_home / "from-a.txt"),
        ("list", var), ("list", var / "users"), ("list", var / "scheduler"),
        ("read", var / "jupyterhub.sqlite"), ("write", var / "jupyterhub.sqlite"),
        ("read", var / "jupyterhub_cookie_secret"), ("write", var / "jupyterhub_cookie_secret"),
        ("read", var / "scheduler" / "scheduler.sqlite"), ("write", var / "scheduler" / "scheduler.sqlite"),
        ("read", hub.root / "test_config.py"),  # holds the test admin's token
        ("read", f"/proc/{hub.scheduler_pid()}/environ"), ("read", f"/proc/{hub.proc.pid}/environ"),
        ("read", f"/proc/{b_pid}/environ"),
    ]
    assert all(os.path.exists(path) for _, path in targets if "from-a" not in str(path))
    code = f"TARGETS = {[(action, str(path)) for action, path in targets]!r}\n" + PROBE
    printed = run_in_kernel(hub, a, hub.token_for(a), code)
    assert "REPORT " in printed, printed
    report = json.loads(printed.split("REPORT ", 1)[1])

    assert report["attempts"] == {f"{action} {path}": "EACCES" for action, path in targets}
    assert not (b_home / "from-a.txt").exists()
    account = pwd.getpwnam(UnixAccounts(config=Config(UnixAccounts=hub.accounts_config)).unix_name(a))
    assert account.pw_name.startswith(hub.account_prefix)
    assert TEST_UID_RANGE[0] <= account.pw_uid <= TEST_UID_RANGE[1]
    assert report["uid"] == report["euid"] == account.pw_uid and report["id -u"] == str(account.pw_uid)
    assert report["gid"] == account.pw_gid and report["groups"] == [account.pw_gid]
    assert report["umask"] == "0o77" and report["shell umask"] == "0077"
    assert report["own"] == "mine" and report["own mode"] == "0o600"
    stat = a_home.stat()
    assert (stat.st_uid, stat.st_mode & 0o777) == (account.pw_uid, 0o700)

    # The server, and so its kernels, is in a cgroup of its own, with the spawner's limits.
    cgroup_line = next(line for line in report["cgroup"].splitlines() if ":pids:" in line or line.startswith("0::"))
    path = cgroup_line.split(":", 2)[2]
    assert path.endswith(f"/nothing/notebook-{account.pw_name}"), report["cgroup"]
    pids_dir = f"/sys/fs/cgroup/pids{path}" if ":pids:" in cgroup_line else f"/sys/fs/cgroup{path}"
    assert open(f"{pids_dir}/pids.max").read().strip() == "8192"
    stop(hub, a)
    assert not os.path.exists(pids_dir)
    stop(hub, b)


def test_start_up_scripts_run_as_the_user_and_leave_their_records_to_them(hub, make_user):
    name, _ = make_user("isoscripts")
    home = hub.root / "var" / "users" / name
    start(hub, name)
    scripts = home / "cont-init.d"
    (scripts / "10-who").write_text("#!/bin/sh\nid -u > \"$NOTHING_EASYMAKER_DIR/who.txt\"\nsleep 300 &\n")
    os.chmod(scripts / "10-who", 0o755)
    stop(hub, name)
    start(hub, name)

    uid = home.stat().st_uid
    assert (home / "who.txt").read_text().strip() == str(uid) != "0"
    for record in (home / "who.txt", scripts / "10-who.exitcode", scripts / "10-who.output", home / "cont-init.output"):
        assert record.stat().st_uid == uid, record
    stop(hub, name)
    # The script's background sleep went with the notebook's cgroup.
    wait_for_sync(lambda: not processes_of(uid), timeout=15, message="the account's processes to end")


def test_the_data_dir_lets_users_pass_only_to_their_folders(tmp_path):
    from nothing.hub_extension.state_dir import secure_data_dir

    var = tmp_path / "var"
    (var / "users" / "alice").mkdir(parents=True, mode=0o755)
    (var / "scheduler" / "tensorboard").mkdir(parents=True, mode=0o755)
    for path in (var / "jupyterhub.sqlite", var / "scheduler" / "scheduler.sqlite", var / "users" / "alice" / "x"):
        path.write_text("")
        path.chmod(0o644)
    outside = tmp_path / "outside"
    outside.write_text("")
    outside.chmod(0o644)
    (var / "link").symlink_to(outside)

    secure_data_dir(str(var))

    def mode(path):
        return path.lstat().st_mode & 0o777

    assert [mode(var / p) for p in ("", "users", "scheduler", "scheduler/runs")] == [0o711] * 4
    assert mode(var / "jupyterhub.sqlite") == mode(var / "scheduler" / "scheduler.sqlite") == 0o600
    assert mode(var / "scheduler" / "tensorboard") == 0o700
    # The users' own folders are theirs to keep; links are left alone (never followed).
    assert mode(var / "users" / "alice") == 0o755 and mode(var / "users" / "alice" / "x") == 0o644
    assert mode(outside) == 0o644


def test_a_program_the_account_cannot_reach_is_named_before_anything_starts():
    import shutil
    import tempfile

    from nothing.scheduler.accounts import Account
    from nothing.spawner.local import _blocked_on_the_way

    top = tempfile.mkdtemp(prefix="nothing-reach-")
    try:
        os.chmod(top, 0o711)
        closed, opened = os.path.join(top, "closed"), os.path.join(top, "open")
        os.mkdir(closed, 0o700)
        os.mkdir(opened, 0o755)
        python = os.path.join(closed, "python")
        tool = os.path.join(opened, "tool")
        link = os.path.join(opened, "python")
        for path, text in ((python, "#!/bin/sh\n"), (tool, f"#!{link} -u\n")):
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        os.symlink(python, link)
        stranger = Account("stranger", "nothing-stranger-x", 43990, 43990, "/nonexistent")

        # The script is open, its interpreter is a link into a folder only root may enter.
        assert _blocked_on_the_way(tool, stranger) == closed
        assert _blocked_on_the_way("/bin/sh", stranger) is None
        os.chmod(closed, 0o711)
        assert _blocked_on_the_way(tool, stranger) is None
    finally:
        shutil.rmtree(top)


def test_a_failed_set_up_of_a_notebook_process_says_what_failed(tmp_path):
    import subprocess

    from nothing.spawner.local import _child_errors, _preexec

    missing = tmp_path / "gone"
    with pytest.raises(RuntimeError, match=f"could not be set up: .*No such file or directory: '{missing}'"):
        with _child_errors() as errors:
            subprocess.run(["true"], preexec_fn=_preexec([], None, [], str(missing), errors))
