"""Zombie GPUs: runs that hold GPUs but leave them idle.

As in the NSML seed, a run whose GPUs have all stayed at 0% utilisation for a
window (an hour by default) is marked zombie: the API shows it, its log gets a
warning, and, if configured, it is stopped after a further grace period.

``ZombieTracker`` is the pure part (samples in, verdicts out); ``ZombieMonitor``
samples utilisation on a timer through a ``UtilizationSource``, NVML on real GPUs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from traitlets import Float
from traitlets.config import LoggingConfigurable

from .gpus import nvml_utilization


class UtilizationSource(Protocol):
    async def sample(self, indices: list[int]) -> dict[int, int] | None:
        """Percent utilisation of each GPU index, or None where it cannot be measured."""


class NvmlUtilization:
    """Real utilisation from NVML (``nvmlDeviceGetUtilizationRates``), read off the event loop."""

    async def sample(self, indices: list[int]) -> dict[int, int] | None:
        return await asyncio.to_thread(nvml_utilization, indices)


class NoUtilization:
    """Virtual GPUs have no utilisation to measure: nobody is ever a zombie."""

    async def sample(self, indices: list[int]) -> dict[int, int] | None:
        return None


@dataclass(frozen=True)
class ZombieStatus:
    idle_since: float
    zombie_since: float | None

    def to_dict(self) -> dict:
        return {"idle_since": self.idle_since, "zombie_since": self.zombie_since}


class ZombieTracker:
    """Folds utilisation samples into idle streaks; no clock of its own, no I/O."""

    def __init__(self, window_seconds: float):
        self.window_seconds = window_seconds
        self._idle_since: dict[int, float] = {}

    def observe(self, run_id: int, utilization: dict[int, int], now: float) -> ZombieStatus | None:
        """Record one sample of a run's GPUs; returns its status while it is idle."""
        if not utilization or any(u > 0 for u in utilization.values()):
            self._idle_since.pop(run_id, None)
            return None
        since = self._idle_since.setdefault(run_id, now)
        zombie_since = since + self.window_seconds if now - since >= self.window_seconds else None
        return ZombieStatus(since, zombie_since)

    def forget(self, run_id: int) -> None:
        self._idle_since.pop(run_id, None)


class ZombieMonitor(LoggingConfigurable):
    window_seconds = Float(
        3600.0,
        help="""Seconds all of a run's GPUs must stay at 0% utilisation before the run is marked zombie.

        Example: ``c.ZombieMonitor.window_seconds = 1800``
        """,
    ).tag(config=True)
    stop_after_seconds = Float(
        0.0,
        help="""Stop a zombie run this many seconds after it was marked (0: never stop, only warn).

        Example: ``c.ZombieMonitor.stop_after_seconds = 3600``
        """,
    ).tag(config=True)
    interval_seconds = Float(60.0, help="Seconds between utilisation samples.").tag(config=True)

    def __init__(self, dispatcher, source: UtilizationSource, clock=None, **kwargs):
        super().__init__(**kwargs)
        import time

        self.dispatcher = dispatcher
        self.source = source
        self.clock = clock or time.time
        self.tracker = ZombieTracker(self.window_seconds)
        self._task: asyncio.Task | None = None

    async def sample_once(self) -> None:
        from .states import RunState, StopCause

        now = self.clock()
        for run in list(self.dispatcher.active.values()):
            # A model server waits for requests: idle GPUs are its normal state, not a forgotten run's.
            if run.state != RunState.RUNNING or not run.assigned_gpus or run.kind == "serving":
                self.tracker.forget(run.id)
                run.zombie = None
                continue
            utilization = await self.source.sample(list(run.assigned_gpus))
            if utilization is None:
                continue
            previous, run.zombie = run.zombie, self.tracker.observe(run.id, utilization, now)
            status = run.zombie
            if status is None or status.zombie_since is None:
                continue
            idle = _duration(now - status.idle_since)
            if previous is None or previous.zombie_since is None:
                gpus = ",".join(map(str, run.assigned_gpus))
                message = f"nothing: WARNING: GPUs {gpus} of this run have been idle (0% utilisation) for {idle}; " \
                          f"the run is marked zombie"
                if self.stop_after_seconds:
                    message += f" and will be stopped in {_duration(self.stop_after_seconds)} unless they get busy"
                self.log.warning("Run %s is a zombie: GPUs %s idle for %s", run.id, gpus, idle)
                await asyncio.to_thread(_append_line, run.paths.log, message)
            if self.stop_after_seconds and now - status.zombie_since >= self.stop_after_seconds:
                await self.dispatcher.stop_run(run, StopCause.ZOMBIE,
                                               f"stopped as a zombie: its GPUs were idle for {idle}")

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Sampling GPU utilisation failed")
            await asyncio.sleep(self.interval_seconds)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _append_line(path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
