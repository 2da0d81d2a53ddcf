"""Batch inference (EasyMaker's 배치 추론): a model over a folder of JSON or JSONL files, as one job.

A batch inference is a row (``BatchInference``) and one run of kind ``batch`` that does the work
(``serving_runtime/batch_infer.py`` under the serving runtime's interpreter, as the owner's Unix
account, queued and placed like any run).  ``BatchController.reconcile`` brings the row in line with
its run, from the database and the dispatcher alone, so a controller killed at any moment resumes:

* CREATE REQUESTED: the input is prepared and the job submitted under the Idempotency-Key
  ``batch:<id>``; a repeat after a restart finds the run the first attempt made (also found by
  ``Run.parent_id``).  A refused submission is CREATE FAILED with the refusal.
* CREATE IN PROGRESS while the run is queued or starting, RUNNING while it runs.
* Once the run has ended: COMPLETE IN PROGRESS then COMPLETE (its ``_summary.json`` read into
  ``summary``), FAIL BATCH INFERENCE IN PROGRESS then FAIL BATCH INFERENCE (the reason says why),
  or STOPPED; a stop asked for goes through STOP IN PROGRESS.

Inputs are never a server path a user names.  ``dataset:NAME[:VERSION]`` is a dataset version,
bound read-only as runs read datasets.  ``run:ID[/PATH]`` is a folder of one of the caller's runs
(``output`` by default, or inside ``model/`` or ``checkpoints/``): that folder is the user's, so it
is not bound as it is (a link swapped in before the job starts would redirect root's bind); at
submission it is hard-linked, through folder descriptors and without following any link, into a
folder of the controller's (``<data>/batch-inferences/<id>/input``), and that is bound.  The job
writes into its own run folder, ``output/``, downloadable like the run's model and checkpoints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import posixpath
import re
import shutil
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from traitlets import Float
from traitlets.config import LoggingConfigurable

from . import dataset_store
from . import serving_states as ss
from .datasets import DatasetRefError, parse_refs
from .dispatcher import RunNotActive, utcnow
from .nofollow import DIR_FLAGS, READ_FLAGS
from .orm import BatchInference, Model, Run
from .rundir import _link_tree, remove_path
from .runenv import RunPaths
from .runtime_jobs import submit_runtime_run
from .spec import SpecError, parse_duration, parse_memory

log = logging.getLogger("nothing.batch")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
MAX_DESCRIPTION = 10_000
MAX_INSTANCES = 16
MAX_BATCH_SIZE = 10_000
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 3600.0
MAX_GLOBS, MAX_GLOB_CHARS = 20, 256
MAX_TAGS, MAX_TAG_KEY, MAX_TAG_VALUE = 10, 64, 256  # as models
MAX_INPUT_CHARS = 1024
INPUT_TYPES = ("JSON", "JSONL")
RUN_FOLDERS = ("output", "model", "checkpoints")  # what ``run:ID/PATH`` may read: the run's outputs
FIELDS = frozenset({"name", "description", "model", "instances", "input_path", "input_type", "include_glob",
                    "exclude_glob", "batch_size", "timeout_seconds", "max_time", "tags", "gpus", "cpus", "memory",
                    "group"})
MAX_TIME_GRACE = 60  # the run's own limit, past the job's: the job stops itself first and writes its summary
SUMMARY_FILE = "_summary.json"
MAX_SUMMARY_BYTES = 4 * 1024 * 1024
MAX_PER_FILE_KEPT = 1000  # per-file counts kept in the row (the summary file has them all)
INPUT_NAME = "input"  # EM_DATASET_INPUT in the job
JOB_ENTRY = "batch_job.py"
# The job's entry point: batch_infer.py on the input where this run has it bound (known only at launch).
JOB_WRAPPER = b'''"""Run batch_infer.py on this job's input, bound read-only at EM_DATASET_INPUT."""
import os
import sys

import batch_infer

if __name__ == "__main__":
    sys.exit(batch_infer.main(["--input", os.environ["EM_DATASET_INPUT"], *sys.argv[1:]]))
