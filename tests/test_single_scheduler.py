"""Exactly one scheduler owns a database: a second one takes over (or refuses), and a killed hub leaves one behind."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from nothing.scheduler.lock import LOCK_FILE, LockHeld, SchedulerLock, read_owner
from nothing.scheduler.runenv import RunPaths
from nothing.scheduler.supervise import EXIT_DO_NOT_RESTART, Supervisor

from .conftest import SCHEDULER_TEST_ARGS
from .helpers import wait_for, wait_for_sync
from .hub import Api, Hub, free_port


def start_scheduler(data_dir: Path, port: int, log: Path, *args: str, module: str = "nothing.scheduler"):
    """A scheduler as the hub starts it (``python -m nothing.scheduler``, under its supervisor), with no hub behind."""
    env = dict(os.environ, JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}", JUPYTERHUB_API_TOKEN="not-a-hub-token",
               JUPYTERHUB_API_URL="http://127.0.0.1:9/hub/api", JUPYTERHUB_SERVICE_PREFIX="/services/nothing/",
               JUPYTERHUB_CLIENT_ID="service-nothing", JUPYTERHUB_SERVICE_NAME="nothing")
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, f"--NothingScheduler.data_dir={data_dir}",
                                 *SCHEDULER_TEST_ARGS, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def serving(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/services/nothing/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def lock_is_held(data_dir: Path) -> bool:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def schedulers(tmp_path):
    started: list[subprocess.Popen] = []

    def start(*args: str, port: int, name: str, module: str = "nothing.scheduler", data: str = "data"):
        proc = start_scheduler(tmp_path / data, port, tmp_path / f"{name}.log", *args, module=module)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_a_second_scheduler_stops_the_first_and_takes_over(tmp_path, schedulers):
    port = free_port()
    a = schedulers(port=port, name="a")
    wait_for_sync(lambda: serving(port), message="scheduler A to serve")
    a_child = read_owner(tmp_path / "data" / LOCK_FILE).pid
    assert a_child in children(a.pid)

    b = schedulers(port=port, name="b")
    assert a.wait(30) == 0, "A's supervisor stops with its scheduler, without restarting it"
    assert not alive(a_child)
    wait_for_sync(lambda: serving(port), message="scheduler B to serve")
    owner = read_owner(tmp_path / "data" / LOCK_FILE)
    assert owner.pid in children(b.pid) and owner.supervisor == b.pid
    assert lock_is_held(tmp_path / "data")
    log = (tmp_path / "b.log").read_text()
    assert f"Another scheduler (pid {a_child}, supervisor pid {a.pid}" in log and "Took over" in log
    assert b.poll() is None


@pytest.mark.parametrize("module", ["nothing.scheduler", "nothing.scheduler.app"])
def test_without_takeover_a_second_scheduler_exits_1_and_the_first_keeps_serving(tmp_path, schedulers, module):
    port = free_port()
    schedulers(port=port, name="a")
    wait_for_sync(lambda: serving(port), message="scheduler A to serve")
    before = read_owner(tmp_path / "data" / LOCK_FILE)

    b = schedulers("--NothingScheduler.takeover=False", port=port, name="b", module=module)
    assert b.wait(30) == 1
    refusals = [line for line in (tmp_path / "b.log").read_text().splitlines() if "not starting" in line]
    assert len(refusals) == 1
    assert f"another scheduler (pid {before.pid}" in refusals[0] and "takeover is False" in refusals[0]
    assert "restarting" not in (tmp_path / "b.log").read_text()
    assert serving(port)
    assert read_owner(tmp_path / "data" / LOCK_FILE) == before and alive(before.pid)


def test_an_old_scheduler_that_ignores_sigterm_is_killed_and_taken_over(tmp_path, schedulers):
    """The stuck owner is only signalled because its command line is a scheduler's."""
    data = tmp_path / "data"
    data.mkdir()
    stuck = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, json, os, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fd = os.open({str(data / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({{"pid": os.getpid()}}).encode())
        print("locked", flush=True)
        time.sleep(600)
    """), "nothing.scheduler-stuck"], stdout=subprocess.PIPE, text=True)
    try:
        assert stuck.stdout.readline().strip() == "locked"
        port = free_port()
        started = time.monotonic()
        schedulers("--NothingScheduler.takeover_timeout=1", port=port, name="b")
        wait_for_sync(lambda: serving(port), message="the new scheduler to serve")
        assert stuck.wait(10) == -signal.SIGKILL
        assert time.monotonic() - started < 20
        log = (tmp_path / "b.log").read_text()
        assert "did not stop within 1s of SIGTERM: sending SIGKILL" in log
    finally:
        if stuck.poll() is None:
            stuck.kill()
            stuck.wait()


def test_a_lock_held_by_an_unrelated_process_is_never_signalled(tmp_path):
    """A pid in the lock file that is not a scheduler's (a reused pid, a stray tool) is left alone."""
    data = tmp_path / "data"
    data.mkdir()
    other = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, json, os, time
        fd = os.open({str(data / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({{"pid": os.getpid()}}).encode())
        print("locked", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld, match="still holds"):
            SchedulerLock(data).acquire(takeover=True, timeout=0.3)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.postgres
def test_on_postgresql_a_waiting_scheduler_makes_the_owner_step_down(tmp_path, postgres_url):
    """Two machines: separate data dirs, one database; the advisory lock decides."""
    first = SchedulerLock(tmp_path / "one", postgres_url)
    first.acquire()
    second = SchedulerLock(tmp_path / "two", postgres_url)
    try:
        with pytest.raises(LockHeld, match="holds the database lock"):
            second.acquire(takeover=False)
        assert first.check() is None
        import threading

        taken = threading.Thread(target=second.acquire, kwargs={"takeover": True, "timeout": 20})
        taken.start()
        wait_for_sync(lambda: first.check(), message="the owner to see a newer scheduler waiting")
        first.release()
        taken.join(20)
        assert not taken.is_alive() and second.check() is None
    finally:
        first.release()
        second.release()


@pytest.mark.postgres
def test_on_postgresql_a_scheduler_on_another_data_dir_takes_over_and_the_old_one_stays_stopped(
        tmp_path, postgres_url, schedulers):
    """Two machines' schedulers (two data dirs, one database): the old one steps down, its supervisor gives up."""
    args = (f"--NothingScheduler.db_url={postgres_url}", "--NothingScheduler.lock_check_interval=0.2")
    port_a, port_b = free_port(), free_port()
    a = schedulers(*args, port=port_a, name="a")
    wait_for_sync(lambda: serving(port_a), message="scheduler A to serve")
    b = schedulers(*args, port=port_b, name="b", data="elsewhere")
    assert a.wait(30) == 1, "A stepped down and its supervisor did not restart it"
    wait_for_sync(lambda: serving(port_b), message="scheduler B to serve")
    log = (tmp_path / "a.log").read_text()
    assert "another scheduler is waiting to take over the database lock" in log and "restarting" not in log
    assert b.poll() is None and "Took over the database lock" in (tmp_path / "b.log").read_text()


@pytest.mark.postgres
def test_on_postgresql_an_owner_that_does_not_step_down_loses_the_lock_and_is_told(tmp_path, postgres_url):
    first = SchedulerLock(tmp_path / "one", postgres_url)
    first.acquire()
    second = SchedulerLock(tmp_path / "two", postgres_url)
    try:
        second.acquire(takeover=True, timeout=0.5)  # nobody calls first.check() meanwhile
        assert "took over the database lock" in first.check()
        assert second.check() is None
    finally:
        first.release()
        second.release()


# ---------------------------------------------------------------------- the supervisor
def _starts_then(tmp_path: Path, failures: int, failing_status: int) -> list[str]:
    """A child that records each start, exits ``failing_status`` ``failures`` times, then 0."""
    starts = tmp_path / "starts"
    return [sys.executable, "-c", textwrap.dedent(f"""
        import time
        with open({str(starts)!r}, "a") as f:
            f.write(f"{{time.monotonic()}}\\n")
        raise SystemExit({failing_status} if len(open({str(starts)!r}).readlines()) <= {failures} else 0)
    """)]


async def test_supervisor_restarts_a_crashing_scheduler_at_once_then_backs_off(tmp_path):
    supervisor = Supervisor(_starts_then(tmp_path, 3, 1), initial_delay=0.3, max_delay=0.6)
    assert await asyncio.wait_for(supervisor.run(), 30) == 0
    starts = [float(t) for t in (tmp_path / "starts").read_text().split()]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) == 4 and supervisor.restarts == 3
    assert gaps[0] < 0.3, "the first crash is restarted at once"
    assert 0.3 <= gaps[1] and 0.6 <= gaps[2] < 2, "then 0.3 s, doubling, up to the maximum"


async def test_supervisor_gives_up_with_1_when_the_scheduler_may_not_be_restarted(tmp_path):
    supervisor = Supervisor(_starts_then(tmp_path, 5, EXIT_DO_NOT_RESTART))
    assert await asyncio.wait_for(supervisor.run(), 30) == 1
    assert len((tmp_path / "starts").read_text().split()) == 1


async def test_supervisor_passes_sigterm_on_and_exits_with_its_scheduler(tmp_path):
    ready = tmp_path / "ready"
    child = [sys.executable, "-c", textwrap.dedent(f"""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
        open({str(ready)!r}, "w").close()
        time.sleep(60)
        sys.exit(1)
    """)]
    supervisor = Supervisor(child)
    task = asyncio.ensure_future(supervisor.run())
    await wait_for(ready.exists, timeout=20)
    os.kill(os.getpid(), signal.SIGTERM)  # what the hub sends to the service's pid (the supervisor's loop handles it)
    assert await asyncio.wait_for(task, 20) == 7
    assert supervisor.restarts == 0


# ---------------------------------------------------------------------- the hub alone is killed
HOLD = """
import os, time
print("holding", flush=True)
while not os.path.exists(os.path.join(os.environ["EM_SOURCE_DIR"], "release")):
    time.sleep(0.05)
print("released", flush=True)
"""


@pytest.mark.hub
def test_a_sigkilled_hub_restarted_leaves_one_scheduler_and_runs_keep_going(hub_root):
    first = Hub(hub_root, SCHEDULER_TEST_ARGS)
    first.start()
    second = None
    try:
        first.create_user("keeper")
        api = Api(first, first.token_for("keeper"))
        run = api.submit({"train.py": HOLD}, entry_point="train.py", gpus=1).json()
        api.wait_state(run["id"], "RUNNING")
        run_dir = first.root / "var" / "scheduler" / "runs" / str(run["id"])
        pid_file = RunPaths(run_dir).pid_file
        run_pid = int(wait_for_sync(lambda: pid_file.exists() and pid_file.read_text().split()[0]))
        old_scheduler, old_supervisor = first.scheduler_pid(), first.supervisor_pid()

        first.proc.send_signal(signal.SIGKILL)  # the hub process only; its services live in their own sessions
        first.proc.wait()
        first.log_file.close()
        assert alive(old_scheduler) and alive(old_supervisor)

        second = Hub(first.root, SCHEDULER_TEST_ARGS, public_port=first.public_port, hub_port=first.hub_port,
                     proxy_api_port=first.proxy_api_port, service_port=first.service_port,
                     admin_token=first.admin_token)
        second.start()
        wait_for_sync(lambda: not alive(old_scheduler) and not alive(old_supervisor), timeout=30,
                      message="the old scheduler and its supervisor to stop")
        api = Api(second, second.token_for("keeper"))
        wait_for_sync(lambda: _answers(api, run["id"]), timeout=30, message="the API to answer through the new hub")
        assert second.scheduler_pid() not in (old_scheduler,)  # exactly one scheduler, the new one
        assert second.supervisor_pid() != old_supervisor
        assert api.run(run["id"])["state"] == "RUNNING" and alive(run_pid)

        (run_dir / "src" / "release").touch()
        assert api.wait_state(run["id"], "COMPLETE", timeout=30)["exit_code"] == 0
        assert "released" in api("GET", f"/runs/{run['id']}/logs").text
        log = second.log()  # both hubs' (and their services') output
        assert "Service nothing exited" not in log, "no crash loop of the service"
        assert "Address already in use" not in log
        assert "Took over" in log
    finally:
        for hub in (second, first):
            if hub is not None and hub.proc is not None:
                if not hub.log_file.closed:
                    hub.stop()
        _stop_leftovers(first)


def _answers(api: Api, run_id: int) -> bool:
    try:
        return api("GET", f"/runs/{run_id}", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _stop_leftovers(hub: Hub) -> None:
    """Whatever of the killed hub's session outlived it (its proxy, a scheduler) goes with the test."""
    for pattern in (f"--NothingScheduler.data_dir={hub.root}/var", str(hub.root)):
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        for pid in map(int, out):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_misconfigured_scheduler_is_not_restarted_in_a_loop(tmp_path, schedulers):
    proc = schedulers("--NothingScheduler.takeover_timeout=soon", port=free_port(), name="bad")
    assert proc.wait(30) == 1
    log = (tmp_path / "bad.log").read_text()
    assert "Bad config" in log and "takeover_timeout" in log and "restarting" not in log


def test_lock_file_names_its_owner_as_one_json_line(tmp_path):
    lock = SchedulerLock(tmp_path, supervisor=4242)
    lock.acquire()
    try:
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["supervisor"] == 4242
        assert lock_is_held(tmp_path)
    finally:
        lock.release()
    assert not lock_is_held(tmp_path)
