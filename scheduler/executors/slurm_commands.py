"""Slurm's command line as pure argument builders and output parsers, plus one async runner.

The Slurm executor decides nothing here: our policy has already chosen who runs, when and on
which nodes; this module only turns that decision into ``sbatch``/``scancel``/``squeue``/``sinfo``
argument lists and turns Slurm's answers back into typed values.  Everything but
:func:`run_command` (and the tiny :func:`write_env_file`) is a pure function, tested on outputs
recorded from a real Slurm 22.05 (``tests/data/slurm/``).

What Slurm 22.05 (Debian's build) offers, measured:

- ``squeue --json`` and ``sinfo --json`` work (serializer/json, OpenAPI v0.0.38).  In 22.05 both
  ignore every filter (``--jobs``, ``--states``): ``squeue --json`` lists every job the controller
  still knows, finished ones included (until ``MinJobAge``, 300 s by default), so
  :func:`parse_squeue` filters by job id itself.  That is several MB per call during a drain of a
  thousand jobs: the executor polls with :func:`squeue_poll_argv` instead (``--format``, whose
  ``--jobs`` 22.05 honours) and keeps ``--json`` for finding a job by its name.
- ``scontrol --json`` does not exist before 23.02; ``scontrol show job -o ID`` (one line of
  ``Key=Value``) is the fallback, with the same lifetime as ``squeue``.
- Without accounting (no slurmdbd) ``sacct`` only answers "Slurm accounting storage is disabled"
  (exit 1): a job that has left the controller's memory has no status at all.  The executor must
  therefore poll more often than ``MinJobAge`` and record the end itself.

The job's environment travels in an ``--export-file`` (NUL-separated ``NAME=value``): with it
sbatch exports exactly those variables (plus Slurm's own ``SLURM_*``), not its own environment, and
any value (commas, newlines, quotes, ``$(...)``) arrives unchanged, which ``--export=A=1,B=2``
cannot promise and a sourced shell file only promises with perfect quoting.  sbatch reads the file
at submission, so it need not reach the compute nodes and can be removed once sbatch returns.  It
is written 0600: it holds the run's tokens.  ``--export=NONE`` is not used: in 22.05 it makes
slurmd load the user's login environment (``su - user``), which is slow and not ours to choose.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal as signals
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "CommandResult", "SlurmCommandError", "SlurmJobRequest", "SlurmJobStatus", "SlurmNode", "SlurmOutputError",
    "FINISHED_STATES", "env_file_content", "expand_hostlist", "node_state", "parse_gres", "parse_nodes", "parse_sbatch",
    "parse_scontrol_job", "parse_squeue", "run_command", "sbatch_argv", "scancel_argv", "scontrol_release_argv",
    "hold_sbatch_argv", "scontrol_job_argv", "scontrol_job_details_argv", "parse_gpu_indices", "scontrol_nodes_argv", "scontrol_update_node_argv", "sinfo_argv", "srun_argv",
    "slurm_command_env", "squeue_argv", "squeue_forgot_all", "squeue_poll_argv", "parse_squeue_lines",
    "write_env_file",
]

# Job states after which a job never runs again (with --no-requeue); only these carry an exit status.
FINISHED_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "TIMEOUT",
})

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
_JOB_ID = re.compile(r"[0-9]+\Z")


class SlurmOutputError(ValueError):
    """A Slurm command printed something this module cannot read (a different Slurm version?)."""


class SlurmCommandError(RuntimeError):
    """A Slurm command failed, could not start, or ran past its timeout; the message carries Slurm's stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str, reason: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip() or "no error output"
        what = reason or f"exited with code {returncode}"
        super().__init__(f"{self.argv[0] if self.argv else '?'} {what}: {detail}")


