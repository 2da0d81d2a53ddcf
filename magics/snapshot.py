"""Packing the notebook's folder into the code snapshot sent with a run.

Skips what never belongs in a run (checkpoints of notebooks, caches, VCS and venv
folders) and whatever ``.nothingignore`` lists, using gitignore-style patterns:
``name`` matches at any depth, ``dir/`` only folders, ``/path`` only from the top,
``*`` and ``?`` wildcards, ``!pattern`` re-includes.  Links that point outside the
folder are left out, never followed.
"""

from __future__ import annotations

import fnmatch
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IGNORES = [".ipynb_checkpoints/", "__pycache__/", ".git/", ".venv/", "venv/", "*.pyc", ".nothing/",
                   ".Trash-*/", ".cache/", ".local/", ".jupyter/", ".ipython/"]
IGNORE_FILE = ".nothingignore"
CELL_ENTRY_POINT = "nothing_cell.py"


class SnapshotTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class _Pattern:
    pattern: str
    negate: bool
    dir_only: bool
    anchored: bool

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.anchored or "/" in self.pattern:
            return fnmatch.fnmatchcase(rel, self.pattern)
        return fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], self.pattern)


def parse_ignore(lines: list[str]) -> list[_Pattern]:
    patterns = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = line.startswith("/")
        patterns.append(_Pattern(line.lstrip("/"), negate, dir_only, anchored))
    return patterns


def _ignored(patterns: list[_Pattern], rel: str, is_dir: bool) -> bool:
    ignored = False
    for p in patterns:
        if p.matches(rel, is_dir):
            ignored = not p.negate
    return ignored


def collect_files(root: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """``([(archive_name, path)], [skipped links])`` for the folder, honouring ignores."""
    root = root.resolve()
    ignore_file = root / IGNORE_FILE
    lines = list(DEFAULT_IGNORES)
    if ignore_file.is_file():
        lines += ignore_file.read_text().splitlines()
    patterns = parse_ignore(lines)
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        rel_base = base.relative_to(root).as_posix()
        prefix = "" if rel_base == "." else rel_base + "/"
        kept = []
        for d in sorted(dirnames):
            full = base / d
            if full.is_symlink():
                skipped.append(prefix + d)
                continue
            if not _ignored(patterns, prefix + d, True):
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = prefix + name
            full = base / name
            if _ignored(patterns, rel, False):
                continue
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(root) or not target.exists():
                    skipped.append(rel)
                    continue
            elif not full.is_file():
                continue
            files.append((rel, full))
    return files, skipped


def pack_directory(files: list[tuple[str, Path]], extra: dict[str, bytes] | None = None) -> bytes:
    """A gzip tar of ``(archive_name, path)`` pairs plus in-memory ``extra`` files.

    A regular file is read through the descriptor it was checked on, so one swapped
    for a link meanwhile is not followed.  (The client's own packer: the service
    checks and unpacks archives with ``nothing.scheduler.snapshot``.)
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for arcname, path in files:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                tar.add(os.fspath(path), arcname=arcname, recursive=False)  # links and folders as themselves
                continue
            with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
                tar.addfile(tar.gettarinfo(arcname=arcname, fileobj=f), f)
        for arcname, content in (extra or {}).items():
            info = tarfile.TarInfo(arcname)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def build_snapshot(root: Path, max_bytes: int, cell_code: str | None = None) -> tuple[bytes, list[str]]:
    """The .tar.gz to upload, and the links that were left out."""
    files, skipped = collect_files(root)
    sizes = [(f.stat().st_size, rel) for rel, f in files if not f.is_symlink()]
    total = sum(s for s, _ in sizes)
    if total > max_bytes:
        biggest = ", ".join(f"{rel} ({size / 1e6:.1f} MB)" for size, rel in sorted(sizes, reverse=True)[:3])
        raise SnapshotTooLarge(
            f"the folder {root} holds {total / 1e6:.1f} MB of files, more than the {max_bytes / 1e6:.0f} MB a run "
            f"may take along; largest: {biggest}. List what the run does not need in {IGNORE_FILE}."
        )
    extra = {CELL_ENTRY_POINT: cell_code.encode()} if cell_code is not None else None
    if extra:
        files = [(rel, f) for rel, f in files if rel != CELL_ENTRY_POINT]
    data = pack_directory(files, extra)
    if len(data) > max_bytes:
        raise SnapshotTooLarge(f"the code snapshot is {len(data) / 1e6:.1f} MB compressed, over the "
                               f"{max_bytes / 1e6:.0f} MB limit; list large files in {IGNORE_FILE}")
    return data, skipped
