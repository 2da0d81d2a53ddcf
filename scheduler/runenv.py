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
    def mounts(self) -> Path:
        """Root's mount points for the run's read-only inputs (``<data>/mounts/<id>``): no part of the path is
        the user's, so no link of theirs can redirect a mount."""
        return self.root.parent.parent / "mounts" / self.root.name

    @cached_property
    def report_file(self) -> Path:
        """Where ``nothing.report()`` appends its JSON lines (the run writes it; the tracker reads it)."""
        return self.root / "metrics.jsonl"

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

    @cached_property
    def output(self) -> Path:
        """What a batch inference job writes (its result files and summary); downloadable like the model."""
        return self.root / "output"

    def output_dirs(self) -> dict[str, Path]:
        return {"model": self.model, "checkpoints": self.checkpoints, "output": self.output}


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
    # A run on several nodes: every node the policy chose with its GPUs (the first is ``node``/``gpus``),
    # the processes per node (None: one) and whether torchrun launches them.
    placement: tuple[tuple[str, tuple[int, ...]], ...] = ()
    procs_per_node: int | None = None
    torchrun: bool = False
    # Read-only inputs: (source, target) folders or files bound read-only where the executor can
    # (a mount namespace of the run's own), and EM_CHECKPOINT_INPUT_DIR when it is not the run's own folder.
    readonly_binds: tuple[tuple[str, str], ...] = ()
    checkpoint_input: str = ""
    # --dataset: (name, where the run reads it, dataset, version) of each.
    datasets: tuple[tuple[str, str, str, int], ...] = ()

    @property
    def distributed(self) -> bool:
        """Whether the run needs more than one process (or a launcher) and so the distributed environment."""
        return len(self.placement) > 1 or self.torchrun or (self.procs_per_node or 1) > 1

    @property
    def processes_per_node(self) -> int:
        return self.procs_per_node or 1


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
            "NOTHING_METRICS_FILE": str(paths.report_file),
            "EM_DATASETS": json.dumps([{"name": name, "path": path, "dataset": dataset, "version": version}
                                       for name, path, dataset, version in launch.datasets]),
            "EM_HPS": json.dumps({k: str(v) for k, v in launch.hyperparameters.items()}),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in launch.gpus),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if launch.checkpoint_input:
        env["EM_CHECKPOINT_INPUT_DIR"] = launch.checkpoint_input
    for name, path, _, _ in launch.datasets:
        env["EM_DATASET_" + name.upper()] = path
    if launch.unix_name:
        env["USER"] = env["LOGNAME"] = launch.unix_name
    for key, value in launch.hyperparameters.items():
        env[hp_env_name(key)] = str(value)
    if has_requirements:
        existing = base.get("PYTHONPATH")
        env["PYTHONPATH"] = str(paths.packages) + (":" + existing if existing else "")
    return env


# -- distributed runs ---------------------------------------------------------------------------------

TORCHRUN_MODULE = "torch.distributed.run"  # what the ``torchrun`` script runs; needs no script on PATH


@dataclass(frozen=True)
class RankLayout:
    """Where the processes of a distributed run go.

    ``hosts`` are the addresses of its nodes in node-rank order (the first hosts
    rank 0, the rendezvous and ``MASTER_ADDR``); each node runs ``procs_per_node``
    processes, or with ``torchrun`` one launcher that starts that many workers.
    ``master_port`` is the rendezvous port on the first node; TensorFlow's workers
    listen on ``master_port + 1 + rank``.
    """

    hosts: tuple[str, ...]
    procs_per_node: int = 1
    master_port: int = 29500
    torchrun: bool = False
    run_id: int = 0

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.procs_per_node

    @property
    def tasks_per_node(self) -> int:
        """Processes the engine starts on each node: the launcher alone with torchrun."""
        return 1 if self.torchrun else self.procs_per_node


def tf_config(layout: RankLayout, rank: int) -> dict:
    """``TF_CONFIG`` as TensorFlow's MultiWorkerMirroredStrategy reads it: every worker, and which one this is."""
    workers = [f"{host}:{layout.master_port + 1 + node * layout.procs_per_node + local}"
               for node, host in enumerate(layout.hosts) for local in range(layout.procs_per_node)]
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}


def rank_environment(layout: RankLayout, node_rank: int, local_rank: int) -> dict[str, str]:
    """The variables one process of a distributed run gets (the torch.distributed and TensorFlow names).

    With ``torchrun`` the process is the node's launcher: it gets only ``NODE_RANK``;
    torchrun gives its workers the rest.
    """
    if not 0 <= node_rank < len(layout.hosts) or not 0 <= local_rank < layout.tasks_per_node:
        raise ValueError(f"no process {local_rank} on node {node_rank} in {layout}")
    if layout.torchrun:
        return {"NODE_RANK": str(node_rank), "NNODES": str(len(layout.hosts))}
    rank = node_rank * layout.procs_per_node + local_rank
    return {
        "MASTER_ADDR": layout.hosts[0],
        "MASTER_PORT": str(layout.master_port),
        "WORLD_SIZE": str(layout.world_size),
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(layout.procs_per_node),
        "NODE_RANK": str(node_rank),
        "NNODES": str(len(layout.hosts)),
        "TF_CONFIG": json.dumps(tf_config(layout, rank), separators=(",", ":")),
    }


def torchrun_argv(python: str, launch: RunLaunch, layout: RankLayout, node_rank: int) -> list[str]:
    """The torchrun launcher of node ``node_rank``: ``python -m torch.distributed.run`` with the whole layout."""
    options = [f"--nnodes={len(layout.hosts)}", f"--nproc-per-node={layout.procs_per_node}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint={layout.hosts[0]}:{layout.master_port}",
               f"--rdzv-id=run-{layout.run_id}", f"--node-rank={node_rank}", "--max-restarts=0"]
    entry = entry_argv(python, launch)
    if launch.entry_point.endswith(".py"):
        script = entry[2:]  # torchrun runs it under its own interpreter (unbuffered: PYTHONUNBUFFERED=1)
    else:
        script = ["--no-python", *entry]
    return [python, "-m", TORCHRUN_MODULE, *options, *script]


def rank_plan(python: str, launch: RunLaunch, layout: RankLayout, nodes: tuple[str, ...]) -> list[dict]:
    """Every process of the run, in the engine's task order (node by node): its node (by the engine's name),
    ranks, extra environment and command line.  ``nodes[k]`` is the engine's name of ``layout.hosts[k]``."""
    if len(nodes) != len(layout.hosts):
        raise ValueError(f"{len(nodes)} node names for {len(layout.hosts)} hosts")
    plan = []
    for node_rank, node in enumerate(nodes):
        for local_rank in range(layout.tasks_per_node):
            argv = torchrun_argv(python, launch, layout, node_rank) if layout.torchrun else entry_argv(python, launch)
            plan.append({"task": len(plan), "node": node, "node_rank": node_rank, "local_rank": local_rank,
                         "env": rank_environment(layout, node_rank, local_rank), "argv": argv})
    return plan