# -- submitting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmJobRequest:
    """One batch job, placed exactly on the nodes our policy chose.

    ``nodelist`` names every node of the job (``--nodelist`` plus ``--nodes=len(nodelist)``, so Slurm
    may not add or swap nodes).  ``output`` receives the batch script's stdout and stderr.
    ``env_file`` is where the caller writes :func:`env_file_content` (0600, see :func:`write_env_file`)
    before running sbatch.  ``memory_per_node_mb=0`` passes no ``--mem`` (the cluster's default
    applies; note ``--mem=0`` would mean "all of the node's memory").  ``time_limit_seconds=None``
    passes no ``--time`` (the partition's default applies); Slurm counts in minutes, rounded up.
    ``extra`` comes from configuration and goes last, before the script, so it can override.
    """

    name: str
    script: Path
    workdir: Path
    output: Path
    env_file: Path
    nodelist: tuple[str, ...]
    gpus_per_node: int = 0
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    memory_per_node_mb: int = 0
    time_limit_seconds: int | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    extra: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # start only once these jobs have ended, however they end (submitted ahead)

    @property
    def nodes(self) -> int:
        return len(self.nodelist)


def _slurm_filename(path: Path) -> str:
    """``path`` for --output/--error: Slurm expands ``%j`` and friends there, ``%%`` is a literal ``%``."""
    text = str(path)
    if "\\" in text:  # a backslash switches off Slurm's expansion and is itself dropped
        raise ValueError(f"Slurm cannot write to a path containing a backslash: {text!r}")
    return text.replace("%", "%%")


def _validate(request: SlurmJobRequest) -> None:
    if not request.name or any(ord(c) < 32 for c in request.name):
        raise ValueError(f"job name must be non-empty and without control characters: {request.name!r}")
    if not request.nodelist:
        raise ValueError("a Slurm job needs at least one node in nodelist")
    if len(set(request.nodelist)) != len(request.nodelist):
        raise ValueError(f"nodelist names a node twice: {request.nodelist}")
    for node in request.nodelist:
        if not _NODE_NAME.match(node):
            raise ValueError(f"not a Slurm node name: {node!r}")
    for label, value, least in (("gpus_per_node", request.gpus_per_node, 0),
                                ("ntasks_per_node", request.ntasks_per_node, 1),
                                ("cpus_per_task", request.cpus_per_task, 1),
                                ("memory_per_node_mb", request.memory_per_node_mb, 0)):
        if value < least:
            raise ValueError(f"{label} must be at least {least}, not {value}")
    if request.time_limit_seconds is not None and request.time_limit_seconds <= 0:
        raise ValueError(f"time_limit_seconds must be positive or None, not {request.time_limit_seconds}"
                         " (Slurm reads --time=0 as no limit)")


def sbatch_argv(request: SlurmJobRequest, sbatch: str = "sbatch") -> list[str]:
    """The sbatch command that submits ``request``; run it with :func:`slurm_command_env`'s environment.

    Example: ``sbatch --parsable --job-name=run-7 --nodelist=node2 --nodes=1 --ntasks-per-node=1
    --cpus-per-task=8 --gres=gpu:2 --mem=65536M --time=90 --output=/runs/7/log --error=/runs/7/log
    --chdir=/runs/7 --export-file=/runs/7/env --kill-on-invalid-dep=yes --no-requeue /runs/7/job.sh``
    """
    _validate(request)
    argv = [sbatch, "--parsable", f"--job-name={request.name}", f"--nodelist={','.join(request.nodelist)}",
            f"--nodes={request.nodes}", f"--ntasks-per-node={request.ntasks_per_node}",
            f"--cpus-per-task={request.cpus_per_task}"]
    if request.gpus_per_node:
        argv.append(f"--gres=gpu:{request.gpus_per_node}")
    if request.memory_per_node_mb:
        argv.append(f"--mem={request.memory_per_node_mb}M")
    if request.time_limit_seconds is not None:
        argv.append(f"--time={math.ceil(request.time_limit_seconds / 60)}")
    if request.after:
        if not all(_JOB_ID.match(str(j)) for j in request.after):
            raise ValueError(f"not Slurm job ids: {request.after!r}")
        argv.append("--dependency=afterany:" + ":".join(request.after))
    output = _slurm_filename(request.output)
    argv += [f"--output={output}", f"--error={output}", f"--chdir={request.workdir}",
             f"--export-file={request.env_file}", "--kill-on-invalid-dep=yes", "--no-requeue",
             *request.extra, str(request.script)]
    return argv


