"""The Optuna side of tunings: each strategy's sampler, median stopping, and where the studies are kept.

``Studies`` keeps the tunings' studies in Optuna's RDB storage in the scheduler's own database
(``c.TuningController.study_storage = "database"``, the default), so they are backed up, and on
PostgreSQL shared, with everything else; or each in an Optuna journal file of its own
(``"journal"``). Studies made by earlier versions stay where they are and keep being used: journal
files, and the RDB storage in ``optuna.sqlite``. All Optuna calls are made on one thread.
Why and what it costs: docs/tuning.md ("Storage").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages.journal._file import BaseJournalFileLock  # the type JournalFileBackend's lock_obj takes
from sqlalchemy.pool import NullPool

from . import tuning_spec as ts
from .tuning_spec import TuningSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

STUDY_STORAGES = ("database", "journal")
# How long a write to an SQLite database waits for the other writer (the scheduler's database thread, or
# the Optuna thread): each holds the write lock for one short transaction, milliseconds (docs/tuning.md).
BUSY_TIMEOUT_S = 30.0


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
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=ts.TPE_STARTUP_TRIALS)
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


class _FlockLock(BaseJournalFileLock):
    """The journal's write lock as ``flock(2)``: the kernel drops it when its process dies.

    Optuna's default lock is a symlink beside the file; a scheduler killed while holding it
    would leave it behind, and the next start would wait out its 30-second grace period.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line cut short (power lost mid-write): Optuna would refuse every line appended after it."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "rb+") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _engine_kwargs(url: str) -> dict[str, Any]:
    """Optuna's engine: on SQLite the scheduler's settings (WAL, no fsync per commit, a long busy wait)."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return {"pool_pre_ping": True}
    path = parsed.database or ":memory:"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return {"creator": connect}


def database_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage in the database at ``url``, its tables made or brought to Optuna's head revision.

    Optuna's revision is in ``alembic_version``, ours in ``nothing_alembic_version`` (``db.py``); their
    tables have no name in common (``tests/test_tuning_spec.py`` checks). An Optuna that is newer than its
    tables upgrades them here, as the scheduler does its own at start, rather than refusing every study.
    """
    storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), skip_compatibility_check=True)
    current, head = storage.get_current_version(), storage.get_head_version()
    if current != head:
        if current not in storage.get_all_versions():
            raise RuntimeError(f"the Optuna tables in the scheduler's database are at revision {current}, which "
                               f"Optuna {optuna.__version__} does not know (made by a newer Optuna?)")
        log.info("Upgrading Optuna's tables in the scheduler's database from revision %s to %s", current, head)
        root = logging.getLogger()
        # Optuna's alembic env.py configures logging from its alembic.ini when the root logger has no handler,
        # which would disable the scheduler's loggers.
        guard = logging.NullHandler() if not root.handlers else None
        if guard is not None:
            root.addHandler(guard)
        try:
            storage.upgrade()
        finally:
            if guard is not None:
                root.removeHandler(guard)
    return storage


def has_optuna_tables(url: str) -> bool:
    """Whether Optuna has made its tables at ``url``, looked up without making them."""
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


