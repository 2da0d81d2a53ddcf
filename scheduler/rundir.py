"""A run's folder on disk: created from the uploaded snapshot, handed over on preemption, removed on refusal.

These functions do blocking file work; the dispatcher runs them in the helper
process (``helper_process``), never on the event loop.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .runenv import RunPaths
from .snapshot import SnapshotLimits, check_archive, check_entry_point, pack_directory, unpack


def create_run_dir(root: str, archive: bytes, entry_point: str, limits: SnapshotLimits) -> None:
    """Check ``archive`` and store it in a new run folder, with the empty output folders and log.

    The archive is checked whole here, so a bad one is refused at submission; it
    is unpacked by ``stage_source`` when the run first starts (a queued run holds
    only its compressed code, and a run cancelled while queued never unpacks).
    A folder already at ``root`` is left over from a submission that never
    committed (or from a database that was reset): it is replaced, so two runs'
    files never mix.
    """
    check_entry_point(check_archive(archive, limits), entry_point)
    paths = RunPaths(Path(root))
    if paths.root.exists():
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True)
    shutil.rmtree(paths.control, ignore_errors=True)
    paths.control.mkdir(parents=True, mode=0o700)
    paths.snapshot.write_bytes(archive)
    for folder in (paths.model, paths.checkpoints, paths.checkpoint_input, paths.tensorboard):
        folder.mkdir()
    paths.log.touch()


def stage_source(root: str, limits: SnapshotLimits) -> None:
    """Unpack the stored snapshot into the run's source folder, once, before its first start."""
    paths = RunPaths(Path(root))
    if paths.source.is_dir():
        return  # started before (a preempted run starts again where it was)
    staging = paths.root / "src.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    unpack(paths.snapshot.read_bytes(), staging, limits)
    staging.rename(paths.source)
    paths.snapshot.unlink()


def stored_code(root: str) -> bytes | None:
    """The run's code as a .tar.gz (for a copy of the run): the stored snapshot, or the unpacked source folder.

    None if neither is left.
    """
    paths = RunPaths(Path(root))
    if paths.snapshot.is_file():
        return paths.snapshot.read_bytes()
    if not paths.source.is_dir():
        return None
    return pack_directory([(path.relative_to(paths.source).as_posix(), path)
                           for path in sorted(paths.source.rglob("*"))
                           if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts])


def remove_run_dir(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(RunPaths(Path(root)).control, ignore_errors=True)


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


def give_to_user(root: str, uid: int, gid: int) -> None:
    """Hand a run's folder (everything but its control files) to the run's Unix account, mode 0700.

    Called as root before the run's first start; links are not followed, so a
    link the run left behind cannot turn this into a chown of someone else's file.
    """
    paths = RunPaths(Path(root))
    os.chown(paths.root, uid, gid, follow_symlinks=False)
    os.chmod(paths.root, 0o700)
    for folder, dirs, files in os.walk(paths.root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