def hold_sbatch_argv(name: str, node: str, gpus: int, extra: Sequence[str] = (), sbatch: str = "sbatch") -> list[str]:
    """The sbatch of a placeholder job that holds ``gpus`` GPUs on ``node`` until it is cancelled (a notebook's,
    which runs outside Slurm): Slurm then gives no other job those devices.

    Example: ``sbatch --parsable --job-name=nb-1 --nodelist=gpu1 --nodes=1 --ntasks=1 --cpus-per-task=1
    --gres=gpu:2 --output=/dev/null --error=/dev/null --chdir=/ --no-requeue --wrap=exec sleep infinity``
    """
    _validate(SlurmJobRequest(name, Path("/"), Path("/"), Path("/dev/null"), Path("/dev/null"), (node,), gpus))
    if gpus < 1:
        raise ValueError(f"a placeholder job holds at least one GPU, not {gpus}")
    return [sbatch, "--parsable", f"--job-name={name}", f"--nodelist={node}", "--nodes=1", "--ntasks=1",
            "--cpus-per-task=1", f"--gres=gpu:{gpus}", "--output=/dev/null", "--error=/dev/null", "--chdir=/",
            "--no-requeue", *extra, "--wrap=exec sleep infinity"]


def env_file_content(environment: Mapping[str, str]) -> bytes:
    """The job's environment for ``sbatch --export-file``: ``NAME=value`` entries, each ended by NUL.

    It must be complete (``PATH`` included): the job gets these variables and Slurm's, nothing else.
    """
    parts = []
    for name, value in environment.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        if "\0" in value:
            raise ValueError(f"environment variable {name} contains a NUL character")
        parts.append(f"{name}={value}\0".encode("utf-8", "surrogateescape"))
    return b"".join(parts)


def write_env_file(path: Path, environment: Mapping[str, str]) -> None:
    """Writes :func:`env_file_content` to ``path``, readable by its owner only (it holds tokens).

    Blocking but tiny; from async code call it through ``asyncio.to_thread``.
    """
    content = env_file_content(environment)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
    finally:
        os.close(fd)


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable``'s output (``id`` or ``id;cluster``)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    job_id = lines[-1].split(";", 1)[0] if lines else ""
    if not _JOB_ID.match(job_id):
        raise SlurmOutputError(f"sbatch printed no job id: {stdout!r}")
    return job_id


def slurm_command_env(base: Mapping[str, str], slurm_conf: str | None = None) -> dict[str, str]:
    """``base`` without the variables that silently change what Slurm's commands do.

    sbatch reads ``SBATCH_*`` (``SBATCH_TIMELIMIT``, ``SBATCH_EXCLUSIVE``…), squeue ``SQUEUE_*`` and
    so on as defaults for options; a ``SLURM_*`` left over from a job would point at its allocation.
    ``slurm_conf`` (e.g. ``/etc/slurm/slurm.conf``) is set as ``SLURM_CONF`` when given.
    """
    prefixes = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCANCEL_", "SCONTROL_")
    env = {k: v for k, v in base.items() if not k.startswith(prefixes) or k == "SLURM_CONF"}
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return env


def srun_argv(nodes: int, tasks_per_node: int, command: Sequence[str], srun: str = "srun") -> list[str]:
    """The srun, run inside the batch job, that starts ``tasks_per_node`` copies of ``command`` on each of its
    ``nodes`` nodes (task ids node by node); any task that exits non-zero ends the others
    (``--kill-on-bad-exit=1``), and the step waits for every task.

    Example: ``srun --kill-on-bad-exit=1 --nodes=2 --ntasks-per-node=2 --ntasks=4 --distribution=block
    python -I -S slurmrank.py /runs/7/ranks``
    """
    if nodes < 1 or tasks_per_node < 1:
        raise ValueError(f"srun needs at least one node and one task per node, not {nodes} x {tasks_per_node}")
    if not command:
        raise ValueError("srun needs a command")
    return [srun, "--kill-on-bad-exit=1", f"--nodes={nodes}", f"--ntasks-per-node={tasks_per_node}",
            f"--ntasks={nodes * tasks_per_node}", "--distribution=block", *command]


