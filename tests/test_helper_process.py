"""The helper process: runs blocking work for the scheduler, starts runs and reports how they exited."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading

import pytest

from nothing.scheduler.helper_process import HelperGone, HelperProcess, process_start_time
from nothing.scheduler.rundir import create_run_dir, stage_source, stored_code
from nothing.scheduler.runenv import RunPaths
from nothing.scheduler.snapshot import SnapshotError, SnapshotLimits, unpack

from .helpers import let_users_traverse, make_archive


@pytest.fixture
async def helper():
    h = HelperProcess()
    await h.start()
    yield h
    await h.stop()


def raise_snapshot_error(message: str) -> None:
    raise SnapshotError(message)


async def test_a_call_runs_in_another_process_and_returns_its_value(helper):
    assert await helper.call(os.getpid) == helper.pid != os.getpid()


async def test_an_exception_in_a_call_is_raised_in_the_scheduler(helper):
    with pytest.raises(SnapshotError, match="the entry point is missing"):
        await helper.call(raise_snapshot_error, "the entry point is missing")


async def test_a_spawned_process_gets_its_own_session_output_and_pid_file(helper, tmp_path):
    log, pid_file = tmp_path / "out.log", tmp_path / "pid"
    pid, start = await helper.spawn(["/bin/sh", "-c", "echo hello; ps -o sid= -p $$; exit 3"], dict(os.environ),
                                    str(log), str(pid_file))
    status = await asyncio.wait_for(helper.exit_status(pid), 10)
    assert os.waitstatus_to_exitcode(status) == 3
    lines = log.read_text().split()
    assert lines[0] == "hello" and int(lines[1]) == pid  # session leader
    assert pid_file.read_text().split() == [str(pid), start]


async def test_exits_are_reported_even_for_processes_that_end_at_once(helper, tmp_path):
    spawned = [await helper.spawn(["/bin/sh", "-c", f"exit {n}"], {}, str(tmp_path / "log"), str(tmp_path / f"p{n}"))
               for n in range(20)]
    codes = [os.waitstatus_to_exitcode(await asyncio.wait_for(helper.exit_status(pid), 10)) for pid, _ in spawned]
    assert codes == list(range(20))
    assert not helper._exits and not helper._early_exits, "nothing is kept once an exit has been collected"


async def test_a_killed_process_reports_its_signal(helper, tmp_path):
    pid, _ = await helper.spawn(["/bin/sleep", "30"], {}, str(tmp_path / "log"), str(tmp_path / "pid"))
    os.killpg(pid, signal.SIGKILL)
    status = await asyncio.wait_for(helper.exit_status(pid), 10)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL


async def test_a_spawn_that_cannot_start_says_why(helper, tmp_path):
    with pytest.raises(FileNotFoundError):
        await helper.spawn(["/no/such/program"], {}, str(tmp_path / "log"), str(tmp_path / "pid"))


async def test_runs_outlive_the_helper_which_comes_back_on_the_next_request(helper, tmp_path):
    pid, _ = await helper.spawn(["/bin/sleep", "30"], {}, str(tmp_path / "log"), str(tmp_path / "pid"))
    waiting = helper.exit_status(pid)
    old = helper.pid
    os.kill(old, signal.SIGKILL)
    with pytest.raises(HelperGone):
        await asyncio.wait_for(waiting, 10)
    assert process_start_time(pid) is not None, "the run died with its helper"
    assert await helper.call(os.getpid) not in (old, os.getpid())
    os.killpg(pid, signal.SIGKILL)


async def test_the_helper_leaves_when_the_scheduler_closes_its_socket(tmp_path):
    helper = HelperProcess(sys.executable)
    await helper.start()
    pid = helper.pid
    await helper.stop()
    assert process_start_time(pid) is None


async def test_a_run_inherits_no_socket_of_the_scheduler(helper, tmp_path):
    script = 'for fd in /proc/$$/fd/*; do readlink "$fd"; done; exit 0'
    pid, _ = await helper.spawn(["/bin/sh", "-c", script], {}, str(tmp_path / "log"), str(tmp_path / "pid"))
    assert os.waitstatus_to_exitcode(await asyncio.wait_for(helper.exit_status(pid), 10)) == 0
    targets = (tmp_path / "log").read_text()
    assert "/dev/null" in targets and "socket:" not in targets


# ---------------------------------------------------------------------- calls side by side
def read_fifo(path: str) -> bytes:
    """Blocks until someone writes to the FIFO ``path`` and closes it: a call that is slow until released."""
    with open(path, "rb") as f:
        return f.read()


async def test_a_slow_call_does_not_hold_up_a_fast_one(helper, tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    slow = asyncio.ensure_future(helper.call(read_fifo, str(gate)))
    assert await asyncio.wait_for(helper.call(os.getpid), 5) == helper.pid
    assert not slow.done()
    threading.Thread(target=gate.write_bytes, args=(b"released",), daemon=True).start()
    assert await asyncio.wait_for(slow, 10) == b"released"


async def test_concurrent_calls_each_get_their_own_answer(helper):
    answers = await asyncio.wait_for(asyncio.gather(*[helper.call(str.upper, f"call {n}") for n in range(50)]), 10)
    assert answers == [f"CALL {n}" for n in range(50)]


# ---------------------------------------------------------------------- exits per pid
def zombie_children(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    return [c for c in children if process_start_time(c) is None]


async def test_after_a_spawn_too_large_to_start_each_exit_is_reported_for_its_own_pid(helper, tmp_path):
    log = str(tmp_path / "log")
    alive, _ = await helper.spawn(["/bin/sleep", "30"], {}, log, str(tmp_path / "alive"))
    with pytest.raises(OSError, match="too large to start") as refused:
        await helper.spawn(["/bin/sh", "-c", "exit 0", "x" * 200_000], {}, log, str(tmp_path / "big"))
    assert refused.value.errno == errno.E2BIG
    assert not (tmp_path / "big").exists()
    spawned = [await helper.spawn(["/bin/sh", "-c", f"exit {n}"], {}, log, str(tmp_path / f"p{n}"))
               for n in range(1, 6)]
    codes = {pid: os.waitstatus_to_exitcode(await asyncio.wait_for(helper.exit_status(pid), 10)) for pid, _ in spawned}
    assert codes == {pid: n for (pid, _), n in zip(spawned, range(1, 6))}
    os.killpg(alive, signal.SIGKILL)
    assert os.waitstatus_to_exitcode(await asyncio.wait_for(helper.exit_status(alive), 10)) == -signal.SIGKILL
    assert not helper._exits and not helper._early_exits
    assert zombie_children(helper.pid) == []


async def test_a_spawn_whose_pid_file_cannot_be_written_fails_and_stops_its_process(helper, tmp_path):
    with pytest.raises(FileNotFoundError):
        await helper.spawn(["/bin/sleep", "30"], {}, str(tmp_path / "log"), str(tmp_path / "no-such" / "pid"))
    pid, _ = await helper.spawn(["/bin/sh", "-c", "exit 7"], {}, str(tmp_path / "log"), str(tmp_path / "pid"))
    assert os.waitstatus_to_exitcode(await asyncio.wait_for(helper.exit_status(pid), 10)) == 7
    assert not helper._early_exits, "the stopped process's exit was not reported"


# ---------------------------------------------------------------------- calls as another user
def identity() -> tuple:
    umask = os.umask(0o077)
    return os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups(), umask


def write_file(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def unix_user():
    """A throwaway Unix account (no home, no login), removed afterwards."""
    # The platform's machines and CI run as root with useradd: without them this fails, it is not skipped.
    assert os.geteuid() == 0 and shutil.which("useradd"), "these tests need root and useradd"
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    uid = next(u for u in range(42000, 43000) if u not in taken)
    name = f"nothing-test-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-u", str(uid), name], check=True,
                   capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


async def test_a_call_as_a_user_runs_with_only_that_identity_and_a_private_umask(helper, unix_user):
    uid, gid = unix_user.pw_uid, unix_user.pw_gid
    assert await helper.call_as(uid, gid, identity) == (uid, uid, gid, gid, [], 0o077)


async def test_a_call_as_the_helpers_own_user_runs_in_the_helper(helper):
    assert await helper.call_as(os.geteuid(), os.getegid(), os.getpid) == helper.pid


async def test_files_unpacked_as_a_user_are_theirs_with_private_modes(helper, unix_user, tmp_path):
    uid, gid = unix_user.pw_uid, unix_user.pw_gid
    let_users_traverse(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, uid, gid)
    data = make_archive({"train.py": "print(1)", "pkg/util.py": "X = 1"})  # 0755 in the archive
    dest = home / "src"
    await helper.call_as(uid, gid, unpack, data, str(dest), SnapshotLimits(10**6))
    entries = [dest, *dest.rglob("*")]
    assert {(e.lstat().st_uid, e.lstat().st_gid) for e in entries} == {(uid, gid)}
    assert {e.relative_to(dest).as_posix(): stat.S_IMODE(e.lstat().st_mode) for e in entries} == {
        ".": 0o700, "train.py": 0o700, "pkg": 0o700, "pkg/util.py": 0o700}


async def test_a_user_writing_into_roots_private_folder_gets_permission_error_here(helper, unix_user, tmp_path):
    let_users_traverse(tmp_path)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(PermissionError):
        await helper.call_as(unix_user.pw_uid, unix_user.pw_gid, write_file, str(private / "planted"), "x")
    assert not (private / "planted").exists()


# ---------------------------------------------------------------------- a run's source as its user
def run_folder(tmp_path, archive: bytes, limits=SnapshotLimits(10**6)) -> RunPaths:
    paths = RunPaths(tmp_path / "runs" / "7")
    create_run_dir(str(paths.root), archive, "train.py", limits)
    return paths


async def test_staging_as_the_runs_user_gives_them_the_source_without_access_to_the_snapshot(
        helper, unix_user, tmp_path):
    uid, gid = unix_user.pw_uid, unix_user.pw_gid
    paths = run_folder(tmp_path, make_archive({"train.py": "print(1)"}))  # tmp_path stays 0700: no way in by path
    assert stat.S_IMODE(paths.snapshot.stat().st_mode) == 0o600 and paths.snapshot.stat().st_uid == 0
    await helper.call(stage_source, str(paths.root), SnapshotLimits(10**6), uid, gid)
    train = paths.source / "train.py"
    assert (paths.source.stat().st_uid, train.stat().st_uid, train.stat().st_gid) == (uid, uid, gid)
    assert stat.S_IMODE(paths.source.stat().st_mode) == 0o700 and stat.S_IMODE(train.stat().st_mode) == 0o700
    assert not paths.snapshot.exists() and not (paths.root / "src.unpacking").exists()


@pytest.mark.parametrize("as_user", [False, True], ids=["as root", "as the user"])
async def test_a_snapshot_refused_at_start_leaves_no_staging_folder_and_keeps_the_snapshot(
        helper, unix_user, tmp_path, as_user):
    paths = run_folder(tmp_path, make_archive({"train.py": "x" * 5000}))
    owner = (unix_user.pw_uid, unix_user.pw_gid) if as_user else ()
    with pytest.raises(SnapshotError, match="unpacks to more than 1000 bytes"):
        await helper.call(stage_source, str(paths.root), SnapshotLimits(1000), *owner)  # the limit was lowered
    assert sorted(p.name for p in paths.root.iterdir()) == ["checkpoint-input", "checkpoints", "model",
                                                             "output.log", "tensorboard"]
    assert paths.snapshot.is_file()


async def test_the_code_of_a_started_run_is_packed_as_its_user_and_never_through_a_link(
        helper, unix_user, tmp_path):
    uid, gid = unix_user.pw_uid, unix_user.pw_gid
    paths = run_folder(tmp_path, make_archive({"train.py": "print(1)", "pkg/m.py": "X = 1"}))
    await helper.call(stage_source, str(paths.root), SnapshotLimits(10**6), uid, gid)
    secret = tmp_path / "secret"
    secret.write_text("root's")
    os.symlink(secret, paths.source / "secret.py")  # what a run could leave behind
    for owner in [(), (uid, gid)]:
        data = await helper.call(stored_code, str(paths.root), *owner)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            assert sorted(tar.getnames()) == ["pkg/m.py", "train.py"]
            assert tar.extractfile("pkg/m.py").read() == b"X = 1"
