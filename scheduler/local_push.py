"""Local push: dataset files from a client on the service's own host, handed over as open file descriptors.

Over HTTP a file is hashed twice (by the client, to offer it by hash; by the service, to check what arrived) and
crosses a TCP socket and tornado's buffers: a fifth of ``cp``'s speed (``docs/benchmarks.md``, "Datasets"). A
client on this host (the local spawner's notebooks, the CLI) instead opens each file itself and passes the
descriptor over a Unix socket (``SCM_RIGHTS``); the service reads it into a buffer, writes that buffer into its
incoming file and hashes the same buffer: one read, one write, one hash, nothing through a socket.

Why it is safe:

- The client opens the file with its own credentials, so it can pass only what its Unix account may read: the
  kernel checked that at ``open``. The service never opens a path a user names.
- Who may add what to which upload stays in the HTTP API, with PUT's checks (access, quota, path): it hands out a
  ticket (``POST .../uploads/<id>/tickets?path=P``) bound to user, dataset, upload and path, good once, for
  :data:`TICKET_SECONDS`. The socket (mode 0666: the ticket authenticates) takes nothing without one.
- Defence in depth: the sending process's uid (``SO_PEERCRED``) must be the ticket's user's Unix account, or
  root, when the service maps users to accounts (``accounts.UnixAccounts``).
- The store is content-addressed and shared by every user: the bytes hashed are the very bytes written (one
  buffer), never a second read or a mapping of a file its owner may be changing, so an object's name cannot lie
  about its content.

Protocol: one file per connection, one JSON line each way::

    client  -> {"ticket": T, "dataset": N, "upload": U, "path": P}\\n    with the open file (SCM_RIGHTS)
    service -> {"path": P, "sha256": H, "bytes": N, "reused": bool}\\n  or  {"error": text, "status": code}\\n

``status`` is what the HTTP PUT would answer (413 too large or disk full, 400 ...), in the same words; 403 means
this socket does not take that ticket from that process (another host's service, another user's process): send
the file over HTTP. ``reused``: the store had that content already, the copy was dropped. A client that closes
the connection before the answer gives the file up, and nothing of it is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import pwd
import secrets
import socket
import stat
import struct
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .dataset_files import DISK_FULL, DatasetFileError, DatasetFiles, too_large

if TYPE_CHECKING:
    from .accounts import UnixAccounts
    from .datasets import Datasets

log = logging.getLogger("nothing.datasets.local_push")

TICKET_SECONDS = 60
TICKETS_PER_USER = 64  # held unused at once by one user; a push holds one per file in flight (two)
REQUEST_SECONDS = 10  # from connecting to the whole request line
MAX_REQUEST_BYTES = 4096
MAX_CONNECTIONS = 64  # handled at once; more wait in the listen backlog
# Files read, hashed and written side by side, one thread each. While a core would idle (fewer copies than half
# the cores), each copy also hashes a buffer in a second thread while it reads and writes the next one; with a
# copy on every core that split measured slower (more threads than cores), so then one thread does all three.
COPIES_AT_ONCE = 4
BUFFER_BYTES = 1024 * 1024
# Asked of the kernel ahead of the reads (POSIX_FADV_WILLNEED), refreshed every READ_AHEAD_STEP: several requests
# in flight on the disk instead of the read-ahead the reads themselves trigger, which waited on each buffer (1.7x
# slower from a cold cache, docs/benchmarks.md "Datasets").
READ_AHEAD_BYTES = 32 * 1024 * 1024
READ_AHEAD_STEP = 8 * 1024 * 1024


class Refused(Exception):
    """A file not taken; ``status`` is what the HTTP PUT answers in the same case."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Cancelled(Exception):
    """The client left while its file was being copied."""


# ---------------------------------------------------------------------------------------------------- tickets
@dataclass(frozen=True)
class Ticket:
    user: str
    dataset_id: int
    upload_id: str
    path: str
    expires: float