# -- signalling ----------------------------------------------------------------------------------


def scancel_argv(job_id: str, signal: int | str | None = None, full: bool = True,
                 scancel: str = "scancel") -> list[str]:
    """The scancel command for ``job_id``.

    Without ``signal`` the job ends: Slurm sends SIGCONT and SIGTERM to all its processes, then
    SIGKILL after the cluster's KillWait, and the job becomes CANCELLED.  With ``signal`` only that
    signal is sent (the job's state does not change; if it dies of it, Slurm reports FAILED with
    that signal): ``full=True`` reaches the batch script and all its children and steps (a graceful
    stop is ``scancel_argv(id, "TERM")`` then, after our grace period, ``scancel_argv(id)``);
    ``full=False`` only the steps started with srun (Slurm's default).
    """
    if not _JOB_ID.match(str(job_id)):
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    argv = [scancel]
    if signal is not None:
        if isinstance(signal, int):
            name = signals.Signals(signal).name
        else:
            name = signal.upper()
            name = name if name.startswith("SIG") else "SIG" + name
            if name not in signals.Signals.__members__:
                raise ValueError(f"not a signal: {signal!r}")
        argv.append(f"--signal={name.removeprefix('SIG')}")
        if full:
            argv.append("--full")
    argv.append(str(job_id))
    return argv


# -- job status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmJobStatus:
    """Where a job stands, in Slurm's words.

    ``state`` is Slurm's state name (PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED,
    TIMEOUT, NODE_FAIL, OUT_OF_MEMORY…), ``reason`` Slurm's Reason ("" where Slurm says None), e.g.
    ``Resources``, ``ReqNodeNotAvail``, ``NonZeroExitCode``, ``TimeLimit``.  ``nodes`` are the nodes it
    holds or held (empty while pending).  Once the job finished (``state`` in :data:`FINISHED_STATES`)
    exactly one of ``exit_code`` (the batch script exited) and ``signal`` (it died of a signal) is set;
    before that both are None.
    """

    job_id: str
    state: str
    reason: str = ""
    nodes: tuple[str, ...] = ()
    exit_code: int | None = None
    signal: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def needs_details(self) -> bool:
        """Finished, but read from ``squeue --format``, which has no exit status: ask ``scontrol show job``."""
        return self.finished and self.exit_code is None and self.signal is None


def squeue_argv(job_ids: Iterable[str] = (), squeue: str = "squeue") -> list[str]:
    """``squeue --json`` for ``job_ids``: every state, finished jobs included while Slurm remembers them.

    22.05 ignores ``--jobs``/``--states`` with ``--json`` and prints every job; they are passed for
    the versions that honour them, and :func:`parse_squeue` filters anyway.
    """
    ids = [str(j) for j in job_ids]
    for job_id in ids:
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a Slurm job id: {job_id!r}")
    argv = [squeue, "--json", "--states=all"]
    if ids:
        argv.append(f"--jobs={','.join(ids)}")
    return argv


# squeue's fields for polling: job id, long state, nodes, reason (the reason last: it may hold spaces and commas).
_SQUEUE_FORMAT = "%i|%T|%N|%r"


def squeue_poll_argv(job_ids: Iterable[str], squeue: str = "squeue") -> list[str]:
    """``squeue --format`` for ``job_ids`` only: one short line per job Slurm still remembers, every state.

    22.05 honours ``--jobs`` here (unlike ``--json``, which prints every job the controller remembers, several
    MB during a drain of a thousand jobs), so a poll costs the same whatever else the cluster holds.  The line
    carries no exit status: :func:`parse_squeue_lines` says which jobs need :func:`scontrol_job_argv` for it.

    Example: ``squeue --noheader --states=all --jobs=3,14 --format=%i|%T|%N|%r``
    """
    ids = [str(j) for j in job_ids]
    if not ids:
        raise ValueError("squeue_poll_argv needs at least one job id (without, squeue lists every job)")
    for job_id in ids:
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a Slurm job id: {job_id!r}")
    return [squeue, "--noheader", "--states=all", f"--jobs={','.join(ids)}", f"--format={_SQUEUE_FORMAT}"]


