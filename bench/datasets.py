"""Benchmarks of datasets: upload throughput against ``cp``, service memory during an upload, submit → running.

Starts a real JupyterHub with its proxy and the scheduler (8 virtual GPUs, SQLite),
as ``bench/spine.py`` does.

1. 4 files x 512 MiB of random data (2 GiB), made once in a temporary folder on the
   disk of the hub's data folder (and the same bytes as one file), and, alternating,
   ``--trials`` times each, the page cache dropped and the same pause before each (the
   source is read from disk each time; the writes land in the page cache on every side:
   neither ``cp`` nor the service fsyncs, so the time to ``sync`` afterwards is reported
   beside):

   - ``cp`` of the files to the same disk, and ``cp`` then the SHA-256 of the copies
     (the work any content-addressed store does) with coreutils' ``sha256sum`` and with
     ``openssl dgst -sha256`` (SHA-NI where the CPU has it, as the platform's hashlib),
     the references;
   - ``push``: the platform's client as a notebook runs it (``nothing.magics.datasets.push``
     given ``NOTHING_SERVICE_URL``, the hub's proxy), on the service's host: the local push,
     two files at a time, each opened by the client and handed to the service's Unix socket
     with a ticket the API gave (the service reads, hashes and writes it once; the client
     hashes nothing), then commits;
   - ``HTTP push``: the same client as from another host (``local_push=False``): it hashes
     each file (the next one while the current one is sent), offers it by hash, and sends
     it with ``PUT`` to the address the upload names (``direct_url``: the service's own
     listener, loopback here), then commits;
   - the same protocol with plain ``requests`` given the open file, the hashes computed
     beforehand (not timed), through the proxy and straight to the service's port: the
     rows of the earlier runs, to show the proxy's share.
   - ``push_one``: the local push of the one 2 GiB file, against ``cp`` of that file: one
     copy on two cores, which hashes each buffer in a second thread while it reads and
     writes the next.

   Each trial's datasets are deleted before the next (the store keeps one object per
   content: a second upload of the same bytes would write nothing).
2. The RSS of the scheduler process (and of configurable-http-proxy, for information)
   sampled every 50 ms during every upload; CPU seconds of scheduler, proxy and client;
   the load average before and after each trial.
3. Submit → the entry point's first line running, for the same trivial run with no
   dataset, with a 10 GiB dataset (a registered server folder under
   ``c.Datasets.allowed_roots`` holding one sparse 10 GiB file made with ``truncate``),
   and with the 2 GiB uploaded dataset of step 1; interleaved, ``--runs`` of each.  Each
   run also records the inode of what it sees, to show it is the stored file itself.

    .venv/bin/python bench/datasets.py [--out docs/benchmarks-datasets.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nothing.magics import datasets as client_datasets  # noqa: E402
from nothing.magics.client import NothingClient  # noqa: E402
from tests.helpers import make_archive, wait_for_number  # noqa: E402
from tests.hub import Hub  # noqa: E402

MiB = 1024 * 1024
FILES = 4
FILE_BYTES = 512 * MiB
BIG_BYTES = 10 * 1024 * MiB
SAMPLE_S = 0.05
SETTLE_S = 2.0  # after dropping the page cache, before each timed copy
SAME_MS = 20  # "the same start time": a median within this of the run without a dataset
# Measured in this order in every trial; the last one's dataset is kept for step 3 (kept earlier, its objects
# would make the next ones' files "already stored").
VIAS = ("push", "http_push", "direct", "proxy", "push_one")

STAMP = "import os, time\nopen(os.path.join(os.environ['EM_MODEL_DIR'], 't'), 'w').write(repr(time.time()))\n"
SEEN = STAMP + """import json
folder = os.environ.get('EM_DATASET_TRAIN')
seen = {}
for base, _, names in os.walk(folder or '/nonexistent'):
    for n in names:
        st = os.stat(os.path.join(base, n))
        seen[os.path.relpath(os.path.join(base, n), folder)] = [st.st_ino, st.st_size]
