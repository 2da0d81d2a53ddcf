"""Our scheduler on Slurm against plain sbatch on the same Slurm: start latency on 1 and 2 nodes, end → next
start, and a drain of trivial runs.

Starts the tests' loopback Slurm (3 nodes x 4 GRES GPUs, ``batch_sched_delay=0``) and, in one run, measures:

- submit → first rank running, idle cluster, one after the other: a 1-node run of one GPU (plain: ``sbatch`` of a
  script that stamps ``time.time()``; ours: ``Dispatcher.submit``, the policy places, ``sbatch --nodelist``), and a
  2-node run of one GPU per node (plain: ``sbatch --nodes=2`` whose script runs ``srun``; ours: ``nodes=2,
  gpus_per_node=1``, srun of our rank launcher); latency = the first rank's stamp - the submit time;
- end → next start: a run holding the whole cluster (3 nodes x 4 GPUs) stamps its end and exits while a second
  such run waits; latency = the second's first stamp - the first's end stamp;
- draining N trivial runs of one GPU each, all submitted at once, through each.

Our side runs the platform's default policy (``fair-share``) twice, with the same counts: as it is (the run the policy
keeps nodes for submitted ahead, ``c.SlurmExecutor.submit_ahead``), and with that off ("before"), so that one run
shows both on the same machine.
Where our submit → start goes is split at the executor: submit → the executor asked to start (the pass, staging the
code), → sbatch answered (the environment file, sbatch), → the first rank's stamp (Slurm, the batch script, Python;
srun and the rank launcher for 2 nodes); the plain side's sbatch is timed too.

    .venv/bin/python bench/slurm_overhead.py [--runs 15] [--handoffs 8] [--drain 1000] [--no-before]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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
from nothing.scheduler.servicefair import ServiceFairPolicy  # noqa: E402
from nothing.scheduler.snapshot import SnapshotLimits  # noqa: E402
from tests.helpers import make_archive  # noqa: E402
from tests.slurm import Slurm  # noqa: E402

# Each rank (or the one process) stamps when it runs: t-<RANK>; with EM_HP_GO it then waits for that file in its
# source folder and stamps its end (e-<RANK>) just before it exits.
STAMP = """import os, time
where = os.environ['EM_MODEL_DIR']
rank = os.environ.get('RANK', '0')
open(os.path.join(where, 't-' + rank), 'w').write(repr(time.time()))
go = os.environ.get('EM_HP_GO')
while go and not os.path.exists(os.path.join(os.environ['EM_SOURCE_DIR'], go)):
    time.sleep(0.002)
if go:
    open(os.path.join(where, 'e-' + rank), 'w').write(repr(time.time()))
"""

# The plain side: the same stamps, by the batch script's one process or by each srun task.
PLAIN = """import os, sys, time
where, rank = sys.argv[1], os.environ.get('SLURM_PROCID', '0')
open(os.path.join(where, 't-' + rank), 'w').write(repr(time.time()))
go = sys.argv[2] if len(sys.argv) > 2 else ''
while go and not os.path.exists(go):
    time.sleep(0.002)
if go:
    open(os.path.join(where, 'e-' + rank), 'w').write(repr(time.time()))