def squeue_forgot_all(stderr: str) -> bool:
    """Whether squeue failed only because it remembers none of the jobs asked for (22.05 then exits 1)."""
    return "Invalid job id specified" in stderr


def parse_squeue_lines(text: str, job_ids: Iterable[str] | None = None) -> dict[str, SlurmJobStatus]:
    """The jobs in :func:`squeue_poll_argv`'s output by job id, only ``job_ids`` when given.

    A ``COMPLETED`` job exited 0 (Slurm's definition of the state), so it carries ``exit_code=0``; any other
    finished job carries neither exit code nor signal here: its :attr:`SlurmJobStatus.needs_details` is true,
    and ``scontrol show job`` (:func:`parse_scontrol_job`) has them.
    """
    wanted = None if job_ids is None else {str(j) for j in job_ids}
    result = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 3)
        if len(parts) != 4 or not _JOB_ID.match(parts[0].strip()):
            raise SlurmOutputError(f"squeue --format printed something else: {line[:200]!r}")
        job_id, state, nodes, reason = (part.strip() for part in parts)
        if wanted is not None and job_id not in wanted:
            continue
        result[job_id] = SlurmJobStatus(job_id, state, _null(reason), tuple(expand_hostlist(_null(nodes))),
                                        0 if state == "COMPLETED" else None)
    return result


def scontrol_release_argv(job_id: str, scontrol: str = "scontrol") -> list[str]:
    """``scontrol update JobId=ID Dependency=``: a job submitted ahead may start as soon as its resources are
    free, whatever became of the jobs it waited for (a no-op for a job that has started)."""
    if not _JOB_ID.match(str(job_id)):
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return [scontrol, "update", f"JobId={job_id}", "Dependency="]


def scontrol_job_argv(job_id: str, scontrol: str = "scontrol") -> list[str]:
    """``scontrol show job -o ID``: one line of Key=Value (exit 1, "Invalid job id" once it is forgotten)."""
    if not _JOB_ID.match(str(job_id)):
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return [scontrol, "show", "job", "--oneliner", str(job_id)]


def _split_status(state: str, raw: int | None) -> tuple[int | None, int | None]:
    """(exit_code, signal) from a wait status, only for a finished job."""
    if state not in FINISHED_STATES or raw is None:
        return None, None
    if raw & 0x7F:
        return None, raw & 0x7F
    return (raw >> 8) & 0xFF, None


def _number(value: Any) -> int | None:
    """An integer from 22.05's plain numbers or later versions' ``{"set": …, "number": …}``."""
    if isinstance(value, dict):
        if value.get("set") is False or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    return int(value)


def _job_from_json(job: Mapping[str, Any]) -> SlurmJobStatus:
    state = job.get("job_state") or ""
    if isinstance(state, list):  # 23.02+: ["RUNNING"] or ["PENDING", "REQUEUED"]
        state = state[0] if state else ""
    reason = job.get("state_reason") or ""
    allocated = (job.get("job_resources") or {}).get("allocated_nodes") or []
    if isinstance(allocated, list) and allocated and isinstance(allocated[0], dict) and "nodename" in allocated[0]:
        nodes = tuple(entry["nodename"] for entry in allocated)
    else:
        nodes = tuple(expand_hostlist(job.get("nodes") or ""))
    exit_code = job.get("exit_code")
    if isinstance(exit_code, dict):  # 23.02+: {"status": [...], "return_code": …, "signal": {"id": …}}
        code = _number(exit_code.get("return_code"))
        sig = _number((exit_code.get("signal") or {}).get("id"))
        if state in FINISHED_STATES:
            exit_status = (None, sig) if sig else (code, None)
        else:
            exit_status = (None, None)
    else:
        exit_status = _split_status(state, _number(exit_code))
    return SlurmJobStatus(str(job["job_id"]), str(state), "" if reason == "None" else str(reason), nodes,
                          *exit_status)


