"""Benchmark of the platform's overhead per tuning trial against the same Optuna study run in-process.

Starts a real JupyterHub with its proxy and the scheduler (2 virtual GPUs, SQLite, otherwise the defaults) and
creates a tuning of ``--trials`` trials (``--strategy``, random by default; one trial at a time, one GPU each)
whose trial is a
script that records ``time.time()`` into ``EM_MODEL_DIR``, prints its objective and exits. From each trial
run's events (``GET /api/runs/ID/events``) and its record it measures:

* submit → RUNNING: the run's ``submitted_at`` to its RUNNING event (the dispatcher's part), and to the
  entry point's first line (interpreter start-up included);
* trial end → next trial RUNNING: one trial's end event to the next one's RUNNING event (and its first line),
  split at the next run's ``submitted_at`` into the controller's part (the last metric read, Optuna's tell and
  ask, the submission) and the dispatcher's;
* the cycle: one trial's end to the next one's end.

Beside it, the same study in-process: an in-memory Optuna study with the same sampler, ``ask``, the same script
run with ``subprocess.run``, ``tell``, one after the other. Its per-trial time is the reference; its "end →
next entry point" (the script's exit to the next script's first line) is what the platform's "end → next
running" compares with. And Optuna's ``tell`` + ``ask`` timed against a persistent study: the RDB storage in
the scheduler's SQLite database, where the tuning controller keeps its studies by default
(``scheduler/tuning_studies.py``: its engine's settings, Optuna's cache), Optuna's journal file (the other
``c.TuningController.study_storage``), and the RDB storage in a SQLite file of its own with Optuna's defaults
(the storage before journal files), to show what each costs per trial. Last, how long the scheduler's database
writes wait while Optuna writes to the same SQLite file (two writers, one lock): a small write on the
scheduler's database thread (``Database.run``), timed with Optuna idle and while the Optuna thread runs
tell + ask without pause.

With random (and grid) suggestions the controller asks for the next one while a trial runs, so a trial's end
is followed by a submission; ``--strategy bayesian`` times TPE, which past its random start asks only after
the ended trial is told (``tuning_spec.may_ask_ahead``), so Optuna's tell and ask are on that path.

    .venv/bin/python bench/tuning_overhead.py [--trials 30] [--strategy random] [--study-storage database]
        [--interval 1.0] [--py-spy FILE.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.spine import pct  # noqa: E402
from tests.helpers import make_archive, wait_for_sync  # noqa: E402
from tests.hub import Api, Hub  # noqa: E402

TRIAL = ("import os, time\nt = time.time()\nx = float(os.environ['EM_HP_X'])\n"
         "open(os.path.join(os.environ['EM_MODEL_DIR'], 't'), 'w').write(repr(t))\n"
         "print(f'score={-(x - 3) ** 2}', flush=True)\n")
TARGET_MS = 100.0
SEED = 1


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()


def ms(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": 1000 * statistics.median(values), "p95_ms": 1000 * pct(values, 95),
            "max_ms": 1000 * max(values)}


def fmt(stats: dict) -> str:
    return f"p50 {stats['p50_ms']:.1f} ms, p95 {stats['p95_ms']:.1f} ms (n={stats['n']})"


# ------------------------------------------------------------------ the platform
def start_hub(interval: float, study_storage: str) -> Hub:
    root = Path(tempfile.mkdtemp(prefix="nothing-bench-tuning-"))
    (root / "hub").mkdir()
    config = root / "hub" / "scheduler_config.py"
    config.write_text(f"c.TuningController.interval = {interval}\n"
                      f"c.TuningController.study_storage = {study_storage!r}\n")
    hub = Hub(root / "hub", ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=2",
                             "--NothingScheduler.node_cpus=16", "--NothingScheduler.log_level=WARN",
                             f"--NothingScheduler.config_file={config}"])
    hub.start()
    return hub


def one_tuning(hub: Hub, api: Api, trials: int, strategy: str) -> dict[str, list[float]]:
    """Run one tuning to its end; the intervals (seconds) of its trials, from their runs' records and events."""
    spec = {"name": "overhead", "strategy": strategy, "random_seed": SEED, "entry_point": "trial.py",
            "cpus": 0, "hyperparameter_spec": [{"name": "x", "type": "double", "min": 0, "max": 6}],
            "metrics": [{"name": "score", "regex": r"score=(\S+)"}],
            "objective": {"metric": "score", "goal": "maximize"},
            "resources": {"max_trials": trials, "parallel_trials": 1, "gpus_per_trial": 1}}
    posted = time.time()
    r = api("POST", "/tunings", data={"spec": json.dumps(spec)},
            files={"archive": ("code.tar.gz", make_archive({"trial.py": TRIAL}), "application/gzip")})
    assert r.status_code == 201, r.text
    tuning_id = r.json()["id"]
    done = wait_for_sync(lambda: (lambda t: t if t["state"] in ("COMPLETE", "STOPPED",
                                                                 "FAIL HYPERPARAMETER TUNING") else None)(
        api("GET", f"/tunings/{tuning_id}").json()), timeout=60 + 10 * trials, interval=0.5,
        message="the tuning to end")
    finished = time.time()
    assert done["state"] == "COMPLETE" and done["trials"]["by_state"] == {"SUCCEEDED": trials}, done
    rows = sorted(api("GET", f"/tunings/{tuning_id}/trials").json()["trials"], key=lambda t: t["number"])
    timeline = []
    for t in rows:
        run = api("GET", f"/runs/{t['run_id']}").json()
        events = api("GET", f"/runs/{t['run_id']}/events").json()["events"]
        stamp = hub.root / "var" / "scheduler" / "runs" / str(t["run_id"]) / "model" / "t"
        timeline.append({"submitted": epoch(run["submitted_at"]),
                         "running": next(epoch(e["at"]) for e in events if e["to"] == "RUNNING"),
                         "ended": next(epoch(e["at"]) for e in events if e["to"] == "COMPLETE"),
                         "entry": float(stamp.read_text())})
    pairs = list(zip(timeline, timeline[1:]))
    return {
        "first_trial_after_post": [timeline[0]["submitted"] - posted],
        "whole_tuning": [finished - posted],
        "submit_to_running": [t["running"] - t["submitted"] for t in timeline],
        "submit_to_entry": [t["entry"] - t["submitted"] for t in timeline],
        "end_to_next_submitted": [b["submitted"] - a["ended"] for a, b in pairs],
        "end_to_next_running": [b["running"] - a["ended"] for a, b in pairs],
        "end_to_next_entry": [b["entry"] - a["ended"] for a, b in pairs],
        "running_to_end": [t["ended"] - t["running"] for t in timeline],
        "cycle": [b["ended"] - a["ended"] for a, b in pairs],
    }


