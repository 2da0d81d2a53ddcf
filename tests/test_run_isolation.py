"""Each user's runs execute as that user's Unix account and reach nothing that is not theirs."""

from __future__ import annotations

import json
import os
import pwd
import subprocess

import pytest

from nothing.scheduler.accounts import UnixAccounts
from nothing.scheduler.states import RunState

from .conftest import running_dispatcher
from .helpers import let_users_traverse, make_archive, wait_for
from .test_dispatcher import ended, values

TEMPLATE = "nrun-{username}"

# Tries every way into what is not the run's own; records the errno of each attempt.
PROBE = """
import errno, json, os, sys
targets = json.loads(os.environ["EM_HP_TARGETS"])
result = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "umask": os.umask(0o077)}
def attempt(kind, path):
    try:
        if kind == "read":
            if os.path.isdir(path):
                os.listdir(path)
            else:
                open(path, "rb").read(1)
        else:
            open(path, "wb").write(b"planted")
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
result["attempts"] = {f"{kind} {path}": attempt(kind, path) for kind, path in targets}
own = os.path.join(os.environ["EM_MODEL_DIR"], "mine.txt")
result["own"] = attempt("write", own)
json.dump(result, open(own, "w"))
"""


@pytest.fixture
def accounts():
    made = UnixAccounts(enabled=True, name_template=TEMPLATE, uid_min=44000, uid_max=44999)
    yield made
    for entry in pwd.getpwall():
        if entry.pw_name.startswith("nrun-"):
            subprocess.run(["userdel", entry.pw_name], capture_output=True)


async def test_a_run_executes_as_its_users_account_and_cannot_reach_other_users_or_the_scheduler(tmp_path, accounts):
    let_users_traverse(tmp_path)
    async with running_dispatcher(tmp_path, accounts=accounts) as d:
        hold = "import os, time\nwhile not os.path.exists('release'): time.sleep(0.02)"
        bob = await d.submit(values(owner="bob"), make_archive({"train.py": hold}))
        await wait_for(lambda: bob.state == RunState.RUNNING)
        targets = [
            ["read", str(bob.paths.root)], ["read", str(bob.paths.source / "train.py")],
            ["read", str(bob.paths.log)], ["write", str(bob.paths.model / "planted.bin")],
            ["write", str(bob.paths.source / "train.py")],
            ["read", str(tmp_path / "scheduler.sqlite")], ["write", str(tmp_path / "scheduler.sqlite")],
            ["read", str(bob.paths.control)], ["write", str(bob.paths.pid_file)],
            ["read", f"/proc/{os.getpid()}/environ"], ["read", f"/proc/{bob.process.pid}/environ"],
        ]
        alice = await d.submit(values(owner="alice", hyperparameters={"TARGETS": json.dumps(targets)}),
                               make_archive({"train.py": PROBE}))
        row = await ended(d, alice)
        assert row.state == RunState.COMPLETE, (alice.paths.log.read_text())
        result = json.loads((alice.paths.model / "mine.txt").read_text())
        (bob.paths.source / "release").touch()
        assert (await ended(d, bob)).state == RunState.COMPLETE

    account = accounts.account("alice")
    assert (result["uid"], result["gid"], result["groups"]) == (account.uid, account.gid, [])
    assert result["umask"] == 0o077
    assert result["own"] == "ok"
    assert result["attempts"] == {f"{kind} {path}": "EACCES" for kind, path in targets}
    # Its folder and everything in it are the user's own and private.
    for path in (alice.paths.root, alice.paths.model / "mine.txt", alice.paths.source / "train.py", alice.paths.log):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (account.uid, account.gid), path
        assert st.st_mode & 0o077 == 0, f"{path} is open to others: {oct(st.st_mode)}"
    assert os.stat(alice.paths.control).st_uid == 0 and os.stat(alice.paths.control).st_mode & 0o077 == 0
