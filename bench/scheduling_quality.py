"""Scheduling quality: every policy on every trace, in one run.

    nice python bench/scheduling_quality.py --out build/scheduling-quality.md
    python bench/scheduling_quality.py --quick          # one day, one size: a smoke test

Replays, with the same preemption cost for every policy (a preempted job loses the
work since its last checkpoint, every 10 min, and pays 60 s to restart):

* Philly 2017-10-16..23 (the week the old policy was tuned on) at 384, 512, 640 GPUs;
* two other Philly weeks, 2017-10-02..09 and 2017-10-23..30, at 384 and 640 GPUs;
* Microsoft ITP ``cluster04`` (59 days, no groups) at 384 and 640 GPUs, and ``cluster07`` (59 days,
  12,699 jobs, about 257 GPUs of demand on average) at 256 GPUs,

through ``fifo`` (strict order), ``tiresias-2dlas`` and ``srtf-oracle`` (the
yardsticks, every job preemptible as their papers assume), ``fair-share-classic``
(the previous default, as it was benchmarked: nothing preemptible) and
``service-fair`` (the default: every job preemptible, run times learned by
``RuntimeEstimator``), plus ``service-fair`` with nothing preemptible everywhere
and, on the named week, with perfect estimates.  Then it times one scheduling pass (CPU
time) with 1,000, 10,000 and 50,000 queued runs on 1,000 GPUs.  Prints Markdown;
``--out`` also writes it to a file.  Standard library only.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulate_philly as sp  # noqa: E402  (puts this checkout's scheduler/ on the path first)

from nothing.scheduler.estimates import RuntimeEstimator  # noqa: E402
from nothing.scheduler.fairshare import FairSharePolicy  # noqa: E402
from nothing.scheduler.policy import PriorityFifoPolicy  # noqa: E402
from nothing.scheduler.reference import SrtfOracle, Tiresias2DLAS  # noqa: E402
from nothing.scheduler.servicefair import ServiceFairPolicy  # noqa: E402
from nothing.scheduler.simulator import (  # noqa: E402
    PreemptionCost,
    SimulationReport,
    load_itp,
    load_philly,
    percentile,
    simulate,
    uniform_nodes,
)

TRACES = sp.ROOT.parent / "shared" / "traces"
PHILLY = TRACES / "philly" / "philly.csv"
ITP = TRACES / "microsoft-itp-elasticflow" / "raw"
COST = PreemptionCost(checkpoint_seconds=600.0, restart_seconds=60.0)
ROUND = 60.0  # seconds per scheduling round, every policy alike
FIFO, TIRESIAS, SRTF, CLASSIC, SERVICE = "fifo", "tiresias-2dlas", "srtf-oracle", "fair-share-classic", "service-fair"
SERVICE_NP, SERVICE_PERFECT = "service-fair, nothing preemptible", "service-fair, perfect estimates"
POLICIES = (FIFO, TIRESIAS, SRTF, CLASSIC, SERVICE)
NAMED = "philly 2017-10-16..23"
TRACE_SIZES = {
    NAMED: (384, 512, 640),
    "philly 2017-10-02..09": (384, 640),
    "philly 2017-10-23..30": (384, 640),
    "itp cluster04": (384, 640),
    "itp cluster07": (256,),
}
WINDOWS = {NAMED: ("2017-10-16", "2017-10-23"), "philly 2017-10-02..09": ("2017-10-02", "2017-10-09"),
           "philly 2017-10-23..30": ("2017-10-23", "2017-10-30")}
QUICK_WINDOW = ("2017-10-17", "2017-10-18")


def load(trace: str, quick: bool):
    if trace.startswith("itp"):
        return load_itp(ITP / f"{trace.split()[1]}.csv")
    return load_philly(PHILLY, *(QUICK_WINDOW if quick else WINDOWS[trace]))


def replay(args: tuple[str, int, str, bool]) -> tuple[str, SimulationReport, tuple | None, float]:
    """One replay in a worker process: (trace, report without outcomes, estimate error, seconds)."""
    trace, gpus, name, quick = args
    t0 = time.perf_counter()
    jobs = load(trace, quick)
    nodes = uniform_nodes(gpus // 8, 8)
    every = [replace(j, preemptible=True) for j in jobs]
    estimator = None
    if name == FIFO:
        r = simulate(jobs, nodes, PriorityFifoPolicy(), name=name, preemption_cost=COST, round_seconds=ROUND)
    elif name == TIRESIAS:
        r = simulate(every, nodes, Tiresias2DLAS(), name=name, preemption_cost=COST, round_seconds=ROUND)
    elif name == SRTF:
        r = simulate(every, nodes, SrtfOracle(), name=name, preemption_cost=COST, round_seconds=ROUND)
    elif name == CLASSIC:
        r = simulate(jobs, nodes, FairSharePolicy(), name=name, preemption_cost=COST, round_seconds=ROUND)
    elif name == SERVICE_PERFECT:
        r = simulate(every, nodes, ServiceFairPolicy(), name=name, preemption_cost=COST, round_seconds=ROUND, perfect_estimates=True)
    else:
        estimator = RuntimeEstimator()
        r = simulate(every if name == SERVICE else jobs, nodes, ServiceFairPolicy(), name=name,
                     preemption_cost=COST, round_seconds=ROUND, estimator=estimator)
    err = None
    if estimator is not None:
        e = estimator.error()
        err = (e.runs, e.median_factor, e.over_2x, e.under_half)
    return trace, replace(r, outcomes=()), err, time.perf_counter() - t0


def work_list(quick: bool) -> list[tuple[str, int, str, bool]]:
    if quick:
        return [(NAMED, 384, name, True) for name in (*POLICIES, SERVICE_NP, SERVICE_PERFECT)]
    work = []
    for trace, sizes in TRACE_SIZES.items():
        for gpus in sizes:
            extra = (SERVICE_NP, SERVICE_PERFECT) if trace == NAMED else (SERVICE_NP,)
            work += [(trace, gpus, name, False) for name in (*POLICIES, *extra)]
    # The longest replays first, so two workers finish together.
    return sorted(work, key=lambda w: (not w[0].startswith("itp"), w[1], w[2] == FIFO))


def time_passes(sizes: tuple[int, ...], repeats: int) -> list[tuple[int, float, float, float]]:
    """CPU seconds of one ``ServiceFairPolicy.decide`` on a busy 1,000-GPU cluster: (queued, p50, p95, max)."""
    out = []
    policy = ServiceFairPolicy()
    for n in sizes:
        snap = sp.decision_snapshot(queued=n)
        policy.decide(snap)
        samples = []
        for _ in range(repeats if n <= 10_000 else max(3, repeats // 4)):
            gc.collect()
            t0 = time.process_time()
            policy.decide(snap)
            samples.append(time.process_time() - t0)
        out.append((n, percentile(samples, 50), percentile(samples, 95), max(samples)))
    return out


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f}"


def render(results, passes, elapsed: float, workers: int, quick: bool) -> str:
    lines = [
        (f"Produced by `nice python bench/scheduling_quality.py{' --quick' if quick else ''}` in "
         f"{elapsed / 60:.1f} min ({workers} worker processes on {os.cpu_count()} shared CPUs, "
         f"Python {platform.python_version()})."),
        "",
        ("Preemption cost, every policy alike: a preempted job loses the work since its last checkpoint "
         f"(every {COST.checkpoint_seconds / 60:.0f} min of running) and pays {COST.restart_seconds:.0f} s to "
         f"restart. Every policy decides in rounds of {ROUND:.0f} s (what happened in a round is acted on at "
         "its end; ends themselves are exact). JCT = submit to end. Queueing = JCT minus time holding GPUs. Worst wait = the longest any "
         "job queued in all. Utilisation = busy GPU time (lost work included) / capacity from the first to "
         "the last submission. Jain = Jain's index across groups (Philly VCs) of each group's mean "
         "running time / JCT; ITP has no groups. Lost = GPU-hours of work thrown away by preemptions."),
        "",
        ("| trace | GPUs | policy | avg JCT (h) | avg queueing (h) | p99 queueing (h) | worst wait (h) "
         "| utilisation | Jain | preemptions | lost GPU-h | replay (s) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    errors = []
    for trace, r, err, secs in results:
        jain = "n/a" if trace.startswith("itp") else f"{r.jain:.3f}"
        lines.append(f"| {trace} | {r.gpus} | {r.policy} | {_h(r.avg_jct)} | {_h(r.avg_queued)} | "
                     f"{_h(r.p99_queued)} | {r.max_queued / 3600:.1f} | {r.utilisation:.2%} | {jain} | "
                     f"{r.preemptions:,} | {r.lost_gpu_hours:,.0f} | {secs:.0f} |")
        if err is not None:
            errors.append((trace, r.gpus, r.policy, err))
    lines += [
        "",
        "### Against the targets",
        "",
        ("Ratios of `service-fair` to the yardsticks at each size (JCT <= 1.0x Tiresias and <= 1.1x the "
         "oracle, p99 queueing <= 1.0x Tiresias, worst wait <= FIFO's, utilisation >= FIFO's - 0.5 points, "
         "Jain >= 0.97 where there are groups; with nothing preemptible, JCT <= the classic policy's). "
         "**bold** = target missed."),
        "",
        "| trace | GPUs | JCT / Tiresias | JCT / oracle | p99 queueing / Tiresias | worst wait / FIFO's "
        "| utilisation - FIFO's | Jain | nothing preemptible: JCT / classic's |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(t, r.gpus, r.policy): r for t, r, _, _ in results}

    def ratio(a: float, b: float, limit: float) -> str:
        if b <= 0:
            return "n/a (no queueing)" if a <= 0 else "inf"
        v = round(a / b, 2)
        return f"**{v:.2f}**" if v > limit else f"{v:.2f}"

    for (t, g, name), s in by.items():
        if name != SERVICE:
            continue
        f, ti, o = by.get((t, g, FIFO)), by.get((t, g, TIRESIAS)), by.get((t, g, SRTF))
        if not (f and ti and o):
            continue
        du = (s.utilisation - f.utilisation) * 100
        util = f"**{du:+.2f}**" if round(du, 2) < -0.5 else f"{du:+.2f}"
        jain = "n/a" if t.startswith("itp") else (f"**{s.jain:.3f}**" if s.jain < 0.97 else f"{s.jain:.3f}")
        np_, c = by.get((t, g, SERVICE_NP)), by.get((t, g, CLASSIC))
        np_ratio = ratio(np_.avg_jct, c.avg_jct, 1.0) if np_ and c else "n/a"
        lines.append(f"| {t} | {g} | {ratio(s.avg_jct, ti.avg_jct, 1.0)} | {ratio(s.avg_jct, o.avg_jct, 1.1)} | "
                     f"{ratio(s.p99_queued, ti.p99_queued, 1.0)} | {ratio(s.max_queued, f.max_queued, 1.0)} | "
                     f"{util} points | {jain} | {np_ratio} |")
    if errors:
        lines += ["", "### Run-time estimates (`RuntimeEstimator`, as `service-fair` learned them)", "",
                  ("Scored on every finished job against the estimate made when it was queued. Philly has no "
                   "user, experiment or entry point: the estimator falls back to the VC's history; ITP has no "
                   "groups at all, so one history serves the whole cluster."),
                  "",
                  "| trace | GPUs | policy | jobs scored | median error factor | ran > 2x estimate | ran < 0.5x |",
                  "|---|---|---|---|---|---|---|"]
        for t, g, name, (n, med, over, under) in errors:
            lines.append(f"| {t} | {g} | {name} | {n:,} | {med:.2f}x | {over:.0%} | {under:.0%} |")
    lines += ["", "### One scheduling pass (CPU time)", "",
              ("`ServiceFairPolicy.decide` on a synthetic busy cluster: 1,000 GPUs on 125 nodes, about 80 % "
               "held, queued runs of Philly-like sizes (1 to 16 GPUs), 20 groups, 200 users. CPU time of the "
               "calling process (`time.process_time`): other work does not add to it, but cores shared with "
               "other work still slow it (on this machine by up to 2x)."),
              "", "| queued runs | p50 (ms) | p95 (ms) | max (ms) | p50 per queued run (µs) |", "|---|---|---|---|---|"]
    for n, p50, p95, mx in passes:
        lines.append(f"| {n:,} | {p50 * 1000:.1f} | {p95 * 1000:.1f} | {mx * 1000:.1f} | {p50 / n * 1e6:.2f} |")
    if len(passes) >= 2:
        (n0, a, _, _), (n1, b, _, _) = passes[0], passes[-1]
        k = math.log(b / a) / math.log(n1 / n0) if a > 0 and b > 0 else float("nan")
        lines += ["", f"Growth from {n0:,} to {n1:,} queued runs: time ~ n^{k:.2f} (n log n would be about "
                      f"n^{1 + math.log(math.log(n1) / math.log(n0)) / math.log(n1 / n0):.2f})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one day of the named week at 384 GPUs")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per queue length")
    parser.add_argument("--passes-only", action="store_true", help="only time the scheduling pass")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    work = [] if args.passes_only else work_list(args.quick)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(replay, work))
    order = {t: i for i, t in enumerate(TRACE_SIZES)}
    rank = {p: i for i, p in enumerate((*POLICIES, SERVICE_NP, SERVICE_PERFECT))}
    results.sort(key=lambda x: (order[x[0]], x[1].gpus, rank[x[1].policy]))
    passes = time_passes((1_000, 10_000) if args.quick else (1_000, 10_000, 50_000), 5 if args.quick else args.repeats)
    text = render(results, passes, time.perf_counter() - started, args.workers, args.quick)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
