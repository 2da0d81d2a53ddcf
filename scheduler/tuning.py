"""The tuning controller: Optuna decides the next trial, every trial is an ordinary run.

One routine, ``reconcile``, brings a tuning in line with its runs and its study,
from the database and the study alone, so that it is the same after a restart as after an event:

* finished trial runs are judged (the objective's last value, PRUNED for an early
  stop, FAIL otherwise), told to Optuna, and their rows get the seed's trial state;
* an Optuna trial without a row is a suggestion waiting for a free slot: asked ahead
  (random, grid, TPE's random start), or asked before the service stopped. It is
  submitted under the Idempotency-Key ``tuning:<id>:<number>``, and one asked by an
  earlier process is first looked up by that key, so a run made before a kill is
  adopted: no suggestion is lost and none runs twice;
* the end conditions are checked (target value, max failed, max trials, grid
  exhausted, total time) and running trials stopped while the tuning winds down;
* up to ``parallel_trials`` trials are kept queued or running; a waiting suggestion is
  submitted before the ended trial is told, so a trial's end leads straight to the next.

Optuna's calls block; they run on one thread of their own, against the studies in the
scheduler's database or in journal files (``c.TuningController.study_storage``; docs/tuning.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session
from traitlets import Enum, Float
from traitlets.config import LoggingConfigurable

from . import store
from . import tuning_spec as ts
from .dispatcher import RunNotActive, utcnow
from .models import models_made_from_tuning
from .orm import Run, Tuning, TuningTrial
from .spec import SpecError, parse_submission
from .states import StopCause
from .tracking_store import metric_series
from .tuning_spec import TuningSpec
from .tuning_studies import STUDY_STORAGES, Studies

log = logging.getLogger(__name__)


class TuningError(Exception):
    """A tuning's trial could not be submitted (the message says why)."""


# ---------------------------------------------------------------- database work (on the database thread)
def insert_tuning(session: Session, values: dict) -> int:
    row = Tuning(**values)
    session.add(row)
    session.flush()
    row.study_name = f"tuning-{row.id}"
    return row.id


def get_tuning(session: Session, tuning_id: int) -> Tuning | None:
    row = session.get(Tuning, tuning_id)
    if row is not None:
        list(row.trials)
    return row


def list_tunings(session: Session, owner: str | None) -> list[Tuning]:
    q = select(Tuning).order_by(Tuning.id.desc())
    if owner is not None:
        q = q.where(Tuning.owner == owner)
    rows = list(session.scalars(q))
    for r in rows:
        list(r.trials)
    return rows


def active_tuning_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Tuning.id).where(Tuning.state.not_in(ts.TUNING_TERMINAL))))


def set_tuning_state(session: Session, tuning_id: int, state: str, reason: str, detail: str = "",
                     at: datetime | None = None) -> None:
    row = session.get(Tuning, tuning_id)
    assert row is not None
    if row.state == state:
        return
    ts.check_tuning_transition(row.state, state)
    row.state, row.reason = state, reason
    if detail:
        row.state_detail = detail
    if state == ts.RUNNING and row.started_at is None:
        row.started_at = at
    if state in ts.TUNING_TERMINAL:
        row.ended_at = at


def add_trial(session: Session, tuning_id: int, number: int, run_id: int, params: dict, at: datetime) -> None:
    exists = session.scalar(select(TuningTrial).where(TuningTrial.tuning_id == tuning_id,
                                                      TuningTrial.number == number))
    if exists is None:
        session.add(TuningTrial(tuning_id=tuning_id, number=number, run_id=run_id, params=params,
                                state=ts.T_CREATED, created_at=at))


def update_trial(session: Session, trial_id: int, values: dict[str, Any]) -> None:
    row = session.get(TuningTrial, trial_id)
    assert row is not None
    for k, v in values.items():
        setattr(row, k, v)


def update_trials(session: Session, changes: list[tuple[int, dict[str, Any]]]) -> None:
    for trial_id, values in changes:
        update_trial(session, trial_id, values)


def tuning_of_run(session: Session, run_id: int) -> int | None:
    return session.scalar(select(TuningTrial.tuning_id).where(TuningTrial.run_id == run_id))


def trial_key(tuning_id: int, number: int) -> str:
    """A trial's Idempotency-Key: its run is made once, however often it is submitted."""
    return f"tuning:{tuning_id}:{number}"


def runs_of(session: Session, run_ids: list[int]) -> dict[int, Run]:
    return {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))} if run_ids else {}


