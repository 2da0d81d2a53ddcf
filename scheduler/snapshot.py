"""Checking and unpacking the code snapshot a user uploads with a run.

An archive is refused whole, with one message naming the first offending member,
if any member would land outside the run's source folder (absolute paths, ``..``,
a member below a link, a link that leads out when followed), is a device or a
pipe, or if the archive holds more bytes, members or header data than the limits.

The checks run while the archive streams, so decompression stops at the first
member over a limit: what an archive costs is bounded by the limits, not by what
it claims.  Unpacking does not use ``tarfile``'s extraction, whose filters have
been bypassed (CVE-2025-4517): every entry is created relative to a descriptor
of its folder, never through a link, and the links are made last.
"""

from __future__ import annotations

import bz2
import gzip  # noqa: F401 - loaded before a fork to a user who may not be able to import it
import io
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

MAX_NAME_BYTES = 4096  # PATH_MAX: no longer path could be opened anyway
MAX_COMPONENT_BYTES = 255  # NAME_MAX
MAX_MEMBER_HEADER_BYTES = 64 * 1024  # one member's headers (long names, pax records) are read into memory
MAX_PATH_TEXT = 32 * 1024**2  # all names and implied folders, kept to check the tree
MAX_LINK_HOPS = 40  # as the kernel's ELOOP
MAX_LINK_WORK = 64 * 1024**2  # characters looked at while following links through the archive

_CHUNK = 64 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SnapshotError(ValueError):
    """The archive cannot be accepted; the message says why."""


@dataclass(frozen=True)
class SnapshotLimits:
    """What one archive may cost.

    ``max_header_bytes`` bounds the part of the stream that is not file content
    (headers, long names, padding); with ``max_unpacked_bytes`` it bounds the
    whole decompressed stream.
    """

    max_unpacked_bytes: int
    max_members: int = 100_000
    max_header_bytes: int = 128 * 1024**2


def check_archive(data: bytes, limits: SnapshotLimits) -> list[tarfile.TarInfo]:
    """The archive's members, if every one of them is safe; else SnapshotError.  Writes nothing."""
    with closing(_checked_members(data, limits)) as members:
        return [m for _, m, _ in members]


def check_entry_point(members: list[tarfile.TarInfo], entry_point: str) -> None:
    """SnapshotError unless ``entry_point`` is a file (or a link, checked to stay inside) in the archive."""
    wanted = os.path.normpath(entry_point)
    if not any(os.path.normpath(m.name) == wanted and not m.isdir() for m in members):
        raise SnapshotError(f"the entry point {entry_point!r} is not a file in the uploaded snapshot")


def unpack(data: bytes, dest: Path | str, limits: SnapshotLimits) -> int:
    """Unpack the archive into ``dest`` (which must not exist); returns bytes written.

    A refused archive leaves no ``dest`` behind.
    """
    dest = Path(dest)
    dest.mkdir(0o700, parents=True)
    try:
        fd = os.open(dest, _DIR_FLAGS)
        try:
            os.fchmod(fd, 0o700)
            return unpack_into(data, fd, limits)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def unpack_into(data: bytes, dir_fd: int, limits: SnapshotLimits) -> int:
    """Unpack the archive into the empty folder open as ``dir_fd``; returns bytes written.

    Entries get the identity of the caller and private modes (folders 0700,
    files 0600, or 0700 with an execute bit), whatever the archive says.  On an
    error the folder may hold part of the archive: the caller removes it.
    """
    writer = _Writer(dir_fd)
    links: list[tuple[str, str]] = []
    written = 0
    try:
        with closing(_checked_members(data, limits)) as members:
            for tar, m, name in members:
                if m.isdir():
                    writer.folder(name)
                elif m.issym():
                    links.append((name, m.linkname))  # once all is checked, and nothing goes through them
                elif m.islnk():
                    writer.hard_link(_normal_name(m.linkname), name)
                else:
                    writer.file(name, tar.extractfile(m), m)
                    written += m.size
        for name, target in links:
            writer.symlink(name, target)
    finally:
        writer.close()
    return written


