"""Benchmark of the sidebar's views at scale: N open sidebars while 10,000 runs wait.

Starts a real JupyterHub with its proxy and the scheduler (2 virtual GPUs, SQLite), fills
both GPUs with one run that holds them, and queues 10,000 one-GPU runs behind it.  Then,
for each N and each way a sidebar follows the "everyone" view, N simulated sidebars
follow it through the proxy with a user's token: first 10 s with nothing changing (the
"quiet" CPU), then a window in which one submitter submits a run every 0.25 s; the
figures are the scheduler process's CPU (``/proc/<pid>/stat``, user + system) in both
and the submissions' latency.

The ways (``--clients``, comma-separated, measured one after the other in the same run):

- ``stream``: as the sidebar does where the browser has ``EventSource``: one
  ``GET /api/views/stream?views=summary,queue&my_active=0&limit=20`` per tab, kept open,
  the summary and the first page pushed when they change;
- ``new``: as the sidebar polls without a stream: ``GET /api/summary?my_active=0`` and
  the first page of 20 (``/api/queue?limit=20``) every 3 s with ``If-None-Match``;
- ``old``: as the sidebar polled before views were cached (the whole queue, no
  ``If-None-Match``).

``--no-cache`` starts the service with ``ClusterView.cache_views=False``.  Before it
starts, the benchmark waits (up to 10 min) for the machine's 1-minute load to fall under
``--max-load`` and prints the load it started at and the load at each window.

    .venv/bin/python bench/views.py [--queued 10000] [--window 20] [--clients stream,new] [--no-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadgen import exchange, json_submission, submit_burst  # noqa: E402
from bench.spine import HOLD, pct  # noqa: E402
from tests.helpers import make_archive  # noqa: E402
from tests.hub import Hub  # noqa: E402

INTERVAL = 3.0  # the sidebar's poll interval (RunsModel's default)
USERS = 5  # sidebars belong to this many users, so per-user answers differ


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet_machine(max_load: float, patience: float = 600.0) -> float:
    """Wait until the 1-minute load is under ``max_load`` (at most ``patience`` seconds); the load then."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(10)
    return os.getloadavg()[0]


class StreamSidebar:
    """One browser tab's sidebar on the view stream: one connection, read as the events come."""

    def __init__(self, base: str, token: str, stats: dict):
        self.parts = urlsplit(base)
        self.token, self.stats = token, stats

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(random.uniform(0, 1))
        reader, writer = await asyncio.open_connection(self.parts.hostname, self.parts.port)
        writer.write((f"GET {self.parts.path}/views/stream?views=summary,queue&my_active=0&limit=20&offset=0 "
                      f"HTTP/1.1\r\nHost: {self.parts.netloc}\r\nAuthorization: token {self.token}\r\n"
                      f"Accept: text/event-stream\r\n\r\n").encode())
        try:
            status = int((await reader.readline()).split()[1])
            self.stats[status] = self.stats.get(status, 0) + 1
            reading = asyncio.ensure_future(self._read(reader))
            await stop.wait()
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        finally:
            writer.close()

    async def _read(self, reader) -> None:
        while data := await reader.read(65536):
            self.stats["bytes"] += len(data)
            self.stats["events"] = self.stats.get("events", 0) + data.count(b"\nevent: ") + data.startswith(b"event: ")


class Sidebar:
    """One browser tab's sidebar: a keep-alive connection polling summary and queue."""

    def __init__(self, base: str, token: str, client: str, stats: dict):
        self.parts = urlsplit(base)
        self.token, self.client, self.stats = token, client, stats
        self.etags: dict[str, str] = {}

    def request(self, path: str) -> bytes:
        conditional = f"If-None-Match: {self.etags[path]}\r\n" if self.client == "new" and path in self.etags else ""
        return (f"GET {self.parts.path}/{path} HTTP/1.1\r\nHost: {self.parts.netloc}\r\n"
                f"Authorization: token {self.token}\r\n{conditional}\r\n").encode()

    async def run(self, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(self.parts.hostname, self.parts.port)
        queue = "queue?limit=20&offset=0" if self.client == "new" else "queue"
        await asyncio.sleep(random.uniform(0, INTERVAL))
        try:
            while not stop.is_set():
                summary = "summary?my_active=0" if self.client == "new" else "summary"
                for path in (summary, queue):
                    status, headers, body = await exchange(reader, writer, self.request(path))
                    self.stats[status] = self.stats.get(status, 0) + 1
                    self.stats["bytes"] += len(body)
                    if "etag" in headers:
                        self.etags[path] = headers["etag"]
                try:
                    await asyncio.wait_for(stop.wait(), INTERVAL)
                except asyncio.TimeoutError:
                    pass
        finally:
            writer.close()


async def submitter(url: str, token: str, archive: bytes, stop: asyncio.Event, latencies: list[float]) -> None:
    parts = urlsplit(url)
    body, content_type = json_submission({"entry_point": "train.py", "gpus": 1, "cpus": 0}, archive)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: token {token}\r\n"
               f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        while not stop.is_set():
            started = time.perf_counter()
            status, _, answer = await exchange(reader, writer, request)
            if status != 201:
                raise RuntimeError(f"submission refused: {status} {answer[:200]!r}")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.25)
    finally:
        writer.close()


