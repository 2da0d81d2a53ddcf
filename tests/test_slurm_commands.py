"""The Slurm command layer: builders compared to literal argument lists, parsers on outputs recorded
from a real Slurm 22.05 (tests/data/slurm/, rewritten by ``python -m tests.data.slurm.record``),
the async runner on plain processes, and, marked ``slurm``, the same calls against a live cluster.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from nothing.scheduler.executors.slurm_commands import (
    CommandResult, SlurmCommandError, SlurmJobRequest, SlurmJobStatus, SlurmNode, SlurmOutputError,
    env_file_content, expand_hostlist, node_state, parse_gres, parse_nodes, parse_sbatch, parse_scontrol_job,
    parse_squeue, parse_squeue_lines, run_command, sbatch_argv, scancel_argv, scontrol_job_argv, scontrol_nodes_argv,
    scontrol_release_argv,
    scontrol_update_node_argv, sinfo_argv, slurm_command_env, squeue_argv, squeue_forgot_all, squeue_poll_argv,
    write_env_file,
)

DATA = Path(__file__).parent / "data" / "slurm"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def one_node_request(**changes) -> SlurmJobRequest:
    fields = dict(name="run-7", script=Path("/runs/7/job.sh"), workdir=Path("/runs/7"), output=Path("/runs/7/log"),
                  env_file=Path("/runs/7/env"), nodelist=("node2",))
    fields.update(changes)
    return SlurmJobRequest(**fields)


# -- sbatch -----------------------------------------------------------------------------------------


def test_sbatch_argv_places_a_one_node_job_on_the_chosen_node_only():
    assert sbatch_argv(one_node_request()) == [
        "sbatch", "--parsable", "--job-name=run-7", "--nodelist=node2", "--nodes=1", "--ntasks-per-node=1",
        "--cpus-per-task=1", "--output=/runs/7/log", "--error=/runs/7/log", "--chdir=/runs/7",
        "--export-file=/runs/7/env", "--kill-on-invalid-dep=yes", "--no-requeue", "/runs/7/job.sh",
    ]


def test_sbatch_argv_asks_for_gpus_cpus_memory_and_time_per_node_of_a_two_node_job():
    request = one_node_request(nodelist=("node1", "node3"), gpus_per_node=4, ntasks_per_node=4, cpus_per_task=8,
                               memory_per_node_mb=65536, time_limit_seconds=3601,
                               environment={"PATH": "/usr/bin:/bin"}, extra=("--partition=gpu", "--qos=high"))
    assert sbatch_argv(request) == [
        "sbatch", "--parsable", "--job-name=run-7", "--nodelist=node1,node3", "--nodes=2", "--ntasks-per-node=4",
        "--cpus-per-task=8", "--gres=gpu:4", "--mem=65536M", "--time=61", "--output=/runs/7/log",
        "--error=/runs/7/log", "--chdir=/runs/7", "--export-file=/runs/7/env", "--kill-on-invalid-dep=yes",
        "--no-requeue", "--partition=gpu", "--qos=high", "/runs/7/job.sh",
    ]


def test_a_job_submitted_ahead_waits_for_the_jobs_on_its_nodes_however_they_end_and_can_be_released():
    argv = sbatch_argv(one_node_request(after=("41", "40")))
    assert "--dependency=afterany:41:40" in argv and argv.index("--dependency=afterany:41:40") < argv.index(
        "--kill-on-invalid-dep=yes")
    with pytest.raises(ValueError, match="not Slurm job ids"):
        sbatch_argv(one_node_request(after=("41;rm",)))
    assert scontrol_release_argv("42") == ["scontrol", "update", "JobId=42", "Dependency="]
    with pytest.raises(ValueError):
        scontrol_release_argv("42 43")


def test_sbatch_argv_keeps_a_percent_in_the_output_path_literal():
    argv = sbatch_argv(one_node_request(output=Path("/runs/100%/log")))
    assert "--output=/runs/100%%/log" in argv and "--error=/runs/100%%/log" in argv


@pytest.mark.parametrize("changes, message", [
    ({"nodelist": ()}, "at least one node"),
    ({"nodelist": ("node1", "node1")}, "twice"),
    ({"nodelist": ("node1,node2",)}, "not a Slurm node name"),
    ({"time_limit_seconds": 0}, "no limit"),
    ({"ntasks_per_node": 0}, "ntasks_per_node"),
    ({"name": "a\nb"}, "control characters"),
    ({"output": Path("/runs/a\\b/log")}, "backslash"),
])
def test_sbatch_argv_refuses_requests_slurm_would_misread(changes, message):
    with pytest.raises(ValueError, match=message):
        sbatch_argv(one_node_request(**changes))


def test_env_file_content_is_nul_separated_and_keeps_any_value():
    environment = {"PATH": "/usr/bin:/bin", "ODD": "a,b c\nd $(rm -rf /) 'q' \"", "EMPTY": ""}
    assert env_file_content(environment) == b"PATH=/usr/bin:/bin\0ODD=a,b c\nd $(rm -rf /) 'q' \"\0EMPTY=\0"


@pytest.mark.parametrize("environment", [{"1X": "v"}, {"A-B": "v"}, {"A": "nul\0inside"}])
def test_env_file_content_refuses_what_an_environment_cannot_hold(environment):
    with pytest.raises(ValueError):
        env_file_content(environment)


def test_write_env_file_leaves_it_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "env"
    path.write_text("old")
    path.chmod(0o644)
    write_env_file(path, {"TOKEN": "secret"})
    assert path.read_bytes() == b"TOKEN=secret\0"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_parse_sbatch_reads_the_job_id_alone_or_with_its_cluster():
    assert parse_sbatch(recorded("sbatch-parsable.txt")) == "1"
    assert parse_sbatch("4242;cluster-a\n") == "4242"


def test_parse_sbatch_refuses_output_without_a_job_id():
    with pytest.raises(SlurmOutputError):
        parse_sbatch("sbatch: error: Batch job submission failed\n")


def test_slurm_command_env_drops_variables_that_change_slurms_options():
    base = {"PATH": "/usr/bin", "SBATCH_TIMELIMIT": "5", "SLURM_JOB_ID": "3", "SQUEUE_FORMAT": "%i",
            "SLURM_CONF": "/old.conf", "HOME": "/root"}
    assert slurm_command_env(base) == {"PATH": "/usr/bin", "SLURM_CONF": "/old.conf", "HOME": "/root"}
    assert slurm_command_env(base, "/etc/slurm/slurm.conf")["SLURM_CONF"] == "/etc/slurm/slurm.conf"


# -- scancel, squeue, scontrol, sinfo ---------------------------------------------------------------


def test_scancel_argv_ends_the_job_or_sends_one_signal_to_all_of_it():
    assert scancel_argv("12") == ["scancel", "12"]
    assert scancel_argv("12", "TERM") == ["scancel", "--signal=TERM", "--full", "12"]
    assert scancel_argv("12", 10) == ["scancel", "--signal=USR1", "--full", "12"]
    assert scancel_argv("12", "sigint", full=False) == ["scancel", "--signal=INT", "12"]


@pytest.mark.parametrize("job_id, sig", [("12; rm", None), ("12", "NOSUCH")])
def test_scancel_argv_refuses_what_is_not_a_job_or_a_signal(job_id, sig):
    with pytest.raises(ValueError):
        scancel_argv(job_id, sig)


def test_status_commands_ask_for_every_state_in_a_machine_readable_form():
    assert squeue_argv(["3", "14"]) == ["squeue", "--json", "--states=all", "--jobs=3,14"]
    assert scontrol_job_argv("3") == ["scontrol", "show", "job", "--oneliner", "3"]
    assert sinfo_argv() == ["sinfo", "--json"]
    assert scontrol_nodes_argv() == ["scontrol", "show", "nodes", "--oneliner"]


def test_node_update_commands_carry_the_reason_slurm_requires():
    assert scontrol_update_node_argv("node3", "DRAIN", "disk full") == [
        "scontrol", "update", "NodeName=node3", "State=DRAIN", "Reason=disk full"]
    assert scontrol_update_node_argv("node3", "RESUME") == ["scontrol", "update", "NodeName=node3", "State=RESUME"]


RECORDED_JOBS = {
    "1": SlurmJobStatus("1", "TIMEOUT", "TimeLimit", ("node3",), None, 15),
    "2": SlurmJobStatus("2", "COMPLETED", "", ("node1",), 0, None),
    "3": SlurmJobStatus("3", "FAILED", "NonZeroExitCode", ("node1",), 3, None),
    "4": SlurmJobStatus("4", "CANCELLED", "", ("node1",), None, 15),
    "5": SlurmJobStatus("5", "FAILED", "JobLaunchFailure", ("node1",), None, 15),  # scancel --signal=TERM
    "6": SlurmJobStatus("6", "RUNNING", "", ("node2",), None, None),
    "7": SlurmJobStatus("7", "PENDING", "Resources", (), None, None),
    "8": SlurmJobStatus("8", "RUNNING", "", ("node1", "node3"), None, None),
}


def test_parse_squeue_reads_every_state_of_the_recorded_jobs():
    assert parse_squeue(recorded("squeue.json")) == RECORDED_JOBS


def test_parse_squeue_keeps_only_the_asked_jobs():
    # 22.05 prints every job whatever --jobs says.
    assert parse_squeue(recorded("squeue.json"), job_ids=["6", "99"]) == {"6": RECORDED_JOBS["6"]}


def test_squeue_poll_argv_asks_only_for_the_watched_jobs_in_a_short_format():
    assert squeue_poll_argv(["3", "14"]) == ["squeue", "--noheader", "--states=all", "--jobs=3,14",
                                             "--format=%i|%T|%N|%r"]
    with pytest.raises(ValueError):
        squeue_poll_argv([])  # would list every job
    with pytest.raises(ValueError):
        squeue_poll_argv(["3;14"])


# squeue_poll_argv's output from Slurm 22.05 (the reason is last: it may hold commas and spaces).
POLLED = """\
2|COMPLETED|node1|None
3|FAILED|node1|NonZeroExitCode
6|RUNNING|node2|None
7|PENDING||Resources
8|RUNNING|node[1,3]|None
9|PENDING||ReqNodeNotAvail, UnavailableNodes:node3
"""


def test_parse_squeue_lines_reads_states_nodes_and_reasons_and_knows_a_completed_job_exited_0():
    assert parse_squeue_lines(POLLED) == {
        "2": RECORDED_JOBS["2"], "3": SlurmJobStatus("3", "FAILED", "NonZeroExitCode", ("node1",)),
        "6": RECORDED_JOBS["6"], "7": RECORDED_JOBS["7"], "8": RECORDED_JOBS["8"],
        "9": SlurmJobStatus("9", "PENDING", "ReqNodeNotAvail, UnavailableNodes:node3")}
    # Only a job that ended otherwise than COMPLETED needs scontrol for its exit status.
    assert [j for j, s in parse_squeue_lines(POLLED).items() if s.needs_details] == ["3"]
    assert parse_squeue_lines(POLLED, ["6", "99"]) == {"6": RECORDED_JOBS["6"]}


def test_parse_squeue_lines_refuses_what_is_not_the_short_format():
    with pytest.raises(SlurmOutputError):
        parse_squeue_lines(recorded("squeue.json"))
    assert squeue_forgot_all("slurm_load_jobs error: Invalid job id specified\n")
    assert not squeue_forgot_all("squeue: error: Unable to contact slurm controller")


def test_parse_squeue_refuses_what_is_not_squeues_json():
    with pytest.raises(SlurmOutputError):
        parse_squeue("squeue: error: Invalid job id specified\n")


@pytest.mark.parametrize("name, job_id", [
    ("timeout", "1"), ("completed", "2"), ("failed", "3"), ("cancelled", "4"), ("signalled", "5"),
    ("running", "6"), ("pending", "7"), ("two-nodes", "8"),
])
def test_parse_scontrol_job_agrees_with_squeue(name, job_id):
    assert parse_scontrol_job(recorded(f"scontrol-job-{name}.txt")) == RECORDED_JOBS[job_id]


def test_parse_scontrol_job_reads_the_reason_of_a_job_waiting_for_a_drained_node():
    assert parse_scontrol_job(recorded("scontrol-job-pending-drained.txt")) == SlurmJobStatus(
        "9", "PENDING", "ReqNodeNotAvail,_UnavailableNodes:node3")


def test_parse_scontrol_job_keeps_spaces_in_values_and_ignores_a_job_name_that_looks_like_fields():
    line = recorded("scontrol-job-failed.txt").replace("JobName=failed", "JobName=my run JobState=COMPLETED x=1")
    assert parse_scontrol_job(line) == RECORDED_JOBS["3"]


def test_parse_scontrol_job_refuses_output_without_a_job():
    with pytest.raises(SlurmOutputError):
        parse_scontrol_job("slurm_load_jobs error: Invalid job id specified\n")


RECORDED_NODES = [
    SlurmNode("node1", "down", 4, "testgpu", 4, 4096, "Not responding", "DOWN+NOT_RESPONDING", "127.0.0.1"),
    SlurmNode("node2", "drained", 4, "testgpu", 4, 4096, "draining for a test", "MIXED+DRAIN", "127.0.0.1"),
    SlurmNode("node3", "drained", 4, "testgpu", 4, 4096, "test", "IDLE+DRAIN", "127.0.0.1"),
    SlurmNode("node4", "up", 4, "testgpu", 4, 4096, "", "IDLE", "127.0.0.1"),
]


def test_parse_nodes_reads_down_draining_drained_and_idle_nodes_from_sinfo_json():
    assert parse_nodes(recorded("sinfo.json")) == RECORDED_NODES


def test_parse_nodes_reads_the_same_from_scontrol_one_liners():
    assert parse_nodes(recorded("scontrol-nodes.txt")) == RECORDED_NODES


@pytest.mark.parametrize("words, expected", [
    (["IDLE"], "up"), (["MIXED"], "up"), (["ALLOCATED"], "up"), (["ALLOCATED", "COMPLETING"], "up"),
    (["IDLE", "DRAIN"], "drained"), (["MIXED", "DRAIN"], "drained"), (["DRAINED"], "drained"),
    (["DRAINING"], "drained"), (["DOWN"], "down"), (["DOWN*"], "down"), (["IDLE*"], "down"),
    (["IDLE", "DRAIN", "NOT_RESPONDING"], "down"), (["IDLE", "FAIL"], "down"), (["UNKNOWN"], "down"),
    (["idle", "MAINT"], "up"), (["drng"], "drained"), (["idle~"], "down"),
])
def test_node_state_maps_slurms_words_to_up_drained_or_down(words, expected):
    assert node_state(words) == expected


@pytest.mark.parametrize("gres, expected", [
    ("gpu:a100:4(S:0-1)", (4, "a100")), ("gpu:2", (2, "")), ("gpu:a100:2,gpu:v100:1,nic:1", (3, "a100,v100")),
    ("(null)", (0, "")), ("mps:100", (0, "")),
])
def test_parse_gres_counts_gpus_and_names_their_model(gres, expected):
    assert parse_gres(gres) == expected


def test_expand_hostlist_expands_ranges_lists_and_padding_in_order():
    assert expand_hostlist("node[1-3,7],gpu-a[08-10],login") == [
        "node1", "node2", "node3", "node7", "gpu-a08", "gpu-a09", "gpu-a10", "login"]
    assert expand_hostlist("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert expand_hostlist("") == []


# -- run_command ------------------------------------------------------------------------------------


async def test_run_command_returns_the_output_of_a_command_that_succeeds():
    assert await run_command(["sh", "-c", "echo out; echo err >&2"]) == CommandResult(0, "out\n", "err\n")


async def test_run_command_raises_with_stderr_when_the_command_fails():
    with pytest.raises(SlurmCommandError, match="exited with code 3: Invalid job id specified") as failure:
        await run_command(["sh", "-c", "echo 'Invalid job id specified' >&2; exit 3"])
    assert failure.value.returncode == 3


async def test_run_command_returns_a_failure_when_not_checking():
    result = await run_command(["sh", "-c", "exit 1"], check=False)
    assert result.returncode == 1


async def test_run_command_raises_when_the_command_does_not_exist():
    with pytest.raises(SlurmCommandError, match="could not start"):
        await run_command(["/nonexistent/sbatch"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_file(path: Path, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.02)
    return path.read_text().strip()


async def test_run_command_kills_a_command_that_runs_past_its_timeout(tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(SlurmCommandError, match="did not answer within 0.3 s"):
        await run_command(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=0.3)
    assert not alive(int(pid_file.read_text()))


async def test_run_command_kills_its_command_when_cancelled(tmp_path):
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(run_command(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"]))
    pid = int(await wait_for_file(pid_file))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not alive(pid)


async def test_run_command_lets_the_event_loop_run_while_the_command_runs():
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await run_command(["sleep", "0.5"])
    finally:
        ticker.cancel()
    assert ticks >= 20


# -- against a live Slurm ---------------------------------------------------------------------------

PATH_ONLY = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


async def submit(slurm, folder: Path, body: str, nodelist: tuple[str, ...], environment=None, **kw) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "job.sh"
    script.write_text(f"#!/bin/bash\n{body}\n")
    request = SlurmJobRequest(name=folder.name, script=script, workdir=folder, output=folder / "log",
                              env_file=folder / "env", nodelist=nodelist,
                              environment={**PATH_ONLY, **(environment or {})}, **kw)
    await asyncio.to_thread(write_env_file, request.env_file, request.environment)
    result = await run_command(sbatch_argv(request), env=slurm.env)
    return parse_sbatch(result.stdout)


async def status(slurm, job_id: str) -> SlurmJobStatus:
    return parse_squeue((await run_command(squeue_argv([job_id]), env=slurm.env)).stdout, [job_id])[job_id]


async def wait_status(slurm, job_id: str, until, timeout: float = 20) -> SlurmJobStatus:
    deadline = time.monotonic() + timeout
    while True:
        current = await status(slurm, job_id)
        if until(current):
            return current
        assert time.monotonic() < deadline, f"job {job_id} stayed {current}"
        await asyncio.sleep(0.2)


def running(s: SlurmJobStatus) -> bool:
    return s.state == "RUNNING"


def finished(s: SlurmJobStatus) -> bool:
    return s.finished


async def cancel(slurm, *job_ids: str) -> None:
    for job_id in job_ids:
        await run_command(scancel_argv(job_id), env=slurm.env, check=False)


@pytest.mark.slurm
async def test_job_runs_on_the_chosen_node_with_exactly_our_environment(slurm, tmp_path):
    odd = "a,b c\nd $(echo no) 'q'"
    job = await submit(slurm, tmp_path / "placed", 'echo "node=$SLURMD_NODENAME"; env > env.seen',
                       ("node2",), environment={"ODD": odd})
    assert await wait_status(slurm, job, finished) == SlurmJobStatus(job, "COMPLETED", "", ("node2",), 0, None)
    assert (tmp_path / "placed" / "log").read_text() == "node=node2\n"
    seen = (tmp_path / "placed" / "env.seen").read_text()
    assert f"ODD={odd}\n" in seen
    assert "SBATCH_" not in seen and "PYTEST_CURRENT_TEST" not in seen  # nothing of the submitter's leaks


@pytest.mark.slurm
async def test_the_short_poll_lists_only_the_asked_jobs_and_scontrol_has_the_exit_status(slurm, tmp_path):
    done = await submit(slurm, tmp_path / "done", "true", ("node1",))
    failed = await submit(slurm, tmp_path / "failed", "exit 4", ("node2",))
    await wait_status(slurm, done, finished)
    await wait_status(slurm, failed, finished)
    polled = parse_squeue_lines((await run_command(squeue_poll_argv([failed, "999999"]), env=slurm.env)).stdout)
    assert polled == {failed: SlurmJobStatus(failed, "FAILED", "NonZeroExitCode", ("node2",))}
    shown = parse_scontrol_job((await run_command(scontrol_job_argv(failed), env=slurm.env)).stdout)
    assert shown == SlurmJobStatus(failed, "FAILED", "NonZeroExitCode", ("node2",), 4, None)
    both = parse_squeue_lines((await run_command(squeue_poll_argv([done, failed]), env=slurm.env)).stdout)
    assert both[done] == SlurmJobStatus(done, "COMPLETED", "", ("node1",), 0, None) and len(both) == 2
    forgotten = await run_command(squeue_poll_argv(["999999"]), env=slurm.env, check=False)
    assert forgotten.returncode != 0 and squeue_forgot_all(forgotten.stderr)


@pytest.mark.slurm
async def test_two_node_job_runs_one_task_on_each_chosen_node(slurm, tmp_path):
    job = await submit(slurm, tmp_path / "two", "srun bash -c 'echo \"$SLURM_NODEID $SLURMD_NODENAME\"'",
                       ("node1", "node3"), gpus_per_node=2)
    assert await wait_status(slurm, job, finished) == SlurmJobStatus(job, "COMPLETED", "", ("node1", "node3"), 0,
                                                                     None)
    tasks = sorted((tmp_path / "two" / "log").read_text().splitlines())
    assert tasks == ["0 node1", "1 node3"]


@pytest.mark.slurm
async def test_job_waits_with_reason_resources_while_its_node_has_no_free_gpu(slurm, tmp_path):
    holder = await submit(slurm, tmp_path / "holder", "sleep 60", ("node1",), gpus_per_node=4)
    waiter = None
    try:
        await wait_status(slurm, holder, running)
        waiter = await submit(slurm, tmp_path / "waiter", "true", ("node1",), gpus_per_node=1)
        assert await wait_status(slurm, waiter, lambda s: s.reason == "Resources") == SlurmJobStatus(
            waiter, "PENDING", "Resources")
    finally:
        await cancel(slurm, *(j for j in (waiter, holder) if j))


@pytest.mark.slurm
async def test_scancel_ends_every_process_of_a_running_job(slurm, tmp_path):
    job = await submit(slurm, tmp_path / "victim", "sleep 300 & echo $! > child.pid; wait", ("node2",))
    pid = int(await wait_for_file(tmp_path / "victim" / "child.pid", timeout=20))
    assert alive(pid)
    await run_command(scancel_argv(job), env=slurm.env)
    ended = await wait_status(slurm, job, finished)
    assert (ended.state, ended.signal) == ("CANCELLED", 15)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, "the job's sleep outlived scancel"
        await asyncio.sleep(0.1)


@pytest.mark.slurm
async def test_scancel_with_a_signal_reaches_the_batch_script_itself(slurm, tmp_path):
    body = "trap 'echo got TERM; exit 0' TERM\necho ready > ready\nsleep 300 & wait"
    job = await submit(slurm, tmp_path / "graceful", body, ("node3",))
    await wait_for_file(tmp_path / "graceful" / "ready", timeout=20)
    await run_command(scancel_argv(job, "TERM"), env=slurm.env)
    assert await wait_status(slurm, job, finished) == SlurmJobStatus(job, "COMPLETED", "", ("node3",), 0, None)
    assert "got TERM" in (tmp_path / "graceful" / "log").read_text()


@pytest.mark.slurm
@pytest.mark.timeout(200)
async def test_time_limit_ends_a_job_as_timeout(slurm, tmp_path):
    # Slurm checks time limits every 30 s: a one-minute limit ends the job 60-90 s after it starts.
    job = await submit(slurm, tmp_path / "overtime", "sleep 300", ("node1",), time_limit_seconds=60)
    started = await wait_status(slurm, job, running)
    assert started.state == "RUNNING"
    begun = time.monotonic()
    ended = await wait_status(slurm, job, finished, timeout=150)
    assert ended == SlurmJobStatus(job, "TIMEOUT", "TimeLimit", ("node1",), None, 15)
    assert time.monotonic() - begun >= 55


@pytest.mark.slurm
async def test_drained_node_reads_as_drained_until_resumed(slurm):
    async def node3() -> SlurmNode:
        nodes = parse_nodes((await run_command(sinfo_argv(), env=slurm.env)).stdout)
        return next(n for n in nodes if n.name == "node3")

    await run_command(scontrol_update_node_argv("node3", "DRAIN", "test"), env=slurm.env)
    try:
        assert await node3() == SlurmNode("node3", "drained", 4, "testgpu", 4, 4096, "test", "IDLE+DRAIN", "127.0.0.1")
    finally:
        await run_command(scontrol_update_node_argv("node3", "RESUME"), env=slurm.env)
    # Slurm reads a resumed node as not responding (so down) until its next ping answers, within a second here.
    deadline = time.monotonic() + 10
    while (node := await node3()).state != "up":
        assert node.state == "down" and time.monotonic() < deadline, node
        await asyncio.sleep(0.1)
    assert node == SlurmNode("node3", "up", 4, "testgpu", 4, 4096, "", "IDLE", "127.0.0.1")


# -- the rank launcher's plan ---------------------------------------------------------------------------


def test_the_rank_launcher_reads_back_exactly_the_task_the_executor_wrote(tmp_path):
    import importlib.util

    from nothing.scheduler.executors.slurm import RANK_SCRIPT, task_file_content

    spec = importlib.util.spec_from_file_location("slurmrank", RANK_SCRIPT)
    slurmrank = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(slurmrank)
    odd = 'a=b\nc "q" $(no) \u00e9 \udcff'
    entry = {"task": 3, "node": "gpu-2", "node_rank": 1, "local_rank": 1,
             "env": {"RANK": "3", "TF_CONFIG": '{"task": {"index": 3}}', "ODD": odd}, "argv": ["/py", "-u", odd]}
    path = tmp_path / "task-3.plan"
    path.write_bytes(task_file_content(entry))
    header, variables, argv = slurmrank.read_task(str(path))
    assert header == [b"gpu-2", b"1", b"1", b"rank", b"3", b"3"]
    assert {k.decode(): v.decode("utf-8", "surrogateescape") for k, v in variables.items()} == entry["env"]
    assert [a.decode("utf-8", "surrogateescape") for a in argv] == entry["argv"]
    launcher = dict(entry, env={"NODE_RANK": "1"})  # a torchrun launcher is named by its node
    assert task_file_content(launcher).split(b"\0")[3:5] == [b"node", b"1"]
    with pytest.raises(ValueError):
        task_file_content(dict(entry, argv=[]))