def pack_tree(dir_fd: int) -> bytes:
    """A gzip tar of the regular files below the folder open as ``dir_fd`` (``__pycache__`` left out).

    The tree is walked through descriptors: no link is followed, and each file is
    read through the descriptor its type was checked on.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for folder, dirs, files, fd in os.fwalk(".", dir_fd=dir_fd):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                try:
                    f = open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd), "rb")
                except OSError:
                    continue  # a link (ELOOP), or gone meanwhile
                with f:
                    if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                        arcname = os.path.normpath(os.path.join(folder, name))
                        tar.addfile(tar.gettarinfo(arcname=arcname, fileobj=f), f)
    return buf.getvalue()


# ---------------------------------------------------------------------- streaming and checks
def _checked_members(data: bytes, limits: SnapshotLimits) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]:
    """Each member with its normalised name, checked before its content is read; the links are checked at the end."""
    stream = _Inflater(data)
    tree = _Tree(limits)
    stream.allow(tree.header_room(), tree.header_overflow(None))
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")
    except (tarfile.TarError, EOFError) as e:
        raise SnapshotError(f"the code archive is not a readable tar archive ({e})") from None
    with tar:
        while True:
            try:
                m = tar.next()
            except (tarfile.TarError, EOFError) as e:
                raise SnapshotError(f"the code archive is not a readable tar archive ({e})") from None
            if m is None:
                break
            tar.members.clear()  # we keep what we need, not every TarInfo
            name = tree.admit(m)
            stream.allow(tree.stream_end + tree.header_room(), tree.header_overflow(m.name))
            yield tar, m, name
    tree.check_links()


class _Tree:
    """The archive's tree as its members build it, refusing the first member that breaks a rule."""

    def __init__(self, limits: SnapshotLimits):
        self.limits = limits
        self.kinds: dict[str, str] = {"": "dir"}  # normalised path -> "dir" | "file" | "link"
        self.links: dict[str, str] = {}
        self.members = 0
        self.content = 0  # file bytes
        self.overhead = 0  # stream bytes that are not file content
        self.stream_end = 0  # where the last member's data ends in the decompressed stream
        self.path_text = 0

    def header_room(self) -> int:
        return max(0, min(MAX_MEMBER_HEADER_BYTES, self.limits.max_header_bytes - self.overhead))

    def header_overflow(self, after: str | None) -> str:
        """What to say if the next member's headers do not fit in ``header_room``."""
        where = "the first member" if after is None else f"the member after {after!r}"
        if self.limits.max_header_bytes - self.overhead < MAX_MEMBER_HEADER_BYTES:
            return f"the code archive's headers take more than {self.limits.max_header_bytes} bytes (at {where})"
        return f"in the code archive, {where} has headers larger than {MAX_MEMBER_HEADER_BYTES} bytes"

    def admit(self, m: tarfile.TarInfo) -> str:
        self.members += 1
        if self.members > self.limits.max_members:
            raise SnapshotError(f"the code archive has more than {self.limits.max_members} files; "
                                f"the limit is {self.limits.max_members} (reached at {m.name!r})")
        end = m.offset_data + (-(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE if m.isreg() else 0)
        self.overhead += end - self.stream_end - (m.size if m.isreg() else 0)
        self.stream_end = end
        if self.overhead > self.limits.max_header_bytes:
            raise SnapshotError(f"the code archive's headers take more than {self.limits.max_header_bytes} bytes "
                                f"(reached at {m.name!r})")
        name = _normal_name(m.name)
        if m.isreg():
            if m.sparse is not None:
                raise SnapshotError(f"the archive member {m.name!r} is a sparse file, which a snapshot may not hold")
            self.content += m.size
            if self.content > self.limits.max_unpacked_bytes:
                raise SnapshotError(f"the code archive unpacks to more than {self.limits.max_unpacked_bytes} bytes, "
                                    f"the limit for a snapshot (reached at {m.name!r})")
            kind = "file"
        elif m.isdir():
            kind = "dir"
        elif m.issym():
            _check_link_target(m, name)
            kind = "link"
        elif m.islnk():
            if self.kinds.get(_normal_name(m.linkname, refuse=False)) != "file":
                raise SnapshotError(f"the archive member {m.name!r} is a hard link to {m.linkname!r}, "
                                    "which is not a file earlier in the snapshot")
            kind = "file"
        else:
            raise SnapshotError(f"the archive member {m.name!r} is not a regular file or folder")
        self._place(m.name, name, kind)
        if kind == "link":
            self.links[name] = m.linkname
        return name

    def _place(self, member: str, name: str, kind: str) -> None:
        if name == "":
            if kind == "dir":
                return  # "./": the destination itself
            raise SnapshotError(f"the archive member {member!r} has no name")
        previous = self.kinds.get(name)
        if previous is not None and not (previous == kind == "dir"):
            raise SnapshotError(f"the archive member {member!r} appears twice in the snapshot")
        # Walk up to the first folder already known: every known folder's own parents were checked when it was placed.
        missing, folder = [], name
        while True:
            folder = folder.rpartition("/")[0]
            parent = self.kinds.get(folder)
            if parent == "dir":
                break
            if parent is not None:
                raise SnapshotError(f"the archive member {member!r} is below {folder!r}, "
                                    f"which is a {'link' if parent == 'link' else 'file'}")
            missing.append(folder)
        for path in [*missing, name]:
            self.path_text += len(path)
            self.kinds[path] = "dir" if path != name else kind
        if self.path_text > MAX_PATH_TEXT:
            raise SnapshotError(f"the code archive's paths are too long in total (reached at {member!r})")

    def check_links(self) -> None:
        """SnapshotError unless every link, followed through the archive's own links, stays inside."""
        budget = [MAX_LINK_WORK]
        for name, target in self.links.items():
            if not _resolves_inside(name, self.links, budget):
                raise SnapshotError(f"the archive member {name!r} is a link to {target!r}, "
                                    "which leads outside the snapshot folder through other links")


def _normal_name(name: str, refuse: bool = True) -> str | None:
    """``name`` without ``.`` and empty parts; SnapshotError (or None) if it is absolute, has ``..`` or is too long."""
    problem = None
    raw = os.fsencode(name)
    if name.startswith("/") or b"\0" in raw:
        problem = "points outside the snapshot folder"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if problem is None and ".." in parts:
        problem = "points outside the snapshot folder"
    elif problem is None and (len(raw) > MAX_NAME_BYTES
                              or any(len(os.fsencode(p)) > MAX_COMPONENT_BYTES for p in parts)):
        problem = "has a name too long for a file system"
    if problem is None:
        return "/".join(parts)
    if refuse:
        raise SnapshotError(f"the archive member {name!r} {problem}")
    return None


def _check_link_target(m: tarfile.TarInfo, name: str) -> None:
    """SnapshotError unless the link's target, read lexically from the link's own folder, stays inside."""
    target = m.linkname
    depth = name.count("/")  # folders above the link, inside the snapshot
    if target and not target.startswith("/") and "\0" not in target and len(os.fsencode(target)) <= MAX_NAME_BYTES:
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    break
            elif part not in ("", "."):
                depth += 1
        else:
            return
    raise SnapshotError(f"the archive member {m.name!r} is a link to {target!r}, outside the snapshot folder")


def _resolves_inside(name: str, links: dict[str, str], budget: list[int]) -> bool:
    """Whether following the link ``name``, as the kernel would in the unpacked tree, stays inside.

    Folders the archive does not hold are taken as empty folders.  ``budget``
    (characters looked at, shared by all links of an archive) keeps an archive of
    many long chained links from stalling the check.
    """
    parts = name.split("/")[:-1]  # the link's folder: no link is above a member, so it is a real folder
    pending = list(reversed(links[name].split("/")))
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return False
            parts.pop()
            continue
        parts.append(part)
        path = "/".join(parts)
        budget[0] -= len(path)
        if budget[0] < 0:
            raise SnapshotError("the code archive's links are too many or too long to check")
        target = links.get(path)
        if target is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise SnapshotError(f"the archive member {name!r} is a link in a loop or a chain too long")
            parts.pop()
            pending.extend(reversed(target.split("/")))
    return True


# ---------------------------------------------------------------------- decompression
_FORMATS = [(b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz")]


class _Inflater:
    """The archive's decompressed bytes as a file that produces none past ``allow``'s bound.

    Decompression is driven by reads (``max_length``), so no more than the bound
    is ever decompressed.  Concatenated streams (``cat a.gz b.gz``) are read on;
    anything else after the end is ignored, as the end of the tar ends reading.
    """

    def __init__(self, data: bytes):
        self._data = memoryview(data)
        self._magic, self._kind = next(((m, k) for m, k in _FORMATS if data.startswith(m)), (b"", "tar"))
        self._pos = 0  # input handed to the decompressor
        self._tail = b""  # zlib's input it has not taken yet
        self._decompressor = self._new()
        self.produced = 0
        self._limit = 0
        self._refusal = ""

    def allow(self, limit: int, refusal: str) -> None:
        """Produce up to ``limit`` bytes in all; reading further raises SnapshotError(``refusal``)."""
        self._limit, self._refusal = limit, refusal

    def read(self, n: int = -1) -> bytes:
        room = self._limit - self.produced
        if room <= 0:
            raise SnapshotError(self._refusal)
        want = room if n is None or n < 0 else min(n, room)
        try:
            out = self._inflate(want)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as e:
            raise SnapshotError(f"the code archive is not a readable compressed archive ({e})") from None
        self.produced += len(out)
        return out

    def _new(self):
        if self._kind == "gz":
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        if self._kind == "bz2":
            return bz2.BZ2Decompressor()
        if self._kind == "xz":
            return lzma.LZMADecompressor()
        return None

    def _take(self) -> memoryview:
        chunk = self._data[self._pos:self._pos + _CHUNK]
        self._pos += len(chunk)
        return chunk

    def _inflate(self, n: int) -> bytes:
        if self._decompressor is None:
            return self._plain(n)
        while True:
            d = self._decompressor
            if d.eof:
                self._pos -= len(d.unused_data) + len(self._tail)
                self._tail = b""
                if self._data[self._pos:self._pos + len(self._magic)] != self._magic:
                    self._decompressor = None
                    self._pos = len(self._data)
                    return b""
                self._decompressor = self._new()
                continue
            if self._kind == "gz":
                chunk = self._tail or self._take()
                out = d.decompress(chunk, n)
                self._tail = d.unconsumed_tail
            else:
                chunk = self._take() if d.needs_input else b""
                out = d.decompress(chunk, n)
            if out:
                return out
            if not chunk and not d.eof:
                return b""  # truncated: tarfile says so

    def _plain(self, n: int) -> bytes:
        out = bytes(self._data[self._pos:self._pos + n])
        self._pos += len(out)
        return out


# ---------------------------------------------------------------------- writing
class _Writer:
    """Creates entries below the folder ``root``, never through a link in any component."""

    def __init__(self, root: int):
        self.root = root
        self._last: tuple[str, int] | None = None  # members usually come folder by folder

    def folder(self, name: str) -> None:
        if name:
            os.close(self._open_folder(name))

    def file(self, name: str, content, m: tarfile.TarInfo) -> None:
        parent, leaf = self._parent(name)
        with open(os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=parent), "wb") as out:
            os.fchmod(out.fileno(), 0o700 if m.mode & 0o111 else 0o600)
            shutil.copyfileobj(content, out, 1024**2)
            out.flush()
            try:
                os.utime(out.fileno(), (m.mtime, m.mtime))
            except (OverflowError, ValueError, OSError):
                pass  # an odd time stamp is not worth refusing the code for

    def hard_link(self, target: str, name: str) -> None:
        parent, leaf = self._parent(name)
        folder, _, target_leaf = target.rpartition("/")
        source = self._open_folder(folder) if folder else None
        try:
            os.link(target_leaf, leaf, src_dir_fd=self.root if source is None else source, dst_dir_fd=parent,
                    follow_symlinks=False)
        finally:
            if source is not None:
                os.close(source)

    def symlink(self, name: str, target: str) -> None:
        parent, leaf = self._parent(name)
        os.symlink(target, leaf, dir_fd=parent)

    def close(self) -> None:
        self._close_last()

    def _parent(self, name: str) -> tuple[int, str]:
        folder, _, leaf = name.rpartition("/")
        if not folder:
            return self.root, leaf
        if self._last is None or self._last[0] != folder:
            self._close_last()
            self._last = (folder, self._open_folder(folder))
        return self._last[1], leaf

    def _open_folder(self, path: str) -> int:
        """A descriptor of the folder ``path``, made (0700) where missing; ELOOP rather than follow a link."""
        fd = self.root
        for part in path.split("/"):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            finally:
                if fd != self.root:
                    os.close(fd)
            os.fchmod(child, 0o700)
            fd = child
        return fd

    def _close_last(self) -> None:
        if self._last is not None:
            os.close(self._last[1])
            self._last = None