json.dump({'folder': folder, 'files': seen}, open(os.path.join(os.environ['EM_MODEL_DIR'], 'seen.json'), 'w'))
"""


def drop_caches() -> bool:
    """Every timed copy starts alike: from a cold page cache, after the same pause (True: the cache was dropped).
    The pause matters on a virtual machine: memory the guest freed goes back to the host within a second or two
    (free page reporting), and touching it again costs the next copy's page cache faults on the host: measured
    here, a copy right after the drop ran 1.5-2x faster than one 3 s later, so no reference may go first."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        dropped = True
    except OSError:
        dropped = False
    time.sleep(SETTLE_S)
    return dropped


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far: what cp and the hashers used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def med(values):
    return statistics.median(values)


class Sampler:
    """RSS of some processes every 50 ms on a thread, while a block runs."""

    def __init__(self, pids: dict[str, int]):
        self.procs = {k: psutil.Process(p) for k, p in pids.items()}
        self.samples: dict[str, list[int]] = {k: [] for k in pids}
        self._stop = threading.Event()

    def _loop(self):
        while not self._stop.is_set():
            for k, p in self.procs.items():
                self.samples[k].append(p.memory_info().rss)
            self._stop.wait(SAMPLE_S)

    def __enter__(self):
        self.cpu0 = {k: sum(p.cpu_times()[:2]) for k, p in self.procs.items()}
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.cpu = {k: sum(p.cpu_times()[:2]) - self.cpu0[k] for k, p in self.procs.items()}


