"""Replay a week of the Philly trace under FIFO and the platform's fair-share policy.

    python bench/simulate_philly.py --out docs/benchmarks-policy.md

For 384, 512 and 640 GPUs (nodes of 8) it replays the jobs submitted from
2017-10-16 to 2017-10-23 (duration >= 60 s, GPU time < 1,000 GPU-hours, the
trace's virtual cluster as the group) through ``PriorityFifoPolicy`` (strict
order, no backfill), ``FairSharePolicy`` with its default configuration, and
``FairSharePolicy`` with per-VC guarantees and preemptible jobs; then it times
one scheduling pass with 10,000 queued runs on 1,000 GPUs.  It prints a table
and writes the figures as Markdown.  Standard library only; the code measured is
this checkout's ``scheduler/``, whatever is installed.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import gc
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_from_checkout() -> None:
    """Measure this working tree, not an installed copy: the wheel maps ``scheduler/``
    to ``nothing.scheduler``, so put a link with that name first on the path."""
    links = Path(tempfile.mkdtemp(prefix="nothing-bench-"))
    atexit.register(shutil.rmtree, links, True)
    (links / "nothing").mkdir()
    (links / "nothing" / "scheduler").symlink_to(ROOT / "scheduler", target_is_directory=True)
    sys.path.insert(0, str(links))


_import_from_checkout()

from nothing.scheduler.fairshare import FairSharePolicy
from nothing.scheduler.policy import Allocation, ClusterSnapshot, PendingRun, PriorityFifoPolicy
from nothing.scheduler.quotas import Quota, Quotas
from nothing.scheduler.simulator import SimulationReport, load_philly, percentile, simulate, uniform_nodes
from nothing.scheduler.usage import Usage

TRACE = ROOT.parent / "shared" / "traces" / "philly" / "philly.csv"
VC_NODES = TRACE.parent / "helios_philly_vc_nodes.csv"
WEEK = ("2017-10-16", "2017-10-23")
EXPECTED_JOBS = 13_408
FIFO, FAIR, GUARANTEES = "fifo", "fair-share", "fair-share + guarantees"
PREEMPT_GRACE = 30.0


def vc_guarantees(gpus: int, path: Path = VC_NODES) -> Quotas:
    """Each virtual cluster is guaranteed GPUs in proportion to its size in Philly (as
    the Helios artifact gives it), rounded down; groups not listed get none."""
    with open(path, newline="") as f:
        nodes = {row["vc"]: int(row["node num"]) for row in csv.DictReader(f)}
    total = sum(nodes.values())
    return Quotas(groups={vc: Quota(guaranteed_gpus=gpus * n // total) for vc, n in nodes.items()},
                  default_group=Quota(guaranteed_gpus=0))


def _replay(args: tuple[str, int, str]) -> SimulationReport:
    trace, gpus, name = args
    jobs = load_philly(Path(trace), *WEEK)
    nodes = uniform_nodes(gpus // 8, 8)
    if name == FIFO:
        report = simulate(jobs, nodes, PriorityFifoPolicy(), name=name)
    elif name == FAIR:
        report = simulate(jobs, nodes, FairSharePolicy(), name=name)
    else:
        jobs = [replace(j, preemptible=True) for j in jobs]
        report = simulate(jobs, nodes, FairSharePolicy(), name=name, quotas=vc_guarantees(gpus),
                          preempt_grace_seconds=PREEMPT_GRACE)
    # Outcomes stay in the worker: only the figures travel back.
    return replace(report, outcomes=())


def decision_snapshot(queued: int = 10_000, nodes: int = 125, seed: int = 0) -> ClusterSnapshot:
    """A busy cluster (about 80 % of GPUs held) with ``queued`` runs of Philly-like sizes,
    20 groups and 200 users, for timing one pass."""
    rng = random.Random(seed)
    now = 1.7e9
    cluster = uniform_nodes(nodes, 8, 96, 0)
    sizes = [1] * 80 + [2] * 5 + [4] * 7 + [8] * 6 + [16] * 2
    groups = [f"group-{i:02d}" for i in range(20)]
    running, run_id = [], 1
    for n in cluster:
        free = list(n.gpus)
        while free and rng.random() < 0.93:
            k = rng.choice([s for s in sizes if s <= len(free)])
            running.append(Allocation(run_id, f"user-{rng.randrange(200)}", n.name, tuple(free[:k]), 2 * k, 0,
                                      rng.choice(groups), rng.random() < 0.5, rng.random() < 0.05,
                                      now - rng.uniform(0, 86400)))
            free, run_id = free[k:], run_id + 1
    pending = tuple(
        PendingRun(run_id + i, f"user-{rng.randrange(200)}", rng.choice(sizes), 2, 0, int(rng.random() < 0.1),
                   now - rng.uniform(0, 2 * 86400), rng.choice(groups), rng.random() < 0.5)
        for i in range(queued))
    usage = {g: Usage(rng.uniform(0, 5e6), now - 600, 0.0, 0.0, rng.uniform(600, 7200)) for g in groups}
    return ClusterSnapshot(cluster, tuple(running), pending, now, usage, {})


DECISION_QUOTAS = Quotas(groups={f"group-{i:02d}": Quota(guaranteed_gpus=40, max_gpus=150) for i in range(20)},
                         default_user=Quota(max_gpus=32))


def time_passes(snapshot: ClusterSnapshot, repeats: int) -> dict[str, tuple[float, float]]:
    """p50 and p95 wall time of one ``decide`` per policy, on the same snapshot."""
    cases = [(FIFO, PriorityFifoPolicy(), snapshot), (FAIR, FairSharePolicy(), snapshot),
             (f"{FAIR}, with quotas", FairSharePolicy(), replace(snapshot, quotas=DECISION_QUOTAS))]
    out = {}
    for name, policy, snap in cases:
        policy.decide(snap)  # warm up
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            policy.decide(snap)
            samples.append(time.perf_counter() - t0)
        out[name] = (percentile(samples, 50), percentile(samples, 95))
        gc.collect()
    return out


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f}"


def render(reports: list[SimulationReport], passes: dict[str, tuple[float, float]], jobs: int,
           mean_duration: float, snapshot: ClusterSnapshot, elapsed: float, workers: int) -> str:
    lines = [
        "# Scheduling policy: Philly replay and decision time",
        "",
        (f"Produced by `python bench/simulate_philly.py --out docs/benchmarks-policy.md` in {elapsed / 60:.1f} min "
         f"({workers} worker processes, {os.cpu_count()} CPUs, Python {platform.python_version()})."),
        "",
        "## Workload",
        "",
        (f"Jobs of `shared/traces/philly/philly.csv` submitted from {WEEK[0]} to {WEEK[1]} (UTC, end excluded), "
         f"with duration >= 60 s and GPU time < 1,000 GPU-hours: **{jobs:,} jobs** "
         f"({'as expected' if jobs == EXPECTED_JOBS else f'EXPECTED {EXPECTED_JOBS:,}'}). "
         "Nodes of 8 GPUs; a job asking for more than 8 GPUs is spread over the fewest nodes. "
         "The trace's `cluster` column (Philly virtual cluster, VC) is the group, one user per group."),
        "",
        "* **fifo**: `PriorityFifoPolicy`, strict submit order, no backfill.",
        ("* **fair-share**: `FairSharePolicy` with its defaults: fair share (7-day half-life), aging "
         "(4 h of waiting = the whole fair-share range), gang placement packing nodes, EASY backfill. "
         "No quotas; no job is preemptible."),
        ("* **fair-share + guarantees**: the same, plus each VC guaranteed GPUs in proportion to its Philly size "
         "(`helios_philly_vc_nodes.csv`), every job preemptible, so a VC may borrow idle GPUs and is preempted "
         f"(newest first) when the owner needs them back. A preempted job stops {PREEMPT_GRACE:.0f} s later and "
         "resumes from where it stopped when it restarts (as if it checkpointed)."),
        "",
        ("Run times are never read from the trace by the policy: the simulator feeds every finished job to a "
         "`UsageLedger`, and a job's expected run time is the median of its group's last 100 finished jobs "
         "(1 h until a group has history); a running job past its estimate is expected to run as long again."),
        "",
        "## Results",
        "",
        ("JCT = submit to end. Queueing = JCT minus running time. Utilisation = busy GPU-time / capacity between "
         "the first and the last submission. Idle GPU-h while jobs waited = GPU time left idle while at least "
         "one job was queued (head-of-line blocking, fragmentation, reservations). Jain = Jain's index across "
         "groups of each group's mean (running time / JCT). Waiting while no GPU free = share of all job-seconds "
         "spent waiting that passed while every GPU was busy: waits no placement or backfill can shorten. "
         "Pass = wall time of one `decide` call during the replay (one pass per instant at which something "
         "happened)."),
        "",
        ("| GPUs | policy | avg JCT (h) | avg queueing (h) | p95 queueing (h) | p99 queueing (h) | utilisation "
         "| idle GPU-h while jobs waited | waiting while no GPU free | Jain | preemptions | pass p50 (ms) "
         "| pass p95 (ms) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(f"| {r.gpus} | {r.policy} | {_h(r.avg_jct)} | {_h(r.avg_queued)} | {_h(r.p95_queued)} | "
                     f"{_h(r.p99_queued)} | {r.utilisation:.2%} | {r.idle_gpu_hours_while_waiting:,.0f} | "
                     f"{r.waiting_while_full:.0%} | {r.jain:.3f} | {r.preemptions:,} | {r.pass_p50 * 1000:.2f} | "
                     f"{r.pass_p95 * 1000:.2f} |")
    lines += [
        "",
        "## Against the targets",
        "",
        ("Targets: average JCT <= 0.6 x FIFO's, p99 queueing <= 0.5 x FIFO's, utilisation not lower. "
         "No policy that runs each job for its duration can bring the average JCT below the mean duration, "
         f"{_h(mean_duration)} h: the last column is that bound divided by FIFO's JCT."),
        "",
        "| GPUs | policy | JCT / FIFO | p99 queueing / FIFO | utilisation - FIFO's | best possible JCT / FIFO |",
        "|---|---|---|---|---|---|",
    ]
    by = {(r.gpus, r.policy): r for r in reports}
    for (gpus, name), p in by.items():
        f = by.get((gpus, FIFO))
        if name == FIFO or f is None:
            continue
        q = p.p99_queued / f.p99_queued if f.p99_queued else float("nan")
        lines.append(f"| {gpus} | {name} | {p.avg_jct / f.avg_jct:.2f} | {q:.2f} | "
                     f"{(p.utilisation - f.utilisation) * 100:+.2f} points | {mean_duration / f.avg_jct:.2f} |")
    fifo = {r.gpus: r for r in reports if r.policy == FIFO}
    short = [g for g, f in fifo.items() if mean_duration / f.avg_jct > 0.6]
    full = [f"{f.waiting_while_full:.0%} at {g}" for g, f in sorted(fifo.items())]
    lines += [
        "",
        ("Reading the figures: the JCT target is out of reach for any policy where the last column is above 0.6"
         + (f" ({', '.join(map(str, short))} GPUs)" if short else "") + ". "
         f"Under FIFO, the share of waiting that passed with every GPU busy was {', '.join(full)} GPUs: where it "
         "is high, queueing comes from bursts that fill the whole cluster, and only preemption or time-slicing "
         "could shorten it, not placement or backfill. Where fair-share leaves more GPUs idle than FIFO while "
         "jobs wait, the idle GPUs are scattered: jobs that need a whole node wait for one to drain, which "
         "FIFO's blocking (no other job starts meanwhile) makes happen sooner."),
    ]
    busy = sum(len(a.gpus) for a in snapshot.running)
    gpus = sum(len(n.gpus) for n in snapshot.nodes)
    lines += [
        "",
        "## Decision time",
        "",
        (f"One `decide` call on a synthetic snapshot: {len(snapshot.queued):,} queued runs (1 to 16 GPUs, "
         f"20 groups, 200 users), {gpus:,} GPUs on {len(snapshot.nodes)} nodes, {busy:,} of them held by "
         f"{len(snapshot.running):,} runs. The time covers ordering, placement, the reservation, and a reason "
         "and an estimated start for every waiting run. *With quotas*: every group guaranteed 40 GPUs and "
         "capped at 150, every user capped at 32."),
        "",
        "| policy | p50 (ms) | p95 (ms) |",
        "|---|---|---|",
    ]
    for name, (p50, p95) in passes.items():
        lines.append(f"| {name} | {p50 * 1000:.1f} | {p95 * 1000:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, default=TRACE, help="the Philly job-level CSV")
    parser.add_argument("--gpus", type=int, nargs="+", default=[384, 512, 640], help="cluster sizes to replay")
    parser.add_argument("--out", type=Path, help="write the figures here as Markdown")
    parser.add_argument("--workers", type=int, default=min(6, os.cpu_count() or 1),
                        help="replays run in this many processes")
    parser.add_argument("--repeats", type=int, default=50, help="timed passes per policy for the decision time")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    jobs = load_philly(args.trace, *WEEK)
    if len(jobs) != EXPECTED_JOBS:
        print(f"warning: {len(jobs)} jobs in the window, expected {EXPECTED_JOBS}", file=sys.stderr)
    mean_duration = sum(j.duration for j in jobs) / len(jobs)
    work = [(str(args.trace), g, name) for g in args.gpus for name in (FIFO, FAIR, GUARANTEES)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        reports = list(pool.map(_replay, work))
    snapshot = decision_snapshot()
    passes = time_passes(snapshot, args.repeats)
    text = render(reports, passes, len(jobs), mean_duration, snapshot, time.perf_counter() - started, args.workers)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
