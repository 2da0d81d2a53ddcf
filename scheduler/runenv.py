"""The environment and command line of a run, built from its settings alone.

The names follow the EasyMaker seed (appendix 3-4): hyperparameters reach the
entry point both as ``--key value`` arguments and as ``EM_HP_<KEY>`` variables,
with the whole set as JSON in ``EM_HPS``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path


def hp_env_name(key: str) -> str:
    return "EM_HP_" + re.sub(r"[^A-Z0-9_]", "_", key.upper())


@dataclass(frozen=True)
class RunPaths:
    """Where a run's files live.

    Everything the run's code may touch is in ``root`` (``<data>/runs/<id>``),
    owned by the run's user, mode 0700.  What only the scheduler may write (the
    stored snapshot, the pid file, the exit record) is in ``control``
    (``<data>/control/<id>``, root's, mode 0700): a run that could rewrite its
    pid file could make the scheduler signal any process.  The paths are computed
    once per instance: they are read on every launch and exit.
    """

    root: Path

    @cached_property
    def control(self) -> Path:
        return self.root.parent.parent / "control" / self.root.name

    @cached_property
    def source(self) -> Path:
        return self.root / "src"

    @cached_property
    def snapshot(self) -> Path:
        """The uploaded code archive, kept until the run's first start unpacks it into ``source``."""
        return self.control / "snapshot.tar.gz"

    @cached_property
    def model(self) -> Path:
        return self.root / "model"

    @cached_property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @cached_property
    def checkpoint_input(self) -> Path:
        return self.root / "checkpoint-input"

    @cached_property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @cached_property
    def packages(self) -> Path:
        return self.root / "packages"

    @cached_property
    def log(self) -> Path:
        return self.root / "output.log"

    @cached_property
    def launch_file(self) -> Path:
        return self.control / "launch.json"

    @cached_property
    def pid_file(self) -> Path:
        """``PID START_TIME`` of the run's process, written by the executor as it starts it."""
        return self.control / "pid"

    @cached_property
    def exit_file(self) -> Path:
        return self.control / "exit.json"

    def output_dirs(self) -> dict[str, Path]:
        return {"model": self.model, "checkpoints": self.checkpoints}


@dataclass(frozen=True)
class RunLaunch:
    run_id: int
    owner: str
    experiment: str
    entry_point: str
    args: tuple[str, ...] = ()
    hyperparameters: dict = field(default_factory=dict)
    gpus: tuple[int, ...] = ()
    cpus: int = 0
    memory_bytes: int = 0
    uid: int | None = None
    gid: int | None = None
    unix_name: str = ""
    node: str = ""  # where the policy placed it
    max_seconds: int | None = None


def entry_argv(python: str, launch: RunLaunch) -> list[str]:
    """Python files run under the run's interpreter; anything else is executed as is."""
    hp_args: list[str] = []
    for key, value in launch.hyperparameters.items():
        hp_args += [f"--{key}", str(value)]
    if launch.entry_point.endswith(".py"):
        head = [python, "-u", launch.entry_point]
    else:
        head = ["./" + launch.entry_point if "/" not in launch.entry_point else launch.entry_point]
    return head + list(launch.args) + hp_args


def build_environment(base: dict[str, str], launch: RunLaunch, paths: RunPaths, has_requirements: bool) -> dict[str, str]:
    """``base`` plus the run's variables; ``base`` is not modified."""
    env = dict(base)
    env.update(
        {
            "NOTHING_RUN_ID": str(launch.run_id),
            "NOTHING_RUN_OWNER": launch.owner,
            "HOME": str(paths.root),
            "NOTHING_EXPERIMENT": launch.experiment,
            "EM_SOURCE_DIR": str(paths.source),
            "EM_ENTRY_POINT": launch.entry_point,
            "EM_MODEL_DIR": str(paths.model),
            "EM_CHECKPOINT_DIR": str(paths.checkpoints),
            "EM_CHECKPOINT_INPUT_DIR": str(paths.checkpoint_input),
            "EM_TENSORBOARD_LOG_DIR": str(paths.tensorboard),
            "EM_DATASETS": "{}",
            "EM_HPS": json.dumps({k: str(v) for k, v in launch.hyperparameters.items()}),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in launch.gpus),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if launch.unix_name:
        env["USER"] = env["LOGNAME"] = launch.unix_name
    for key, value in launch.hyperparameters.items():
        env[hp_env_name(key)] = str(value)
    if has_requirements:
        existing = base.get("PYTHONPATH")
        env["PYTHONPATH"] = str(paths.packages) + (":" + existing if existing else "")
    return env