'''
EXIT_LOAD_FAILED, EXIT_NO_INPUT, EXIT_TIMED_OUT = 1, 2, 3  # batch_infer.py's


class BatchError(ValueError):
    """A field or an input that cannot be accepted; the message says why."""


# ---------------------------------------------------------------- fields (pure)
@dataclass(frozen=True)
class InputRef:
    """``dataset:NAME[:VERSION]`` (``GROUP/NAME`` for a group's) or ``run:ID[/PATH]``."""

    kind: str
    dataset: str = ""
    run_id: int = 0
    path: str = ""

    @property
    def text(self) -> str:
        return f"dataset:{self.dataset}" if self.kind == "dataset" else f"run:{self.run_id}/{self.path}"


def parse_input(raw: Any) -> InputRef:
    shapes = "input_path must be dataset:NAME[:VERSION] (GROUP/NAME for a group's) or run:ID[/PATH] (a folder of " \
             "one of your runs: output, or inside model/ or checkpoints/)"
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_INPUT_CHARS or "\0" in raw:
        raise BatchError(shapes)
    kind, _, rest = raw.strip().partition(":")
    if kind == "dataset":
        try:
            parse_refs({INPUT_NAME: rest})
        except DatasetRefError as e:
            raise BatchError(f"input_path: {e}") from None
        return InputRef("dataset", dataset=rest)
    if kind != "run":
        raise BatchError(shapes)
    number, _, path = rest.partition("/")
    if not number.isascii() or not number.isdigit() or len(number) > 18:
        raise BatchError(f"input_path {raw[:80]!r}: the run must be given by its id, e.g. run:12/output")
    norm = posixpath.normpath(path.strip("/")) if path.strip("/") else "output"
    parts = norm.split("/")
    if "\\" in path or any(p in ("", ".", "..") for p in parts) or parts[0] not in RUN_FOLDERS:
        raise BatchError(f"input_path {raw[:80]!r}: the folder must be output, or one inside the run's "
                         f"{', '.join(RUN_FOLDERS)} folder, without '..'")
    return InputRef("run", run_id=int(number), path=norm)


def _whole(body: dict, key: str, default: int, low: int, high: int | None) -> int:
    value = body.get(key, default)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value) < 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise BatchError(f"{key} must be a whole number {bounds}, not {str(value)[:40]!r}")
    return value


def _seconds(body: dict, key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise BatchError(f"{key} must be a number of seconds from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g}, "
                         f"not {str(value)[:40]!r}")
    return float(value)


def _globs(body: dict, key: str) -> list[str]:
    raw = body.get(key)
    if raw is None:
        return []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or len(items) > MAX_GLOBS or \
            not all(isinstance(g, str) and g.strip() and len(g) <= MAX_GLOB_CHARS and "\0" not in g for g in items):
        raise BatchError(f"{key} must be at most {MAX_GLOBS} glob patterns of 1 to {MAX_GLOB_CHARS} characters "
                         "without NUL, e.g. [\"**/*.jsonl\"]")
    return [g.strip() for g in items]


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_TAGS:
        raise BatchError(f'tags must be an object of at most {MAX_TAGS} key: value texts, e.g. {{"team": "nlp"}}')
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_TAG_KEY:
            raise BatchError(f"tag key {str(key)[:80]!r} must be 1-{MAX_TAG_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
            raise BatchError(f"the value of tag {key[:64]!r} must be text of at most {MAX_TAG_VALUE} characters")
    return dict(raw)


@dataclass(frozen=True)
class BatchFields:
    """A batch inference as asked for, every field checked; the model and the input are resolved by the API."""

    name: str
    description: str
    model: str
    input: InputRef
    input_type: str
    include_glob: list[str]
    exclude_glob: list[str]
    instances: int
    batch_size: int
    timeout_seconds: float
    max_seconds: int | None
    tags: dict[str, str]
    gpus: int
    cpus: int
    memory_bytes: int
    group: str


def parse_batch(body: Any) -> BatchFields:
    """The body of ``POST /api/batch-inferences`` (and a copy's settings); BatchError says what is wrong."""
    if not isinstance(body, dict):
        raise BatchError("a batch inference is a JSON object")
    unknown = sorted(map(str, set(body) - FIELDS))
    if unknown:
        raise BatchError(f"unknown field(s) {', '.join(unknown)[:200]}; allowed: {', '.join(sorted(FIELDS))} (the "
                         "results always go to the job's own run folder, output/)")
    name = body.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BatchError(f"name {str(name)[:60]!r} must be 1-100 letters, digits, _, . or -, starting with a letter "
                         "or digit")
    description = body.get("description") or ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise BatchError(f"description must be text of at most {MAX_DESCRIPTION} characters")
    model = body.get("model")
    if isinstance(model, int) and not isinstance(model, bool):
        model = str(model)
    if not isinstance(model, str) or not model.strip() or len(model) > 255:
        raise BatchError("model must be the id or the name of a model you may use")
    input_type = body.get("input_type")
    if not isinstance(input_type, str) or input_type.upper() not in INPUT_TYPES:
        raise BatchError(f"input_type must be JSON (each file a list of records) or JSONL (a record per line), "
                         f"not {str(input_type)[:40]!r}")
    max_time = body.get("max_time")
    try:
        max_seconds = parse_duration(max_time) if max_time not in (None, "", 0) else None
        memory = parse_memory(body["memory"]) if body.get("memory") not in (None, "", 0) else 0
    except SpecError as e:
        raise BatchError(str(e)) from None
    group = body.get("group") or ""
    if not isinstance(group, str) or len(group) > 255:
        raise BatchError("group must be the name of one of your groups")
    instances = _whole(body, "instances", 1, 1, MAX_INSTANCES)
    return BatchFields(
        name=name, description=description, model=model.strip(), input=parse_input(body.get("input_path")),
        input_type=input_type.upper(), include_glob=_globs(body, "include_glob"),
        exclude_glob=_globs(body, "exclude_glob"), instances=instances,
        batch_size=_whole(body, "batch_size", 32, 1, MAX_BATCH_SIZE),
        timeout_seconds=_seconds(body, "timeout_seconds", 60.0), max_seconds=max_seconds,
        tags=_tags(body.get("tags")), gpus=_whole(body, "gpus", 0, 0, None),
        cpus=_whole(body, "cpus", instances, 0, None), memory_bytes=memory, group=group)


def job_args(row: BatchInference, model: Model) -> list[str]:
    """batch_infer.py's arguments (``--input`` is added by the job's entry point, where the run has it bound)."""
    args = ["--name", model.name, "--framework", model.framework, "--format", model.artifact_format,
            "--input-type", row.input_type.lower(), "--output", "../output", "--batch-size", str(row.batch_size),
            "--timeout", f"{row.timeout_seconds:g}", "--workers", str(row.instances)]
    args += [f"--include={g}" for g in row.include_glob or ()]
    args += [f"--exclude={g}" for g in row.exclude_glob or ()]
    if row.max_seconds:
        args += ["--max-seconds", str(row.max_seconds)]
    return args


# ---------------------------------------------------------------- the state machine (pure)
TRANSITIONS: dict[str, frozenset[str]] = {
    ss.CREATE_REQUESTED: frozenset({ss.CREATE_IN_PROGRESS, ss.CREATE_FAILED, ss.STOP_IN_PROGRESS}),
    # A job may end before it was ever seen running (a quick one, or one cancelled as a run).
    ss.CREATE_IN_PROGRESS: frozenset({ss.RUNNING, ss.STOP_IN_PROGRESS, ss.COMPLETE_IN_PROGRESS, ss.FAIL_IN_PROGRESS,
                                      ss.STOPPED, ss.CREATE_FAILED}),
    ss.RUNNING: frozenset({ss.STOP_IN_PROGRESS, ss.COMPLETE_IN_PROGRESS, ss.FAIL_IN_PROGRESS, ss.STOPPED}),
    # A job being stopped may still finish on its own before the signal lands.
    ss.STOP_IN_PROGRESS: frozenset({ss.STOPPED, ss.COMPLETE_IN_PROGRESS}),
    ss.COMPLETE_IN_PROGRESS: frozenset({ss.COMPLETE}),
    ss.FAIL_IN_PROGRESS: frozenset({ss.FAIL}),
    **{s: frozenset() for s in ss.BATCH_TERMINAL},
}


class InvalidBatchTransition(ValueError):
    pass


def check_batch_transition(current: str, target: str) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidBatchTransition(f"a batch inference cannot go from {current} to {target}")


def outcome(run_state: str, exit_code: int | None, stop_cause: str | None, run_reason: str, message: str,
            stopping: bool = False) -> tuple[str, str]:
    """Where a batch inference goes once its job's run has ended, and why.  ``message`` is the job's own last
    words (from its log); ``stopping``: a stop was asked for."""
    if run_state == "COMPLETE":
        return ss.COMPLETE_IN_PROGRESS, "its job ended; reading its summary"
    if stopping:
        return ss.STOPPED, ""
    if run_state == "CREATE FAILED":
        return ss.CREATE_FAILED, f"its job could not start: {run_reason}"
    if run_state == "STOPPED":
        if stop_cause in (None, "cancel"):
            return ss.STOPPED, f"its job was {run_reason}" if run_reason else "its job was stopped"
        return ss.FAIL_IN_PROGRESS, f"its job was stopped: {run_reason}"
    if stop_cause == "max_time" or exit_code == EXIT_TIMED_OUT:
        return ss.FAIL_IN_PROGRESS, "max total time reached" + (f" ({message})" if message else "")
    if exit_code == EXIT_NO_INPUT:
        return ss.FAIL_IN_PROGRESS, message or "no input file matched"
    if exit_code == EXIT_LOAD_FAILED:
        return ss.FAIL_IN_PROGRESS, message or "the model could not be loaded"
    return ss.FAIL_IN_PROGRESS, f"its job failed ({run_reason})" + (f": {message}" if message else "")


def summary_line(summary: dict | None) -> str:
    if not summary:
        return "its job ended without a summary file"
    return (f"{summary.get('files', 0)} files, {summary.get('records', 0)} records, {summary.get('errors', 0)} "
            f"error records in {summary.get('seconds', 0)}s")


# ---------------------------------------------------------------- files (blocking: in a thread)
def _open_folder(top: str, parts: list[str]) -> int:
    """A descriptor of ``top/parts...``, no component a link; OSError otherwise."""
    fd = os.open(top, DIR_FLAGS)
    for part in parts:
        try:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def input_folder_problem(run_dir: str, relative: str) -> str:
    """Why ``relative`` in the run's folder cannot be an input ("" when it can): missing, a file, a link."""
    try:
        os.close(_open_folder(run_dir, relative.split("/")))
    except FileNotFoundError:
        return f"has no folder {relative}"
    except OSError:
        return f"{relative} is not a folder (a link is never followed)"
    return ""


def stage_run_input(run_dir: str, relative: str, dest: str) -> None:
    """Hard links in ``dest`` (made here, replacing what is there) to everything below ``run_dir/relative``.

    No link is followed on the way nor inside: links are linked as themselves, so the job resolves
    them as its user, in its own namespace.  ``dest``'s parents are the controller's, so the bind made
    from it cannot be redirected.  OSError when the folder is missing or not a folder.
    """
    remove_path(dest)
    src = _open_folder(run_dir, relative.split("/"))
    try:
        os.mkdir(dest, 0o700)
        dst = os.open(dest, DIR_FLAGS)
        try:
            _link_tree(src, dst)
        except BaseException:
            remove_path(dest)
            raise
        finally:
            os.close(dst)
    finally:
        os.close(src)


def read_user_file(folder: str, parts: list[str], limit: int, tail: bool = False) -> bytes | None:
    """Up to ``limit`` bytes of a file in a user's folder (its end with ``tail``), never through a link, and only
    from a regular file with one name; None otherwise, or when it is longer than ``limit`` without ``tail``."""
    try:
        fd = _open_folder(folder, parts[:-1])
    except OSError:
        return None
    try:
        f = os.open(parts[-1], READ_FLAGS, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        st = os.fstat(f)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or (st.st_size > limit and not tail):
            return None
        if st.st_size > limit:
            os.lseek(f, st.st_size - limit, os.SEEK_SET)
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(f, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(f)


def read_summary(run_dir: str) -> dict | None:
    """The job's ``output/_summary.json`` as stored in the row: its counts, and per-file counts when not too many."""
    data = read_user_file(run_dir, ["output", SUMMARY_FILE], MAX_SUMMARY_BYTES)
    try:
        raw = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for key in ("files", "files_matched", "records", "errors", "seconds", "load_seconds", "records_per_second",
                "workers", "timed_out"):
        value = raw.get(key)
        if isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
            out[key] = value
    per_file = raw.get("per_file")
    if isinstance(per_file, dict) and len(per_file) <= MAX_PER_FILE_KEPT:
        out["per_file"] = {str(k)[:1024]: {c: v.get(c) for c in ("records", "errors") if isinstance(v.get(c), int)}
                           for k, v in per_file.items() if isinstance(v, dict)}
    return out


def job_message(run_dir: str, log_path: str, mount: str, shown: str) -> str:
    """The job's own explanation: its last ``batch_infer:`` line (else its last line), the input's mount point
    shown as the input the user named."""
    data = read_user_file(run_dir, [os.path.relpath(log_path, run_dir)], 16 * 1024, tail=True) or b""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("batch_infer:")]
    text = (ours or lines or [""])[-1].removeprefix("batch_infer:").strip()
    return text.replace(mount, shown)[:1000]


# ---------------------------------------------------------------- database work (on the database thread)
def insert_batch(session: Session, values: dict) -> int:
    row = BatchInference(**values)
    session.add(row)
    session.flush()
    return row.id


def get_batch(session: Session, batch_id: int) -> BatchInference | None:
    return session.get(BatchInference, batch_id)


def list_batches(session: Session, owner: str | None, groups: list[str]) -> list[BatchInference]:
    """Everyone's (``owner`` None), else the owner's and their groups'."""
    q = select(BatchInference).order_by(BatchInference.id.desc())
    if owner is not None:
        q = q.where((BatchInference.owner == owner) | BatchInference.group.in_(groups)) if groups \
            else q.where(BatchInference.owner == owner)
    return list(session.scalars(q))


def active_batch_ids(session: Session) -> list[int]:
    return list(session.scalars(select(BatchInference.id).where(
        BatchInference.state.not_in(list(ss.BATCH_TERMINAL)))))


def set_batch_state(session: Session, batch_id: int, state: str, reason: str, at: datetime,
                    fields: dict[str, Any] | None = None) -> None:
    row = session.get(BatchInference, batch_id)
    assert row is not None
    if row.state != state:
        check_batch_transition(row.state, state)
        row.state, row.reason = state, reason
    if state in ss.BATCH_TERMINAL:
        row.ended_at = row.ended_at or at
    for key, value in (fields or {}).items():
        setattr(row, key, value)


def job_run(session: Session, batch_id: int, run_id: int | None) -> Run | None:
    """The batch inference's run: by its id, else the one that names it as parent (submitted, not yet noted)."""
    if run_id is not None:
        return session.get(Run, run_id)
    return session.scalar(select(Run).where(Run.kind == ss.KIND_BATCH, Run.parent_id == batch_id)
                          .order_by(Run.id.desc()))


def get_model(session: Session, model_id: int) -> Model | None:
    return session.get(Model, model_id)


def model_names(session: Session, model_ids: list[int]) -> dict[int, str]:
    if not model_ids:
        return {}
    return dict(session.execute(select(Model.id, Model.name).where(Model.id.in_(set(model_ids)))).tuples().all())


def delete_batch(session: Session, batch_id: int) -> None:
    row = session.get(BatchInference, batch_id)
    if row is not None:
        session.delete(row)


# ---------------------------------------------------------------- the controller
class BatchController(LoggingConfigurable):
    interval = Float(
        1.0,
        help="""Seconds between passes over batch inferences not yet ended: a queued job seen starting, an end
        missed while the service was down. Example: ``c.BatchController.interval = 5``""",
    ).tag(config=True)

    def __init__(self, scheduler, **kwargs):
        super().__init__(**kwargs)
        self.scheduler = scheduler
        self.dispatcher = scheduler.dispatcher
        self.db = scheduler.db
        self.dir = Path(scheduler.data_dir) / "batch-inferences"
        self._locks: dict[int, asyncio.Lock] = {}
        self._runs: dict[int, int] = {}  # run id -> batch inference id, for the dispatcher's run_ended
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.dispatcher.run_ended.append(self._on_run_ended)
        self._loop_task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        tasks = [t for t in [self._loop_task, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_run_ended(self, run_id: int) -> None:
        batch_id = self._runs.pop(run_id, None)
        if batch_id is not None:
            self._spawn(self.reconcile_safely(batch_id))

    async def _loop(self) -> None:
        while True:
            try:
                for batch_id in await self.db.run(active_batch_ids):
                    await self.reconcile_safely(batch_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the controller must outlive any one batch inference
                log.exception("Batch inference pass failed; retrying at the next pass")
            await asyncio.sleep(self.interval)

    async def reconcile_safely(self, batch_id: int) -> None:
        try:
            await self.reconcile(batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Batch inference %s: reconcile failed; retried at the next pass", batch_id)

    def input_dir(self, batch_id: int) -> Path:
        return self.dir / str(batch_id) / INPUT_NAME

    # ------------------------------------------------------------------ entry points of the API
    async def create(self, values: dict) -> int:
        """Store the batch inference (CREATE REQUESTED) and submit its job."""
        batch_id = await self.db.run(insert_batch, values)
        await self.reconcile(batch_id)
        return batch_id

    async def stop_batch(self, batch_id: int, by: str) -> None:
        row = await self.db.run(get_batch, batch_id)
        if row is None or row.state in ss.BATCH_TERMINAL or ss.STOP_IN_PROGRESS not in TRANSITIONS[row.state]:
            return
        await self.db.run(set_batch_state, batch_id, ss.STOP_IN_PROGRESS, f"stopped by {by}", utcnow())
        await self.reconcile(batch_id)

    async def forget(self, batch_id: int) -> None:
        """Remove the row and the controller's files of an ended batch inference (its run is the caller's)."""
        await self.db.run(delete_batch, batch_id)
        await asyncio.to_thread(shutil.rmtree, self.dir / str(batch_id), True)
        self._locks.pop(batch_id, None)

    # ------------------------------------------------------------------ the one routine
    async def reconcile(self, batch_id: int) -> None:
        async with self._locks.setdefault(batch_id, asyncio.Lock()):
            await self._reconcile(batch_id)

    async def _set(self, row: BatchInference, state: str, reason: str, **fields) -> None:
        now = utcnow()
        await self.db.run(set_batch_state, row.id, state, reason, now, fields)
        log.info("Batch inference %s: %s (%s)", row.id, state, reason)
        row.state, row.reason = state, reason
        if state in ss.BATCH_TERMINAL:
            self._locks.pop(row.id, None)
            await asyncio.to_thread(shutil.rmtree, self.dir / str(row.id), True)  # the staged input, if any

    async def _reconcile(self, batch_id: int) -> None:
        row = await self.db.run(get_batch, batch_id)
        if row is None or row.state in ss.BATCH_TERMINAL:
            self._locks.pop(batch_id, None)
            return
        run = await self.db.run(job_run, row.id, row.run_id)
        if row.state == ss.CREATE_REQUESTED:
            if run is None:
                try:
                    run_id = await self._submit(row)
                except Exception as e:  # noqa: BLE001 - SpecError, StorageQuotaExceeded, a gone input: the reason
                    log.warning("Batch inference %s: its job was refused: %s", row.id, e)
                    await self._set(row, ss.CREATE_FAILED, f"its job was refused: {e}")
                    return
                run = await self.db.run(job_run, row.id, run_id)
                assert run is not None
            await self._set(row, ss.CREATE_IN_PROGRESS, f"its job, run {run.id}, is queued", run_id=run.id,
                            output_path=f"run:{run.id}/output")
        if run is None:
            await self._set(row, ss.STOPPED if row.state == ss.STOP_IN_PROGRESS else ss.FAIL,
                            row.reason if row.state == ss.STOP_IN_PROGRESS else "its job's run was deleted")
            return
        self._runs[run.id] = row.id
        live = self.dispatcher.active.get(run.id)
        if live is not None:
            if live.state.is_terminal:
                return  # its end is being committed: judged once it has left ``active``
            if row.state == ss.STOP_IN_PROGRESS:
                try:
                    await self.dispatcher.cancel(run.id, by=f"batch inference {row.id}")
                except RunNotActive:
                    pass
            elif row.state == ss.CREATE_IN_PROGRESS and live.state.value in ("RUNNING", "STOP IN PROGRESS"):
                await self._set(row, ss.RUNNING, f"its job, run {run.id}, is running"
                                + (f" on {live.node}" if live.node else ""), started_at=live.started_at)
            return
        if row.state in (ss.CREATE_IN_PROGRESS, ss.RUNNING, ss.STOP_IN_PROGRESS):
            mount = str(RunPaths(Path(run.run_dir)).mounts / "datasets" / INPUT_NAME)
            message = ""
            if run.state.value == "FAIL TRAIN":
                message = await asyncio.to_thread(job_message, run.run_dir, run.log_path, mount, row.input_path)
            state, reason = outcome(run.state.value, run.exit_code, run.stop_cause.value if run.stop_cause else None,
                                    run.reason, message, stopping=row.state == ss.STOP_IN_PROGRESS)
            await self._set(row, state, reason or row.reason, started_at=row.started_at or run.started_at,
                            ended_at=run.ended_at if state in ss.BATCH_TERMINAL else None)
        if row.state in (ss.COMPLETE_IN_PROGRESS, ss.FAIL_IN_PROGRESS):
            summary = await asyncio.to_thread(read_summary, run.run_dir)
            if row.state == ss.COMPLETE_IN_PROGRESS:
                await self._set(row, ss.COMPLETE, summary_line(summary), summary=summary, ended_at=run.ended_at)
            else:
                await self._set(row, ss.FAIL, row.reason, summary=summary, ended_at=run.ended_at)

    async def _submit(self, row: BatchInference) -> int:
        """Prepare the input and queue the job as the owner's run; the key makes a repeat the same run."""
        model = await self.db.run(get_model, row.model_id)
        if model is None:
            raise BatchError(f"model {row.model_id} no longer exists")
        source = await self._input_entry(row)
        max_seconds = row.max_seconds + MAX_TIME_GRACE if row.max_seconds else None
        return await submit_runtime_run(
            self.scheduler, owner=row.owner, owner_groups=[row.group] if row.group else [], group=row.group,
            kind=ss.KIND_BATCH, parent_id=row.id, client_key=f"batch:{row.id}", name=row.name,
            entry_point=JOB_ENTRY, args=job_args(row, model), model=model, gpus=row.gpus, cpus=row.cpus,
            memory_bytes=row.memory_bytes, max_seconds=max_seconds, inputs=(source,),
            files={JOB_ENTRY: JOB_WRAPPER})

    async def _input_entry(self, row: BatchInference) -> dict[str, Any]:
        """The input as a resolved dataset entry (``EM_DATASET_INPUT``): a dataset version, or the staged folder."""
        ref = parse_input(row.input_path)
        if ref.kind == "dataset":
            (_, group, name, version), = parse_refs({INPUT_NAME: ref.dataset})
            namespace = f"group:{group}" if group else row.owner
            dataset = await self.db.run(dataset_store.find_dataset, namespace, name)
            chosen = {v.version: v for v in dataset.versions}.get(version) if dataset and version else None
            if dataset is None or chosen is None:
                raise BatchError(f"dataset {ref.dataset} no longer exists")
            return {"name": INPUT_NAME, "dataset_id": dataset.id, "dataset": ref.dataset.rsplit(":", 1)[0],
                    "version": chosen.version, "path": self.scheduler.datasets.version_path(dataset, chosen)}
        source = self.dispatcher.runs_dir / str(ref.run_id)
        dest = self.input_dir(row.id)
        try:
            await asyncio.to_thread(_make_private, dest.parent)
            await asyncio.to_thread(stage_run_input, str(source), ref.path, str(dest))
        except OSError as e:
            raise BatchError(f"run {ref.run_id}'s folder {ref.path} cannot be read: "
                             f"{e.strerror or e}") from None
        return {"name": INPUT_NAME, "dataset_id": None, "dataset": ref.text, "version": ref.run_id,
                "path": str(dest)}


def _make_private(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