async def window(hub: Hub, tokens: list[str], n: int, seconds: float, client: str, pid: int,
                 quiet: float = 10.0) -> dict:
    stop = asyncio.Event()
    stats: dict = {"bytes": 0}
    latencies: list[float] = []
    sidebars = [StreamSidebar(hub.api_url, tokens[i % len(tokens)], stats) if client == "stream"
                else Sidebar(hub.api_url, tokens[i % len(tokens)], client, stats) for i in range(n)]
    tasks = [asyncio.ensure_future(s.run(stop)) for s in sidebars]
    await asyncio.sleep(INTERVAL)  # every sidebar has polled once (the first answers are full ones)
    await asyncio.sleep(2.0)  # and what the last window left behind (the scheduling passes it woke) is done
    stats_quiet = dict(stats)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(quiet)  # nothing changes: what the open sidebars alone cost
    quiet_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    quiet_polls = {k: v - stats_quiet.get(k, 0) for k, v in stats.items()}
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    stats_before = dict(stats)
    sub = asyncio.ensure_future(submitter(hub.api_url + "/runs", tokens[0], make_archive({"train.py": "pass\n"}),
                                          stop, latencies))
    await asyncio.sleep(seconds)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    stop.set()
    await asyncio.gather(sub, *tasks)
    polls = {k: v - stats_before.get(k, 0) for k, v in stats.items()}
    return {"n": n, "cpu": cpu, "quiet_cpu": quiet_cpu, "latencies": latencies, "polls": polls,
            "quiet_polls": quiet_polls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queued", type=int, default=10000)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--sidebars", default="0,20,100")
    parser.add_argument("--clients", default="stream,new", help="comma-separated: stream, new, old")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--max-load", type=float, default=3.0)
    args = parser.parse_args()
    clients = args.clients.split(",")
    if set(clients) - {"stream", "new", "old"}:
        parser.error("--clients takes stream, new and old")
    load = wait_for_quiet_machine(args.max_load)
    print(f"1-minute load at the start: {load:.2f} ({os.cpu_count()} CPUs)", flush=True)
    root = Path(tempfile.mkdtemp(prefix="nothing-bench-views-"))
    extra = ["--ClusterView.cache_views=False"] if args.no_cache else []
    hub = Hub(root, ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=2",
                     "--NothingScheduler.node_cpus=64", "--NothingScheduler.log_level=WARN", *extra])
    hub.start()
    try:
        names = [f"viewer{i}" for i in range(USERS)]
        for name in names:
            hub.create_user(name)
        tokens = [hub.token_for(name) for name in names]
        archive = make_archive({"train.py": HOLD})
        holder = asyncio.run(submit_burst(hub.service_url + "api/runs", tokens[1],
                                          {"entry_point": "train.py", "gpus": 2, "cpus": 0}, archive, 1, 1))
        started = time.time()
        for i, token in enumerate(tokens):  # the queue, spread over the users
            asyncio.run(submit_burst(hub.service_url + "api/runs", token, {"entry_point": "train.py", "gpus": 1,
                                     "cpus": 0}, make_archive({"train.py": "pass\n"}),
                                     args.queued // USERS + (i < args.queued % USERS), 16))
        print(f"queued {args.queued} runs behind run {holder.ids[0]} in {time.time() - started:.0f} s", flush=True)
        pid = hub.scheduler_pid()
        results = []
        for n in (int(x) for x in args.sidebars.split(",")):
            for client in clients if n else clients[:1]:  # no sidebar: the same whichever way
                result = asyncio.run(window(hub, tokens, n, args.window, client, pid))
                lat = result["latencies"]
                print(json.dumps({"sidebars": n, "client": client if n else "none", "cache": not args.no_cache,
                                  "load_1m": round(os.getloadavg()[0], 2),
                                  "quiet_cpu_percent_of_a_core": round(100 * result["quiet_cpu"], 1),
                                  "cpu_percent_of_a_core": round(100 * result["cpu"], 1),
                                  "submit_p50_ms": round(1000 * statistics.median(lat), 1),
                                  "submit_p99_ms": round(1000 * pct(lat, 99), 1), "submits": len(lat),
                                  "quiet_responses": result["quiet_polls"],
                                  "responses": result["polls"]}), flush=True)
                results.append(result)
    finally:
        hub.stop()


if __name__ == "__main__":
    main()