def parse_squeue(text: str, job_ids: Iterable[str] | None = None) -> dict[str, SlurmJobStatus]:
    """The jobs in ``squeue --json``'s output by job id, only ``job_ids`` when given."""
    try:
        data = json.loads(text)
        jobs = data["jobs"]
    except (ValueError, KeyError, TypeError) as e:
        raise SlurmOutputError(f"squeue --json printed something else: {text[:200]!r}") from e
    wanted = None if job_ids is None else {str(j) for j in job_ids}
    result = {}
    for job in jobs:
        status = _job_from_json(job)
        if wanted is None or status.job_id in wanted:
            result[status.job_id] = status
    return result


_KEY = re.compile(r"(?:^|(?<= ))([A-Za-z][A-Za-z0-9_:/.\-]*)=")


def _key_values(line: str) -> dict[str, str]:
    """``Key=Value Key=Value…`` of one scontrol ``-o`` line; values may contain spaces.

    A value that itself contains `` Word=`` would be cut there; where a key repeats the last one
    wins, as every field we read comes after JobName (the one free text a user may choose).
    """
    matches = list(_KEY.finditer(line))
    fields = {}
    for k, m in enumerate(matches):
        end = matches[k + 1].start() - 1 if k + 1 < len(matches) else len(line)
        fields[m.group(1)] = line[m.end():end].strip()
    return fields


def _null(value: str) -> str:
    return "" if value in ("(null)", "None", "N/A") else value


def parse_scontrol_job(text: str) -> SlurmJobStatus:
    """The job in ``scontrol show job -o ID``'s output (``ExitCode=code:signal``)."""
    lines = [line for line in text.splitlines() if line.startswith("JobId=")]
    if len(lines) != 1:
        raise SlurmOutputError(f"expected one job from scontrol show job -o, got {len(lines)}: {text[:200]!r}")
    fields = _key_values(lines[0])
    state = fields.get("JobState", "")
    code, sig = None, None
    if state in FINISHED_STATES:
        match = re.fullmatch(r"(\d+):(\d+)", fields.get("ExitCode", ""))
        if not match:
            raise SlurmOutputError(f"no ExitCode in scontrol's line: {lines[0][:200]!r}")
        code, sig = int(match.group(1)), int(match.group(2))
        code, sig = (None, sig) if sig else (code, None)
    return SlurmJobStatus(fields["JobId"], state, _null(fields.get("Reason", "")),
                          tuple(expand_hostlist(_null(fields.get("NodeList", "")))), code, sig)


def scontrol_job_details_argv(job_id: str, scontrol: str = "scontrol") -> list[str]:
    """``scontrol show job -d -o ID``: with, per node, the GRES indices the job holds (``GRES=gpu:a100:2(IDX:0-1)``)."""
    return [*scontrol_job_argv(job_id, scontrol)[:3], "--details", *scontrol_job_argv(job_id, scontrol)[3:]]


_NODE_GRES = re.compile(r"(?:^|\s)Nodes=(\S+)\s[^\n]*?GRES=(\S*)")


def parse_gpu_indices(text: str) -> dict[str, tuple[int, ...]]:
    """The GPU indices (``IDX``) a job holds on each of its nodes, from :func:`scontrol_job_details_argv`'s output."""
    held: dict[str, tuple[int, ...]] = {}
    for nodes, gres in _NODE_GRES.findall(text):
        indices: list[int] = []
        for item in _split_top(gres):
            match = re.match(r"gpu(?::[^:(]+)?(?::\d+)?\(IDX:([0-9,\-]+)\)", item)
            if not match:
                continue
            for part in match.group(1).split(","):
                low, _, high = part.partition("-")
                indices.extend(range(int(low), int(high or low) + 1))
        for node in expand_hostlist(nodes):
            held[node] = tuple(indices)
    return held


