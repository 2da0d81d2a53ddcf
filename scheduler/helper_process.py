"""A helper process for the work that would stall the scheduler's event loop.

Unpacking a snapshot and starting a process are short, but CPython holds the GIL
across ``posix_spawn`` and most of ``tarfile``, so in the scheduler process they
would hold up every request and every other run.  The helper does that work in a
process of its own and answers over a socket.  It is the parent of the runs it
starts and reports how each one exited.  It exits when its socket closes (the
scheduler stopped or died); the runs keep going in their own sessions.

Messages are length-prefixed pickles between two processes of the same
installation, over a socketpair nobody else can reach.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

HEADER = 4


class HelperGone(RuntimeError):
    """The helper process exited before it answered."""


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


# ---------------------------------------------------------------------- scheduler side
class HelperProcess:
    """The scheduler's handle on its helper: ``call`` a function there, ``spawn`` a run, await an exit."""

    def __init__(self, python: str = sys.executable):
        self.python = python
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
                    [self.python, "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL, close_fds=True)
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
        """``fn(*args)`` in the helper; its exception is raised here.  ``fn`` must be importable by name."""
        return await self._request("call", (fn, args))

    async def spawn(self, argv: list[str], env: dict[str, str], log_path: str, pid_file: str) -> tuple[int, str]:
        """Start ``argv`` in a new session, output appended to ``log_path``; returns its pid and start time.

        The pid and start time are also written to ``pid_file`` before the answer,
        so a scheduler that dies right after still finds the process.
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


class _Helper:
    """Serves requests one at a time; a reaper thread reports each child's exit after its spawn answer."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.lock = threading.Lock()  # one writer on the socket; orders an exit after its spawn answer
        self.children = threading.Condition()
        self.live = 0
        self.announced: set[int] = set()
        self.early: dict[int, int] = {}

    def send(self, message: Any) -> None:
        try:
            self.sock.sendall(_frame(message))
        except OSError:
            os._exit(0)  # the scheduler is gone

    def reap(self) -> None:
        while True:
            with self.children:
                while self.live == 0:
                    self.children.wait()
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                continue
            with self.children:
                self.live -= 1
            with self.lock:
                if pid in self.announced:
                    self.announced.discard(pid)
                    self.send(("exit", pid, status))
                else:
                    self.early[pid] = status

    def spawn(self, argv, env, log_path, pid_file) -> tuple[int, str]:
        with self.children:
            pid = spawn_detached(argv, env, log_path)
            self.live += 1
            self.children.notify()
        start = process_start_time(pid) or ""
        with open(pid_file, "w") as f:
            f.write(f"{pid} {start}\n")
        return pid, start

    def serve(self) -> None:
        threading.Thread(target=self.reap, name="reaper", daemon=True).start()
        stream = self.sock.makefile("rb")
        while True:
            header = stream.read(HEADER)
            if len(header) < HEADER:
                return
            request_id, op, payload = pickle.loads(stream.read(int.from_bytes(header, "big")))
            pid = None
            try:
                if op == "spawn":
                    result = self.spawn(*payload)
                    pid = result[0]
                else:
                    fn, args = payload
                    result = fn(*args)
                reply = ("ok", request_id, result)
            except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
                reply = ("error", request_id, _picklable(e))
            with self.lock:
                self.send(reply)
                if pid is not None:
                    if pid in self.early:
                        self.send(("exit", pid, self.early.pop(pid)))
                    else:
                        self.announced.add(pid)


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
    _Helper(sock).serve()


if __name__ == "__main__":
    main(sys.argv)
