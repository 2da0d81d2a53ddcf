"""A run's checkpoints (NSML's ``model ls`` / ``model rm``) and what its folder takes on disk.

A checkpoint is an entry at the top of the run's ``EM_CHECKPOINT_DIR``: a file
(``epoch-3.pt``) or a folder (a TensorFlow SavedModel).  Listing reads metadata
only and never follows a link (the folder is the run's user's, who may have left
links to anything); removal runs as the run's user (``helper.call_as``), so a link
swapped in at the last moment can only remove what that user could anyway.  These
functions block: the service runs them in a thread or in the helper process.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat

from .rundir import remove_path

MAX_PATTERNS = 100
_STEP_IN_NAME = re.compile(r"([0-9]{1,18})")


def tree_size(path: str) -> tuple[int, int, float]:
    """``(bytes, disk bytes, newest mtime)`` of a file or a folder tree, links counted as themselves."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0, 0, 0.0
    size, blocks, newest = st.st_size, st.st_blocks * 512, st.st_mtime
    if not stat.S_ISDIR(st.st_mode):
        return size, blocks, newest
    size = 0  # a folder's own size is file-system noise; its files are what a person counts
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                blocks += est.st_blocks * 512
                newest = max(newest, est.st_mtime)
                if stat.S_ISDIR(est.st_mode):
                    stack.append(entry.path)
                else:
                    size += est.st_size
    return size, blocks, newest


def disk_bytes(path: str) -> int:
    """What ``path`` takes on disk (allocated blocks): what a storage quota counts."""
    return tree_size(path)[1]


def list_checkpoints(folder: str) -> list[dict]:
    """The checkpoints in ``folder``, newest last: name, kind, bytes, modified (epoch seconds), step from the name."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            size, _, newest = tree_size(entry.path)
            kind = "folder"
        else:
            size, newest, kind = st.st_size, st.st_mtime, "link" if stat.S_ISLNK(st.st_mode) else "file"
        m = _STEP_IN_NAME.search(entry.name)
        out.append({"name": os.fsencode(entry.name).decode("utf-8", "replace"), "raw_name": entry.name,
                    "kind": kind, "bytes": size, "modified": newest, "name_step": int(m.group(1)) if m else None})
    out.sort(key=lambda c: (c["modified"], c["name"]))
    return out


def check_patterns(patterns: list[str]) -> list[str]:
    """Shell-style patterns for top-level names; ValueError naming what is wrong."""
    if not patterns:
        raise ValueError("name at least one checkpoint, or \"*\" for all of them")
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns at once")
    for p in patterns:
        if not isinstance(p, str) or not p or "/" in p or p in (".", "..") or "\0" in p or len(p) > 1024:
            raise ValueError(f"{str(p)[:60]!r} is not a checkpoint name or pattern (names are the entries at the "
                             "top of the checkpoint folder, such as epoch-3.pt or ckpt-*)")
    return patterns


def remove_checkpoints(folder: str, patterns: list[str]) -> list[tuple[str, int]]:
    """Remove the top-level entries matching any pattern; ``(name, bytes freed on disk)`` of each removed.

    Run as the folder's user: ``rmtree`` works through descriptors and never follows a link.
    """
    removed = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    for name in names:
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        path = os.path.join(folder, name)
        freed = disk_bytes(path)
        if not os.path.lexists(path):
            continue  # removed meanwhile
        remove_path(path)
        removed.append((os.fsencode(name).decode("utf-8", "replace"), freed))
    return removed