def delete_tuning(session: Session, tuning_id: int) -> None:
    row = session.get(Tuning, tuning_id)
    if row is not None:
        session.delete(row)


def deletion_blockers(session: Session, tuning_id: int) -> list[str]:
    """Why a tuning cannot be deleted: the models made from its best trial."""
    return models_made_from_tuning(session, tuning_id)


# ---------------------------------------------------------------- the controller
class TuningController(LoggingConfigurable):
    interval = Float(
        1.0,
        help="""Seconds between passes over running tunings: median stopping reads the trials' metric points,
        missed ends are caught. Example: ``c.TuningController.interval = 5``""",
    ).tag(config=True)

    study_storage = Enum(
        list(STUDY_STORAGES), "database",
        help="""Where new tunings' Optuna studies are kept: ``"database"``, Optuna's RDB storage in the
        scheduler's database (``c.NothingScheduler.db_url``: one database to back up, shared by the service's
        replicas on PostgreSQL), or ``"journal"``, an Optuna journal file per study in
        ``DATA_DIR/tunings/studies/``. A study that exists stays where it is, so changing this (or upgrading
        from a version that used journal files) leaves running tunings where they were.
        Example: ``c.TuningController.study_storage = "journal"``""",
    ).tag(config=True)

    def __init__(self, scheduler, **kwargs):
        super().__init__(**kwargs)
        self.scheduler = scheduler
        self.dispatcher = scheduler.dispatcher
        self.db = scheduler.db
        self.dir = Path(scheduler.data_dir) / "tunings"
        self.studies = Studies(self.dir, self.db.url, self.study_storage)
        self._locks: dict[int, asyncio.Lock] = {}
        # Per tuning, the Optuna trials this process asked for and has not submitted: known to have no run,
        # so only suggestions left by an earlier process are looked up by their key.
        self._unsubmitted: dict[int, set[int]] = {}
        # The runs of active trials, to their tuning: a run's end reconciles only its own tuning.
        self._run_tuning: dict[int, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.dispatcher.run_ended.append(self._on_run_ended)
        self._loop_task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._loop_task, *self._tasks] if t], return_exceptions=True)
        await self.studies.call(self.studies.close)
        self.studies.pool.shutdown(wait=True)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_run_ended(self, run_id: int) -> None:
        self._spawn(self._after_run_end(run_id))

    async def _after_run_end(self, run_id: int) -> None:
        tuning_id = self._run_tuning.get(run_id)
        if tuning_id is None and self._locks:  # a trial this process has not seen yet (just after a restart)
            tuning_id = await self.db.run(tuning_of_run, run_id)
        if tuning_id is not None:
            await self.reconcile_safely(tuning_id)

    async def _loop(self) -> None:
        while True:
            try:
                for tuning_id in await self.db.run(active_tuning_ids):
                    self._locks.setdefault(tuning_id, asyncio.Lock())
                    await self.reconcile_safely(tuning_id, prune=True)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the controller must outlive any one tuning
                log.exception("Tuning pass failed; retrying at the next pass")
            await asyncio.sleep(self.interval)

    async def reconcile_safely(self, tuning_id: int, prune: bool = False) -> None:
        try:
            await self.reconcile(tuning_id, prune)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Tuning %s: reconcile failed; retried at the next pass", tuning_id)

    # ------------------------------------------------------------------ entry points of the API
    def archive_path(self, token: str) -> Path:
        return self.dir / f"{token}.tar.gz"

    async def create(self, values: dict, archive: bytes) -> int:
        """Store the tuning and submit its first trials; a first trial the checks refuse undoes everything."""
        path = Path(values["archive_path"])
        await asyncio.to_thread(_write_private, path, archive)
        try:
            tuning_id = await self.db.run(insert_tuning, values)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._locks[tuning_id] = asyncio.Lock()
        try:
            await self.reconcile(tuning_id, first=True)
        except (TuningError, SpecError):
            await self.remove(tuning_id)
            raise
        return tuning_id

    async def stop_tuning(self, tuning_id: int, by: str) -> None:
        row = await self.db.run(get_tuning, tuning_id)
        if row is None or row.state in ts.TUNING_TERMINAL or row.state in ts.WINDING_DOWN:
            return
        await self.db.run(set_tuning_state, tuning_id, ts.STOP_IN_PROGRESS, f"stopped by {by}", "", utcnow())
        await self.reconcile_safely(tuning_id)

    async def remove(self, tuning_id: int) -> None:
        row = await self.db.run(get_tuning, tuning_id)
        if row is None:
            return
        await self.studies.call(self.studies.delete, row.study_name)
        await self.db.run(delete_tuning, tuning_id)
        Path(row.archive_path).unlink(missing_ok=True)
        self._forget(tuning_id)

    def _forget(self, tuning_id: int) -> None:
        self._locks.pop(tuning_id, None)
        self._unsubmitted.pop(tuning_id, None)
        for run_id in [r for r, t in self._run_tuning.items() if t == tuning_id]:
            del self._run_tuning[run_id]

    # ------------------------------------------------------------------ the one routine
    async def reconcile(self, tuning_id: int, prune: bool = False, first: bool = False) -> None:
        lock = self._locks.setdefault(tuning_id, asyncio.Lock())
        async with lock:
            await self._reconcile(tuning_id, prune, first)

    async def _reconcile(self, tuning_id: int, prune: bool, first: bool) -> None:
        row = await self.db.run(get_tuning, tuning_id)
        if row is None or row.state in ts.TUNING_TERMINAL:
            self._forget(tuning_id)
            return
        spec = TuningSpec.from_json(row.spec)
        name = row.study_name
        now = utcnow()
        if row.state == ts.CREATE_REQUESTED:
            await self.db.run(set_tuning_state, tuning_id, ts.CREATE_IN_PROGRESS, "creating its Optuna study", "",
                              now)
            row.state = ts.CREATE_IN_PROGRESS
        try:
            frozen = await self.studies.call(self.studies.trials, name, spec)
        except Exception as e:  # noqa: BLE001 - the study cannot be made: the tuning's creation failed
            log.exception("Tuning %s: its Optuna study could not be created", tuning_id)
            if row.state == ts.CREATE_IN_PROGRESS:
                await self.db.run(set_tuning_state, tuning_id, ts.CREATE_FAILED, f"Optuna study: {e}", "", now)
            return
        # 1. Optuna trials without a row: suggestions asked ahead, or asked before the service stopped. One asked
        # by an earlier process may have its run already (made, then killed before the row): found by its key
        # and adopted. The others wait for a free slot, and are submitted under that same key.
        numbers = {t.number for t in row.trials}
        unsubmitted = self._unsubmitted.setdefault(tuning_id, set())
        pending: list[tuple[int, dict[str, str]]] = []
        adopted = False
        for ft in frozen:
            if ft.number in numbers or ft.state != optuna.trial.TrialState.RUNNING:
                continue
            params = {h.name: h.as_text(ft.params[h.name]) for h in spec.hyperparameters}
            if ft.number not in unsubmitted:
                made = await self.db.run(store.run_by_client_key, row.owner, trial_key(tuning_id, ft.number))
                if made is not None:
                    await self.db.run(add_trial, tuning_id, ft.number, made.id, params, now)
                    adopted = True
                    continue
                unsubmitted.add(ft.number)
            pending.append((ft.number, params))
        if adopted:
            row = await self.db.run(get_tuning, tuning_id)
            assert row is not None
        for t in row.trials:
            if t.state in ts.TRIAL_ACTIVE and t.run_id is not None:
                self._run_tuning[t.run_id] = tuning_id
        # 2. Trials whose runs ended: each run's files read a last time, then only those runs loaded; judged
        # in memory here, told to Optuna and written (in that order: a kill in between judges them again) below.
        live = {t.run_id: self.dispatcher.active.get(t.run_id) for t in row.trials
                if t.state in ts.TRIAL_ACTIVE and t.run_id is not None}
        ended = [run_id for run_id, r in live.items() if r is None]
        for run_id in ended:
            await self.scheduler.tracker.read_ended(run_id)
        runs = await self.db.run(runs_of, ended)
        judged: list[tuple[TuningTrial, str, float | None, list[tuple[int, float]]]] = []
        for t in row.trials:
            if t.run_id not in live:
                continue
            run, active_run = runs.get(t.run_id), live[t.run_id]
            if active_run is not None and active_run.state.is_terminal:
                continue  # its end is being committed: judged once it has left ``active`` and its files are read
            if active_run is not None:
                run_state, cause, objective = active_run.state.value, active_run.stop_cause, None
            else:
                run_state = run.state.value if run is not None else "FAIL TRAIN"
                cause, objective = (run.stop_cause if run is not None else None), _objective(run, spec)
            state = ts.trial_state(run_state, cause.value if cause else None, objective, t.early_stop)
            if state in ts.TRIAL_ACTIVE:
                if state != t.state:
                    await self.db.run(update_trial, t.id, dict(state=state))
                    t.state = state
                continue
            points = await self._points(t.run_id, spec) if spec.early_stopping else []
            judged.append((t, state, objective, points))
            t.state = state
            t.value = objective if state == ts.T_SUCCEEDED else (points[-1][1] if points and
                                                                 state == ts.T_EARLY_STOPPED else None)
        # 3. Median stopping of running trials.
        if prune and spec.early_stopping and row.state == ts.RUNNING:
            await self._median_stop(row, spec)
        # 4. The end conditions.
        active = [t for t in row.trials if t.state in ts.TRIAL_ACTIVE]
        done = [t for t in row.trials if t.state not in ts.TRIAL_ACTIVE]
        failed = sum(t.state in ts.TRIAL_FAILED for t in row.trials)
        grid = spec.grid_size()
        limit = min(spec.max_trials, grid) if grid is not None else spec.max_trials
        state, detail, reason = row.state, "", ""
        if state in (ts.CREATE_IN_PROGRESS, ts.RUNNING):
            reached = [t for t in done if t.state == ts.T_SUCCEEDED and t.value is not None and spec.reached(t.value)]
            if failed >= spec.max_failed_trials:
                state, reason = ts.FAIL_IN_PROGRESS, f"{failed} trials failed (max failed trials {spec.max_failed_trials})"
            elif reached:
                state, detail = ts.COMPLETE_IN_PROGRESS, ts.GOAL_REACHED
                reason = f"trial {reached[0].number} reached the target {spec.target:g} ({reached[0].value:g})"
            elif spec.max_seconds and row.created_at + timedelta(seconds=spec.max_seconds) <= now:
                state, reason = ts.STOP_IN_PROGRESS, f"exceeded its maximum total time of {spec.max_seconds}s"
            elif len(row.trials) >= limit and not active:
                state = ts.COMPLETE
                detail = ts.SUGGESTION_END_REACHED if grid is not None and grid <= spec.max_trials \
                    else ts.MAX_TRIALS_REACHED
                reason = f"all {len(row.trials)} trials ended"
        if state != row.state or state in ts.WINDING_DOWN:
            await self._record(name, spec, judged)
            if state != row.state:
                await self.db.run(set_tuning_state, tuning_id, state, reason, detail, now)
                row.state = state
        if pending and (row.state in ts.WINDING_DOWN or row.state in ts.TUNING_TERMINAL):
            # Suggestions it will not run: told FAIL, so that the study has no trial left RUNNING.
            await self.studies.call(self.studies.tell_all, name, spec,
                                    [(number, "fail", None, []) for number, _ in pending])
            unsubmitted.clear()
        if row.state in ts.WINDING_DOWN:
            for t in active:
                try:
                    await self.dispatcher.cancel(t.run_id, by=f"tuning {tuning_id}")
                except RunNotActive:
                    pass
            if not active:
                final = ts.WINDING_DOWN[row.state]
                await self.db.run(set_tuning_state, tuning_id, final, row.reason or "its trials have ended", "", now)
                self._forget(tuning_id)
            return
        if row.state in ts.TUNING_TERMINAL:
            self._forget(tuning_id)
            return
        # 5. New trials, up to the parallel cap: suggestions already asked first, so that an ended trial is
        # followed by the next one's submission before Optuna is told of it; then asks (TPE's after the tell).
        count, running = len(row.trials), len(active)
        while pending and running < spec.parallel_trials and count < limit:
            number, params = pending.pop(0)
            if not await self._submit_or_fail(row, spec, number, params, first, now):
                await self._record(name, spec, judged)
                return
            count, running, first = count + 1, running + 1, False
        await self._record(name, spec, judged)
        while running < spec.parallel_trials and count + len(pending) < limit:
            number, raw = await self.studies.call(self.studies.ask, name, spec)
            params = {h.name: h.as_text(raw[h.name]) for h in spec.hyperparameters}
            if not await self._submit_or_fail(row, spec, number, params, first, now):
                return
            count, running, first = count + 1, running + 1, False
        if row.state == ts.CREATE_IN_PROGRESS:
            await self.db.run(set_tuning_state, tuning_id, ts.RUNNING, "its first trials are queued", "", now)
        # 6. Ask ahead, off the path from a trial's end to the next submission, when the suggestion cannot
        # depend on the trials in flight (``tuning_spec.may_ask_ahead``); it waits, as a RUNNING Optuna trial
        # without a row, for the next free slot. Never beyond the limit: asked + ahead <= max trials.
        if not pending and count < limit:
            ahead = await self.studies.call(self.studies.ask_ahead, name, spec)
            if ahead is not None:
                unsubmitted.add(ahead)

    async def _record(self, name: str, spec: TuningSpec,
                      judged: list[tuple[TuningTrial, str, float | None, list[tuple[int, float]]]]) -> None:
        """Tell Optuna of ended trials, then write their rows (a row still active is judged and told again)."""
        if not judged:
            return
        told = [(t.number, {ts.T_SUCCEEDED: "complete", ts.T_EARLY_STOPPED: "pruned"}.get(state, "fail"), objective,
                 points) for t, state, objective, points in judged]
        await self.studies.call(self.studies.tell_all, name, spec, told)
        now = utcnow()
        await self.db.run(update_trials, [(t.id, dict(state=state, value=t.value, ended_at=now))
                                          for t, state, _, _ in judged])
        for t, _, _, _ in judged:
            if t.run_id is not None:
                self._run_tuning.pop(t.run_id, None)
        judged.clear()

    async def _submit_or_fail(self, row: Tuning, spec: TuningSpec, number: int, params: dict[str, str],
                              first: bool, now: datetime) -> bool:
        """Submit one trial; one the checks refuse fails the tuning (or, for the first one, is raised)."""
        self._unsubmitted.get(row.id, set()).discard(number)  # looked up by its key if this fails half-way
        try:
            await self._submit(row, spec, number, params)
            return True
        except (TuningError, SpecError) as e:
            await self.studies.call(self.studies.tell, row.study_name, spec, number, "fail", None, [])
            if first:
                raise
            await self.db.run(set_tuning_state, row.id, ts.FAIL, f"trial {number} could not be submitted: {e}",
                              "", now)
            return False

    async def _median_stop(self, row: Tuning, spec: TuningSpec) -> None:
        for t in row.trials:
            live = self.dispatcher.active.get(t.run_id) if t.run_id is not None else None
            if t.state != ts.T_RUNNING or t.early_stop or live is None or live.state.value != "RUNNING":
                continue
            points = await self._points(t.run_id, spec)
            if points and await self.studies.call(self.studies.should_prune, row.study_name, spec, t.number, points):
                log.info("Tuning %s: trial %s (run %s) early stopped at step %s", row.id, t.number,
                         t.run_id, points[-1][0])
                await self.db.run(update_trial, t.id, dict(early_stop=True))
                t.early_stop = True
                await self.dispatcher.stop_run(live, StopCause.CANCEL,
                                               f"early stopped by tuning {row.id} (median stopping at step "
                                               f"{points[-1][0]})")

    async def _submit(self, row: Tuning, spec: TuningSpec, number: int, params: dict[str, str]) -> None:
        """Submit one trial as the tuning owner's run, through a run's checks; the key makes a repeat the same run."""
        sched = self.scheduler
        body = ts.trial_body(spec, row.trial_fields, number, params)
        values = parse_submission(body, sched.max_gpus_per_node, sched.max_cpus_per_node, False, row.owner_groups,
                                  cluster_nodes=len(sched.inventory))
        archive = await asyncio.to_thread(Path(row.archive_path).read_bytes)
        values.update(owner=row.owner, snapshot_bytes=len(archive), client_key=trial_key(row.id, number))
        values.pop("dataset_refs", None)
        values["datasets"] = row.trial_fields.get("_datasets")
        try:
            sched.tracker.check_submission(row.owner, values["group"])
        except Exception as e:  # noqa: BLE001 - StorageQuotaExceeded: the owner's storage is full
            raise TuningError(str(e)) from None
        from .snapshot import SnapshotError
        try:
            run = await self.dispatcher.submit(values, archive)
            run_id = run.id
        except store.DuplicateSubmission as e:
            run_id = e.run.id
        except SnapshotError as e:
            raise TuningError(str(e)) from None
        self._run_tuning[run_id] = row.id
        await self.db.run(add_trial, row.id, number, run_id, params, utcnow())

    async def _points(self, run_id: int, spec: TuningSpec) -> list[tuple[int, float]]:
        rows = await self.db.run(metric_series, run_id, [spec.objective_metric], 100_000)
        by_step: dict[int, float] = {}
        for _, step, _, value in rows:
            if value is not None:
                by_step[int(step)] = float(value)
        return sorted(by_step.items())


def _objective(run: Run | None, spec: TuningSpec) -> float | None:
    """The objective: the last value of the objective metric (EasyMaker's 목표 지표), or None."""
    entry = ((run.metric_summary if run is not None else None) or {}).get(spec.objective_metric) or {}
    value = entry.get("latest")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
    os.replace(tmp, path)


def copy_archive(src: str, dst: Path) -> None:
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)
