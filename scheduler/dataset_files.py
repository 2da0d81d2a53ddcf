"""Where datasets live on disk: a content-addressed store of files, and one tree of hard links per version.

``<data>/datasets/`` is root's, mode 0700: nobody reaches a dataset but through
a run's read-only bind of one version (``<data>/mounts/<run>/datasets/<name>``).

- ``objects/ab/<sha256>``: every distinct file once, read-only (0444).  A new
  version of a 50 GB dataset with one changed file costs one object.
- ``trees/<dataset id>/<version>/``: the version as its users see it, every
  file a hard link to its object; ``<version>.json`` next to it lists
  ``[path, sha256, size]``.  Trees are built under a temporary name and
  renamed whole: a version is either complete or absent.
- ``uploads/<id>/manifest.json``: an upload in progress (the files it has so
  far, each already an object); removed at commit or abandon.
- ``incoming/``: files being received (over HTTP, or read from a client's
  descriptor by ``local_push``); a cut-off upload leaves only its temporary
  file, removed at once (or at the next start).

A version registered from a server folder (under an admin-allowed root) is not
copied: its tree is that folder, bound read-only into runs.

These functions block: the service runs them in a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
import shutil
import stat
import threading
from pathlib import Path

MAX_PATH_CHARS = 1024
MAX_FILES_PER_VERSION = 1_000_000
CHUNK = 1024 * 1024
# The refusals of a file received, in the same words whichever way it came (HTTP PUT or the local socket).
DISK_FULL = ("the server's disk is full: the file was not stored (nothing else changed); free space or ask an "
             "admin")


def too_large(limit: int) -> str:
    return f"a file may be at most {limit} bytes"


class DatasetFileError(ValueError):
    """A path or file that cannot be part of a dataset; the message says why."""


def check_relative_path(path: str) -> str:
    """A file's path inside a dataset: relative, normalised, no ``..``, no NUL, at most 1,024 characters."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\0" in path:
        raise DatasetFileError(f"a file path must be 1-{MAX_PATH_CHARS} characters without NUL")
    norm = posixpath.normpath(path.strip("/"))
    if norm in (".", "..") or norm.startswith("../") or path.startswith("/") or "\\" in path:
        raise DatasetFileError(f"{path[:100]!r} is not a relative path inside the dataset")
    if any(part in ("", ".", "..") for part in norm.split("/")):
        raise DatasetFileError(f"{path[:100]!r} is not a relative path inside the dataset")
    return norm


