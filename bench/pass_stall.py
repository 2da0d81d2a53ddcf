"""How long a scheduling pass over 10,000 queued runs holds the event loop: the policy on the loop or in a thread.

A dispatcher (not started: no database, no processes) holds one run on both GPUs and
10,000 queued one-GPU runs of 5 users; it makes 30 scheduling passes (snapshot, the
platform's ``fair-share`` policy, the queue's new positions), 50 ms apart, while a
ticker measures how late the event loop serves a 1 ms timer: what a request arriving
during a pass waits for.  Each way is measured twice, alternately.

    .venv/bin/python bench/pass_stall.py [--queued 10000] [--passes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nothing.scheduler.dispatcher import ActiveRun, Dispatcher
from nothing.scheduler.executors.local import LocalExecutor
from nothing.scheduler.policy import Node
from nothing.scheduler.policy_config import make_policy
from nothing.scheduler.quotas import Quotas
from nothing.scheduler.snapshot import SnapshotLimits
from nothing.scheduler.states import RunState

def build(queued: int) -> Dispatcher:
    d = Dispatcher(None, LocalExecutor(on_exit=None), make_policy("fair-share", Quotas(), 7 * 86400, 24 * 3600),
                   [Node("localhost", (0, 1), 64, 0)], Path(tempfile.mkdtemp()), sys.executable, SnapshotLimits(1 << 20))
    now = datetime.utcnow()
    def mk(i, state, **kw):
        return ActiveRun(id=i, owner=f"viewer{i % 5}", entry_point="t.py", args=(), hyperparameters={}, experiment="e",
                         group="", preemptible=False, gpus=kw.pop("gpus", 1), cpus=0, memory_bytes=0, priority=0,
                         max_seconds=None, submitted_at=now - timedelta(seconds=20000 - i), state=state, reason="",
                         run_dir="/x", **kw)
    d.active[1] = mk(1, RunState.RUNNING, gpus=2, node="localhost", assigned_gpus=(0, 1), started_at=now)
    for i in range(2, queued + 2):
        d.active[i] = mk(i, RunState.QUEUED)
    return d

async def measure(d: Dispatcher, thread: bool, passes: int) -> None:
    d.decide_in_thread_above = 500 if thread else 10**9
    lags: list[float] = []
    stop = False
    async def ticker():
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)
    task = asyncio.ensure_future(ticker())
    walls = []
    for _ in range(passes):
        t = time.perf_counter()
        await d._schedule_pass()
        walls.append(time.perf_counter() - t)
        await asyncio.sleep(0.05)
    stop = True
    await task
    lags.sort()
    print(f"policy {'in a thread' if thread else 'on the loop'}: pass p50 {statistics.median(walls) * 1e3:.1f} ms; "
          f"loop late p50 {statistics.median(lags) * 1e3:.1f} ms, p99 {lags[int(len(lags) * .99)] * 1e3:.1f} ms, "
          f"max {lags[-1] * 1e3:.1f} ms", flush=True)

async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queued", type=int, default=10000)
    parser.add_argument("--passes", type=int, default=30)
    args = parser.parse_args()
    print(f"1-minute load {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs), {args.queued} queued", flush=True)
    d = build(args.queued)
    await d._schedule_pass()  # the first pass makes every run's policy view once
    for thread in (False, True, False, True):
        await measure(d, thread, args.passes)


if __name__ == "__main__":
    asyncio.run(main())