# ------------------------------------------------------------------ in-process
def sampler(strategy: str):
    import optuna

    return optuna.samplers.TPESampler(seed=SEED) if strategy == "bayesian" else \
        optuna.samplers.RandomSampler(seed=SEED)


def in_process_trials(trials: int, strategy: str) -> dict[str, list[float]]:
    """The same study in this process: ask, the same script with ``subprocess.run``, tell."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="nothing-bench-optuna-"))
    script = work / "trial.py"
    script.write_text(TRIAL)
    study = optuna.create_study(direction="maximize", sampler=sampler(strategy))
    space = {"x": optuna.distributions.FloatDistribution(0, 6)}
    per_trial, exits, entries, optuna_s = [], [], [], []
    for _ in range(trials):
        started = time.perf_counter()
        trial = study.ask(space)
        asked = time.perf_counter()
        env = dict(os.environ, EM_HP_X=str(trial.params["x"]), EM_MODEL_DIR=str(work))
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
        exits.append(time.time())
        entries.append(float((work / "t").read_text()))
        told = time.perf_counter()
        study.tell(trial, float(out.stdout.split("=", 1)[1]))
        ended = time.perf_counter()
        per_trial.append(ended - started)
        optuna_s.append((asked - started) + (ended - told))
    return {"per_trial": per_trial, "end_to_next_entry": [b - a for a, b in zip(exits, entries[1:])],
            "ask_tell": optuna_s}


def scheduler_database(work: Path):
    """A scheduler's SQLite database as the service makes it at start (WAL, our schema at head)."""
    from nothing.scheduler.db import Database

    db = Database(f"sqlite:///{work / 'scheduler.sqlite'}")
    db.upgrade()
    return db


