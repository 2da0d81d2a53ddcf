"""A run's checkpoints (NSML's ``model ls`` / ``model rm``) and what its folder takes on disk.

A checkpoint is an entry at the top of the run's ``EM_CHECKPOINT_DIR``: a file
(``epoch-3.pt``) or a folder (a TensorFlow SavedModel).  Listing reads metadata
only and never follows a link (the folder is the run's user's, who may have left
links to anything); removal runs as the run's user (``helper.call_as``), so a link
swapped in at the last moment can only remove what that user could anyway.  These
functions block: the service runs them in a thread or in the helper process.

``CheckpointIndex`` keeps the listings of folders that no longer change (the run
has ended), so that a page of a run's 10,000 checkpoints costs one ``stat`` of
the folder instead of a walk of all of them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone

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


def iso_utc(at: float) -> str:
    """Epoch seconds as ISO 8601 in UTC (``2026-12-01T15:37:16.123456Z``); "" for 0."""
    return datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z") if at else ""


def list_checkpoints(folder: str) -> list[dict]:
    """The checkpoints in ``folder``, newest last: name, kind, bytes, modified (epoch seconds, and ``iso_utc``
    of it), step from the name."""
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
                    "kind": kind, "bytes": size, "modified": newest, "modified_iso": iso_utc(newest),
                    "name_step": int(m.group(1)) if m else None})
    out.sort(key=lambda c: (c["modified"], c["name"]))
    return out


@dataclass(frozen=True)
class Listing:
    """A folder's checkpoints (``list_checkpoints``' entries, newest last) and their total bytes.

    ``derived`` holds what a caller makes of a kept listing (the API's encoded answer), so that it is made
    once and leaves with the listing.
    """

    entries: list[dict]
    total_bytes: int
    derived: dict = field(default_factory=dict, compare=False, repr=False)


def _listing(folder: str) -> Listing:
    entries = list_checkpoints(folder)
    return Listing(entries, sum(c["bytes"] for c in entries))


class CheckpointIndex:
    """Listings of checkpoint folders that have stopped changing, so that listing one again costs one ``stat``.

    Only a folder whose run has ended is kept (``settled``): nothing writes into it
    any more, so its entries change only when one is added, removed or renamed,
    and each of those moves the folder's modification time.  A listing is used
    again while the folder's inode, modification and change times are the ones
    it was made under.  The service's own changes (``nothing model rm``) go
    through ``changing``: no listing made while one is under way is kept.  Any
    other change is seen by the folder's times; a listing made within
    ``settle_seconds`` of the folder's last modification is not kept, since a
    change in the same tick of the file system's clock would not show.  At most
    ``max_entries`` entries are kept in all, the least recently listed folders
    leaving first.  Thread-safe; ``listing`` blocks.
    """

    settle_seconds = 0.5  # many ticks of a file system's clock (a jiffy, at most 10 ms, on Linux)

    def __init__(self, max_entries: int = 200_000):
        self.max_entries = max_entries
        self._kept: OrderedDict[str, tuple[tuple, Listing]] = OrderedDict()
        self._count = 0
        self._generation: dict[str, int] = {}  # folders being changed by the service: changes begun and ended
        self._lock = threading.Lock()

    def listing(self, folder: str, settled: bool) -> Listing:
        """The checkpoints in ``folder``: from the index if it still holds them, else read (and kept if settled)."""
        if not settled:
            self.forget(folder)
            return _listing(folder)
        try:
            st = os.stat(folder)
        except OSError:
            self.forget(folder)
            return _listing(folder)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            kept = self._kept.get(folder)
            if kept is not None and kept[0] == key:
                self._kept.move_to_end(folder)
                return kept[1]
            generation = self._generation.get(folder, 0)
        listing = _listing(folder)
        if time.time() - st.st_mtime > self.settle_seconds and len(listing.entries) <= self.max_entries:
            with self._lock:
                if generation % 2 == 0 and self._generation.get(folder, 0) == generation:
                    self._drop(folder)
                    self._kept[folder] = (key, listing)
                    self._count += len(listing.entries)
                    while self._count > self.max_entries:
                        self._drop(next(iter(self._kept)))
        return listing

    @contextlib.contextmanager
    def changing(self, folder: str):
        """Around the service's own change of ``folder``: its listing is dropped, and none made meanwhile is kept."""
        with self._lock:
            self._drop(folder)
            self._generation[folder] = self._generation.get(folder, 0) + 1  # odd: a change under way
        try:
            yield
        finally:
            with self._lock:
                self._drop(folder)
                self._generation[folder] += 1
                if len(self._generation) > 10_000:  # past changes need no memory once no listing is in flight
                    self._generation = {f: g for f, g in self._generation.items() if g % 2}

    def forget(self, folder: str) -> None:
        """Drop ``folder``'s listing (its run was deleted, or it is read on every call)."""
        with self._lock:
            self._drop(folder)

    def _drop(self, folder: str) -> None:
        kept = self._kept.pop(folder, None)
        if kept is not None:
            self._count -= len(kept[1].entries)


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
