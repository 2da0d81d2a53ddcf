"""Small helpers shared by the tests: archives of code, waiting for conditions."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from pathlib import Path


def make_archive(files: dict[str, str | bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz with the given files (name -> content) and symlinks (name -> target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Await until ``predicate()`` (sync or async) is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def wait_for_sync(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def read_number(path) -> float | None:
    """The number a run wrote to ``path``, once it has (None before: missing, empty or half-written)."""
    try:
        return float(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


def wait_for_number(path, timeout: float = 30.0, interval: float = 0.01, message: str = "a number") -> float:
    """:func:`read_number` once it is there (a time stamp, say: a zero would read as not there yet)."""
    return wait_for_sync(lambda: read_number(path), timeout, interval, message)


def let_users_traverse(path) -> None:
    """Make ``path`` and its ancestors passable (0711) for other users' accounts (pytest's tmp folders are 0700)."""
    import os

    path = os.path.abspath(path)
    while path not in ("/", ""):
        mode = os.stat(path).st_mode
        if mode & 0o011 != 0o011:
            os.chmod(path, (mode & 0o7777) | 0o711)
        path = os.path.dirname(path)


def kill_jobs(runs_dir) -> None:
    """SIGKILL every process of the runs a scheduler on ``runs_dir`` started, and remove their cgroups."""
    import os

    from nothing.scheduler.executors.local import LocalExecutor

    executor = LocalExecutor(on_exit=None)
    executor.set_scope(str(runs_dir))
    cgroups = executor.cgroups
    if cgroups is None:
        return
    prefix = f"{executor.cgroup_scope}-run-"
    for name in os.listdir(next(iter(cgroups.bases.values()))):
        if name.startswith(prefix):
            job = cgroups.job(name)
            job.kill()
            job.remove()


class SteadyLoad:
    """``call(session)`` over and over from ``threads`` threads, each with a kept-alive ``requests.Session``, while
    the ``with`` block runs; ``answers`` gets ``(status, text)`` of each call, ``(0, error)`` for one that failed
    to connect: what "no request lost, none failed" is checked on."""

    def __init__(self, call, threads: int = 4):
        import threading

        self.call, self.answers, self._stop = call, [], threading.Event()
        self._threads = [threading.Thread(target=self._load) for _ in range(threads)]

    def _load(self) -> None:
        import requests

        session = requests.Session()
        while not self._stop.is_set():
            try:
                resp = self.call(session)
                self.answers.append((resp.status_code, resp.text))
            except requests.RequestException as exc:
                self.answers.append((0, str(exc)))

    def failed(self) -> list:
        return [a for a in self.answers if a[0] != 200]

    def __enter__(self) -> SteadyLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