class Tickets:
    """One-time permissions to send one file, given by the HTTP API; in memory (a restart forgets them: the client
    asks again). Only the event loop's thread uses them."""

    def __init__(self, seconds: float = TICKET_SECONDS, per_user: int = TICKETS_PER_USER,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds, self.per_user, self.clock = seconds, per_user, clock
        self._tickets: OrderedDict[str, Ticket] = OrderedDict()  # in the order given, so in the order they expire
        self._held: Counter[str] = Counter()

    def issue(self, user: str, dataset_id: int, upload_id: str, path: str) -> str:
        """A new ticket; :class:`Refused` (429) when the user holds too many not yet used."""
        self._expire()
        if self._held[user] >= self.per_user:
            raise Refused(429, f"you hold {self.per_user} tickets not yet used: use them, or wait "
                               f"{self.seconds:.0f} s for them to expire")
        token = secrets.token_urlsafe(32)
        self._tickets[token] = Ticket(user, dataset_id, upload_id, path, self.clock() + self.seconds)
        self._held[user] += 1
        return token

    def take(self, token: object) -> Ticket | None:
        """The ticket, gone from now on whatever happens next; None when unknown, used or expired."""
        self._expire()
        ticket = self._tickets.pop(token, None) if isinstance(token, str) else None
        if ticket is not None:
            self._release(ticket.user)
        return ticket

    def _expire(self) -> None:
        now = self.clock()
        while self._tickets:
            token, ticket = next(iter(self._tickets.items()))
            if ticket.expires > now:
                return
            del self._tickets[token]
            self._release(ticket.user)

    def _release(self, user: str) -> None:
        self._held[user] -= 1
        if self._held[user] <= 0:
            del self._held[user]


# ---------------------------------------------------------------------------------------------------- the copy
@functools.cache
def _pseudo_devices() -> frozenset[int]:
    return frozenset(os.stat(p).st_dev for p in ("/proc", "/sys") if os.path.isdir(p))


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def check_source(fd: int, limit: int) -> int:
    """The size of what a client passed, if it may become a dataset file: a regular file (not of /proc or /sys,
    whose files may answer the reader's credentials rather than the opener's), open for reading, within ``limit``."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = next((what for test, what in _KINDS if test(st.st_mode)), "something else")
        raise Refused(400, f"only a regular file can be pushed, not {kind}")
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & os.O_PATH or (flags & os.O_ACCMODE) == os.O_WRONLY:
        raise Refused(400, "the file must be passed open for reading")
    if st.st_dev in _pseudo_devices():
        raise Refused(400, "files of /proc and /sys cannot be pushed")
    if st.st_size > limit:
        raise Refused(413, too_large(limit))
    return st.st_size


def copy_in(files: DatasetFiles, source: int, limit: int, cancel: threading.Event,
            hasher: Callable[[], Executor | None] = lambda: None) -> tuple[str, str, int]:
    """Read ``source`` from its start into a new incoming file, hashing each buffer it writes, that same buffer:
    ``(temp path, sha256, bytes)``. :class:`Refused` when it grows past ``limit`` or the disk is full,
    :class:`Cancelled` once ``cancel`` is set; either way the temp file is gone. While ``hasher()`` gives an
    executor (asked at each buffer), a buffer is hashed there while the next one is read and written, in the other
    of two buffers. Blocking: run it in a thread (``preadv``, ``write`` and SHA-256 release the GIL)."""
    out, temp = files.incoming()
    digest, total, asked = hashlib.sha256(), 0, 0
    buffers = [memoryview(bytearray(BUFFER_BYTES)), memoryview(bytearray(BUFFER_BYTES))]
    hashing: Future | None = None  # the other buffer's hash, still running
    try:
        with contextlib.suppress(OSError):
            os.posix_fadvise(source, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while True:
            if cancel.is_set():
                raise Cancelled
            if total + READ_AHEAD_BYTES - READ_AHEAD_STEP >= asked:
                with contextlib.suppress(OSError):
                    os.posix_fadvise(source, asked, total + READ_AHEAD_BYTES - asked, os.POSIX_FADV_WILLNEED)
                asked = total + READ_AHEAD_BYTES
            n = os.preadv(source, [buffers[0]], total)  # at its own offset: whatever the client's is
            if not n:
                break
            total += n
            if total > limit:
                raise Refused(413, too_large(limit))
            chunk = written = buffers[0][:n]
            while written:  # these bytes, and no others, are hashed: what the object's name says
                written = written[os.write(out, written):]
            if hashing is not None:
                hashing.result()  # in order; and the other buffer is free again
                hashing = None
            beside = hasher()
            if beside is None:
                digest.update(chunk)
            else:
                hashing = beside.submit(digest.update, chunk)
                buffers.reverse()
        if hashing is not None:
            hashing.result()
    except BaseException as e:
        if hashing is not None:  # its buffer is not ours to drop while it is read
            with contextlib.suppress(BaseException):
                hashing.result()
        with contextlib.suppress(OSError):
            os.close(out)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(e, OSError):
            raise (Refused(413, DISK_FULL) if e.errno == errno.ENOSPC
                   else Refused(400, f"the file could not be stored: {e}")) from None
        raise
    os.close(out)
    return temp, digest.hexdigest(), total


def peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    return uid


def listen(path: str, folder_mode: int | None) -> socket.socket:
    """A listening socket at ``path``, mode 0666, put in place whole (bound aside, then renamed over an earlier
    one); missing folders above it are made 0711, and the folder itself set to ``folder_mode`` if given."""
    target = Path(path)
    missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o711)
    if folder_mode is not None:
        target.parent.chmod(folder_mode)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(errno.EEXIST, "there is a file that is not a socket there", path)
    aside = path + "~"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(aside)
        os.chmod(aside, 0o666)  # anyone may connect: the ticket is the permission
        sock.listen(MAX_CONNECTIONS)
        os.rename(aside, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)
        raise
    sock.setblocking(False)
    return sock


async def _readable(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


async def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    """The request line as sent (up to its newline, or EOF) and the descriptors that came with it."""
    data, fds = b"", []
    try:
        while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
            try:
                # CLOEXEC: a user's file must never be inherited by a process the service starts
                chunk, got, flags, _ = socket.recv_fds(conn, MAX_REQUEST_BYTES, 1, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                await _readable(conn)
                continue
            fds += got
            if flags & socket.MSG_CTRUNC:  # more than one descriptor: the kernel closed the rest
                raise Refused(400, "send one open file per request")
            if not chunk:
                break
            data += chunk
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return data, fds


def _drop_temp(copy: asyncio.Future) -> None:
    """A copy given up while it ran: its file, if it got that far, is not kept."""
    if not copy.cancelled() and copy.exception() is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copy.result()[0])


# ---------------------------------------------------------------------------------------------------- the listener
class LocalPush:
    """The socket, started and stopped with the service; :attr:`path` is where it listens (None: it does not)."""

    def __init__(self, datasets: Datasets, accounts: UnixAccounts | None = None):
        self.datasets = datasets
        self.files = datasets.files
        self.accounts = accounts
        self.tickets = Tickets()
        self.path: str | None = None
        self._listener: socket.socket | None = None
        self._inode = 0
        self._accepting: asyncio.Task | None = None
        self._connections: set[asyncio.Task] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._hashers: ThreadPoolExecutor | None = None
        self._copies = asyncio.Semaphore(COPIES_AT_ONCE)
        self._copying = 0  # copies running in threads, under _copying_lock
        self._copying_lock = threading.Lock()
        self._cores = len(os.sched_getaffinity(0))
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def start(self) -> None:
        if not self.datasets.local_push:
            return
        path, default = self.datasets.local_push_socket_path()
        try:
            self._listener = await asyncio.to_thread(listen, path, 0o711 if default else None)
            self._inode = os.stat(path).st_ino
        except OSError as e:
            log.warning("Local dataset pushes are off: cannot listen on %s (%s); clients send files over HTTP",
                        path, e)
            return
        self.path = path
        self._pool = ThreadPoolExecutor(COPIES_AT_ONCE, thread_name_prefix="nothing-local-push")
        self._hashers = ThreadPoolExecutor(COPIES_AT_ONCE, thread_name_prefix="nothing-local-push-hash")
        self._accepting = asyncio.ensure_future(self._accept())
        log.info("Local dataset pushes on %s", path)

    async def stop(self) -> None:
        if self._accepting is None or self._listener is None or self._pool is None or self._hashers is None:
            return
        path, self.path = self.path, None
        self._accepting.cancel()
        for task in list(self._connections):
            task.cancel()  # their copies stop within a buffer, and leave nothing
        await asyncio.gather(self._accepting, *self._connections, return_exceptions=True)
        self._listener.close()
        with contextlib.suppress(OSError):
            if path and os.stat(path).st_ino == self._inode:  # not a newer service's socket
                os.unlink(path)
        self._pool.shutdown(wait=False, cancel_futures=True)
        hashers, self._hashers = self._hashers, None  # copies still stopping hash what is left in their own thread
        hashers.shutdown(wait=False)

    async def _accept(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError as e:  # out of descriptors, say: the backlog waits
                self._slots.release()
                log.warning("Local dataset push: accept failed: %s", e)
                await asyncio.sleep(0.5)
                continue
            except BaseException:
                self._slots.release()
                raise
            conn.setblocking(False)
            task = asyncio.ensure_future(self._serve(conn))
            self._connections.add(task)
            task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task) -> None:
        self._connections.discard(task)
        self._slots.release()

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                uid = peer_uid(conn)
                line, fds = await asyncio.wait_for(_receive(conn), REQUEST_SECONDS)
            except (asyncio.TimeoutError, OSError):
                return
            except Refused as e:
                answer: dict | None = {"error": str(e), "status": e.status}
            else:
                for fd in fds[1:]:
                    os.close(fd)
                if not line and not fds:
                    return  # connected and left
                try:
                    answer = await self._take(conn, uid, line, fds[0] if fds else None)
                except Exception as e:
                    log.exception("Local dataset push failed")
                    answer = {"error": f"the file could not be stored: {e}", "status": 500}
            if answer is not None:
                await loop.sock_sendall(conn, json.dumps(answer).encode() + b"\n")
        except OSError:
            pass  # the client left before its answer
        finally:
            conn.close()

    async def _take(self, conn: socket.socket, uid: int, line: bytes, source: int | None) -> dict | None:
        """Check the request, copy the file in, add it to the upload as PUT does: the answer; None when the client
        left meanwhile. ``source`` is closed here, or by the copy's thread once it is done with it."""
        handed = False
        try:
            try:
                request = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                request = None
            if not isinstance(request, dict):
                raise Refused(400, f"a request is one JSON object on one line of at most {MAX_REQUEST_BYTES} bytes")
            if source is None:
                raise Refused(400, "send the open file with the request (SCM_RIGHTS)")
            ticket = self.tickets.take(request.get("ticket"))  # used up, whatever happens next
            if ticket is None:
                raise Refused(403, "unknown ticket: it was used already, or expired, or this socket is not the "
                                   "service that gave it; ask the API for another, or send the file over HTTP")
            if (request.get("dataset"), request.get("upload"), request.get("path")) != \
                    (ticket.dataset_id, ticket.upload_id, ticket.path):
                raise Refused(403, f"the ticket is for {ticket.path!r} of upload {ticket.upload_id} of dataset "
                                   f"{ticket.dataset_id}, not for what the request names")
            await self._check_peer(uid, ticket.user)
            limit = self.datasets.max_file_bytes
            await asyncio.to_thread(check_source, source, limit)
            handed = True
            copied = await self._copy(conn, source, limit)
            if copied is None:
                return None
            temp, sha256, _ = copied
            try:
                size, new = await asyncio.to_thread(self.files.store, temp, sha256)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            try:
                await asyncio.to_thread(self.files.add_to_upload, ticket.upload_id, ticket.path, sha256, size)
            except DatasetFileError as e:
                raise Refused(400, str(e)) from None
            return {"path": ticket.path, "sha256": sha256, "bytes": size, "reused": not new}
        except Refused as e:
            return {"error": str(e), "status": e.status}
        finally:
            if source is not None and not handed:
                os.close(source)

    async def _check_peer(self, uid: int, user: str) -> None:
        """Defence in depth: a ticket's file comes from a process of its user's own Unix account, or root's, when
        users have accounts (without, everything runs as the service's user: there is nothing to tell apart)."""
        if uid == 0 or self.accounts is None or not self.accounts.enabled:
            return
        if uid != await asyncio.to_thread(self._uid_of, user):
            raise Refused(403, f"the ticket is {user}'s, and the process that sent the file runs as another "
                               f"account (uid {uid}): send it from {user}'s own account, or over HTTP")

    def _uid_of(self, user: str) -> int | None:
        assert self.accounts is not None
        try:
            return pwd.getpwnam(self.accounts.unix_name(user)).pw_uid
        except KeyError:
            return None

    async def _copy(self, conn: socket.socket, source: int, limit: int) -> tuple[str, str, int] | None:
        """:func:`copy_in` in a thread, given up as soon as the client closes the connection (None then)."""
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        async with self._copies:
            copy = loop.run_in_executor(self._pool, self._copy_and_close, source, limit, cancel)
            left: asyncio.Future = asyncio.ensure_future(_readable(conn))  # anything, EOF too, is not the protocol
            try:
                await asyncio.wait([copy, left], return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone = left.done() or not copy.done()  # the client left, or this task was cancelled
                left.cancel()
                if gone:
                    cancel.set()
                    copy.add_done_callback(_drop_temp)
            return None if gone else copy.result()

    def _copy_and_close(self, source: int, limit: int, cancel: threading.Event) -> tuple[str, str, int]:
        with self._copying_lock:
            self._copying += 1
        try:
            return copy_in(self.files, source, limit, cancel, self._hasher_while_idle)
        finally:
            with self._copying_lock:
                self._copying -= 1
            os.close(source)

    def _hasher_while_idle(self) -> Executor | None:
        """Where a copy hashes beside its reads and writes: only while two threads a copy leave a core idle."""
        return self._hashers if self._copying * 2 <= self._cores else None  # None once stopped too