def optuna_storage(kind: str, work: Path):
    import optuna

    if kind == "database":
        from nothing.scheduler.tuning_studies import database_storage

        scheduler_database(work).close()
        return database_storage(f"sqlite:///{work / 'scheduler.sqlite'}")
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{work / 'optuna.sqlite'}",
                                          engine_kwargs={"connect_args": {"timeout": 30}})
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(work / "journal")))


def storage_ask_tell(trials: int, kind: str, strategy: str) -> list[float]:
    """One trial's tell, the next one's ask and a read of the study's trials (the controller reads them at each
    reconcile), against a persistent Optuna storage: ``database`` is the RDB storage in the scheduler's database
    as the tuning controller makes it (``tuning_studies.database_storage``), ``journal`` Optuna's append-only
    journal file, ``sqlite`` the RDB storage in a SQLite file of its own with Optuna's defaults."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="nothing-bench-optuna-db-"))
    study = optuna.create_study(storage=optuna_storage(kind, work), study_name="bench", direction="maximize",
                                sampler=sampler(strategy))
    space = {"x": optuna.distributions.FloatDistribution(0, 6)}
    times, trial = [], study.ask(space)
    for _ in range(trials):
        started = time.perf_counter()
        study.get_trials(deepcopy=False)
        study.tell(trial.number, -(trial.params["x"] - 3) ** 2, skip_if_finished=True)
        trial = study.ask(space)
        times.append(time.perf_counter() - started)
    return times


def scheduler_write_waits(writes: int) -> dict[str, list[float]]:
    """The scheduler's small writes (``Database.run``, one insert each) timed with Optuna idle, then while the
    Optuna thread runs tell + ask in the same SQLite database without pause (each its own write transaction)."""
    import asyncio

    import optuna
    from sqlalchemy import text

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="nothing-bench-two-writers-"))
    storage = optuna_storage("database", work)
    db = scheduler_database(work)
    study = optuna.create_study(storage=storage, study_name="bench", direction="maximize")
    space = {"x": optuna.distributions.FloatDistribution(0, 6)}
    busy, optuna_calls = threading.Event(), [0]

    def optuna_writes() -> None:
        while busy.is_set():
            trial = study.ask(space)
            study.tell(trial.number, trial.params["x"])
            optuna_calls[0] += 1

    def insert(session, k: int) -> None:
        session.execute(text("INSERT INTO bench_writes (k) VALUES (:k)"), {"k": k})

    async def timed(n: int, offset: int) -> list[float]:
        out = []
        for k in range(n):
            started = time.perf_counter()
            await db.run(insert, offset + k)
            out.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)  # the scheduler writes now and then, not in a tight loop
        return out

    db.run_sync(lambda s: s.execute(text("CREATE TABLE bench_writes (k INTEGER PRIMARY KEY)")))
    try:
        alone = asyncio.run(timed(writes, 0))
        busy.set()
        writer = threading.Thread(target=optuna_writes, name="nothing-optuna")
        writer.start()
        try:
            beside = asyncio.run(timed(writes, writes))
        finally:
            busy.clear()
            writer.join()
    finally:
        db.close()
        storage.engine.dispose()
    print(f"  (Optuna made {optuna_calls[0]} ask + tell pairs while the scheduler wrote {writes} times)")
    return {"scheduler_write_alone": alone, "scheduler_write_beside_optuna": beside}


def pooled(rounds: list[dict[str, list[float]]]) -> dict[str, dict]:
    return {key: ms([v for r in rounds for v in r[key]]) for key in rounds[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="trials per tuning")
    parser.add_argument("--strategy", choices=("random", "bayesian"), default="random",
                        help="the tunings' strategy (and the in-process study's sampler)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="tunings, each followed by the in-process study (both see the same machine)")
    parser.add_argument("--interval", type=float, default=1.0, help="c.TuningController.interval (the default)")
    parser.add_argument("--study-storage", choices=("database", "journal"), default="database",
                        help="c.TuningController.study_storage (the default: the scheduler's database)")
    parser.add_argument("--writes", type=int, default=300,
                        help="scheduler writes timed alone and beside Optuna's (0: skip that part)")
    parser.add_argument("--py-spy", help="record the scheduler with py-spy (raw format) into this file")
    parser.add_argument("--json", help="also write the figures as JSON here")
    args = parser.parse_args()
    hub = start_hub(args.interval, args.study_storage)
    spy = None
    platform_rounds, reference_rounds, storage_rounds = [], [], []
    try:
        hub.create_user("bench")
        api = Api(hub, hub.token_for("bench"))
        if args.py_spy:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                                    "--threads", "--rate", "250", "-o", args.py_spy,
                                    "--pid", str(hub.scheduler_pid())],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        for _ in range(args.rounds):
            platform_rounds.append(one_tuning(hub, api, args.trials, args.strategy))
            reference_rounds.append(in_process_trials(args.trials, args.strategy))
            storage_rounds.append({kind: storage_ask_tell(args.trials, kind, args.strategy)
                                   for kind in ("database", "journal", "sqlite")})
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(timeout=60)
        hub.stop()
    waits = {key: ms(v) for key, v in scheduler_write_waits(args.writes).items()} if args.writes else {}
    figures, reference, storage = pooled(platform_rounds), pooled(reference_rounds), pooled(storage_rounds)
    ratio = figures["cycle"]["p50_ms"] / reference["per_trial"]["p50_ms"]
    overhead = {q: figures["end_to_next_entry"][q] - reference["end_to_next_entry"][q] for q in ("p50_ms", "p95_ms")}
    print(f"# {args.rounds} tunings x {args.trials} trials, parallel 1, {args.strategy}, studies in the "
          f"{args.study_storage}; {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("platform:")
    for key in ("submit_to_running", "submit_to_entry", "end_to_next_submitted", "end_to_next_running",
                "end_to_next_entry", "running_to_end", "cycle", "first_trial_after_post", "whole_tuning"):
        print(f"  {key:24s} {fmt(figures[key])}")
    print("in-process Optuna:")
    print(f"  per trial                {fmt(reference['per_trial'])}")
    print(f"  end_to_next_entry        {fmt(reference['end_to_next_entry'])}")
    print(f"  ask + tell (in memory)   {fmt(reference['ask_tell'])}")
    print(f"  tell + ask (database)    {fmt(storage['database'])}  (RDB in the scheduler's database: the default)")
    print(f"  tell + ask (journal)     {fmt(storage['journal'])}  (study_storage = 'journal')")
    print(f"  tell + ask (SQLite RDB)  {fmt(storage['sqlite'])}  (RDB in a file of its own, Optuna's defaults)")
    if waits:
        print("the scheduler's writes (Database.run, one insert) in the same SQLite file:")
        print(f"  Optuna idle              {fmt(waits['scheduler_write_alone'])}")
        print(f"  Optuna writing meanwhile {fmt(waits['scheduler_write_beside_optuna'])}")
    print(f"cycle / in-process per trial (medians): {ratio:.2f}x")
    verdict = "met" if overhead["p95_ms"] <= TARGET_MS else f"missed by {overhead['p95_ms'] - TARGET_MS:.0f} ms"
    print(f"overhead per trial (end → next entry point, platform minus in-process): p50 {overhead['p50_ms']:.1f} ms, "
          f"p95 {overhead['p95_ms']:.1f} ms; target p95 ≤ {TARGET_MS:.0f} ms: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"platform": figures, "in_process": reference,
                                               "storage_ask_tell": storage, "scheduler_writes": waits,
                                               "ratio": ratio,
                                               "overhead": overhead}, indent=2))


if __name__ == "__main__":
    main()
