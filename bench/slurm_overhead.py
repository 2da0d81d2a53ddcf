"""Our scheduler on Slurm against plain sbatch on the same Slurm: submit → job running, and a drain of trivial runs.

Starts the tests' loopback Slurm (3 nodes x 4 GRES GPUs, ``batch_sched_delay=0``) and, in one run, measures:

- plain Slurm: ``sbatch`` of a script that stamps ``time.time()``; latency = stamp - submit time;
- ours: ``Dispatcher.submit`` with the Slurm executor (the policy places, sbatch on that node); the same stamp;
- draining N trivial runs through each.

    .venv/bin/python bench/slurm_overhead.py [--runs 20] [--drain 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nothing.scheduler.db import Database  # noqa: E402
from nothing.scheduler.dispatcher import Dispatcher  # noqa: E402
from nothing.scheduler.executors.slurm import SlurmExecutor  # noqa: E402
from nothing.scheduler.policy import PriorityFifoPolicy  # noqa: E402
from nothing.scheduler.snapshot import SnapshotLimits  # noqa: E402
from tests.helpers import make_archive  # noqa: E402
from tests.slurm import Slurm  # noqa: E402

STAMP = "import os, time\nopen(os.path.join(os.environ['EM_MODEL_DIR'], 't'), 'w').write(repr(time.time()))\n"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def plain_sbatch(slurm: Slurm, root: Path, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        stamp = root / f"plain-{i}"
        script = root / f"plain-{i}.sh"
        script.write_text(f"#!/bin/sh\nexec {sys.executable} -c \"import time; open('{stamp}', 'w')"
                          f".write(repr(time.time()))\"\n")
        t0 = time.time()
        subprocess.run(["sbatch", "--parsable", "--nodes=1", "--gres=gpu:1", f"--output={root}/plain-{i}.out",
                        str(script)], env=slurm.env, check=True, capture_output=True)
        while not stamp.exists() or not stamp.read_text():
            time.sleep(0.005)
        latencies.append(float(stamp.read_text()) - t0)
    return latencies


def plain_drain(slurm: Slurm, root: Path, count: int) -> float:
    script = root / "trivial.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    t0 = time.time()
    for _ in range(count):
        subprocess.run(["sbatch", "--parsable", "--nodes=1", "--gres=gpu:1", "--output=/dev/null", str(script)],
                       env=slurm.env, check=True, capture_output=True)
    while subprocess.run(["squeue", "--noheader", "--format=%i"], env=slurm.env, capture_output=True,
                         text=True).stdout.strip():
        time.sleep(0.05)
    return time.time() - t0


async def ours(slurm: Slurm, root: Path, count: int, drain: int) -> tuple[list[float], float]:
    db = Database(f"sqlite:///{root / 'scheduler.sqlite'}")
    db.upgrade()
    executor = SlurmExecutor(on_exit=None, slurm_conf=str(slurm.conf), poll_interval=0.1)
    d = Dispatcher(db, executor, PriorityFifoPolicy(), [], root / "runs", sys.executable, SnapshotLimits(2**26))
    await d.start()
    values = dict(owner="bench", name="", experiment="default", entry_point="train.py", args=[],
                  hyperparameters={}, gpus=1, cpus=1, memory_bytes=0, priority=0, max_seconds=None,
                  snapshot_bytes=0)
    archive = make_archive({"train.py": STAMP})
    latencies = []
    try:
        for _ in range(count):
            t0 = time.time()
            run = await d.submit(dict(values), archive)
            stamp = run.paths.model / "t"
            while not stamp.exists() or not stamp.read_text():
                await asyncio.sleep(0.005)
            latencies.append(float(stamp.read_text()) - t0)
            while run.id in d.active:
                await asyncio.sleep(0.01)
        trivial = make_archive({"train.py": "pass\n"})
        t0 = time.time()
        runs = [await d.submit(dict(values), trivial) for _ in range(drain)]
        while any(r.id in d.active for r in runs):
            await asyncio.sleep(0.05)
        return latencies, time.time() - t0
    finally:
        await d.stop()
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--drain", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nothing-bench-slurm-"))
    root.chmod(0o711)
    slurm = Slurm(root / "slurm")
    slurm.start()
    try:
        plain = plain_sbatch(slurm, root, args.runs)
        plain_total = plain_drain(slurm, root, args.drain)
        ours_latency, ours_total = asyncio.run(ours(slurm, root, args.runs, args.drain))
    finally:
        slurm.stop()
    print(f"| submit → entry point running, 1 node, {args.runs} runs | p50 | p95 |")
    print("|---|---|---|")
    print(f"| plain sbatch | {statistics.median(plain) * 1000:.0f} ms | {pct(plain, 0.95) * 1000:.0f} ms |")
    print(f"| NothingAI on Slurm | {statistics.median(ours_latency) * 1000:.0f} ms | "
          f"{pct(ours_latency, 0.95) * 1000:.0f} ms |")
    print(f"| added by NothingAI | {(statistics.median(ours_latency) - statistics.median(plain)) * 1000:+.0f} ms | "
          f"{(pct(ours_latency, 0.95) - pct(plain, 0.95)) * 1000:+.0f} ms |")
    print()
    print(f"{args.drain} trivial runs drained: plain Slurm {plain_total:.1f} s, NothingAI on Slurm {ours_total:.1f} s")


if __name__ == "__main__":
    main()
