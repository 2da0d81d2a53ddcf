"""Metrics from code, inside a run: ``from nothing import report; report(step=3, loss=0.2, acc=0.91)``.

A call appends a tuple to an in-memory buffer and returns (under a microsecond); a
daemon thread writes the buffer, a JSON array of up to 500 reports per line, to the file the platform names in
``NOTHING_METRICS_FILE`` (inside the run's folder) once a second, when the
buffer holds ``FLUSH_POINTS`` reports, and when the process exits.  The
scheduler reads that file as it grows, as it reads ``name=value`` lines of the
log: no network, no token, nothing to set up.  Outside a run (no
``NOTHING_METRICS_FILE``) reports are dropped with one warning.

A report is written as ``[step, at, metrics]`` (``at`` in integer milliseconds of the epoch) and a
checkpoint as ``[step, at, null, name]``: arrays and an integer time encode in a third less time than
``{"step", "at", "metrics"}`` objects with a float time, which the reader still accepts.  NaN and
infinity are written as JSON's common extension (``NaN``, ``Infinity``), which Python's reader takes.

``save(name)`` registers a checkpoint: it reports the checkpoint's name with the
step, so the checkpoint listing can show what was measured when it was written.
Only standard library: a run may use any interpreter with this package on its path.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
import warnings

__all__ = ["report", "save", "flush"]

FLUSH_SECONDS = 1.0
FLUSH_POINTS = 10_000
# Reports per line of the file: one JSON array each, encoded in one call (half the cost of one object per line).
LINE_REPORTS = 500
_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode
_now_ns = time.time_ns


class _Reporter:
    def __init__(self, path: str | None):
        self.path = path
        self.buffer: list = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.warned = False
        self.pid = os.getpid()

    def add(self, record: tuple) -> None:
        if self.path is None:
            if not self.warned:
                self.warned = True
                warnings.warn("nothing.report(): not inside a NothingAI run (no NOTHING_METRICS_FILE); "
                              "the values are not recorded", stacklevel=3)
            return
        if self.thread is None or self.pid != os.getpid():
            self._start()
        self.buffer.append(record)  # list.append is atomic under the GIL: no lock on the hot path
        if len(self.buffer) >= FLUSH_POINTS:
            self.wake.set()

    def _start(self) -> None:
        with self.lock:
            if self.thread is not None and self.pid == os.getpid():
                return
            self.pid = os.getpid()  # a forked child writes its own reports, not its parent's buffer
            self.buffer = []
            self.thread = threading.Thread(target=self._serve, name="nothing-report", daemon=True)
            self.thread.start()
            atexit.register(self.flush)

    def _serve(self) -> None:
        while True:
            self.wake.wait(FLUSH_SECONDS)
            self.wake.clear()
            self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self.buffer or self.path is None:
                return
            taken, self.buffer = self.buffer, []
            lines = "".join(_encode(taken[i:i + LINE_REPORTS]) + "\n" for i in range(0, len(taken), LINE_REPORTS))
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)


_reporter = _Reporter(os.environ.get("NOTHING_METRICS_FILE"))


def report(step: int | None = None, **metrics: float) -> None:
    """Record metric values at ``step`` (the count of earlier reports when omitted).

    Values are numbers; NaN and infinity are kept as such.  Names are what the
    run's metric views and ``nothing metrics`` show.
    """
    _reporter.add((step, _now_ns() // 1_000_000, metrics))  # ``metrics`` is this call's own dict: no copy


def save(name: str, step: int | None = None) -> None:
    """Register the checkpoint ``name`` (a path under ``EM_CHECKPOINT_DIR``) as written at ``step``."""
    _reporter.add((step, _now_ns() // 1_000_000, None, str(name)))


def flush() -> None:
    """Write what is buffered now (it is written within a second anyway, and at exit)."""
    _reporter.flush()