class Studies:
    """Every tuning's Optuna study, in the scheduler's database or a journal file; all calls on one thread.

    A new study goes where ``new_studies`` says: ``"database"``, Optuna's RDB storage at
    ``database_url`` (the scheduler's database: Optuna's tables beside ours), or ``"journal"``,
    ``DATA_DIR/tunings/studies/<name>.journal``, Optuna's append-only journal, one write and
    fsync per change. A study that exists stays where it is, whatever ``new_studies`` says:
    its journal file, the database, or the RDB storage in ``optuna.sqlite`` that versions before
    journal files used; so a tuning that spans an upgrade or a change of setting continues where
    it was. Optuna wraps the RDB storage in its cache (``_CachedStorage``): finished trials are
    read from the database once.
    """

    def __init__(self, folder: Path, database_url: str, new_studies: str = "database"):
        if new_studies not in STUDY_STORAGES:
            raise ValueError(f"study storage must be one of {STUDY_STORAGES}, not {new_studies!r}")
        self.folder = folder / "studies"
        self.legacy_path = folder / "optuna.sqlite"
        self.database_url = database_url
        self.new_studies = new_studies
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nothing-optuna")
        self._database: optuna.storages.RDBStorage | None = None
        self._legacy: optuna.storages.RDBStorage | None = None
        self._legacy_names: set[str] | None = None
        self._studies: dict[str, optuna.Study] = {}

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def journal_path(self, name: str) -> Path:
        return self.folder / f"{name}.journal"

    def database(self) -> optuna.storages.RDBStorage:
        if self._database is None:
            self._database = database_storage(self.database_url)
        return self._database

    def legacy_names(self) -> set[str]:
        """The studies of the old SQLite file, read once: new studies are never made there."""
        if self._legacy_names is None:
            self._legacy_names = set()
            if self.legacy_path.exists():
                self._legacy = optuna.storages.RDBStorage(f"sqlite:///{self.legacy_path}",
                                                          engine_kwargs={"connect_args": {"timeout": 30}})
                self._legacy_names = {s.study_name for s in self._legacy.get_all_studies()}
        return self._legacy_names

    def _in_database(self, name: str) -> bool:
        """Whether the database has the study; with journal files for new studies, looked up without making
        Optuna's tables there."""
        if self._database is None and self.new_studies != "database" and not has_optuna_tables(self.database_url):
            return False
        try:
            self.database().get_study_id_from_name(name)
            return True
        except KeyError:
            return False

    def where(self, name: str) -> str | None:
        """Where the study is kept: ``journal``, ``legacy`` (``optuna.sqlite``), ``database``, or None (nowhere)."""
        if self.journal_path(name).exists():
            return "journal"
        if name in self.legacy_names():
            return "legacy"
        return "database" if self._in_database(name) else None

    def storage(self, name: str) -> optuna.storages.BaseStorage:
        kept = self.where(name) or self.new_studies
        if kept == "legacy":
            assert self._legacy is not None
            return self._legacy
        if kept == "database":
            return self.database()
        path = self.journal_path(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        _drop_torn_tail(path)
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path), lock_obj=_FlockLock(path)))

    def study(self, name: str, spec: TuningSpec) -> optuna.Study:
        study = self._studies.get(name)
        if study is None:
            study = optuna.create_study(storage=self.storage(name), study_name=name, sampler=make_sampler(spec),
                                        pruner=make_pruner(spec), direction=spec.goal, load_if_exists=True)
            asked = len(study.get_trials(deepcopy=False))
            if asked:  # loaded after a restart: continue the suggestions, do not replay them
                study.sampler = make_sampler(spec, asked)
            self._studies[name] = study
        return study

    def close(self) -> None:
        """Close the databases' connections (on the Optuna thread, like every other call)."""
        for storage in (self._database, self._legacy):
            if storage is not None:
                storage.engine.dispose()

    # The calls below run on the Optuna thread.
    def trials(self, name: str, spec: TuningSpec) -> list[optuna.trial.FrozenTrial]:
        return self.study(name, spec).get_trials(deepcopy=False)

    def ask(self, name: str, spec: TuningSpec) -> tuple[int, dict]:
        trial = self.study(name, spec).ask(distributions(spec))
        return trial.number, dict(trial.params)

    def ask_ahead(self, name: str, spec: TuningSpec) -> int | None:
        """Ask for the next suggestion now if the trials in flight cannot change it; its number, or None.

        The study's trials are read only for a strategy whose answer depends on them (TPE's, up to its
        start): a read is a query with the database storage.
        """
        if not ts.may_ask_ahead(spec.strategy, ts.TPE_STARTUP_TRIALS, 0):
            states = [t.state for t in self.trials(name, spec)]
            finished = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
            if not ts.may_ask_ahead(spec.strategy, finished, states.count(optuna.trial.TrialState.RUNNING)):
                return None
        return self.ask(name, spec)[0]

    def report(self, name: str, spec: TuningSpec, number: int, points: list[tuple[int, float]]) -> int | None:
        """Store the points not yet stored as intermediate values; the trial's id, or None if it has ended."""
        study = self.study(name, spec)
        frozen = study.get_trials(deepcopy=False)[number]
        if frozen.state != optuna.trial.TrialState.RUNNING:
            return None
        for step, value in points:
            if step not in frozen.intermediate_values:
                study._storage.set_trial_intermediate_value(frozen._trial_id, step, value)
        return frozen._trial_id

    def should_prune(self, name: str, spec: TuningSpec, number: int, points: list[tuple[int, float]]) -> bool:
        trial_id = self.report(name, spec, number, points)
        if trial_id is None:
            return False
        study = self.study(name, spec)
        frozen = study._storage.get_trial(trial_id)
        return frozen.state == optuna.trial.TrialState.RUNNING and bool(frozen.intermediate_values) and \
            study.pruner.prune(study, frozen)

    def tell(self, name: str, spec: TuningSpec, number: int, state: str, value: float | None,
             points: list[tuple[int, float]]) -> None:
        """Tell a trial's end once: one told before the service stopped is skipped. The trial is read only
        when there are points to store: each read is a query with the database storage."""
        study = self.study(name, spec)
        if points and self.report(name, spec, number, points) is None:
            return  # told before the service stopped
        told: dict[str, Any] = {"values": value} if state == "complete" else \
            {"state": optuna.trial.TrialState.PRUNED if state == "pruned" else optuna.trial.TrialState.FAIL}
        try:
            study.tell(number, skip_if_finished=True, **told)
        except RuntimeError as e:
            # GridSampler stops the study when its grid is done: allowed only inside optimize(); the trial is
            # told by then, and the controller ends the tuning (SuggestionEndReached) itself.
            if "Study.stop" not in str(e):
                raise

    def tell_all(self, name: str, spec: TuningSpec, told: list[tuple[int, str, float | None, list]]) -> None:
        for number, state, value, points in told:
            self.tell(name, spec, number, state, value, points)

    def delete(self, name: str) -> None:
        self._studies.pop(name, None)
        kept = self.where(name)
        if kept == "journal":
            self.journal_path(name).unlink()
        elif kept == "legacy":
            assert self._legacy is not None
            optuna.delete_study(study_name=name, storage=self._legacy)
            self.legacy_names().discard(name)
        elif kept == "database":
            optuna.delete_study(study_name=name, storage=self.database())
