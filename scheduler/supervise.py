"""Keeps the scheduler up: ``python -m nothing.scheduler`` runs this, and this runs the scheduler.

JupyterHub restarts a managed service only when its poll (every 30 s, not
configurable for services) notices it died, and answers 503 meanwhile.  This
supervisor starts the real scheduler (``python -m nothing.scheduler.app`` with the
same arguments) as its child and

- restarts it at once when it dies abnormally (a signal, a crash), then with
  back-off while it keeps dying (0.5 s doubling to 10 s; reset once a child stayed
  up 60 s), so a crash costs about a start-up's time, not the hub's 30 s;
- forwards SIGTERM and SIGINT (what the hub sends to stop a service) to it and
  exits with it; the child stays in the supervisor's session and process group,
  where the hub started the supervisor (``start_new_session``);
- exits with its child's status when the child stops cleanly (0), and with 1,
  without restarting, when the child exits with ``EXIT_DO_NOT_RESTART`` (another
  scheduler owns the database and ``takeover`` is off, or it was taken over).

If the supervisor itself is SIGKILLed, its child keeps serving; the hub's poll
then starts a new supervisor whose child takes the lock over (``lock.py``), so
the service stays up throughout.

The contract with the child: ``NOTHING_SCHEDULER_SUPERVISOR=<supervisor pid>`` in
its environment.  The child writes that pid into the lock file (a scheduler taking
over stops the supervisor too, or it would restart what was stopped) and uses
``EXIT_DO_NOT_RESTART`` only when it has it.

This module imports only the standard library, so that the supervisor starts fast
and stays small.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

from ..common.backoff import Backoff

SUPERVISOR_ENV = "NOTHING_SCHEDULER_SUPERVISOR"
# sysexits.h EX_CONFIG: starting again would fail the same way.
EXIT_DO_NOT_RESTART = 78
FORWARDED = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("nothing.scheduler.supervise")


def supervisor_pid() -> int | None:
    """The pid of the supervisor this process runs under, or ``None`` when it runs on its own."""
    value = os.environ.get(SUPERVISOR_ENV, "")
    return int(value) if value.isdigit() and int(value) == os.getppid() else None


def describe_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Runs ``command`` and restarts it when it dies abnormally; see the module docstring."""

    def __init__(self, command: list[str], initial_delay: float = 0.5, max_delay: float = 10.0,
                 reset_after: float = 60.0):
        self.command = command
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.reset_after = reset_after
        self.child: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping: asyncio.Event | None = None

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.child is not None and self.child.returncode is None:
            log.info("Received %s: passing it on to the scheduler (pid %s)", sig.name, self.child.pid)
            self.child.send_signal(sig)
        else:
            log.info("Received %s: stopping", sig.name)
        self._stopping.set()

    async def run(self) -> int:
        """Supervise until a clean stop; returns the exit status for the supervisor."""
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in FORWARDED:
            loop.add_signal_handler(sig, self._on_signal, sig)
        env = dict(os.environ, **{SUPERVISOR_ENV: str(os.getpid())})
        delays = None
        while not self._stopping.is_set():
            started = time.monotonic()
            # Same session and process group as the supervisor: no start_new_session here.
            self.child = await asyncio.create_subprocess_exec(*self.command, env=env)
            if self._stopping.is_set():  # a signal came while it was being started
                self.child.send_signal(signal.SIGTERM)
            log.info("Started the scheduler (pid %s)%s", self.child.pid,
                     f", restart {self.restarts}" if self.restarts else "")
            code = await self.child.wait()
            uptime = time.monotonic() - started
            if self._stopping.is_set():
                log.info("The scheduler (pid %s) %s; stopping", self.child.pid, describe_status(code))
                return code if code >= 0 else 128 - code
            if code == 0:
                log.info("The scheduler (pid %s) stopped cleanly; stopping", self.child.pid)
                return 0
            if code == EXIT_DO_NOT_RESTART:
                log.error("The scheduler (pid %s) may not be restarted (see its last message); stopping",
                          self.child.pid)
                return 1
            if delays is None or uptime >= self.reset_after:
                # The first death after a good run is restarted at once; a crash loop backs off.
                delays = Backoff(self.initial_delay, self.max_delay).delays()
                delay = 0.0
            else:
                delay = next(delays)
            log.error("The scheduler (pid %s) %s after %.1fs; restarting%s", self.child.pid, describe_status(code),
                      uptime, f" in {delay:.1f}s" if delay else " now")
            self.restarts += 1
            if delay:
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                    return 0
                except asyncio.TimeoutError:
                    pass
        return 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(levelname).1s %(asctime)s nothing-supervisor] %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "--help-all", "--version") for a in args):
        os.execv(sys.executable, [sys.executable, "-m", "nothing.scheduler.app", *args])
    supervisor = Supervisor([sys.executable, "-m", "nothing.scheduler.app", *args])
    sys.exit(asyncio.run(supervisor.run()))
