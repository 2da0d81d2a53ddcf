"""Fault injection: clients submit while the scheduler and its helpers are SIGKILLed at random moments.

Afterwards every acknowledged run ended exactly once and COMPLETE, none was
created or started twice, no two live processes ever held one GPU, and no process
of any run is left.  Bounded: about half a minute of kills, then the drain.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict

import pytest

from nothing.magics.client import NothingClient, NothingError

from .conftest import SCHEDULER_TEST_ARGS
from .helpers import make_archive, wait_for_sync
from .hub import Hub

pytestmark = pytest.mark.hub

CHAOS_SECONDS = 25
USERS = 3
RUNS_PER_USER = 10

# Each start and end, with the GPUs it held, in the run's own model folder.
LIFE = """
import os, random, time
path = os.path.join(os.environ["EM_MODEL_DIR"], "life")
with open(path, "a") as f:
    f.write(f"start {time.time():.6f} {os.getpid()} {os.environ['CUDA_VISIBLE_DEVICES']}\\n")
time.sleep(random.uniform(0.2, 1.5))
with open(path, "a") as f:
    f.write(f"end {time.time():.6f} {os.getpid()}\\n")
"""


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def helper_pids(scheduler: int) -> list[int]:
    found = []
    for pid in children(scheduler):
        try:
            if b"nothing.scheduler.helper_process" in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(pid)
        except FileNotFoundError:
            pass
    return found


def run_processes(runs_dir, run_ids: set[int]) -> list[int]:
    """Live processes whose environment names one of ``run_ids`` of the scheduler on ``runs_dir``."""
    wanted = {f"EM_SOURCE_DIR={runs_dir}/{i}/src".encode() for i in run_ids}
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
            state = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state != "Z" and wanted.intersection(env):
            left.append(int(entry))
    return left


def test_random_kills_lose_duplicate_share_or_wrongly_fail_nothing(hub_root):
    hub = Hub(hub_root, SCHEDULER_TEST_ARGS)
    hub.start()
    try:
        clients = {}
        for i in range(USERS):
            name = f"chaos{i}"
            hub.create_user(name)
            clients[name] = NothingClient(f"{hub.url}/services/nothing", hub.token_for(name), timeout=10,
                                          retry_seconds=90)
        archive = make_archive({"train.py": LIFE})
        acknowledged: dict[str, list[int]] = defaultdict(list)
        refused: list[str] = []
        stop = threading.Event()
        kills: list[str] = []

        def submitter(name: str) -> None:
            rng = random.Random(name)
            for _ in range(RUNS_PER_USER):
                try:
                    run = clients[name].submit({"entry_point": "train.py", "gpus": rng.choice([1, 1, 2])}, archive)
                except NothingError as e:
                    refused.append(f"{name}: {e}")
                    continue
                acknowledged[name].append(run["id"])
                time.sleep(rng.uniform(0, 1.0))

        def killer() -> None:
            rng = random.Random(7)
            deadline = time.monotonic() + CHAOS_SECONDS
            while time.monotonic() < deadline and not stop.is_set():
                time.sleep(rng.uniform(0.5, 2.5))
                try:
                    scheduler = hub.scheduler_pid()
                except RuntimeError:
                    continue  # between a kill and the restart
                helpers = helper_pids(scheduler)
                if not helpers:
                    continue  # still starting: let it come up, so that the helpers get their share of kills
                targets = [("scheduler", scheduler)] + [("helper", p) for p in helpers]
                what, pid = rng.choice(targets)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(what)
                except ProcessLookupError:
                    pass

        threads = [threading.Thread(target=submitter, args=(n,)) for n in clients]
        chaos = threading.Thread(target=killer)
        for t in [chaos, *threads]:
            t.start()
        for t in threads:
            t.join(timeout=300)
        stop.set()
        chaos.join()

        assert not refused, f"submissions failed although the client retries: {refused}"
        assert any(k.startswith("scheduler") for k in kills) and any(k.startswith("helper") for k in kills), \
            f"the kills did not reach both kinds: {kills}"
        ids = {i for runs in acknowledged.values() for i in runs}
        assert len(ids) == USERS * RUNS_PER_USER

        def all_ended():
            states = {}
            for client in clients.values():
                for run in client.runs():
                    states[run["id"]] = run
            return states if all(states[i]["state"] in ("COMPLETE", "FAIL TRAIN", "STOPPED", "CREATE FAILED")
                                 for i in ids if i in states) and ids <= set(states) else None

        states = wait_for_sync(all_ended, timeout=180, interval=1, message="every acknowledged run to end")
        # Nothing was created twice: each user's runs are exactly the acknowledged ones.
        for name, client in clients.items():
            assert sorted(r["id"] for r in client.runs()) == sorted(acknowledged[name])
        runs_dir = hub.root / "var" / "scheduler" / "runs"
        failed = {i: (states[i]["reason"], clients[states[i]["owner"]].events(i),
                      (runs_dir / str(i) / "output.log").read_text(errors="replace")[-2000:])
                  for i in ids if states[i]["state"] != "COMPLETE"}
        assert not failed, f"runs did not complete: {failed}"

        holds: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        for run_id in ids:
            owner = next(n for n, runs in acknowledged.items() if run_id in runs)
            events = clients[owner].events(run_id)
            ends = [e for e in events if e["to"] in ("COMPLETE", "FAIL TRAIN", "STOPPED", "CREATE FAILED")]
            assert len(ends) == 1, f"run {run_id} ended {len(ends)} times: {events}"
            lines = (runs_dir / str(run_id) / "model" / "life").read_text().split("\n")
            starts = [line.split() for line in lines if line.startswith("start")]
            finishes = [line.split() for line in lines if line.startswith("end")]
            assert len(starts) == 1 and len(finishes) == 1, f"run {run_id} started {len(starts)} times"
            for gpu in starts[0][3].split(","):
                holds[gpu].append((float(starts[0][1]), float(finishes[0][1]), run_id))
        for gpu, spans in holds.items():
            spans.sort()
            for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
                assert start >= end, f"runs {first} and {second} held GPU {gpu} at the same time"
        assert run_processes(runs_dir, ids) == [], "processes of ended runs are still alive"
    finally:
        hub.stop()
