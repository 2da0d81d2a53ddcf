"""The helper process: runs blocking work for the scheduler, starts runs and reports how they exited."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from nothing.scheduler.helper_process import HelperGone, HelperProcess, process_start_time
from nothing.scheduler.snapshot import SnapshotError


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
