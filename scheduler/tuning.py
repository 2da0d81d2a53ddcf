"""The tuning controller: Optuna decides the next trial, every trial is an ordinary run.

One routine, ``reconcile``, brings a tuning in line with its runs and its study,
from the database alone, so that it is the same after a restart as after an event:

* finished trial runs are told to Optuna (the objective's last value, PRUNED for an
  early stop, FAIL otherwise) and their rows get the seed's trial state;
* an Optuna trial without a row (the service died between ``ask`` and writing it)
  is submitted again under the same Idempotency-Key (``tuning:<id>:<number>``), so
  the dispatcher hands back the run it may already have made: no suggestion is
  lost and none runs twice;
* the end conditions are checked (target value, max failed, max trials, grid
  exhausted, total time) and running trials stopped while the tuning winds down;
* up to ``parallel_trials`` trials are kept queued or running.

Optuna's calls block; they run on one thread of their own, against a study in its
own SQLite file (why: docs/tuning.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session
from traitlets import Float
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

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


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


def runs_of(session: Session, run_ids: list[int]) -> dict[int, Run]:
    return {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))} if run_ids else {}


def delete_tuning(session: Session, tuning_id: int) -> None:
    row = session.get(Tuning, tuning_id)
    if row is not None:
        session.delete(row)


def deletion_blockers(session: Session, tuning_id: int) -> list[str]:
    """Why a tuning cannot be deleted: the models made from its best trial."""
    return models_made_from_tuning(session, tuning_id)


# ---------------------------------------------------------------- Optuna (on its own thread)
def make_sampler(spec: TuningSpec, asked: int = 0) -> optuna.samplers.BaseSampler:
    """The strategy's sampler; ``asked`` is how many trials the study already has (a study loaded after a restart).

    A seeded sampler made again would replay its first suggestions, so a loaded study's
    random and TPE samplers are seeded with ``random_seed + asked``: the same tuning restarted
    at the same point suggests the same values, and never one it already ran. The grid sampler
    skips the points its study has already visited by itself.
    """
    if spec.strategy == "grid":
        return optuna.samplers.GridSampler({h.name: h.grid() for h in spec.hyperparameters}, seed=spec.random_seed)
    seed = (spec.random_seed + asked) % 2**32 if spec.random_seed is not None else None
    if spec.strategy == "bayesian":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: TuningSpec) -> optuna.pruners.BasePruner:
    if not spec.early_stopping:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.early_stopping["min_trainings_required"],
                                       n_warmup_steps=spec.early_stopping["start_step"])


def distributions(spec: TuningSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for h in spec.hyperparameters:
        if spec.strategy == "grid" or h.type == "categorical":
            out[h.name] = optuna.distributions.CategoricalDistribution(h.grid())
        elif h.type == "int":
            assert h.min is not None and h.max is not None
            out[h.name] = optuna.distributions.IntDistribution(int(h.min), int(h.max), log=h.log,
                                                               step=int(h.step or 1))
        else:
            assert h.min is not None and h.max is not None
            out[h.name] = optuna.distributions.FloatDistribution(h.min, h.max, log=h.log, step=h.step)
    return out


class Studies:
    """Every tuning's Optuna study, in one SQLite file; all calls on one thread."""

    def __init__(self, path: Path):
        self.url = f"sqlite:///{path}"
        self.path = path
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nothing-optuna")
        self._storage: optuna.storages.RDBStorage | None = None
        self._studies: dict[str, optuna.Study] = {}

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def storage(self) -> optuna.storages.RDBStorage:
        if self._storage is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._storage = optuna.storages.RDBStorage(self.url, engine_kwargs={"connect_args": {"timeout": 30}})
            os.chmod(self.path, 0o600)
        return self._storage

    def study(self, name: str, spec: TuningSpec) -> optuna.Study:
        study = self._studies.get(name)
        if study is None:
            study = optuna.create_study(storage=self.storage(), study_name=name, sampler=make_sampler(spec),
                                        pruner=make_pruner(spec), direction=spec.goal, load_if_exists=True)
            asked = len(study.get_trials(deepcopy=False))
            if asked:  # loaded after a restart: continue the suggestions, do not replay them
                study.sampler = make_sampler(spec, asked)
            self._studies[name] = study
        return study

    # The calls below run on the Optuna thread.
    def trials(self, name: str, spec: TuningSpec) -> list[optuna.trial.FrozenTrial]:
        return self.study(name, spec).get_trials(deepcopy=False)

    def ask(self, name: str, spec: TuningSpec) -> tuple[int, dict]:
        trial = self.study(name, spec).ask(distributions(spec))
        return trial.number, dict(trial.params)

    def report(self, name: str, spec: TuningSpec, number: int, points: list[tuple[int, float]]) -> None:
        study = self.study(name, spec)
        frozen = study.get_trials(deepcopy=False)[number]
        if frozen.state != optuna.trial.TrialState.RUNNING:
            return
        for step, value in points:
            if step not in frozen.intermediate_values:
                study._storage.set_trial_intermediate_value(frozen._trial_id, step, value)

    def should_prune(self, name: str, spec: TuningSpec, number: int, points: list[tuple[int, float]]) -> bool:
        self.report(name, spec, number, points)
        study = self.study(name, spec)
        frozen = study._storage.get_trial(study.get_trials(deepcopy=False)[number]._trial_id)
        return frozen.state == optuna.trial.TrialState.RUNNING and bool(frozen.intermediate_values) and \
            study.pruner.prune(study, frozen)

    def tell(self, name: str, spec: TuningSpec, number: int, state: str, value: float | None,
             points: list[tuple[int, float]]) -> None:
        study = self.study(name, spec)
        if study.get_trials(deepcopy=False)[number].state != optuna.trial.TrialState.RUNNING:
            return  # told before the service stopped
        self.report(name, spec, number, points)
        try:
            if state == "complete":
                study.tell(number, value)
            elif state == "pruned":
                study.tell(number, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(number, state=optuna.trial.TrialState.FAIL)
        except RuntimeError as e:
            # GridSampler stops the study when its grid is done: allowed only inside optimize(); the trial is
            # told by then, and the controller ends the tuning (SuggestionEndReached) itself.
            if "Study.stop" not in str(e):
                raise

    def delete(self, name: str) -> None:
        self._studies.pop(name, None)
        try:
            optuna.delete_study(study_name=name, storage=self.storage())
        except KeyError:
            pass


# ---------------------------------------------------------------- the controller
class TuningController(LoggingConfigurable):
    interval = Float(
        1.0,
        help="""Seconds between passes over running tunings: median stopping reads the trials' metric points,
        missed ends are caught. Example: ``c.TuningController.interval = 5``""",
    ).tag(config=True)

    def __init__(self, scheduler, **kwargs):
        super().__init__(**kwargs)
        self.scheduler = scheduler
        self.dispatcher = scheduler.dispatcher
        self.db = scheduler.db
        self.dir = Path(scheduler.data_dir) / "tunings"
        self.studies = Studies(self.dir / "optuna.sqlite")
        self._locks: dict[int, asyncio.Lock] = {}
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
        self.studies.pool.shutdown(wait=True)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_run_ended(self, run_id: int) -> None:
        self._spawn(self._after_run_end(run_id))

    async def _after_run_end(self, run_id: int) -> None:
        await self.scheduler.tracker.read_ended(run_id)  # the objective's last value first
        for tuning_id in list(self._locks):
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
        self._locks.pop(tuning_id, None)

    # ------------------------------------------------------------------ the one routine
    async def reconcile(self, tuning_id: int, prune: bool = False, first: bool = False) -> None:
        lock = self._locks.setdefault(tuning_id, asyncio.Lock())
        async with lock:
            await self._reconcile(tuning_id, prune, first)

    async def _reconcile(self, tuning_id: int, prune: bool, first: bool) -> None:
        row = await self.db.run(get_tuning, tuning_id)
        if row is None or row.state in ts.TUNING_TERMINAL:
            self._locks.pop(tuning_id, None)
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
        trials = {t.number: t for t in row.trials}
        # 1. Optuna trials asked for but never written (the service stopped in between): submit them again,
        # under the same key, so that a run made before the stop is found instead of a second one.
        for ft in frozen:
            if ft.number not in trials and ft.state == optuna.trial.TrialState.RUNNING:
                if row.state in ts.WINDING_DOWN:
                    await self.studies.call(self.studies.tell, name, spec, ft.number, "fail", None, [])
                    continue
                params = {h.name: h.as_text(ft.params[h.name]) for h in spec.hyperparameters}
                await self._submit(row, spec, ft.number, params)
        row = await self.db.run(get_tuning, tuning_id)
        assert row is not None
        # 2. Trials whose runs ended: the seed's trial state, and Optuna told.
        runs = await self.db.run(runs_of, [t.run_id for t in row.trials if t.run_id is not None])
        for t in row.trials:
            if t.state not in ts.TRIAL_ACTIVE or t.run_id is None:
                continue
            live = self.dispatcher.active.get(t.run_id)
            if live is not None and live.state.is_terminal:
                continue  # its end is being committed: judged once it has left ``active`` and its files are read
            run = runs.get(t.run_id)
            if live is None and run is not None:  # ended: its files read a last time before the objective is
                await self.scheduler.tracker.read_ended(t.run_id)
                run = await self.db.run(store.get_run, t.run_id)
            run_state = live.state.value if live is not None else (run.state.value if run else "FAIL TRAIN")
            cause = (live.stop_cause if live is not None else (run.stop_cause if run else None))
            objective = _objective(run, spec) if live is None else None
            state = ts.trial_state(run_state, cause.value if cause else None, objective, t.early_stop)
            if state in ts.TRIAL_ACTIVE:
                if state != t.state:
                    await self.db.run(update_trial, t.id, dict(state=state))
                    t.state = state
                continue
            points = await self._points(t.run_id, spec)
            told = {ts.T_SUCCEEDED: "complete", ts.T_EARLY_STOPPED: "pruned"}.get(state, "fail")
            value = objective if state == ts.T_SUCCEEDED else (points[-1][1] if points and
                                                               state == ts.T_EARLY_STOPPED else None)
            await self.studies.call(self.studies.tell, name, spec, t.number, told, objective, points)
            await self.db.run(update_trial, t.id, dict(state=state, value=value, ended_at=now))
            t.state, t.value = state, value
        # 3. Median stopping of running trials.
        if prune and spec.early_stopping and row.state == ts.RUNNING:
            for t in row.trials:
                live = self.dispatcher.active.get(t.run_id) if t.run_id is not None else None
                if t.state != ts.T_RUNNING or t.early_stop or live is None or live.state.value != "RUNNING":
                    continue
                points = await self._points(t.run_id, spec)
                if points and await self.studies.call(self.studies.should_prune, name, spec, t.number, points):
                    log.info("Tuning %s: trial %s (run %s) early stopped at step %s", tuning_id, t.number,
                             t.run_id, points[-1][0])
                    await self.db.run(update_trial, t.id, dict(early_stop=True))
                    t.early_stop = True
                    await self.dispatcher.stop_run(live, StopCause.CANCEL,
                                                   f"early stopped by tuning {tuning_id} (median stopping at step "
                                                   f"{points[-1][0]})")
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
            if state != row.state:
                await self.db.run(set_tuning_state, tuning_id, state, reason, detail, now)
                row.state = state
        if row.state in ts.WINDING_DOWN:
            for t in active:
                try:
                    await self.dispatcher.cancel(t.run_id, by=f"tuning {tuning_id}")
                except RunNotActive:
                    pass
            if not active:
                final = ts.WINDING_DOWN[row.state]
                await self.db.run(set_tuning_state, tuning_id, final, row.reason or "its trials have ended", "", now)
                self._locks.pop(tuning_id, None)
            return
        if row.state in ts.TUNING_TERMINAL:
            self._locks.pop(tuning_id, None)
            return
        # 5. New trials, up to the parallel cap.
        count, running = len(row.trials), len(active)
        while running < spec.parallel_trials and count < limit:
            number, raw = await self.studies.call(self.studies.ask, name, spec)
            params = {h.name: h.as_text(raw[h.name]) for h in spec.hyperparameters}
            try:
                await self._submit(row, spec, number, params)
            except (TuningError, SpecError) as e:
                await self.studies.call(self.studies.tell, name, spec, number, "fail", None, [])
                if first:
                    raise
                await self.db.run(set_tuning_state, tuning_id, ts.FAIL, f"trial {number} could not be submitted: {e}",
                                  "", now)
                return
            count, running, first = count + 1, running + 1, False
        if row.state == ts.CREATE_IN_PROGRESS:
            await self.db.run(set_tuning_state, tuning_id, ts.RUNNING, "its first trials are queued", "", now)

    async def _submit(self, row: Tuning, spec: TuningSpec, number: int, params: dict[str, str]) -> None:
        """Submit one trial as the tuning owner's run, through a run's checks; the key makes a repeat the same run."""
        sched = self.scheduler
        body = ts.trial_body(spec, row.trial_fields, number, params)
        values = parse_submission(body, sched.max_gpus_per_node, sched.max_cpus_per_node, False, row.owner_groups,
                                  cluster_nodes=len(sched.inventory))
        archive = await asyncio.to_thread(Path(row.archive_path).read_bytes)
        values.update(owner=row.owner, snapshot_bytes=len(archive), client_key=f"tuning:{row.id}:{number}")
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