# -- nodes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmNode:
    """A node as our policy needs it: ``state`` is ``up`` (usable), ``drained`` (an admin took it
    out, running jobs may finish) or ``down`` (not usable: down, not responding, failed, unknown).
    ``slurm_state`` keeps Slurm's own words (``IDLE+DRAIN``, ``DOWN*``) for logs.
    """

    name: str
    state: str
    gpus: int
    gpu_model: str
    cpus: int
    memory_mb: int
    reason: str = ""
    slurm_state: str = ""
    address: str = ""  # NodeAddr: where processes on other nodes reach it ("" where Slurm does not say)


_DOWN_WORDS = {"DOWN", "ERROR", "NOT_RESPONDING", "NO_RESPOND", "FAIL", "FAILING", "UNKNOWN", "FUTURE", "INVALID",
               "INVALID_REG", "POWERED_DOWN", "POWER_DOWN", "POWERING_DOWN", "POWERING_UP", "REBOOT_ISSUED",
               "FAILG", "UNK", "FUTR", "INVAL", "POW_DN", "POW_UP"}  # the last: sinfo's short names
_DRAIN_WORDS = {"DRAIN", "DRAINED", "DRAINING", "DRNG"}
# The one-character suffixes of sinfo's short states (scontrol uses only "*").
_SUFFIXES = {"*": "NOT_RESPONDING", "~": "POWERED_DOWN", "#": "POWERING_UP", "%": "POWERING_DOWN",
             "!": "POWER_DOWN", "^": "REBOOT_ISSUED", "$": "MAINT", "@": "REBOOT_REQUESTED", "-": "PLANNED"}


def node_state(words: Iterable[str]) -> str:
    """``up``/``drained``/``down`` from Slurm's state words (base state and flags; ``*`` = not responding)."""
    upper = set()
    for word in words:
        word = word.strip().upper()
        while word and word[-1] in _SUFFIXES:
            upper.add(_SUFFIXES[word[-1]])
            word = word[:-1]
        upper.add(word)
    if upper & _DOWN_WORDS:
        return "down"
    if upper & _DRAIN_WORDS:
        return "drained"
    return "up"


def _split_top(text: str) -> list[str]:
    """Splits at commas outside brackets and parentheses."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def parse_gres(gres: str) -> tuple[int, str]:
    """(GPU count, model) from a node's Gres (``gpu:a100:4(S:0-1),nic:1``); models joined by "," if several."""
    count, models = 0, []
    for item in _split_top(_null(gres)):
        item = re.sub(r"\(.*\)$", "", item)
        parts = item.split(":")
        if parts[0] != "gpu":
            continue
        if len(parts) == 2 and parts[1].isdigit():
            count += int(parts[1])
        elif len(parts) >= 3 and parts[-1].isdigit():
            count += int(parts[-1])
            models.append(parts[1])
        elif len(parts) == 1:
            count += 1
        elif len(parts) == 2:
            count += 1
            models.append(parts[1])
    return count, ",".join(dict.fromkeys(models))


def _reason(text: str) -> str:
    """The reason without scontrol's `` [user@time]`` suffix."""
    return re.sub(r"\s*\[[^\]]*@[^\]]*\]$", "", _null(text or ""))


def _node_from_json(node: Mapping[str, Any]) -> SlurmNode:
    state = node.get("state") or ""
    words = list(state) if isinstance(state, list) else [state, *(node.get("state_flags") or [])]
    gpus, model = parse_gres(node.get("gres") or "")
    return SlurmNode(node["name"], node_state(words), gpus, model, int(_number(node.get("cpus")) or 0),
                     int(_number(node.get("real_memory")) or 0), _reason(node.get("reason") or ""),
                     "+".join(w.upper() for w in words if w), str(node.get("address") or ""))


def _node_from_line(line: str) -> SlurmNode:
    fields = _key_values(line)
    gpus, model = parse_gres(fields.get("Gres", ""))
    state = fields.get("State", "")
    return SlurmNode(fields["NodeName"], node_state(state.split("+")), gpus, model, int(fields.get("CPUTot") or 0),
                     int(fields.get("RealMemory") or 0), _reason(fields.get("Reason", "")), state,
                     _null(fields.get("NodeAddr", "")))


def sinfo_argv(sinfo: str = "sinfo") -> list[str]:
    """``sinfo --json``: every node with its state, GRES, CPUs, memory and reason."""
    return [sinfo, "--json"]


