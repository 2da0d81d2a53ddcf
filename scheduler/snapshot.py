"""Checking and unpacking the code snapshot a user uploads with a run.

An archive is refused whole, before anything is written, if any member would land
outside the run's source folder (absolute paths, ``..``, links pointing out), is a
device or a pipe, or if it unpacks to more than the configured size: a person gets
one message naming the first offending member.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path


class SnapshotError(ValueError):
    """The archive cannot be accepted; the message says why."""


@dataclass(frozen=True)
class SnapshotLimits:
    max_unpacked_bytes: int
    max_members: int = 100_000


def _escapes(path: str) -> bool:
    norm = posixpath.normpath(path)
    return norm.startswith("/") or norm == ".." or norm.startswith("../")


def check_archive(data: bytes, limits: SnapshotLimits) -> list[tarfile.TarInfo]:
    """The archive's members, if every one of them is safe; else SnapshotError."""
    with _open_checked(data, limits) as tar:
        return tar.getmembers()


def check_entry_point(members: list[tarfile.TarInfo], entry_point: str) -> None:
    """SnapshotError unless ``entry_point`` is a file (or a link, checked to stay inside) in the archive."""
    wanted = posixpath.normpath(entry_point)
    if not any(posixpath.normpath(m.name) == wanted and not m.isdir() for m in members):
        raise SnapshotError(f"the entry point {entry_point!r} is not a file in the uploaded snapshot")


def _open_checked(data: bytes, limits: SnapshotLimits) -> tarfile.TarFile:
    """The archive, opened and with every member checked; else SnapshotError."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise SnapshotError(f"the code archive is not a readable tar archive ({e})") from None
    try:
        _check_members(members, limits)
    except BaseException:
        tar.close()
        raise
    return tar


def _check_members(members: list[tarfile.TarInfo], limits: SnapshotLimits) -> None:
    if len(members) > limits.max_members:
        raise SnapshotError(f"the code archive has {len(members)} files; the limit is {limits.max_members}")
    total = 0
    for m in members:
        name = m.name
        if _escapes(name):
            raise SnapshotError(f"the archive member {name!r} points outside the snapshot folder")
        if m.islnk() or m.issym():
            target = m.linkname
            if m.issym():
                target = posixpath.join(posixpath.dirname(name), target)
            if m.linkname.startswith("/") or _escapes(target):
                raise SnapshotError(
                    f"the archive member {name!r} is a link to {m.linkname!r}, outside the snapshot folder"
                )
        elif not (m.isfile() or m.isdir()):
            raise SnapshotError(f"the archive member {name!r} is not a regular file or folder")
        total += max(m.size, 0)
        if total > limits.max_unpacked_bytes:
            raise SnapshotError(
                f"the code archive unpacks to more than {limits.max_unpacked_bytes} bytes, the limit for a snapshot"
            )


def unpack(data: bytes, dest: Path, limits: SnapshotLimits) -> int:
    """Unpack a checked archive into ``dest`` (which must not exist); returns bytes written."""
    with _open_checked(data, limits) as tar:
        dest.mkdir(parents=True)
        # The 'data' filter re-checks every member as it is written.
        tar.extractall(dest, filter="data")
        return sum(m.size for m in tar.getmembers() if m.isfile())


def pack_directory(files: list[tuple[str, Path]], extra: dict[str, bytes] | None = None) -> bytes:
    """A gzip tar of ``(archive_name, path)`` pairs plus in-memory ``extra`` files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for arcname, path in files:
            tar.add(os.fspath(path), arcname=arcname, recursive=False)
        for arcname, content in (extra or {}).items():
            info = tarfile.TarInfo(arcname)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()
