"""A helper process for the work that would stall the scheduler's event loop.

Unpacking a snapshot and starting a process are short, but CPython holds the GIL
across ``posix_spawn`` and most of ``tarfile``, so in the scheduler process they
would hold up every request and every other run.  The helper does that work in a
process of its own and answers over a socket.  Calls run on a few threads, so
one user's slow check (a big archive) does not hold up another's submission;
spawns are served in order, one at a time.  The helper is the parent of the runs
it starts and reports how each one exited, waiting for exactly the processes it
spawned.  ``run_as`` runs a call in a child process under a user's identity.  The
helper exits when its socket closes (the scheduler stopped or died); the runs
keep going in their own sessions.

Messages are length-prefixed pickles between two processes of the same
installation, over a socketpair nobody else can reach.
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..common.backoff import Backoff

log = logging.getLogger(__name__)

HEADER = 4
DEFAULT_THREADS = 4


class HelperGone(RuntimeError):
    """The helper process exited before it answered."""


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


# ---------------------------------------------------------------------- scheduler side
class HelperProcess:
    """The scheduler's handle on its helper: ``call`` a function there, ``spawn`` a run, await an exit."""

    def __init__(self, python: str = sys.executable, threads: int = DEFAULT_THREADS):
        self.python = python
        self.threads = threads
        self._proc: subprocess.Popen | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._next_id = 0
        self._replies: dict[int, asyncio.Future] = {}
        self._exits: dict[int, asyncio.Future] = {}
        self._early_exits: dict[int, int] = {}
        self._starting: asyncio.Lock | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._writer is not None:
                return
            ours, theirs = socket.socketpair()
            try:
                self._proc = subprocess.Popen(
                    [self.python, "-m", __name__, str(theirs.fileno()), str(self.threads)],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, close_fds=True)
            finally:
                theirs.close()
            reader, self._writer = await asyncio.open_unix_connection(sock=ours)
            self._reader_task = asyncio.ensure_future(self._read(reader, self._writer))
            log.debug("Helper process %s started", self._proc.pid)

    async def stop(self) -> None:
        """Close the socket; the helper exits (runs it started keep going)."""
        writer, proc, task = self._writer, self._proc, self._reader_task
        self._writer = None
        if writer is not None:
            writer.close()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if proc is not None:
            await asyncio.to_thread(proc.wait)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the helper; its exception is raised here.  ``fn`` must be importable by name.

        Calls run concurrently in the helper (``threads`` at a time).
        """
        return await self._request("call", (fn, args))


    async def call_idempotent(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``call`` for work that may safely be done twice: sent again, to a restarted helper, if this one died."""
        delays = Backoff(initial=0.05, maximum=1.0, budget=10.0).delays()
        while True:
            try:
                return await self.call(fn, *args)
            except HelperGone:
                delay = next(delays, None)  # meanwhile the helper's end is noticed; the next call restarts it
                if delay is None:
                    raise
                await asyncio.sleep(delay)
    async def call_as(self, uid: int, gid: int, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as the Unix user ``uid``:``gid``, in a child of the helper (see ``run_as``)."""
        return await self._request("call", (run_as, (uid, gid, fn, *args)))

    async def spawn(self, argv: list[str], env: dict[str, str], log_path: str, pid_file: str) -> tuple[int, str]:
        """Start ``argv`` in a new session, output appended to ``log_path``; returns its pid and start time.

        The pid and start time are also written to ``pid_file`` before the answer,
        so a scheduler that dies right after still finds the process.  A spawn
        that fails raises here and leaves nothing to wait for.
        """
        return await self._request("spawn", (argv, env, log_path, pid_file))

    def exit_status(self, pid: int) -> asyncio.Future:
        """A future for the wait status of a process this helper spawned (ask once per process)."""
        future = asyncio.get_running_loop().create_future()
        if pid in self._early_exits:
            future.set_result(self._early_exits.pop(pid))
        elif self._writer is None:
            future.set_exception(HelperGone("the helper process is not running"))
        else:
            self._exits[pid] = future
        return future

    async def _request(self, op: str, payload: tuple) -> Any:
        if self._writer is None:
            await self.start()
        self._next_id += 1
        request_id = self._next_id
        future = self._replies[request_id] = asyncio.get_running_loop().create_future()
        self._writer.write(_frame((request_id, op, payload)))
        return await future

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(HEADER), "big")
                kind, key, value = pickle.loads(await reader.readexactly(size))
                if kind == "exit":
                    future = self._exits.pop(key, None)
                    if future is None:
                        self._early_exits[key] = value  # ended before anyone asked
                    elif not future.done():
                        future.set_result(value)
                    continue
                future = self._replies.pop(key, None)
                if future is None or future.done():
                    continue
                if kind == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if self._writer is writer:
                log.warning("The helper process exited; it is restarted on the next request")
                self._writer = None
                writer.close()
            gone = HelperGone("the helper process exited before it answered")
            for future in [*self._replies.values(), *self._exits.values()]:
                if not future.done():
                    future.set_exception(gone)
            self._replies.clear()
            self._exits.clear()


# ---------------------------------------------------------------------- helper side
def spawn_detached(argv: list[str], env: dict[str, str], log_path: str) -> int:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_path``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        return os.posix_spawn(argv[0], argv, env, setsid=True, setsigdef=(signal.SIGINT,), file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
            (os.POSIX_SPAWN_CLOSE, fd),
        ])
    except OSError as e:
        if e.errno != errno.E2BIG:
            raise
        size = sum(len(os.fsencode(a)) + 1 for a in argv) + sum(
            len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items())
        longest = max([len(os.fsencode(a)) for a in argv] + [len(os.fsencode(f"{k}={v}")) for k, v in env.items()])
        raise OSError(errno.E2BIG, f"the run's command line and environment are too large to start: {size} bytes "
                                   f"in all, the longest argument or variable {longest} bytes (at most 128 KiB "
                                   "each)") from None
    finally:
        os.close(fd)


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return fields[19]


_fork_lock = threading.Lock()  # a pipe's write end is never inherited by another call's child


def run_as(uid: int, gid: int, fn: Callable[..., Any], *args: Any, pass_fds: tuple[int, ...] = ()) -> Any:
    """``fn(*args)`` in a child process as ``uid``:``gid`` (no supplementary groups, umask 077).

    The child is forked: it sees the caller's memory and keeps only the
    descriptors in ``pass_fds`` (and 0-2).  Its result or exception comes back
    pickled, and only plain data and exceptions are taken from it, since it
    handled what a user supplied.  Waiting is for that child alone, so it never
    mixes with the exits the helper reports.  When the caller is already
    ``uid``:``gid``, ``fn`` runs here.  Needs root (else PermissionError).  The
    fork is from a threaded process, so the child does nothing but ``fn`` (no
    logging, no helper state) and leaves with ``os._exit``.
    """
    if (uid, gid) == (os.geteuid(), os.getegid()):
        return fn(*args)
    with _fork_lock:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _run_child(w, uid, gid, fn, args, pass_fds)
        os.close(w)
    with open(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"the call as user {uid} ended without an answer (exit status {status})")
    try:
        kind, value = _AnswerUnpickler(io.BytesIO(data)).load()
    except Exception as e:
        raise RuntimeError(f"the answer of the call as user {uid} could not be read ({e})") from None
    if kind == "error":
        raise value
    return value


def _run_child(w: int, uid: int, gid: int, fn: Callable[..., Any], args: tuple, pass_fds: tuple[int, ...]) -> None:
    """In the forked child: become the user, run ``fn``, write the answer to ``w``; never returns."""
    code = 1
    try:
        low = 0
        for fd in sorted({0, 1, 2, w, *pass_fds}):
            if low < fd:  # never an empty range: CPython would pass close_range() a last fd of -1, closing all
                os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, max(low + 1, os.sysconf("SC_OPEN_MAX")))
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.umask(0o077)
            answer = ("ok", fn(*args))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            answer = ("error", _picklable(e))
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            data = pickle.dumps(("error", RuntimeError(f"the answer could not be sent back: {e}")))
        with open(w, "wb") as f:
            f.write(data)
        code = 0
    finally:
        os._exit(code)


class _AnswerUnpickler(pickle.Unpickler):
    """Plain data and exceptions (builtin or ours), nothing else: a user's process wrote the answer."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" or module.startswith("nothing."):
            found = super().find_class(module, name)
            if isinstance(found, type) and issubclass(found, BaseException):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not an answer a call as another user may give")


class _Helper:
    """Serves spawns in order and calls on a thread pool; one waiter thread per spawned process reports its exit."""

    def __init__(self, sock: socket.socket, threads: int = DEFAULT_THREADS):
        self.sock = sock
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="call")
        self.lock = threading.Lock()  # one writer on the socket; orders an exit after its spawn answer
        self.announced: set[int] = set()  # spawns answered, exit not reaped yet
        self.early: dict[int, int] = {}  # reaped before their spawn was answered
        self.abandoned: set[int] = set()  # spawned, but the spawn failed after: nobody asks for the exit

    def send(self, message: Any) -> None:
        try:
            self.sock.sendall(_frame(message))
        except OSError:
            os._exit(0)  # the scheduler is gone

    def reply(self, request_id: int, kind: str, value: Any) -> None:
        try:
            frame = _frame((kind, request_id, value))
        except Exception as e:
            frame = _frame(("error", request_id, RuntimeError(f"the helper's answer could not be sent: {e}")))
        with self.lock:
            try:
                self.sock.sendall(frame)
            except OSError:
                os._exit(0)

    def wait_for(self, pid: int) -> None:
        """Reap ``pid`` (this process's child, waited for by nobody else) and report its exit after its spawn."""
        _, status = os.waitpid(pid, 0)
        with self.lock:
            if pid in self.abandoned:
                self.abandoned.discard(pid)
            elif pid in self.announced:
                self.announced.discard(pid)
                self.send(("exit", pid, status))
            else:
                self.early[pid] = status

    def spawn(self, argv, env, log_path, pid_file) -> tuple[int, str]:
        pid = spawn_detached(argv, env, log_path)  # raises if it did not start: nothing recorded
        threading.Thread(target=self.wait_for, args=(pid,), name=f"wait-{pid}", daemon=True).start()
        try:
            start = process_start_time(pid) or ""
            with open(pid_file, "w") as f:
                f.write(f"{pid} {start}\n")
        except BaseException:
            with self.lock:  # nobody will know of it: stop it, and forget its exit
                if self.early.pop(pid, None) is None:
                    self.abandoned.add(pid)
                    os.killpg(pid, signal.SIGKILL)
            raise
        return pid, start

    def serve_spawn(self, request_id: int, payload: tuple) -> None:
        try:
            pid, start = self.spawn(*payload)
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            self.reply(request_id, "error", _picklable(e))
            return
        with self.lock:
            self.send(("ok", request_id, (pid, start)))
            if pid in self.early:
                self.send(("exit", pid, self.early.pop(pid)))
            else:
                self.announced.add(pid)

    def serve_call(self, request_id: int, fn: Callable[..., Any], args: tuple) -> None:
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            self.reply(request_id, "error", _picklable(e))
        else:
            self.reply(request_id, "ok", result)

    def serve(self) -> None:
        stream = self.sock.makefile("rb")
        while True:
            header = stream.read(HEADER)
            if len(header) < HEADER:
                return
            request_id, op, payload = pickle.loads(stream.read(int.from_bytes(header, "big")))
            if op == "spawn":
                self.serve_spawn(request_id, payload)
            else:
                self.pool.submit(self.serve_call, request_id, *payload)


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def main(argv: list[str]) -> None:
    # A Ctrl-C at the hub's terminal reaches the whole process group; the helper
    # leaves with the scheduler instead (its socket closes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    # Runs must not inherit the socket: they could speak for the scheduler, and
    # would keep it open after the helper died.
    sock.set_inheritable(False)
    _Helper(sock, int(argv[2]) if len(argv) > 2 else DEFAULT_THREADS).serve()
    os._exit(0)  # calls still running answer nobody; runs keep going


if __name__ == "__main__":
    main(sys.argv)