def scontrol_nodes_argv(scontrol: str = "scontrol") -> list[str]:
    """``scontrol show nodes -o``: the same, one line per node, for Slurms without JSON."""
    return [scontrol, "show", "nodes", "--oneliner"]


def scontrol_update_node_argv(node: str, state: str, reason: str = "", scontrol: str = "scontrol") -> list[str]:
    """``scontrol update NodeName=N State=DRAIN Reason=…`` (DRAIN and DOWN need a reason; RESUME none)."""
    if not _NODE_NAME.match(node):
        raise ValueError(f"not a Slurm node name: {node!r}")
    argv = [scontrol, "update", f"NodeName={node}", f"State={state}"]
    if reason:
        argv.append(f"Reason={reason}")
    return argv


def parse_nodes(text: str) -> list[SlurmNode]:
    """The nodes in ``sinfo --json``'s or ``scontrol show nodes -o``'s output, in Slurm's order."""
    if text.lstrip().startswith("{"):
        try:
            nodes = json.loads(text)["nodes"]
        except (ValueError, KeyError, TypeError) as e:
            raise SlurmOutputError(f"sinfo --json printed something else: {text[:200]!r}") from e
        parsed = [_node_from_json(n) for n in nodes]
    else:
        parsed = [_node_from_line(line) for line in text.splitlines() if line.startswith("NodeName=")]
    seen: dict[str, SlurmNode] = {}
    for node in parsed:  # a node in several partitions may be listed more than once
        seen.setdefault(node.name, node)
    return list(seen.values())


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list (``node[1-3,7],gpu-a[01-02]``) as names, in order."""
    names: list[str] = []
    for item in _split_top(hostlist):
        names.extend(_expand_one(item))
    return names


def _expand_one(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        return [item]
    head, tail = item[:match.start()], item[match.end():]
    expanded = []
    for part in match.group(1).split(","):
        if "-" in part:
            low, high = part.split("-", 1)
            width = len(low)
            values = [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
        else:
            values = [part]
        for value in values:
            expanded.extend(_expand_one(head + value + tail))
    return expanded


# -- running ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


async def run_command(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 30,
                      check: bool = True) -> CommandResult:
    """Runs one Slurm command without blocking the event loop and returns its output.

    The child gets no stdin.  It is killed (and reaped) if it runs past ``timeout`` seconds or the
    awaiting task is cancelled, so no process outlives the call.  Raises :class:`SlurmCommandError`
    (with Slurm's stderr) when the command cannot start, times out, or, with ``check``, exits non-zero.
    """
    argv = [str(a) for a in argv]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=None if env is None else dict(env))
    except OSError as e:
        raise SlurmCommandError(argv, None, str(e), "could not start") from e
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        await _kill(proc)
        raise SlurmCommandError(argv, None, "", f"did not answer within {timeout:g} s") from None
    except BaseException:  # cancelled: take the child with us, then let the cancellation through
        await _kill(proc)
        raise
    result = CommandResult(proc.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise SlurmCommandError(argv, result.returncode, result.stderr)
    return result


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await asyncio.shield(proc.wait())


def parse_job_names(text: str, submitted_since: float | None = None) -> dict[str, SlurmJobStatus]:
    """The jobs in ``squeue --json``'s output by job name (the newest job of each name), to find a job
    whose id was never recorded (a submission whose answer was lost); with ``submitted_since`` (seconds
    since the epoch) only the jobs submitted since then."""
    try:
        jobs = json.loads(text)["jobs"]
    except (ValueError, KeyError, TypeError) as e:
        raise SlurmOutputError(f"squeue --json printed something else: {text[:200]!r}") from e
    named: dict[str, SlurmJobStatus] = {}
    for job in sorted(jobs, key=lambda j: int(_number(j.get("job_id")) or 0)):
        if submitted_since is not None and (_number(job.get("submit_time")) or 0) < submitted_since:
            continue
        if job.get("name"):
            named[str(job["name"])] = _job_from_json(job)
    return named
