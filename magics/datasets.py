"""Datasets from the client: push a local file or folder as a new version, list, show and delete them.

On the service's own host (the local spawner's notebooks, the CLI), when the
upload names a local push socket that is there, each file is opened here and
the open file handed to the service with a one-time ticket
(:meth:`NothingClient.push_upload_file_locally`), two files at a time: the
service reads, hashes and stores it once, and nothing is hashed here.  A socket
that cannot be reached or does not take the ticket (another host's, say) sends
that file and the rest of the upload the HTTP way.

Over HTTP a push never holds a file in memory: each file is hashed in 1 MB
reads (the next one while the current one is sent), then offered to the service
by its SHA-256 (``POST .../files?path=&sha256=&size=``); only a file the store
does not have yet is sent, streamed from disk with ``PUT`` and its
``X-Content-SHA256``, straight to the service's own listener when the upload
names one that answers from here (else through the hub's proxy, as every other
call goes).  Either way a file whose transfer fails is sent again on its own
(the service keeps nothing of a file cut off half-way), and the upload is
committed only once every file is in: a version is whole or not at all.

Used by ``nothing dataset`` (:mod:`.cli`) and ``%nothing_dataset`` (:mod:`.train`).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from .client import LocalPushUnavailable, NothingClient, NothingError, Stopped

HASH_CHUNK = 1024 * 1024
FILE_ATTEMPTS = 3
T = TypeVar("T")
# Files handed to the local push socket at once: the service copies each on a core of its own (two keep both of a
# small machine's cores busy; the service copies a few more side by side, from every client).
LOCAL_AT_ONCE = 2
_REF = re.compile(r"(?:(?P<group>[A-Za-z0-9][A-Za-z0-9_.\-]{0,99})/)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,99})"
                  r"(?::(?P<version>[0-9]{1,9}))?")


@dataclass
class PushResult:
    """What a push did: the dataset as the service now has it, and which files were sent (the store did not have
    them) or already stored; ``local``: how many were handed over on the local socket rather than over HTTP."""

    dataset: dict
    sent: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    local: int = 0

    def summary(self) -> str:
        d = self.dataset
        files = len(self.sent) + len(self.reused)
        return (f"dataset {d['ref']} version {d['latest']}: {files} file{'s' if files != 1 else ''} "
                f"({len(self.sent)} sent, {len(self.reused)} already stored), {self.bytes_sent} bytes sent")


def parse_ref(text: str) -> tuple[str | None, str, int | None]:
    """``[GROUP/]NAME[:VERSION]`` → ``(group, name, version)``."""
    m = _REF.fullmatch(text or "")
    if not m:
        raise NothingError(f"{text[:80]!r} is not a dataset: use NAME, NAME:VERSION or GROUP/NAME[:VERSION]")
    version = m.group("version")
    return m.group("group"), m.group("name"), int(version) if version else None


def local_files(path: str | Path) -> list[tuple[str, Path]]:
    """``(path in the dataset, local file)`` of a file or every regular file under a folder, sorted.

    Links are followed only when they stay inside the folder (as a run's snapshot does), so a push
    never sends what lies outside what was named.
    """
    root = Path(path)
    if root.is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise NothingError(f"{path} is neither a file nor a folder")
    base = root.resolve()
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            local = Path(folder) / name
            if not local.resolve().is_relative_to(base) or not local.is_file():
                continue
            found.append((local.relative_to(root).as_posix(), local))
    if not found:
        raise NothingError(f"{path} has no files to push")
    return found


def sha256_of(path: Path, stop: threading.Event | None = None) -> str:
    """The file's SHA-256 in 1 MB reads; :class:`Stopped` as soon as ``stop`` is set (the push gave up)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            if stop is not None and stop.is_set():
                raise Stopped(str(path))
            digest.update(chunk)
    return digest.hexdigest()


def find(client: NothingClient, name: str, group: str | None = None) -> dict | None:
    """The dataset ``name`` among what the caller sees: their own (``group`` None) or the group's."""
    for d in client.datasets():
        if d["name"] == name and (d.get("group") or None) == (group or None):
            return d
    return None


def resolve(client: NothingClient, text: str) -> tuple[dict, int | None]:
    """``[GROUP/]NAME[:VERSION]`` → the dataset and the version named (None: the dataset itself)."""
    group, name, version = parse_ref(text)
    found = find(client, name, group)
    if found is None:
        raise NothingError(f"dataset {text.split(':')[0]!r} not found")
    if version is not None and version not in [v["version"] for v in found["versions"]]:
        raise NothingError(f"dataset {found['ref']} has no version {version} "
                           f"(versions: {', '.join(str(v['version']) for v in found['versions']) or 'none'})")
    return found, version


def push(client: NothingClient, name: str, path: str | Path, group: str | None = None, description: str = "",
         progress: Callable[[str], None] | None = None) -> PushResult:
    """Upload ``path`` (a file or a folder) as the next version of ``[group/]name``, creating the dataset."""
    files = local_files(path)
    dataset = find(client, name, group)
    if dataset is None:
        dataset = client.create_dataset(name, group=group, description=description)
    upload = client.open_upload(dataset["id"])
    result = PushResult(dataset)
    done: dict[str, tuple[bool, int]] = {}  # path in the dataset -> (already stored, bytes)
    try:
        rest = files
        if client.local_socket(upload):
            rest = _push_local(client, dataset["id"], upload, files, done, progress)
            result.local = len(done)
        if rest:
            _push_http(client, dataset["id"], upload, rest, done, progress)
        for rel, _ in files:
            reused, size = done[rel]
            (result.reused if reused else result.sent).append(rel)
            result.bytes_sent += 0 if reused else size
        result.dataset = client.commit_upload(dataset["id"], upload)
    except BaseException:
        try:
            client.abandon_upload(dataset["id"], upload)
        except NothingError:
            pass
        raise
    return result


def _push_local(client: NothingClient, dataset_id: int, upload: str, files: list[tuple[str, Path]],
                done: dict[str, tuple[bool, int]], progress: Callable[[str], None] | None) -> list[tuple[str, Path]]:
    """Hand the files to the local push socket, :data:`LOCAL_AT_ONCE` at a time; returns those left for HTTP: once
    the socket cannot take one (it is not this service's, or not there any more), no other file starts."""
    out = threading.Event()  # the socket cannot take this upload's files: no file starts any more
    abort = threading.Event()  # the push failed: the files in flight are given up

    def send(rel: str, local: Path) -> dict | None:
        if out.is_set():
            return None
        try:
            return _send_local(client, dataset_id, upload, rel, local, abort)
        except LocalPushUnavailable:
            out.set()
            return None

    pool = ThreadPoolExecutor(LOCAL_AT_ONCE, thread_name_prefix="nothing-push-local")
    window: deque[tuple[str, Future]] = deque()  # in flight or queued, in the files' order: noted in that order
    try:
        for rel, local in files:
            if out.is_set():
                break
            window.append((rel, pool.submit(send, rel, local)))
            if len(window) > 2 * LOCAL_AT_ONCE:
                _note_local(window.popleft(), done, progress)
        while window:
            _note_local(window.popleft(), done, progress)
    except BaseException:
        out.set()
        abort.set()  # the files in flight give up within LOCAL_POLL_SECONDS: the service keeps nothing of them
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [(rel, local) for rel, local in files if rel not in done]


def _note_local(entry: tuple[str, Future], done: dict[str, tuple[bool, int]],
                progress: Callable[[str], None] | None) -> None:
    rel, future = entry
    answer = future.result()
    if answer is None:
        return  # left for HTTP
    reused, size = bool(answer.get("reused")), int(answer["bytes"])
    done[rel] = (reused, size)
    if progress:
        progress(f"{'already stored' if reused else 'stored'} {rel} ({size} bytes, handed over locally)")


def _send_local(client: NothingClient, dataset_id: int, upload: str, rel: str, local: Path,
                abort: threading.Event) -> dict:
    """One file over the local socket, handed over again when the transfer breaks, as :func:`_send` does."""
    return _again_when_cut(rel, lambda: client.push_upload_file_locally(dataset_id, upload, rel, local, abort), abort)


def _push_http(client: NothingClient, dataset_id: int, upload: str, files: list[tuple[str, Path]],
               done: dict[str, tuple[bool, int]], progress: Callable[[str], None] | None) -> None:
    """Offer each file by its hash; send with PUT those the store does not have."""
    stop = threading.Event()
    # The next file is hashed while this one is sent (hashlib and socket writes release the GIL): one ahead,
    # so the push reads each file at most twice and holds nothing but the digests.
    hasher = ThreadPoolExecutor(1, thread_name_prefix="nothing-push-hash")
    try:
        ahead = hasher.submit(sha256_of, files[0][1], stop)
        for i, (rel, local) in enumerate(files):
            size = local.stat().st_size
            digest = ahead.result()
            if i + 1 < len(files):
                ahead = hasher.submit(sha256_of, files[i + 1][1], stop)
            if client.offer_upload_file(dataset_id, upload, rel, digest, size):
                done[rel] = (True, size)
                continue
            _send(client, dataset_id, upload, rel, local, digest)
            done[rel] = (False, size)
            if progress:
                progress(f"sent {rel} ({size} bytes)")
    finally:
        stop.set()
        hasher.shutdown(wait=False, cancel_futures=True)


def _send(client: NothingClient, dataset_id: int, upload: str, rel: str, local: Path, digest: str) -> None:
    """One file, streamed from disk; sent again from its start when the transfer fails."""
    _again_when_cut(rel, lambda: client.put_upload_file(dataset_id, upload, rel, local, digest))


def _again_when_cut(rel: str, send: Callable[[], T], abort: threading.Event | None = None) -> T:
    """``send()`` of file ``rel``, again from its start when the transfer breaks or the service fails (it keeps
    nothing of a file cut off half-way), at most :data:`FILE_ATTEMPTS` times; a refusal (4xx) is final. What
    :class:`LocalPushUnavailable` says (take the HTTP way) goes straight to the caller."""
    for attempt in range(1, FILE_ATTEMPTS + 1):
        try:
            return send()
        except LocalPushUnavailable:
            raise
        except NothingError as e:
            retryable = e.status is None or e.status >= 500
            if not retryable or attempt == FILE_ATTEMPTS or (abort is not None and abort.is_set()):
                raise NothingError(f"{rel}: {e}", e.status) from None
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- what ``nothing dataset`` and the magic print
def listing(found: list[dict]) -> str:
    from .tracking_cli import _when, human_bytes, table

    if not found:
        return "no datasets yet: nothing dataset push NAME PATH"
    rows = [[d["ref"], d.get("group") or "-", str(d["latest"] or "-"), str(len(d["versions"])), str(d["files"]),
             human_bytes(d["bytes"]), _when(d["created_at"])] for d in found]
    return table(rows, ["DATASET", "GROUP", "LATEST", "VERSIONS", "FILES", "SIZE", "CREATED"])


def details(client: NothingClient, text: str) -> str:
    """A dataset's versions (sizes, file counts, when, by whom) and the runs that use it; with ``:VERSION``,
    that version's files."""
    from .tracking_cli import _when, human_bytes, table

    found, version = resolve(client, text)
    d = client.dataset(found["id"])
    lines = [f"dataset {d['ref']} (owner {d['owner']}{', group ' + d['group'] if d.get('group') else ''})"]
    if d.get("description"):
        lines.append(d["description"])
    if version is not None:
        v = client.dataset_version(d["id"], version)
        lines.append(f"version {version}: {v['files']} files, {human_bytes(v['bytes'])}")
        lines.append(table([[f["path"], human_bytes(f["bytes"])] for f in v["listing"]], ["FILE", "SIZE"]))
        return "\n".join(lines)
    rows = [[str(v["version"]), _when(v["created_at"]), v["created_by"], str(v["files"]), human_bytes(v["bytes"]),
             v.get("path") or v["source"]] for v in d["versions"]]
    lines.append(table(rows, ["VERSION", "CREATED", "BY", "FILES", "SIZE", "SOURCE"]) if rows else "no versions")
    if "used_by" in d:
        used = ", ".join(f"run {u['run']} ({u['state']})" for u in d["used_by"])
        lines.append(f"used by: {used or 'no runs'}")
    return "\n".join(lines)


def remove(client: NothingClient, text: str) -> str:
    found, version = resolve(client, text)
    client.delete_dataset(found["id"], version)
    return f"version {version} of dataset {found['ref']} deleted" if version is not None \
        else f"dataset {found['ref']} deleted"