class Bench:
    def __init__(self, base: Path):
        self.base = base
        self.allowed = base / "allowed"
        self.allowed.mkdir()
        root = base / "hub"
        root.mkdir()
        config = root / "scheduler_config.py"
        config.write_text(f"c.Datasets.allowed_roots = [{str(self.allowed)!r}]\n")
        self.hub = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=8",
                              "--NothingScheduler.node_cpus=64", "--NothingScheduler.log_level=WARN",
                              f"--NothingScheduler.config_file={config}"])
        self.hub.start()
        # An admin: registering a server folder is for admins; the same user submits every run.
        self.hub.create_user("bench", admin=True)
        self.token = self.hub.token_for("bench")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"
        self.runs = root / "var" / "scheduler" / "runs"
        self.store = root / "var" / "scheduler" / "datasets"

    def api(self, method, path, direct=False, **kwargs):
        base = self.hub.service_url + "api" if direct else self.hub.api_url
        kwargs.setdefault("timeout", 600)
        r = self.session.request(method, base + path, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r

    def proxy_pid(self) -> int:
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "configurable-http-proxy" in cmd and f"--port {self.hub.public_port}" in cmd:
                return p.pid
        raise RuntimeError("configurable-http-proxy not found")

    # --- 1 and 2: upload --------------------------------------------------------
    def upload(self, name: str, files: list[tuple[Path, str]], direct: bool = False) -> tuple[int, float]:
        """Create dataset ``name`` and upload ``files`` as its version 1; ``(dataset id, seconds)``."""
        t0 = time.perf_counter()
        dataset = self.api("POST", "/datasets", direct, json={"name": name}).json()["id"]
        upload = self.api("POST", f"/datasets/{dataset}/uploads", direct).json()["upload"]
        for path, sha256 in files:
            with open(path, "rb") as f:  # streamed by requests in blocks, Content-Length from the file's size
                self.api("PUT", f"/datasets/{dataset}/uploads/{upload}/files", direct, params={"path": path.name},
                         data=f, headers={"X-Content-SHA256": sha256})
        self.api("POST", f"/datasets/{dataset}/uploads/{upload}/commit", direct)
        return dataset, time.perf_counter() - t0

    def push(self, name: str, folder: Path, local: bool = True, files: int = FILES) -> tuple[int, float]:
        """``nothing dataset push NAME FOLDER`` as a notebook runs it (the client finds the service through the
        proxy, as ``NOTHING_SERVICE_URL`` says): on the service's host (``local``: the local push), or as from
        another host (over HTTP); ``(dataset id, seconds)``, hashing included."""
        client = NothingClient(f"{self.hub.url}/services/nothing/", self.token, timeout=600, local_push=local)
        puts: list[str] = []
        client.session.hooks["response"].append(
            lambda r, *args, **kwargs: puts.append(r.request.url) if r.request.method == "PUT" else None)
        t0 = time.perf_counter()
        result = client_datasets.push(client, name, folder)
        seconds = time.perf_counter() - t0
        assert len(result.sent) == files, result
        if local:  # every file handed over on the socket: none crossed HTTP
            assert result.local == files and not puts, (result, puts)
        else:  # every file sent, each to the service's own listener (the proxy only for the small calls)
            assert result.local == 0 and all(u.startswith(self.hub.service_url) for u in puts), (result, puts)
        return result.dataset["id"], seconds

    def delete(self, dataset: int) -> None:
        self.api("DELETE", f"/datasets/{dataset}")

    # --- 3: submit -> running ------------------------------------------------------
    def submit(self, dataset: str | None) -> tuple[int, float]:
        spec = {"entry_point": "train.py", "gpus": 1, "cpus": 0}
        if dataset:
            spec["datasets"] = {"train": dataset}
        archive = make_archive({"train.py": SEEN})
        t0 = time.time()
        r = self.api("POST", "/runs", data={"spec": json.dumps(spec)}, files={"archive": ("a.tgz", archive)},
                     timeout=60)
        return r.json()["id"], t0

    def stamp(self, run_id: int, timeout: float = 60) -> float:
        try:
            return wait_for_number(self.runs / str(run_id) / "model" / "t", timeout, 0.001, f"run {run_id} to start")
        except TimeoutError:
            raise TimeoutError(f"run {run_id} did not start:\n"
                               f"{self.api('GET', f'/runs/{run_id}/logs').text[-2000:]}") from None

    def wait_done(self, run_id: int, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/runs/{run_id}").json()
            if run["state"] not in ("QUEUED", "CREATE IN PROGRESS", "RUNNING", "STOP IN PROGRESS"):
                return run
            time.sleep(0.02)
        raise TimeoutError(f"run {run_id} still active")

    def seen(self, run_id: int) -> dict:
        return json.loads((self.runs / str(run_id) / "model" / "seen.json").read_text())

    def stop(self):
        self.hub.stop()


def make_files(folder: Path) -> list[tuple[Path, str]]:
    folder.mkdir()
    out = []
    for i in range(FILES):
        path, digest = folder / f"part-{i}.bin", hashlib.sha256()
        with open(path, "wb") as f:
            for _ in range(FILE_BYTES // (8 * MiB)):
                block = os.urandom(8 * MiB)
                digest.update(block)
                f.write(block)
        out.append((path, digest.hexdigest()))
    return out


def make_one(folder: Path, parts: list[tuple[Path, str]]) -> Path:
    """One file of the parts' bytes end to end: the same 2 GiB as one file (its own content: nothing deduplicated)."""
    folder.mkdir()
    path = folder / "all.bin"
    with open(path, "wb") as out:
        for part, _ in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 8 * MiB)
    return path


def rate(seconds: float) -> float:
    return FILES * FILE_BYTES / MiB / seconds


def main():  # noqa: C901 - one straight sequence of measurements
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/benchmarks-datasets.md")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--file-mib", type=int, default=512, help="size of each of the 4 files (smoke tests)")
    args = parser.parse_args()
    global FILE_BYTES
    FILE_BYTES = args.file_mib * MiB
    tmp = Path(tempfile.gettempdir())
    free = shutil.disk_usage(tmp).free
    need = 5 * FILES * FILE_BYTES + 2 * 1024 * MiB
    if free < need:
        sys.exit(f"{tmp} has {free / 2**30:.1f} GiB free; the bench needs {need / 2**30:.1f} GiB")
    base = Path(tempfile.mkdtemp(prefix="nothing-bench-datasets-"))
    print("working in", base, f"({free / 2**30:.0f} GiB free)", flush=True)
    results: dict = {"cp": [], "cp_sync": [], "cp_one": [], "cp_sha": [], "cp_ossl": [], "cpu_cp": [], "cpu_cp_sha": [], "cpu_cp_ossl": [], **{k: [] for via in VIAS for k in (via, f"{via}_sync")},
                     "rss": {via: [] for via in VIAS}, "cpu": {via: [] for via in VIAS}, "load": []}
    bench = None
    try:
        t = time.perf_counter()
        files = make_files(base / "src")
        one = make_one(base / "one", files)
        print(f"made {FILES} x {FILE_BYTES // MiB} MiB in {time.perf_counter() - t:.1f} s", flush=True)
        bench = Bench(base)
        for _ in range(3):  # warm the token cache and the run path
            bench.wait_done(bench.submit(None)[0])
        pids = {"scheduler": bench.hub.scheduler_pid(), "proxy": bench.proxy_pid(), "client": os.getpid()}
        dropped = drop_caches()
        keep_id = None
        for trial in range(args.trials):
            load_before = os.getloadavg()
            # cp of the same files to the same disk
            dropped &= drop_caches()
            dst = base / "cp-dst"
            dst.mkdir()
            cpu0 = children_cpu()
            t0 = time.perf_counter()
            subprocess.run(["cp", *(str(p) for p, _ in files), str(dst)], check=True)
            t1 = time.perf_counter()
            results["cpu_cp"].append(children_cpu() - cpu0)
            os.sync()
            results["cp"].append(t1 - t0)
            results["cp_sync"].append(time.perf_counter() - t0)
            shutil.rmtree(dst)
            dropped &= drop_caches()  # the same bytes as one file
            dst.mkdir()
            t0 = time.perf_counter()
            subprocess.run(["cp", str(one), str(dst)], check=True)
            results["cp_one"].append(time.perf_counter() - t0)
            shutil.rmtree(dst)
            # cp, then the SHA-256 of what was copied: the work of a content-addressed store, with no network;
            # coreutils' sha256sum, and OpenSSL's (SHA-NI where the CPU has it, as Python's hashlib)
            for key, hasher in (("cp_sha", ["sha256sum"]), ("cp_ossl", ["openssl", "dgst", "-sha256"])):
                dropped &= drop_caches()
                dst.mkdir()
                cpu0 = children_cpu()
                t0 = time.perf_counter()
                subprocess.run(["cp", *(str(p) for p, _ in files), str(dst)], check=True)
                subprocess.run([*hasher, *(str(dst / p.name) for p, _ in files)], check=True,
                               stdout=subprocess.DEVNULL)
                results[key].append(time.perf_counter() - t0)
                results[f"cpu_{key}"].append(children_cpu() - cpu0)
                os.sync()
                shutil.rmtree(dst)
            print(f"trial {trial}: cp {rate(results['cp'][-1]):.0f} MiB/s, cp of one file "
                  f"{rate(results['cp_one'][-1]):.0f} MiB/s, cp + sha256sum "
                  f"{rate(results['cp_sha'][-1]):.0f} MiB/s, cp + openssl sha256 {rate(results['cp_ossl'][-1]):.0f} "
                  f"MiB/s, load {load_before[0]:.2f}", flush=True)
            for via in VIAS:
                dropped &= drop_caches()
                base_rss = psutil.Process(pids["scheduler"]).memory_info().rss
                base_proxy = psutil.Process(pids["proxy"]).memory_info().rss
                with Sampler(pids) as sampler:
                    t0 = time.perf_counter()
                    if via == "push_one":
                        dataset, seconds = bench.push(f"up-{via}-{trial}", one.parent, files=1)
                    elif via in ("push", "http_push"):
                        dataset, seconds = bench.push(f"up-{via}-{trial}", base / "src", local=via == "push")
                    else:
                        dataset, seconds = bench.upload(f"up-{via}-{trial}", files, direct=via == "direct")
                os.sync()
                results[via].append(seconds)
                results[f"{via}_sync"].append(time.perf_counter() - t0)
                rss = {"scheduler_base": base_rss, "scheduler_max": max(sampler.samples["scheduler"]),
                       "proxy_base": base_proxy, "proxy_max": max(sampler.samples["proxy"]),
                       "samples": len(sampler.samples["scheduler"])}
                results["rss"][via].append(rss)
                results["cpu"][via].append(sampler.cpu)
                print(f"trial {trial}: upload via {via} {rate(seconds):.0f} MiB/s, scheduler RSS "
                      f"{base_rss / MiB:.0f} -> max {rss['scheduler_max'] / MiB:.0f} MiB, proxy "
                      f"{base_proxy / MiB:.0f} -> {rss['proxy_max'] / MiB:.0f} MiB, CPU s "
                      + ", ".join(f"{k} {v:.1f}" for k, v in sampler.cpu.items()), flush=True)
                if via == "proxy" and trial == args.trials - 1:  # kept for step 3 (push_one: other content)
                    keep_id = dataset
                else:
                    bench.delete(dataset)
            results["load"].append((load_before[0], os.getloadavg()[0]))
        stored = sum(p.stat().st_size for p in (bench.store / "objects").rglob("*") if p.is_file())
        # 3: submit -> running
        big = bench.allowed / "ten-gib"
        big.mkdir()
        subprocess.run(["truncate", "-s", str(BIG_BYTES), str(big / "data.bin")], check=True)
        big.chmod(0o755)
        (big / "data.bin").chmod(0o644)
        big_id = bench.api("POST", "/datasets", json={"name": "ten-gib", "path": str(big)}).json()["id"]
        big_inode = (big / "data.bin").stat().st_ino
        up_name = f"up-proxy-{args.trials - 1}"
        kinds = {"no dataset": None, "10 GiB registered folder (sparse file)": "ten-gib",
                 "2 GiB uploaded dataset": up_name}
        starts: dict[str, list[float]] = {k: [] for k in kinds}
        checks: dict[str, str] = {}
        for i in range(args.runs):
            for kind, ref in kinds.items():
                run_id, t0 = bench.submit(ref)
                starts[kind].append(bench.stamp(run_id) - t0)
                run = bench.wait_done(run_id)
                seen = bench.seen(run_id)
                if i == 0:
                    checks[kind] = json.dumps({"state": run["state"], "folder": seen["folder"],
                                               "files": seen["files"]})
                if ref == "ten-gib":
                    assert seen["files"] == {"data.bin": [big_inode, BIG_BYTES]}, seen
                elif ref:
                    assert len(seen["files"]) == FILES, seen
        object_inodes = {p.stat().st_ino for p in (bench.store / "objects").rglob("*") if p.is_file()}
        up_seen = json.loads(checks["2 GiB uploaded dataset"])["files"]
        same_inodes = all(ino in object_inodes for ino, _ in up_seen.values())
        big_seen = json.loads(checks["10 GiB registered folder (sparse file)"])["files"] == {
            "data.bin": [big_inode, BIG_BYTES]}
        for kind, values in starts.items():
            print(f"submit -> running, {kind}: median {1000 * med(values):.0f} ms (n={len(values)})", flush=True)
        bench.delete(keep_id)
        bench.delete(big_id)
    finally:
        if bench is not None:
            bench.stop()
        shutil.rmtree(base, ignore_errors=True)

    total_mib = FILES * FILE_BYTES / MiB
    cp, cp_sha, cp_ossl = med(results["cp"]), med(results["cp_sha"]), med(results["cp_ossl"])
    cp_one = med(results["cp_one"])
    times = {via: med(results[via]) for via in VIAS}
    extra = {via: [(r["scheduler_max"] - r["scheduler_base"]) / MiB for r in results["rss"][via]] for via in VIAS}
    proxy_extra = [(r["proxy_max"] - r["proxy_base"]) / MiB for r in results["rss"]["proxy"]]
    cpu = {via: {k: med([c[k] for c in results["cpu"][via]]) for k in ("scheduler", "proxy", "client")}
           for via in VIAS}
    none_ms = 1000 * med(starts["no dataset"])
    no_copy = same_inodes and big_seen
    push = times["push"]
    names = {"push": "`push` (the client as a notebook on the service's host runs it: the local push, each open "
                     "file handed to the service's socket with a ticket, two at a time; the service hashes)",
             "http_push": "`HTTP push` (the same client as from another host: hash, offer, PUT to the service's own "
                          "listener, commit; hashing timed)",
             "direct": "`requests` straight to the service's port (hashes beforehand, not timed)",
             "proxy": "`requests` through the hub's proxy (hashes beforehand, not timed): the earlier runs' path",
             "push_one": "`push` of the same bytes as one 2 GiB file (one copy: it hashes in a second thread while "
                         "it reads and writes; ratios to `cp` of that one file)"}

    def against(via: str) -> str:
        ref = cp_one if via == "push_one" else cp
        ratios = (f"**{ref / times[via]:.0%} of cp**" + ("" if via == "push_one" else
                  f", {cp_sha / times[via]:.0%} of cp + sha256sum, {cp_ossl / times[via]:.0%} of cp + openssl"))
        if via == "push":
            target = (f"≥ 50% of cp: **{'met' if cp / push >= 0.5 else 'missed'}**; ≥ 50% of cp + openssl sha256: "
                      f"**{'met' if cp_ossl / push >= 0.5 else 'missed'}**")
        elif via == "push_one":
            target = f"≥ 50% of cp (one file): **{'met' if ref / times[via] >= 0.5 else 'missed'}**"
        else:
            target = "(comparison)"
        return f"{ratios} | {target} |"

    loads = results["load"]
    lines = [
        "# Datasets: upload throughput, service memory, start time (`bench/datasets.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work), Python "
        f"{platform.python_version()}; a real JupyterHub + configurable-http-proxy + scheduler (SQLite, 8 virtual "
        f"GPUs); one run of `.venv/bin/python bench/datasets.py` on {time.strftime('%Y-%m-%d %H:%M %Z')}; 1-minute "
        f"load average before/after each trial: {', '.join(f'{a:.2f}/{b:.2f}' for a, b in loads)}. "
        f"{FILES} files x {FILE_BYTES // MiB} MiB of random data ({total_mib / 1024:.0f} GiB) on the disk of the "
        f"hub's data folder; cp, cp + sha256sum and the uploads alternate ({', '.join(VIAS)}), {args.trials} "
        f"trials each, page cache dropped before each ({'done' if dropped else 'NOT possible here: the source may be cached'}) "
        f"and a {SETTLE_S:.0f} s pause (the same for every row: see `drop_caches`); "
        "figures are medians, ratios of medians of this one run. Neither cp nor the service fsyncs: the writes "
        "land in the page cache, so \"+ sync\" adds the time until they are on disk.",
        "",
        "| figure | measured | target |",
        "| --- | --- | --- |",
        f"| `cp` of the 4 files, same disk | {rate(cp):.0f} MiB/s ({cp:.2f} s; + sync {med(results['cp_sync']):.2f}"
        " s) | reference |",
        f"| `cp` of the same bytes as one file | {rate(cp_one):.0f} MiB/s ({cp_one:.2f} s) | reference of push_one |",
        f"| `cp`, then `sha256sum` of the copies (coreutils: no SHA-NI) | {rate(cp_sha):.0f} MiB/s ({cp_sha:.2f} s) "
        "| second reference |",
        f"| `cp`, then `openssl dgst -sha256` of the copies (SHA-NI, as the platform's hashlib) | "
        f"{rate(cp_ossl):.0f} MiB/s ({cp_ossl:.2f} s) | third reference |",
        *(f"| {names[via]} | {rate(times[via]):.0f} MiB/s ({times[via]:.2f} s; + sync "
          f"{med(results[via + '_sync']):.2f} s) = {against(via)}" for via in VIAS),
        f"| scheduler RSS during the uploads, every 50 ms | baseline "
        f"{med([r['scheduler_base'] for r in results['rss']['proxy']]) / MiB:.0f} MiB, max extra "
        f"{max(max(v) for v in extra.values()):.1f} MiB (per trial: "
        + "; ".join(f"{via} {', '.join(f'{x:.1f}' for x in extra[via])}" for via in VIAS)
        + f") | flat, < 100 MB extra: **{'met' if max(max(v) for v in extra.values()) < 100 else 'missed'}** |",
        f"| configurable-http-proxy RSS during the upload through it | baseline "
        f"{med([r['proxy_base'] for r in results['rss']['proxy']]) / MiB:.0f} MiB, max extra "
        f"{max(proxy_extra):.1f} MiB | (information) |",
        *(f"| submit → entry point running, {kind} | median {1000 * med(v):.0f} ms (n={len(v)}; "
          f"{1000 * med(v) - none_ms:+.0f} ms against none) | "
          + ("reference |" if kind == "no dataset" else
             f"the same as without (within {SAME_MS} ms): **{'met' if 1000 * med(v) - none_ms <= SAME_MS else 'missed'}"
             f"**; no copy (the run sees the stored inodes, below): **{'met' if no_copy else 'missed'}** |")
          for kind, v in starts.items()),
        "",
        f"CPU seconds per {total_mib:.0f} MiB upload (medians; {os.cpu_count()} cores, so at most "
        f"{os.cpu_count()} CPU-seconds per second; the client's includes hashing only for the HTTP push):",
        "",
        "| path | scheduler | proxy | client (cp rows: the commands) | wall |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {via} | {cpu[via]['scheduler']:.1f} | {cpu[via]['proxy']:.1f} | {cpu[via]['client']:.1f} | "
          f"{times[via]:.1f} |" for via in VIAS),
        *(f"| {what} | | | {med(results['cpu_' + key]):.1f} | {med(results[key]):.1f} |"
          for what, key in (("`cp`", "cp"), ("`cp` + `sha256sum`", "cp_sha"), ("`cp` + `openssl dgst -sha256`",
                                                                            "cp_ossl"))),
        "",
        "Every trial (seconds):",
        "",
        "| trial | cp | cp + sync | cp one file | cp + sha256sum | cp + openssl | "
        + " | ".join(f"{via} | + sync" for via in VIAS) + " |",
        "| --- | --- | --- | --- | --- | --- | " + " | ".join("--- | ---" for _ in VIAS) + " |",
        *(f"| {i + 1} | {results['cp'][i]:.2f} | {results['cp_sync'][i]:.2f} | {results['cp_one'][i]:.2f} | "
          f"{results['cp_sha'][i]:.2f} | "
          f"{results['cp_ossl'][i]:.2f} | "
          + " | ".join(f"{results[via][i]:.2f} | {results[via + '_sync'][i]:.2f}" for via in VIAS) + " |"
          for i in range(args.trials)),
        "",
        f"Submit → running, every run (ms), interleaved, {args.runs} of each:",
        "",
        *(f"- {kind}: {', '.join(f'{1000 * x:.0f}' for x in v)}" for kind, v in starts.items()),
        "",
        "No copy at start: the run sees the 10 GiB file with the inode of the file registered "
        f"({big_inode}), and the uploaded dataset's files with the inodes of the store's objects "
        f"({'yes' if same_inodes else 'NO'}); the store held {stored / MiB:.0f} MiB after the uploads (one object "
        "per content: the last trial's dataset kept). What the first run of each kind saw:",
        "",
        *(f"- {kind}: `{text}`" for kind, text in checks.items()),
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