class DatasetFiles:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        # An upload's manifest is read, changed and written whole: files of one upload may arrive side by side.
        self._manifest_lock = threading.Lock()

    # ------------------------------------------------------------------ layout
    def prepare(self) -> None:
        """Make the folders (root's, 0700) and drop what a crash left half-done."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for name in ("objects", "trees", "uploads", "incoming"):
            (self.root / name).mkdir(exist_ok=True)
        shutil.rmtree(self.root / "incoming", ignore_errors=True)
        (self.root / "incoming").mkdir()
        for tree in (self.root / "trees").glob("*/.building-*"):
            shutil.rmtree(tree, ignore_errors=True)

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def tree(self, dataset_id: int, version: int) -> Path:
        return self.root / "trees" / str(dataset_id) / str(version)

    def upload_dir(self, upload_id: str) -> Path:
        return self.root / "uploads" / upload_id

    # ------------------------------------------------------------------ receiving
    def incoming(self) -> tuple[int, str]:
        """A new temporary file for a file being received: ``(fd, path)``."""
        path = self.root / "incoming" / secrets.token_hex(16)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return fd, str(path)

    def keep(self, temp: str, sha256: str) -> int:
        """Make a received file the object ``sha256`` (or drop it: the object exists); returns its size."""
        return self.store(temp, sha256)[0]

    def store(self, temp: str, sha256: str) -> tuple[int, bool]:
        """:meth:`keep`, also saying whether the object is new (False: the store had it, the copy is dropped)."""
        target = self.object_path(sha256)
        target.parent.mkdir(exist_ok=True)
        size = os.stat(temp).st_size
        if target.exists():
            os.unlink(temp)
            return size, False
        os.chmod(temp, 0o444)
        os.rename(temp, target)
        return size, True

    def has_object(self, sha256: str, size: int) -> bool:
        try:
            return self.object_path(sha256).stat().st_size == size
        except (FileNotFoundError, NotADirectoryError):
            return False

    # ------------------------------------------------------------------ uploads
    def new_upload(self) -> str:
        upload_id = secrets.token_hex(16)
        self.upload_dir(upload_id).mkdir()
        self._write_manifest(upload_id, {})
        return upload_id

    def upload_manifest(self, upload_id: str) -> dict[str, list]:
        try:
            return json.loads((self.upload_dir(upload_id) / "manifest.json").read_text())
        except (FileNotFoundError, ValueError):
            raise DatasetFileError(f"upload {upload_id[:40]} not found") from None

    def add_to_upload(self, upload_id: str, path: str, sha256: str, size: int) -> None:
        with self._manifest_lock:
            manifest = self.upload_manifest(upload_id)
            if path not in manifest and len(manifest) >= MAX_FILES_PER_VERSION:
                raise DatasetFileError(f"a version holds at most {MAX_FILES_PER_VERSION:,} files")
            prefixes = {"/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)}
            clash = next((p for p in manifest if p in prefixes or p.startswith(path + "/")), None)
            if clash is not None:
                raise DatasetFileError(f"{path!r} and {clash!r} cannot both be in a dataset (a file and a folder "
                                       "of one name)")
            manifest[path] = [sha256, size]
            try:
                self._write_manifest(upload_id, manifest)
            except FileNotFoundError:  # committed or abandoned meanwhile
                raise DatasetFileError(f"upload {upload_id[:40]} not found") from None

    def _write_manifest(self, upload_id: str, manifest: dict) -> None:
        folder = self.upload_dir(upload_id)
        temp = folder / "manifest.json.tmp"
        temp.write_text(json.dumps(manifest))
        os.replace(temp, folder / "manifest.json")

    def abandon(self, upload_id: str) -> None:
        shutil.rmtree(self.upload_dir(upload_id), ignore_errors=True)

    # ------------------------------------------------------------------ versions
    def build_version(self, dataset_id: int, version: int, files: dict[str, list]) -> tuple[int, int]:
        """The tree of ``version`` from ``{path: [sha256, size]}``, built aside and renamed whole."""
        parent = self.root / "trees" / str(dataset_id)
        parent.mkdir(exist_ok=True)
        building = parent / f".building-{version}-{secrets.token_hex(4)}"
        building.mkdir()
        try:
            for path, (sha256, _) in sorted(files.items()):
                target = building / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(self.object_path(sha256), target)
            for folder, _dirs, _files in os.walk(building):
                os.chmod(folder, 0o755)  # readable once bound into a run; the store above stays 0700
            (parent / f"{version}.json").write_text(json.dumps(sorted([p, s, n] for p, (s, n) in files.items())))
            os.rename(building, self.tree(dataset_id, version))
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return len(files), sum(n for _, n in files.values())

    def version_files(self, dataset_id: int, version: int) -> list[list]:
        """``[[path, sha256, size], ...]`` of a stored version ([] for a registered folder)."""
        try:
            return json.loads((self.root / "trees" / str(dataset_id) / f"{version}.json").read_text())
        except FileNotFoundError:
            return []

    def remove_version(self, dataset_id: int, version: int) -> int:
        """Remove a version's tree, then every object no other version links; returns the bytes freed."""
        files = self.version_files(dataset_id, version)
        shutil.rmtree(self.tree(dataset_id, version), ignore_errors=True)
        (self.root / "trees" / str(dataset_id) / f"{version}.json").unlink(missing_ok=True)
        freed = 0
        for _, sha256, size in files:
            target = self.object_path(sha256)
            try:
                if target.stat().st_nlink == 1:  # only the store's own name is left
                    target.unlink()
                    freed += size
            except FileNotFoundError:
                continue
        return freed

    def remove_dataset(self, dataset_id: int) -> None:
        shutil.rmtree(self.root / "trees" / str(dataset_id), ignore_errors=True)


def hash_file(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def registered_folder(path: str, roots: list[str]) -> tuple[str, int, int]:
    """A server folder an admin allows (under one of ``roots`` once every link is resolved):
    ``(real path, files, bytes)``; DatasetFileError naming the problem otherwise."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > 4096:
        raise DatasetFileError("path must be an absolute server path")
    real = os.path.realpath(path)
    allowed = [os.path.realpath(r) for r in roots]
    if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in allowed):
        shown = ", ".join(roots) or "none (c.Datasets.allowed_roots is empty)"
        raise DatasetFileError(f"{path[:200]} is not under a folder datasets may be registered from ({shown})")
    if not os.path.isdir(real):
        raise DatasetFileError(f"{path[:200]} is not a folder")
    files = size = 0
    for folder, dirs, names in os.walk(real):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
        for name in list(dirs):
            if os.path.islink(os.path.join(folder, name)):
                dirs.remove(name)
    return real, files, size
