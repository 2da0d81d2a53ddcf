"""The Optuna side of tunings: each strategy's sampler, median stopping, and where the studies are kept.

``Studies`` keeps every tuning's study in an Optuna journal file of its own and makes all
Optuna calls on one thread; studies made by earlier versions in the RDB storage in
``optuna.sqlite`` stay there and keep being used. Why a journal and not the RDB storage,
and why not the scheduler's database: docs/tuning.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import os
from pathlib import Path

import optuna
from optuna.storages.journal._file import BaseJournalFileLock  # the type JournalFileBackend's lock_obj takes

from . import tuning_spec as ts
from .tuning_spec import TuningSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


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


class Studies:
    """Every tuning's Optuna study, each in a journal file of its own; all calls on one thread.

    A study is ``DATA_DIR/tunings/studies/<name>.journal``: Optuna's append-only journal
    storage, one write and fsync per change, the study kept in memory (docs/tuning.md says why
    not the RDB storage). Studies made before, in the RDB storage in ``optuna.sqlite``, stay
    there and keep being used, so a tuning that spans the upgrade continues where it was.
    """

    def __init__(self, folder: Path):
        self.folder = folder / "studies"
        self.legacy_path = folder / "optuna.sqlite"
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nothing-optuna")
        self._legacy: optuna.storages.RDBStorage | None = None
        self._legacy_names: set[str] | None = None
        self._studies: dict[str, optuna.Study] = {}

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def journal_path(self, name: str) -> Path:
        return self.folder / f"{name}.journal"

    def legacy_names(self) -> set[str]:
        """The studies of the old SQLite file, read once: new studies are never made there."""
        if self._legacy_names is None:
            self._legacy_names = set()
            if self.legacy_path.exists():
                self._legacy = optuna.storages.RDBStorage(f"sqlite:///{self.legacy_path}",
                                                          engine_kwargs={"connect_args": {"timeout": 30}})
                self._legacy_names = {s.study_name for s in self._legacy.get_all_studies()}
        return self._legacy_names

    def storage(self, name: str) -> optuna.storages.BaseStorage:
        path = self.journal_path(name)
        if not path.exists() and name in self.legacy_names():
            assert self._legacy is not None
            return self._legacy
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

    # The calls below run on the Optuna thread.
    def trials(self, name: str, spec: TuningSpec) -> list[optuna.trial.FrozenTrial]:
        return self.study(name, spec).get_trials(deepcopy=False)

    def ask(self, name: str, spec: TuningSpec) -> tuple[int, dict]:
        trial = self.study(name, spec).ask(distributions(spec))
        return trial.number, dict(trial.params)

    def ask_ahead(self, name: str, spec: TuningSpec) -> int | None:
        """Ask for the next suggestion now if the trials in flight cannot change it; its number, or None."""
        states = [t.state for t in self.trials(name, spec)]
        finished = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
        if not ts.may_ask_ahead(spec.strategy, finished, states.count(optuna.trial.TrialState.RUNNING)):
            return None
        return self.ask(name, spec)[0]

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

    def tell_all(self, name: str, spec: TuningSpec, told: list[tuple[int, str, float | None, list]]) -> None:
        for number, state, value, points in told:
            self.tell(name, spec, number, state, value, points)

    def delete(self, name: str) -> None:
        self._studies.pop(name, None)
        path = self.journal_path(name)
        if not path.exists() and name in self.legacy_names():
            assert self._legacy is not None
            optuna.delete_study(study_name=name, storage=self._legacy)
            self.legacy_names().discard(name)
        path.unlink(missing_ok=True)
