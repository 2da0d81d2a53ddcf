"""Benchmarks of tracking: ``report()`` overhead, metric ingestion of the live service, checkpoint listing.

1. ``report()`` per call in a tight loop, amortised, final ``flush()`` included, in
   a subprocess with ``NOTHING_METRICS_FILE`` set; the same loop without it is the
   reference.
2. Ingestion: a real JupyterHub + proxy + scheduler (SQLite), 100 real runs at
   once (no GPUs, no CPUs reserved); each writes its points as fast as it can, by
   ``report()`` or by ``name=value`` lines on stdout, then waits.  Points stored
   per second are counted in the database (``max(id)`` of ``metric_points``);
   meanwhile ``GET /runs/<id>`` through the proxy a few times a second, with the
   same calls on the idle service (100 runs waiting) as the reference.  Then the
   tracker's work is split (file read, parse, summary, database insert) by timing
   its own functions on the runs' files and a copy of the database, and the CPU
   time of the service's process and of the tracker's helper processes during each
   ingestion is read from the kernel (psutil).
3. ``GET /runs/<id>/checkpoints`` of a run with 10,000 files, through the proxy:
   the whole listing and a page of the newest 100 (``?offset=9900&limit=100``),
   against ``os.scandir`` + ``stat`` in-process and ``ls -l`` on the same folder.

    .venv/bin/python bench/tracking.py [--out docs/benchmarks-tracking.md]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.helpers import make_archive, wait_for_number  # noqa: E402
from tests.hub import Hub  # noqa: E402

RUNS = 100
CHECKPOINT_FILES = 10_000
PAGE = 100

REPORT_LOOP = r"""
import json, os, sys, time
from nothing import report
from nothing.common.tracking import flush
N, ROUNDS = int(sys.argv[1]), int(sys.argv[2])
path = os.environ["NOTHING_METRICS_FILE"]

def bare():
    t = time.perf_counter()
    for i in range(N):
        loss = 1.0 / (i + 1)
    return time.perf_counter() - t

def reported():
    t = time.perf_counter()
    for i in range(N):
        loss = 1.0 / (i + 1)
        report(step=i, loss=loss)
    flush()
    return time.perf_counter() - t

def reported3():
    t = time.perf_counter()
    for i in range(N):
        loss = 1.0 / (i + 1)
        report(step=i, loss=loss, acc=0.5, lr=0.001)
    flush()
    return time.perf_counter() - t

report(step=0, warm=1.0); flush()  # starts the writer thread
out = {"bare": [], "report": [], "report3": [], "lines": 0}
for _ in range(ROUNDS):
    for name, fn in (("bare", bare), ("report", reported), ("report3", reported3)):
        out[name].append(fn())
    with open(path, "rb") as f:  # a line holds one report or an array of them
        out["lines"] = sum(len(r) if isinstance(r, list) else 1 for r in map(json.loads, f))
    os.truncate(path, 0)
print(json.dumps(out))
"""

# The run waits for "go" (so that all 100 write at once), writes its points as fast as it can, then waits for "done".
WAIT = """import os, sys, time
src = os.environ['EM_SOURCE_DIR']
open(os.path.join(os.environ['EM_MODEL_DIR'], 't'), 'w').write(repr(time.time()))
while not os.path.exists(os.path.join(src, 'go')):
    time.sleep(0.02)
"""
HOLD = """open(os.path.join(os.environ['EM_MODEL_DIR'], 'w'), 'w').write(repr(time.time()))
while not os.path.exists(os.path.join(src, 'done')):
    time.sleep(0.05)
"""
REPORT_RUN = WAIT + """from nothing import report
from nothing.common.tracking import flush
for i in range({calls}):
    report(step=i, loss=1.0 / (i + 1), acc=i / {calls})
flush()
""" + HOLD
LOG_RUN = WAIT + """out = sys.stdout
for i in range({calls}):
    out.write(f"step={{i}} loss={{1.0 / (i + 1)!r}} acc={{i / {calls}!r}}\\n")
out.flush()
""" + HOLD
CHECKPOINT_RUN = """import os
d = os.environ['EM_CHECKPOINT_DIR']
for i in range({n}):
    with open(os.path.join(d, f'ckpt-{{i:05d}}.pt'), 'wb') as f:
        f.write(b'x' * (100 + i % 1000))