"""


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def stamps(folder: Path, prefix: str, count: int) -> list[float] | None:
    """The ``count`` stamps ``prefix-*`` in ``folder``, once all are written; else None."""
    found = []
    for path in folder.glob(prefix + "-*"):
        text = path.read_text()
        if not text:
            return None
        found.append(float(text))
    return found if len(found) >= count else None


def wait_stamps(folder: Path, prefix: str, count: int, timeout: float = 120) -> list[float]:
    deadline = time.time() + timeout
    while (found := stamps(folder, prefix, count)) is None:
        if time.time() > deadline:
            raise TimeoutError(f"no {count} {prefix} stamps in {folder}")
        time.sleep(0.002)
    return found


def sbatch_plain(slurm: Slurm, root: Path, name: str, nodes: int, gpus_per_node: int, go: str = "") -> Path:
    """Submits the plain job ``name`` (a folder of its own for its stamps) and returns that folder."""
    folder = root / name
    folder.mkdir()
    (root / "plain.py").write_text(PLAIN)
    command = f"{sys.executable} {root / 'plain.py'} {folder} {go}"
    script = folder / "job.sh"
    script.write_text("#!/bin/sh\n" + (f"exec srun --nodes={nodes} --ntasks-per-node=1 {command}\n" if nodes > 1
                                       else f"exec {command}\n"))
    subprocess.run(["sbatch", "--parsable", f"--nodes={nodes}", "--ntasks-per-node=1", f"--gres=gpu:{gpus_per_node}",
                    f"--output={folder}/out", str(script)], env=slurm.env, check=True, capture_output=True)
    return folder


def plain_starts(slurm: Slurm, root: Path, count: int, nodes: int, sbatch_seconds: list[float]) -> list[float]:
    latencies = []
    for i in range(count):
        t0 = time.time()
        folder = sbatch_plain(slurm, root, f"plain-{nodes}n-{i}", nodes, 1)
        sbatch_seconds.append(time.time() - t0)
        latencies.append(min(wait_stamps(folder, "t", nodes)) - t0)
        wait_idle(slurm)
    return latencies


def plain_handoffs(slurm: Slurm, root: Path, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        go = root / f"go-{i}"
        first = sbatch_plain(slurm, root, f"plain-hold-{i}", 3, 4, str(go))
        wait_stamps(first, "t", 3)
        second = sbatch_plain(slurm, root, f"plain-next-{i}", 3, 4)
        time.sleep(0.3)  # the second is pending behind the first
        go.touch()
        latencies.append(min(wait_stamps(second, "t", 3)) - max(wait_stamps(first, "e", 3)))
        wait_idle(slurm)
    return latencies


def wait_idle(slurm: Slurm) -> None:
    while subprocess.run(["squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,COMPLETING"],
                         env=slurm.env, capture_output=True, text=True).stdout.strip():
        time.sleep(0.02)


def plain_drain(slurm: Slurm, root: Path, count: int) -> float:
    script = root / "trivial.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    t0 = time.time()
    for _ in range(count):
        subprocess.run(["sbatch", "--parsable", "--nodes=1", "--gres=gpu:1", "--output=/dev/null", str(script)],
                       env=slurm.env, check=True, capture_output=True)
    wait_idle(slurm)
    return time.time() - t0


class TimedExecutor(SlurmExecutor):
    """The Slurm executor, stamping per run when it was asked to start it and when sbatch answered."""

    def __init__(self, on_exit, **kwargs):
        super().__init__(on_exit, **kwargs)
        self.marks: dict[int, tuple[float, float]] = {}

    async def _start(self, launch, paths, python):
        began = time.time()
        result = await super()._start(launch, paths, python)
        self.marks[launch.run_id] = (began, time.time())
        return result


VALUES = dict(owner="bench", name="", experiment="default", entry_point="train.py", args=[], hyperparameters={},
              gpus=1, cpus=1, memory_bytes=0, priority=0, max_seconds=None, snapshot_bytes=0)


async def ours(slurm: Slurm, root: Path, count: int, handoffs: int, drain: int, ahead: bool) -> dict:
    root.mkdir()
    root.chmod(0o711)
    db = Database(f"sqlite:///{root / 'scheduler.sqlite'}")
    db.upgrade()
    executor = TimedExecutor(on_exit=None, slurm_conf=str(slurm.conf), poll_interval=0.1, submit_ahead=ahead)
    d = Dispatcher(db, executor, ServiceFairPolicy(), [], root / "runs", sys.executable, SnapshotLimits(2**26))
    await d.start()
    archive = make_archive({"train.py": STAMP})
    results: dict = {}

    async def ended(*runs):
        while any(r.id in d.active for r in runs):
            await asyncio.sleep(0.01)

    async def wait(folder: Path, prefix: str, n: int) -> list[float]:
        while (found := stamps(folder, prefix, n)) is None:
            await asyncio.sleep(0.002)
        return found

    try:
        for nodes in (1, 2):
            shape = dict(nodes=2, gpus_per_node=1, gpus=2) if nodes == 2 else {}
            latencies, parts = [], []
            for _ in range(count):
                t0 = time.time()
                run = await d.submit(dict(VALUES, **shape), archive)
                first = min(await asyncio.wait_for(wait(run.paths.model, "t", nodes), 120))
                latencies.append(first - t0)
                asked, answered = executor.marks[run.id]
                parts.append((asked - t0, answered - asked, first - answered))
                await ended(run)
            results[f"start-{nodes}"] = latencies
            results[f"parts-{nodes}"] = parts
        gaps = []
        whole = dict(VALUES, nodes=3, gpus_per_node=4, gpus=12, hyperparameters={"GO": "go"})
        for _ in range(handoffs):
            first = await d.submit(whole, archive)
            await asyncio.wait_for(wait(first.paths.model, "t", 3), 120)
            second = await d.submit(dict(VALUES, nodes=3, gpus_per_node=4, gpus=12), archive)
            await asyncio.sleep(0.3)
            (first.paths.source / "go").touch()
            end = max(await asyncio.wait_for(wait(first.paths.model, "e", 3), 120))
            gaps.append(min(await asyncio.wait_for(wait(second.paths.model, "t", 3), 120)) - end)
            await ended(first, second)
        results["handoff"] = gaps
        trivial = make_archive({"train.py": "pass\n"})
        t0 = time.time()
        runs = [await d.submit(dict(VALUES), trivial) for _ in range(drain)]
        await ended(*runs)
        results["drain"] = time.time() - t0
        results["drain_failed"] = sum(1 for r in runs if r.state.value != "COMPLETE")
        return results
    finally:
        await d.stop()
        db.close()


def row(label: str, plain: list[float], mine: list[float]) -> list[str]:
    ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
    return [f"| {label}: plain Slurm | {ms(statistics.median(plain))} | {ms(pct(plain, 0.95))} |",
            f"| {label}: NothingAI on Slurm | {ms(statistics.median(mine))} | {ms(pct(mine, 0.95))} |",
            f"| {label}: added by NothingAI | {(statistics.median(mine) - statistics.median(plain)) * 1000:+.0f} ms | "
            f"{(pct(mine, 0.95) - pct(plain, 0.95)) * 1000:+.0f} ms |"]


def median_ms(values) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--handoffs", type=int, default=8)
    parser.add_argument("--drain", type=int, default=1000)
    parser.add_argument("--no-before", action="store_true", help="skip our side without submitting ahead")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nothing-bench-slurm-"))
    root.chmod(0o711)
    slurm = Slurm(root / "slurm")
    slurm.start()
    load = os.getloadavg()
    sbatch_seconds: list[float] = []
    try:
        plain = {f"start-{n}": plain_starts(slurm, root, args.runs, n, sbatch_seconds) for n in (1, 2)}
        plain["handoff"] = plain_handoffs(slurm, root, args.handoffs)
        began = time.time()
        plain["drain"] = plain_drain(slurm, root, args.drain)
        print(f"plain drain done in {time.time() - began:.1f} s", file=sys.stderr)
        before = None if args.no_before else asyncio.run(
            ours(slurm, root / "before", args.runs, args.handoffs, args.drain, False))
        mine = asyncio.run(ours(slurm, root / "ours", args.runs, args.handoffs, args.drain, True))
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)
    load_end = os.getloadavg()
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at the end {load_end[0]:.2f} "
          f"on {os.cpu_count()} cores")
    print("| latency | p50 | p95 |")
    print("|---|---|---|")
    lines = []
    for key, label in (("start-1", f"submit → first rank running, 1 node, {args.runs} runs"),
                       ("start-2", f"submit → first rank running, 2 nodes, {args.runs} runs"),
                       ("handoff", f"end → next start, 3 nodes x 4 GPUs, {args.handoffs} hand-offs")):
        if before is not None:
            lines += [line.replace("NothingAI on Slurm", "NothingAI on Slurm, before").replace(
                "added by NothingAI", "added, before") for line in row(label, plain[key], before[key])[1:]]
        lines += row(label, plain[key], mine[key])
    print("\n".join(lines))
    print()
    print(f"where our submit → start goes (medians): plain sbatch {median_ms(sbatch_seconds)}")
    for nodes in (1, 2):
        parts = list(zip(*mine[f"parts-{nodes}"]))
        print(f"  {nodes} node(s): submit → executor asked {median_ms(parts[0])}, → sbatch answered "
              f"{median_ms(parts[1])}, → first rank's stamp {median_ms(parts[2])}")
    print()
    print(f"{args.drain} trivial runs drained: plain Slurm {plain['drain']:.1f} s, NothingAI on Slurm "
          f"{mine['drain']:.1f} s ({mine['drain_failed']} did not complete)"
          + (f", before {before['drain']:.1f} s ({before['drain_failed']} did not complete)" if before else ""))


if __name__ == "__main__":
    main()
