"""A run's folder on disk: created from the uploaded snapshot, handed over on preemption, removed on refusal.

These functions do blocking file work; the dispatcher runs them in the helper
process (``helper_process``), never on the event loop.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .runenv import RunPaths
from .snapshot import SnapshotError, SnapshotLimits, unpack


def create_run_dir(root: str, archive: bytes, entry_point: str, limits: SnapshotLimits) -> None:
    """Unpack ``archive`` into a new run folder with its empty output folders and log.

    A folder already at ``root`` is left over from a submission that never
    committed (or from a database that was reset): it is replaced, so two runs'
    files never mix.
    """
    paths = RunPaths(Path(root))
    if paths.root.exists():
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True)
    unpack(archive, paths.source, limits)
    if not (paths.source / entry_point).is_file():
        raise SnapshotError(f"the entry point {entry_point!r} is not a file in the uploaded snapshot")
    for folder in (paths.model, paths.checkpoints, paths.checkpoint_input, paths.tensorboard):
        folder.mkdir()
    paths.log.touch()


def remove_run_dir(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)


def hand_over_checkpoints(root: str) -> None:
    """Make a preempted run's checkpoints its input for the next start.

    The next start finds what the run last wrote to ``EM_CHECKPOINT_DIR`` in
    ``EM_CHECKPOINT_INPUT_DIR`` (hard links: no copy of large files) and keeps
    writing new checkpoints where it did before.  Also forgets the previous
    start's exit record.
    """
    paths = RunPaths(Path(root))
    paths.exit_file.unlink(missing_ok=True)
    if not any(paths.checkpoints.iterdir()):
        return
    staging = paths.root / "checkpoint-input.next"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(paths.checkpoints, staging, symlinks=True, copy_function=os.link)
    shutil.rmtree(paths.checkpoint_input, ignore_errors=True)
    staging.rename(paths.checkpoint_input)
