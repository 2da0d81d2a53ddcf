"""TensorBoard on demand: one process per run or per experiment, stopped when nobody looks at it.

The service's TensorBoard handler asks ``TensorBoardManager.ensure(key, logdirs)``
for a board; the first request starts ``tensorboard`` as a subprocess on a free
loopback port and waits (without blocking the event loop) until it answers.  Every
proxied request calls ``touch``; a reaper stops boards nobody has touched for
``idle_timeout`` seconds, and the oldest one when ``max_instances`` would be passed.

Each board serves under an internal path prefix (``/tb/<hex>``) so that user and
experiment names, which may hold any character, never reach TensorBoard's command
line; the proxy maps the public URL onto it.

Boards live in sessions of their own; each one's pid is recorded in
``state_dir``, so that boards left behind by a scheduler that died are stopped
when the next one starts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Float, Integer, List, Unicode, default
from traitlets.config import LoggingConfigurable

from .helper_process import process_start_time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoardError(Exception):
    """A board could not be started; the message says why, for a person."""


@dataclass
class Board:
    """One running TensorBoard process."""

    key: str
    logdirs: dict[str, str]
    port: int
    prefix: str
    process: asyncio.subprocess.Process
    last_used: float = field(default_factory=time.monotonic)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def touch(self) -> None:
        self.last_used = time.monotonic()


def logdir_arguments(logdirs: dict[str, str]) -> list[str]:
    """``--logdir`` for one folder, ``--logdir_spec name:path,...`` for several side by side.

    Names must not hold ``:`` or ``,`` (TensorBoard's separators); the caller builds
    them from run ids.
    """
    if len(logdirs) == 1:
        return ["--logdir", next(iter(logdirs.values()))]
    for name in logdirs:
        if ":" in name or "," in name:
            raise ValueError(f"a TensorBoard run name cannot contain ':' or ',': {name!r}")
    return ["--logdir_spec", ",".join(f"{name}:{path}" for name, path in sorted(logdirs.items()))]


class TensorBoardManager(LoggingConfigurable):
    """Starts, finds and stops the service's TensorBoard processes."""

    command = List(
        Unicode(),
        help="""How to start TensorBoard; the logdir, host, port and path prefix are appended.

        Example: ``c.TensorBoardManager.command = ["/opt/tb/bin/tensorboard", "--reload_interval", "15"]``
        """,
    ).tag(config=True)

    @default("command")
    def _default_command(self):
        return [sys.executable, "-m", "tensorboard.main", "--reload_interval", "5"]

    idle_timeout = Float(
        900.0,
        help="""Seconds without a request after which a board is stopped (it restarts on the next visit).

        Example: ``c.TensorBoardManager.idle_timeout = 600``
        """,
    ).tag(config=True)

    start_timeout = Float(60.0, help="Seconds to wait for a new TensorBoard to answer before giving up.").tag(
        config=True
    )

    max_instances = Integer(
        8,
        help="""Most boards running at once; starting one more stops the least recently used.

        Example: ``c.TensorBoardManager.max_instances = 4``
        """,
    ).tag(config=True)

    group_access = Bool(
        False,
        help="""Let members of a JupyterHub group open the boards of runs owned by other members.

        Example: ``c.TensorBoardManager.group_access = True``
        """,
    ).tag(config=True)

    reap_interval = Float(30.0, help="Seconds between checks for idle boards.").tag(config=True)

    state_dir = Unicode("", help="Folder for the pids of running boards (none: not recorded).").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.boards: dict[str, Board] = {}
        self._starting: dict[str, asyncio.Task] = {}
        self._reaper: asyncio.Task | None = None
        self._waiters: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ public
    async def stop_orphans(self) -> list[int]:
        """Stop boards recorded by an earlier scheduler process (one that died); returns their pids."""
        stopped = []
        for record in Path(self.state_dir).glob("*.pid") if self.state_dir else ():
            try:
                pid, start = int(record.stem), record.read_text().strip()
            except (OSError, ValueError):
                continue
            if start and process_start_time(pid) == start:
                self.log.info("Stopping TensorBoard %s left by an earlier scheduler process", pid)
                try:
                    os.killpg(pid, signal.SIGKILL)
                    stopped.append(pid)
                except ProcessLookupError:
                    pass
            record.unlink(missing_ok=True)
        return stopped

    async def ensure(self, key: str, logdirs: dict[str, str]) -> Board:
        """The running board for ``key``, started (or restarted with new folders) if needed."""
        self._start_reaper()
        board = self.boards.get(key)
        if board is not None and (board.process.returncode is not None or board.logdirs != logdirs):
            await self.stop(key)
            board = None
        if board is None:
            task = self._starting.get(key)
            if task is None:
                task = asyncio.ensure_future(self._start(key, logdirs))
                self._starting[key] = task
                task.add_done_callback(lambda _t: self._starting.pop(key, None))
            board = await asyncio.shield(task)
        board.touch()
        return board

    def touch(self, key: str) -> None:
        board = self.boards.get(key)
        if board is not None:
            board.touch()

    async def stop(self, key: str) -> None:
        board = self.boards.pop(key, None)
        if board is None:
            return
        self.log.info("Stopping TensorBoard %s (port %s)", key, board.port)
        await _terminate(board.process)
        self._forget(board.process.pid)

    async def stop_idle(self, now: float | None = None) -> list[str]:
        """Stop every board idle longer than ``idle_timeout``; returns their keys."""
        now = time.monotonic() if now is None else now
        idle = [k for k, b in self.boards.items() if now - b.last_used > self.idle_timeout]
        for key in idle:
            await self.stop(key)
        return idle

    async def stop_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        for key in list(self.boards):
            await self.stop(key)

    def describe(self) -> list[dict]:
        now = time.monotonic()
        return [{"key": b.key, "port": b.port, "runs": sorted(b.logdirs), "idle_seconds": round(now - b.last_used, 1)}
                for b in self.boards.values()]

    # ------------------------------------------------------------------ internals
    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_loop())

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.stop_idle()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Stopping idle TensorBoards failed")

    async def _start(self, key: str, logdirs: dict[str, str]) -> Board:
        while len(self.boards) >= self.max_instances:
            oldest = min(self.boards.values(), key=lambda b: b.last_used)
            await self.stop(oldest.key)
        port = free_port()
        prefix = f"/tb/{secrets.token_hex(6)}"
        argv = [*self.command, *logdir_arguments(logdirs), "--host", "127.0.0.1", "--port", str(port),
                "--path_prefix", prefix]
        self.log.info("Starting TensorBoard %s on port %s", key, port)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except OSError as e:
            raise TensorBoardError(f"could not start TensorBoard ({argv[0]}): {e.strerror}") from None
        board = Board(key, dict(logdirs), port, prefix, process)
        self._record(process.pid)
        stderr_tail: list[bytes] = []
        reader = asyncio.ensure_future(_drain(process.stderr, stderr_tail))
        self._waiters.add(reader)
        reader.add_done_callback(self._waiters.discard)
        try:
            await self._wait_ready(board)
        except BaseException as e:
            await _terminate(process)
            self._forget(process.pid)
            if isinstance(e, TensorBoardError):
                tail = b"".join(stderr_tail).decode(errors="replace").strip().splitlines()[-3:]
                raise TensorBoardError(f"{e} {' '.join(tail)}".strip()) from None
            raise
        self.boards[key] = board
        return board

    def _record(self, pid: int) -> None:
        if self.state_dir:
            Path(self.state_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.state_dir) / f"{pid}.pid").write_text(process_start_time(pid) or "")

    def _forget(self, pid: int) -> None:
        if self.state_dir:
            (Path(self.state_dir) / f"{pid}.pid").unlink(missing_ok=True)

    async def _wait_ready(self, board: Board) -> None:
        client = AsyncHTTPClient()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if board.process.returncode is not None:
                raise TensorBoardError(f"TensorBoard exited with code {board.process.returncode} at start.")
            try:
                await client.fetch(board.url + "/data/environment", request_timeout=2, connect_timeout=1)
                board.ready.set()
                return
            except (HTTPClientError, OSError):
                await asyncio.sleep(0.2)
        raise TensorBoardError(f"TensorBoard did not answer within {self.start_timeout:.0f}s.")


async def _drain(stream: asyncio.StreamReader | None, tail: list[bytes]) -> None:
    """Keep TensorBoard's stderr moving (a full pipe would stall it) and remember its last lines."""
    if stream is None:
        return
    while True:
        line = await stream.readline()
        if not line:
            return
        tail.append(line)
        del tail[:-20]


async def _terminate(process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(process.wait(), grace)
    except asyncio.TimeoutError:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()
