"""Runs of the serving runtime: model-server replicas of stage resources and batch inference jobs.

Both are runs (``Run.kind`` ``serving`` or ``batch``), so the one executor base starts them on
whichever engine runs training (local processes, Slurm, Kubernetes), as their owner's Unix
account, queued and placed by the policy, counted in quotas.  What differs from a training run:
the code is the serving runtime's own files (``serving_runtime/``, packed here, so it travels to
any node with the run), the interpreter is the runtime's (``NothingScheduler.runtime_python``),
and the model's artifact is bound read-only into the run as the input named ``model``.
"""

from __future__ import annotations

import io
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from .orm import Model
from .spec import parse_submission

RUNTIME_DIR = Path(__file__).with_name("serving_runtime")
RUNTIME_FILES = ("artifacts.py", "loaders.py", "model_server.py", "batch_infer.py")
MODEL_INPUT = "model"  # the read-only input's name: EM_DATASET_MODEL in the run


@lru_cache(maxsize=1)
def _runtime_files() -> tuple[tuple[str, bytes], ...]:
    return tuple((name, (RUNTIME_DIR / name).read_bytes()) for name in RUNTIME_FILES)


def runtime_archive(extra: dict[str, bytes] | None = None) -> bytes:
    """The runtime's files as a run's code snapshot, with ``extra`` files (a replica's secret: the run's folder
    is its owner's alone, where a command line or an environment could be read by others or shown)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, data in (*_runtime_files(), *(extra or {}).items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600 if extra and name in extra else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def model_input(model: Model) -> dict[str, Any]:
    """The model's artifact as a read-only input of the run, in the shape of a resolved dataset."""
    return {"name": MODEL_INPUT, "dataset_id": None, "dataset": f"model:{model.name}", "version": model.id,
            "path": model.artifact_path}


async def submit_runtime_run(scheduler, *, owner: str, owner_groups: list[str], group: str, kind: str,
                             parent_id: int, client_key: str, name: str, entry_point: str, args: list[str],
                             model: Model, gpus: int, cpus: int, memory_bytes: int,
                             max_seconds: int | None = None, inputs: tuple[dict, ...] = (),
                             files: dict[str, bytes] | None = None) -> int:
    """Queue one runtime run as ``owner``'s and return its id; the same ``client_key`` again returns the same run.

    Raises ``SpecError`` for resources no node has, and ``StorageQuotaExceeded`` when the owner's storage is full.
    """
    from . import store
    from .spec import SpecError

    if not scheduler.dispatcher.executor.reads_inputs:
        # The model store is root's (0700): a run reads its model through a read-only bind or root's hard links.
        raise SpecError(f"the {type(scheduler.dispatcher.executor).__name__}'s runs cannot read the model store, so "
                        "model servers and batch inference run on the local and Slurm executors; on Kubernetes see "
                        "GET /api/endpoints/NAME/stages/STAGE/manifests")
    body: dict[str, Any] = {"name": name, "experiment": kind, "entry_point": entry_point, "args": args,
                            "gpus": gpus, "cpus": cpus, "group": group or None}
    if memory_bytes:
        body["memory"] = str(memory_bytes)
    if max_seconds:
        body["max_time"] = f"{max_seconds}s"
    values = parse_submission(body, scheduler.max_gpus_per_node, scheduler.max_cpus_per_node, False, owner_groups,
                              cluster_nodes=len(scheduler.inventory))
    archive = runtime_archive(files)
    values.pop("dataset_refs", None)
    values.update(owner=owner, snapshot_bytes=len(archive), client_key=client_key, kind=kind, parent_id=parent_id,
                  datasets=[model_input(model), *inputs])
    scheduler.tracker.check_submission(owner, values["group"])
    try:
        run = await scheduler.dispatcher.submit(values, archive)
    except store.DuplicateSubmission as e:
        return e.run.id
    return run.id