open(os.path.join(os.environ['EM_MODEL_DIR'], 't'), 'w').write('1')
"""


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def ms(values):
    return f"p50 {1000 * statistics.median(values):.1f} ms, p95 {1000 * pct(values, 95):.1f} ms (n={len(values)})"


# ----------------------------------------------------------------------------- 1. report()
def report_overhead(n: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NOTHING_METRICS_FILE=os.path.join(tmp, "metrics.jsonl"))
        out = subprocess.run([sys.executable, "-c", REPORT_LOOP, str(n), str(rounds)], env=env, check=True,
                             capture_output=True, text=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    assert data["lines"] == 2 * n, data["lines"]  # every report (of both loops) reached the file
    bare = statistics.median(data["bare"])
    rep = statistics.median(data["report"])
    rep3 = statistics.median(data["report3"])
    return {"n": n, "rounds": rounds, "bare_ns": 1e9 * bare / n, "report_ns": 1e9 * rep / n,
            "report3_ns": 1e9 * rep3 / n, "overhead_us": 1e6 * (rep - bare) / n,
            "overhead3_us": 1e6 * (rep3 - bare) / n}


# ----------------------------------------------------------------------------- 2 and 3: the live service
class Bench:
    def __init__(self, root: Path, tracker_processes: int | None = None):
        self.root = root
        args = ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=4",
                f"--NothingScheduler.node_cpus={2 * RUNS}", "--NothingScheduler.log_level=WARN"]
        if tracker_processes is not None:
            config = root / "scheduler_config.py"
            config.write_text(f"c.Tracker.processes = {tracker_processes}\n")
            args.append(f"--NothingScheduler.config_file={config}")
        self.hub = Hub(root, args)
        self.hub.start()
        self.hub.create_user("bench")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.hub.token_for('bench')}"
        self.runs = root / "var" / "scheduler" / "runs"
        self._db = None
        self.service = psutil.Process(self.hub.scheduler_pid())

    def cpu_seconds(self) -> dict:
        """CPU time so far of the service's process and of the tracker's helpers (its one-thread helpers)."""
        out = {"service": sum(self.service.cpu_times()[:2]), "tracker": 0.0}
        for child in self.service.children():
            try:
                cmd = child.cmdline()
                if "nothing.scheduler.helper_process" in cmd and cmd[-1] == "1":
                    out["tracker"] += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return out

    @property
    def db_path(self) -> str:
        if self._db is None:
            found = glob.glob(str(self.root / "var" / "**" / "scheduler.sqlite"), recursive=True)
            assert found, "no scheduler.sqlite"
            self._db = found[0]
        return self._db

    def max_point_id(self) -> int:
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("select coalesce(max(id), 0) from metric_points").fetchone()[0]
        finally:
            con.close()

    def submit(self, code: str) -> int:
        r = self.session.post(f"{self.hub.api_url}/runs", timeout=60,
                              data={"spec": json.dumps({"entry_point": "train.py", "gpus": 0, "cpus": 0})},
                              files={"archive": ("a.tgz", make_archive({"train.py": code}))})
        r.raise_for_status()
        return r.json()["id"]

    def wait_file(self, run_id: int, name: str, timeout: float = 300) -> float:
        try:
            return wait_for_number(self.runs / str(run_id) / "model" / name, timeout, 0.01, f"run {run_id}'s {name}")
        except TimeoutError:
            raise TimeoutError(f"run {run_id}: no {name} "
                               f"({self.session.get(f'{self.hub.api_url}/runs/{run_id}').text})") from None

    def get_run(self, run_id: int, session: requests.Session) -> float:
        t = time.perf_counter()
        r = session.get(f"{self.hub.api_url}/runs/{run_id}", timeout=60)
        r.raise_for_status()
        return time.perf_counter() - t

    def latencies_while(self, ids: list[int], stop: threading.Event, out: list, every: float = 0.2) -> None:
        session = requests.Session()
        session.headers.update(self.session.headers)
        i = 0
        while not stop.is_set():
            out.append(self.get_run(ids[i % len(ids)], session))
            i += 1
            stop.wait(every)

    def ingestion(self, kind: str, points_per_run: int) -> dict:
        calls = points_per_run // 2  # two metrics per report() call or per line
        code = (REPORT_RUN if kind == "report" else LOG_RUN).format(calls=calls)
        ids = [self.submit(code) for _ in range(RUNS)]
        for run_id in ids:
            self.wait_file(run_id, "t")
        time.sleep(3)  # every run followed by the tracker, the service idle
        idle: list[float] = []
        for k in range(50):
            idle.append(self.get_run(ids[k % RUNS], self.session))
            time.sleep(0.1)
        base = self.max_point_id()
        expected = RUNS * calls * 2
        busy: list[float] = []
        stop = threading.Event()
        prober = threading.Thread(target=self.latencies_while, args=(ids, stop, busy))
        cpu0 = self.cpu_seconds()
        t0 = time.time()
        for run_id in ids:
            (self.runs / str(run_id) / "src" / "go").touch()
        prober.start()
        samples = [(t0, 0)]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            stored = self.max_point_id() - base
            samples.append((time.time(), stored))
            if stored >= expected:
                break
            time.sleep(0.1)
        cpu1 = self.cpu_seconds()
        stop.set()
        prober.join()
        written = max(self.wait_file(run_id, "w") for run_id in ids)
        t_end, stored = samples[-1]
        # steady rate: from the first sample past 10 % to the first past 90 % of the points
        a = next(s for s in samples if s[1] >= 0.1 * expected)
        b = next(s for s in samples if s[1] >= 0.9 * expected)
        first = next(s for s in samples if s[1] > 0)
        for run_id in ids:
            (self.runs / str(run_id) / "src" / "done").touch()
        return {"kind": kind, "runs": RUNS, "points": stored, "expected": expected,
                "elapsed_s": t_end - t0, "written_s": written - t0, "first_s": first[0] - t0,
                "rate": stored / (t_end - t0), "steady_rate": (b[1] - a[1]) / max(b[0] - a[0], 1e-9),
                "idle": idle, "busy": busy, "ids": ids,
                "cpu": {k: cpu1[k] - cpu0[k] for k in cpu0}}

    def wait_ended(self, ids: list[int], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            active = self.session.get(f"{self.hub.api_url}/runs", params={
                "state": ["QUEUED", "CREATE IN PROGRESS", "RUNNING", "STOP IN PROGRESS"], "limit": 1000},
                timeout=60).json()["runs"]
            pending = {r["id"] for r in active} & pending
            time.sleep(0.2)

    def checkpoints(self, n_files: int, repeats: int) -> dict:
        run_id = self.submit(CHECKPOINT_RUN.format(n=n_files))
        self.wait_file(run_id, "t", timeout=600)
        self.wait_ended([run_id])
        folder = self.runs / str(run_id) / "checkpoints"
        assert len(os.listdir(folder)) == n_files
        api, page, scan, ls = [], [], [], []
        listing = newest = None
        url = f"{self.hub.api_url}/runs/{run_id}/checkpoints"
        for _ in range(repeats):  # interleaved, so that the four share the machine's moods
            t = time.perf_counter()
            r = self.session.get(url, timeout=60)
            r.raise_for_status()
            listing = r.json()
            api.append(time.perf_counter() - t)
            t = time.perf_counter()
            p = self.session.get(url, params={"offset": n_files - PAGE, "limit": PAGE}, timeout=60)
            p.raise_for_status()
            newest = p.json()
            page.append(time.perf_counter() - t)
            t = time.perf_counter()
            with os.scandir(folder) as it:
                total = sum(e.stat(follow_symlinks=False).st_size for e in it)
            scan.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(["ls", "-l", str(folder)], stdout=subprocess.DEVNULL, check=True)
            ls.append(time.perf_counter() - t)
        assert len(listing["checkpoints"]) == n_files and listing["total_bytes"] == total
        assert newest["checkpoints"] == listing["checkpoints"][-PAGE:]
        assert newest["count"] == n_files and newest["total_bytes"] == total
        return {"run": run_id, "files": n_files, "api": api, "page": page, "scan": scan, "ls": ls,
                "response_bytes": len(r.content), "page_bytes": len(p.content)}

    def stop(self):
        self.hub.stop()


# ----------------------------------------------------------------------------- where the tracker's time goes
def tracker_profile(db_copy: str, run_dir: Path, kind: str, run_id: int) -> dict:
    """The tracker's own functions on one run's files, and its insert into a copy of the live database."""
    from nothing.scheduler import tracking_store as ts
    from nothing.scheduler.db import Database
    from nothing.scheduler.metrics import Reader, summarize
    from nothing.scheduler.tracker import read_new

    path = str(run_dir / ("output.log" if kind == "log" else "metrics.jsonl"))
    if kind == "report":
        found = [p for p in glob.glob(str(run_dir / "**"), recursive=True) if p.endswith(".jsonl")]
        path = found[0] if found else path
    t = time.perf_counter()
    lines, _ = read_new(path, 0, 64 * 1024**2, True)
    t_read = time.perf_counter() - t
    reader = Reader(None)
    t = time.perf_counter()
    if kind == "log":
        points = reader.log_lines(lines, time.time())
    else:
        points = reader.report_lines(lines)[0]
    t_parse = time.perf_counter() - t
    t = time.perf_counter()
    summary = summarize({}, points)
    t_summary = time.perf_counter() - t
    db = Database(f"sqlite:///{db_copy}")
    t = time.perf_counter()
    db.run_sync(ts.store_points, run_id, points, summary, len(points), 0, 0, None)
    t_store = time.perf_counter() - t
    db.close()
    n = len(points)
    return {"kind": kind, "points": n, "bytes": os.path.getsize(path),
            "read_us": 1e6 * t_read / n, "parse_us": 1e6 * t_parse / n, "summary_us": 1e6 * t_summary / n,
            "store_us": 1e6 * t_store / n}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/benchmarks-tracking.md")
    parser.add_argument("--points-per-run", type=int, default=10_000)
    parser.add_argument("--report-calls", type=int, default=200_000)
    parser.add_argument("--tracker-processes", type=int, default=None,
                        help="c.Tracker.processes of the service (default: its default)")
    args = parser.parse_args()

    rep = report_overhead(args.report_calls, 5)
    print("report():", json.dumps(rep), flush=True)

    root = Path(tempfile.mkdtemp(prefix="nothing-bench-tracking-"))
    bench = Bench(root, args.tracker_processes)
    ingest = {}
    profiles = []
    try:
        for kind in ("report", "log"):
            ingest[kind] = r = bench.ingestion(kind, args.points_per_run)
            print(f"ingestion ({kind}): {r['points']:,}/{r['expected']:,} points in {r['elapsed_s']:.2f} s = "
                  f"{r['rate']:,.0f} points/s (steady {r['steady_rate']:,.0f}/s; all written by the runs after "
                  f"{r['written_s']:.2f} s, first stored after {r['first_s']:.2f} s); GET /runs/<id> busy "
                  f"{ms(r['busy'])}, idle {ms(r['idle'])}; CPU: service {r['cpu']['service']:.1f} s, tracker's "
                  f"helpers {r['cpu']['tracker']:.1f} s", flush=True)
            bench.wait_ended(r["ids"])
        ckpt = bench.checkpoints(CHECKPOINT_FILES, 30)
        print(f"checkpoints: API {ms(ckpt['api'])}; page of {PAGE} {ms(ckpt['page'])}; scandir+stat "
              f"{ms(ckpt['scan'])}; ls -l {ms(ckpt['ls'])}", flush=True)
        db_copy = str(root / "copy.sqlite")
        con = sqlite3.connect(bench.db_path, timeout=30)
        con.execute("vacuum into ?", (db_copy,))
        con.close()
        for kind in ("report", "log"):
            run_id = ingest[kind]["ids"][0]
            profiles.append(tracker_profile(db_copy, bench.runs / str(run_id), kind, run_id))
            print("tracker profile:", json.dumps(profiles[-1]), flush=True)
    finally:
        bench.stop()
        shutil.rmtree(root, ignore_errors=True)

    from nothing.scheduler.tracker import Tracker

    processes = args.tracker_processes or Tracker.processes.default_value
    date = time.strftime("%Y-%m-%d")
    ok = lambda good: "met" if good else "**not met**"  # noqa: E731
    rows = [
        f"| `report(step=i, loss=x)` per call, tight loop of {rep['n']:,}, final `flush()` included | "
        f"{rep['report_ns'] / 1000:.2f} µs per iteration vs {rep['bare_ns'] / 1000:.3f} µs without: "
        f"**{rep['overhead_us']:.2f} µs** per call | < 5 µs ({ok(rep['overhead_us'] < 5)}) |",
        f"| the same, three metrics per call | {rep['report3_ns'] / 1000:.2f} µs vs {rep['bare_ns'] / 1000:.3f} µs: "
        f"**{rep['overhead3_us']:.2f} µs** per call | |",
    ]
    for kind, label in (("report", "`report()` (2 metrics a call)"), ("log", "`name=value` stdout lines (2 a line)")):
        r = ingest[kind]
        rows.append(
            f"| ingestion, {RUNS} concurrent runs, {label}, {r['expected']:,} points | **{r['rate']:,.0f} points/s** "
            f"end to end ({r['elapsed_s']:.1f} s; steady {r['steady_rate']:,.0f}/s) | ≥ 100,000/s "
            f"({ok(r['rate'] >= 100_000)}) |")
        rows.append(
            f"| `GET /runs/<id>` through the proxy during that ingestion | {ms(r['busy'])}; idle, same 100 runs "
            f"waiting: {ms(r['idle'])} | p95 < 50 ms ({ok(pct(r['busy'], 95) < 0.05)}) |")
        rows.append(
            f"| CPU time during that ingestion ({r['elapsed_s']:.1f} s) | service process {r['cpu']['service']:.1f} s, "
            f"tracker's helper processes {r['cpu']['tracker']:.1f} s | (information) |")
    scan = statistics.median(ckpt["scan"])
    rows.append(
        f"| `GET /runs/<id>/checkpoints`, {CHECKPOINT_FILES:,} files, through the proxy, the whole listing | "
        f"{ms(ckpt['api'])} ({ckpt['response_bytes'] / 1e6:.1f} MB of JSON); `os.scandir`+`stat` in-process "
        f"{ms(ckpt['scan'])}; `ls -l` {ms(ckpt['ls'])}; API/scandir {statistics.median(ckpt['api']) / scan:.1f}×"
        f" | < 200 ms ({ok(pct(ckpt['api'], 95) < 0.2)}) |")
    rows.append(
        f"| the same run, a page of the newest {PAGE} (`?offset={CHECKPOINT_FILES - PAGE}&limit={PAGE}`) | "
        f"{ms(ckpt['page'])} ({ckpt['page_bytes'] / 1e3:.0f} kB of JSON); page/scandir "
        f"{statistics.median(ckpt['page']) / scan:.2f}× | < 200 ms ({ok(pct(ckpt['page'], 95) < 0.2)}) |")
    lines = [
        "## Tracking: report(), metric ingestion, checkpoint listing (bench/tracking.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work), Python "
        f"{platform.python_version()}; a real JupyterHub + configurable-http-proxy + scheduler on SQLite (WAL); "
        f"{RUNS} real run processes at once (gpus=0, cpus=0); the tracker at its default interval (1 s), with "
        f"{processes} helper process{'es' if processes != 1 else ''}. "
        f"Figures measured in one run on {date}, each beside its reference; medians of interleaved repeats.",
        "",
        "| figure | measured | target |",
        "| --- | --- | --- |",
        *rows,
        "",
        "Where the tracker's time goes, per point (its own functions on one run's files, single-threaded, "
        "and its insert into a copy of the live database):",
        "",
        "| source | points | file read | parse | summary | store (SQLite insert + update) | total |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {p['kind']} | {p['points']:,} | {p['read_us']:.2f} µs | {p['parse_us']:.2f} µs | "
          f"{p['summary_us']:.2f} µs | {p['store_us']:.2f} µs | "
          f"{p['read_us'] + p['parse_us'] + p['summary_us'] + p['store_us']:.2f} µs "
          f"(≈ {1e6 / (p['read_us'] + p['parse_us'] + p['summary_us'] + p['store_us']):,.0f} points/s) |"
          for p in profiles),
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
