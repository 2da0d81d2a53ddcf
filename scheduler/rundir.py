"""A run's folder on disk: created from the uploaded snapshot, handed over on preemption, removed on refusal.

These functions do blocking file work; the dispatcher runs them in the helper
process (``helper_process``, as root), never on the event loop.  The stored
snapshot is in the run's control folder, root's alone.  What the run's user
owns is written and read as that user where a ``uid`` is given, and otherwise
through folder descriptors, never following a link: a link or hard link the
user left in their folder must not make root read, write or hand over anything
of someone else's.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections import deque
from pathlib import Path

from .helper_process import run_as
from .nofollow import DIR_FLAGS, READ_FLAGS, open_below
from .runenv import RunPaths
from .snapshot import SnapshotError, SnapshotLimits, check_archive, check_entry_point, pack_tree, unpack_into

MAX_CHECKPOINT_DEPTH = 256


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
    with open(os.open(paths.snapshot, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb") as f:
        f.write(archive)
    # Private whatever the umask: the folder becomes its user's alone.
    for folder in (paths.root, paths.model, paths.checkpoints, paths.checkpoint_input, paths.tensorboard):
        folder.mkdir(0o700, exist_ok=folder == paths.root)
        folder.chmod(0o700)
    os.close(os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    paths.log.chmod(0o600)


def stage_source(root: str, limits: SnapshotLimits, uid: int | None = None, gid: int | None = None) -> None:
    """Unpack the stored snapshot into the run's source folder, once, before its first start.

    The caller (root) reads the snapshot, makes the empty staging folder and,
    given ``uid``, hands its descriptor to a child process running as
    ``uid``:``gid``, which unpacks into it: the files are the run's user's, and
    that user needs no access to the snapshot nor to the folders above.  Without
    ``uid`` the caller unpacks.  On any failure no staging folder is left and the
    snapshot stays.
    """
    paths = RunPaths(Path(root))
    if paths.source.is_dir():
        return  # started before (a preempted run starts again where it was)
    staging = paths.root / "src.unpacking"
    remove_path(staging)
    data = _read_own_file(paths.snapshot)
    os.mkdir(staging, 0o700)
    try:
        fd = os.open(staging, DIR_FLAGS)
        try:
            os.fchmod(fd, 0o700)
            if uid is None:
                unpack_into(data, fd, limits)
            else:
                os.fchown(fd, uid, gid)
                run_as(uid, gid, unpack_into, data, fd, limits, pass_fds=(fd,))
        finally:
            os.close(fd)
        staging.rename(paths.source)
    except BaseException:
        remove_path(staging)
        raise
    paths.snapshot.unlink()


def stored_code(root: str, uid: int | None = None, gid: int | None = None) -> bytes | None:
    """The run's code as a .tar.gz (for a copy of the run): the stored snapshot, or the unpacked source folder.

    The source folder is the user's: it is packed as ``uid``:``gid`` where
    given, and always without following a link.  None if neither is left.
    """
    paths = RunPaths(Path(root))
    try:
        return _read_own_file(paths.snapshot)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(paths.source, DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if uid is None:
            return pack_tree(fd)
        return run_as(uid, gid, pack_tree, fd, pass_fds=(fd,))
    finally:
        os.close(fd)


def remove_run_dir(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(RunPaths(Path(root)).control, ignore_errors=True)
    shutil.rmtree(RunPaths(Path(root)).mounts, ignore_errors=True)


def _mount_root(paths: RunPaths) -> None:
    """``<data>/mounts/<id>``, root's and passable (0711): modes set after the fact, the service's umask is 077."""
    top = paths.mounts.parent
    top.mkdir(mode=0o711, exist_ok=True)
    top.chmod(0o711)
    paths.mounts.mkdir(exist_ok=True)
    paths.mounts.chmod(0o711)


def prepare_dataset_mounts(root: str, names: list[str]) -> list[str]:
    """Empty mount points ``<data>/mounts/<id>/datasets/<name>`` (root's, 0755) for a run's datasets."""
    paths = RunPaths(Path(root))
    _mount_root(paths)
    folder = paths.mounts / "datasets"
    remove_path(folder)
    folder.mkdir()
    folder.chmod(0o755)
    points = []
    for name in names:
        point = folder / name
        point.mkdir()
        point.chmod(0o755)
        points.append(str(point))
    return points


def link_readonly_inputs(root: str, inputs: list[tuple[str, str]]) -> list[str]:
    """Where an engine cannot bind (Slurm, whose nodes share the data folder): each input (a dataset version, a
    model's artifact: root's, files 0444/0644) hard-linked into ``<run>/inputs/<name>``.

    The links are to root's files, so the run reads them and cannot change a byte; the folders are root's too
    (made 0755), so it cannot add to them either.  The same store and run folder are on one filesystem under the
    data folder.  Made again from scratch on every start (the source is immutable, so the result is the same).
    """
    paths = RunPaths(Path(root))
    folder = paths.root / "inputs"
    remove_path(folder)
    folder.mkdir()
    folder.chmod(0o755)
    points = []
    for name, source in inputs:
        point = folder / name
        point.mkdir()
        src = os.open(source, DIR_FLAGS)
        dst = os.open(point, DIR_FLAGS)
        try:
            _link_tree(src, dst)
        finally:
            os.close(src)
            os.close(dst)
        point.chmod(0o755)
        points.append(str(point))
    return points


def prepare_checkpoint_input(root: str, source_root: str, name: str | None,
                             bind: bool) -> tuple[tuple[tuple[str, str], ...], str]:
    """Make another run's checkpoints (all, or the one called ``name``) this run's input.

    Returns the read-only binds for the executor and the ``EM_CHECKPOINT_INPUT_DIR`` to
    use ("": the run's own).  With ``bind``, the mount points are made under the run's
    ``mounts`` folder, root's all the way up; without, the checkpoints are hard-linked
    into the run's own input folder (no copy, but not read-only).  A run that was
    preempted keeps its own checkpoints as input instead.  A checkpoint that is gone
    raises FileNotFoundError.
    """
    paths, source = RunPaths(Path(root)), RunPaths(Path(source_root))
    if paths.checkpoint_input.is_dir() and any(os.scandir(paths.checkpoint_input)):
        return (), ""
    origin = source.checkpoints / name if name else source.checkpoints
    st = os.lstat(origin)
    if stat.S_ISLNK(st.st_mode):
        raise FileNotFoundError(f"checkpoint {name} of run {source.root.name} is a link")
    if not bind:
        fd = os.open(origin if stat.S_ISDIR(st.st_mode) else origin.parent, DIR_FLAGS)
        target = os.open(paths.checkpoint_input, DIR_FLAGS)
        try:
            if stat.S_ISDIR(st.st_mode) and not name:
                _link_tree(fd, target)
            elif stat.S_ISDIR(st.st_mode):
                os.mkdir(name, 0o700, dir_fd=target)
                inner = os.open(name, DIR_FLAGS, dir_fd=target)
                try:
                    _link_tree(fd, inner)
                finally:
                    os.close(inner)
            else:
                os.link(name, name, src_dir_fd=fd, dst_dir_fd=target, follow_symlinks=False)
        finally:
            os.close(fd)
            os.close(target)
        return (), ""
    _mount_root(paths)
    folder = paths.mounts / "checkpoints"
    remove_path(folder)
    folder.mkdir()
    folder.chmod(0o755)
    point = folder / name if name else folder
    if name and stat.S_ISDIR(st.st_mode):
        point.mkdir()
        point.chmod(0o755)
    elif name:
        os.close(os.open(point, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    return ((str(origin), str(point)),), str(folder)


def hand_over_checkpoints(root: str) -> None:
    """Make a preempted run's checkpoints its input for the next start.

    The next start finds what the run last wrote to ``EM_CHECKPOINT_DIR`` in
    ``EM_CHECKPOINT_INPUT_DIR`` (hard links: no copy of large files) and keeps
    writing new checkpoints where it did before.  Also forgets the previous
    start's exit record.  The checkpoints are the run's user's: they are walked
    through folder descriptors and a link is linked as itself, never followed;
    the folders made keep their originals' owner and mode.
    """
    paths = RunPaths(Path(root))
    paths.exit_file.unlink(missing_ok=True)
    source = os.open(paths.checkpoints, DIR_FLAGS)
    try:
        if not os.listdir(source):
            return
        staging = paths.root / "checkpoint-input.next"
        remove_path(staging)
        os.mkdir(staging, 0o700)
        target = os.open(staging, DIR_FLAGS)
        try:
            _link_tree(source, target)
        finally:
            os.close(target)
    except BaseException:
        remove_path(paths.root / "checkpoint-input.next")
        raise
    finally:
        os.close(source)
    remove_path(paths.checkpoint_input)
    staging.rename(paths.checkpoint_input)


def give_to_user(root: str, uid: int, gid: int) -> None:
    """Hand a run's folder (everything but its control files) to the run's Unix account, mode 0700.

    Called as root before each start.  The tree is walked through folder
    descriptors and links are not followed, so a link the run left behind cannot
    turn this into a chown of someone else's file.  Only what the service owns is
    handed over, and no file with more than one name: a hard link to another
    file of root's must never change hands.  (``stage_source`` given the
    account's ``uid`` unpacks as the user, so nothing of theirs is root's.)
    """
    paths = RunPaths(Path(root))
    fd = os.open(paths.root, DIR_FLAGS)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    service = os.geteuid()
    for _, dirs, files, dir_fd in os.fwalk(paths.root):
        for name in dirs + files:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if st.st_uid == service and (stat.S_ISDIR(st.st_mode) or st.st_nlink == 1):
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def _link_tree(source: int, target: int) -> None:
    """Hard links in the folder ``target`` to everything below ``source``, folders made alike, no link followed.

    The folders are made root's and handed to their originals' owners last,
    deepest first, so nobody can change what is being built.
    """
    made: list[tuple[tuple[str, ...], int, int]] = []
    pending = deque([()])
    while pending:
        parts = pending.popleft()
        src = open_below(source, parts)
        if src is None:
            continue  # swapped for something else meanwhile: not a folder any more
        try:
            dst = open_below(target, parts)
            try:
                for entry in os.scandir(src):
                    if entry.is_dir(follow_symlinks=False):
                        if len(parts) < MAX_CHECKPOINT_DEPTH:
                            st = entry.stat(follow_symlinks=False)
                            os.mkdir(entry.name, 0o700, dir_fd=dst)
                            made.append(((*parts, entry.name), st.st_uid, st.st_gid))
                            pending.append((*parts, entry.name))
                    else:
                        os.link(entry.name, entry.name, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
            finally:
                os.close(dst)
        finally:
            os.close(src)
    for parts, uid, gid in reversed(made):
        parent = open_below(target, parts[:-1])
        try:
            os.chown(parts[-1], uid, gid, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
    st = os.fstat(source)
    os.fchown(target, st.st_uid, st.st_gid)


def _read_own_file(path: Path) -> bytes:
    """The content of ``path``, a regular file of the caller's with one name (never a link or a user's file)."""
    with open(os.open(path, READ_FLAGS), "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            raise SnapshotError(f"the stored snapshot {path} is not a file of the service's own; it was not read")
        return f.read()


def remove_path(path: Path | str) -> None:
    """Remove ``path`` whatever it is, never following a link (``rmtree`` works through descriptors)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
