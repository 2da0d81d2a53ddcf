"""Benchmark of inference through the platform against calling the same model server directly.

Starts a real JupyterHub with its proxy and the scheduler, trains a one-line model in a run, makes a
model and an endpoint from it, waits for its replica, then alternates, ``--rounds`` times, a window of
``--seconds`` calling the replica's own port (with its secret: "the direct model server") and the same
through the gateway's own listener (``c.EndpointController.gateway_url``: the nginx data plane), through
the Python gateway alone (its loopback port behind nginx), through the hub's proxy (proxy → Python
gateway → replica), with a user's endpoint-scoped token, and through a bare nginx in front of the replica
(the floor under any proxy), each with ``--concurrency`` kept-alive connections sending
``{"instances": [[1, 2, 3, 4]]}`` as fast as answered, and a window with one connection for the latency
the platform adds.  Medians over the rounds.

    .venv/bin/python bench/serving.py [--rounds 3] [--seconds 8] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.spine import pct  # noqa: E402
from tests.helpers import wait_for_sync  # noqa: E402
from tests.hub import Hub, free_port  # noqa: E402

BODY = json.dumps({"instances": [[1, 2, 3, 4]]}).encode()
HANDLER = """import time
WORK = {work}  # seconds of CPU per request: a model that computes something


def load(model_dir):
    return 2.0


def predict(model, instances):
    end = time.perf_counter() + WORK
    while time.perf_counter() < end:
        pass
    return [model * sum(x) for x in instances]
"""
TRAIN = textwrap.dedent('''
    import os, pathlib
    out = pathlib.Path(os.environ["EM_MODEL_DIR"]); out.mkdir(parents=True, exist_ok=True)
    (out / "handler.py").write_text(os.environ["EM_HP_HANDLER"])
''')
GATEWAY = f"http://127.0.0.1:{free_port()}"
SCHEDULER_ARGS = ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=2",
                  "--NothingScheduler.node_cpus=16", f"--EndpointController.gateway_url={GATEWAY}"]


async def window(url: str, headers: dict, seconds: float, concurrency: int) -> tuple[float, list[float], int]:
    """(requests per second, latencies, failures) of ``concurrency`` closed-loop kept-alive connections for
    ``seconds``: aiohttp, the client the gateway itself uses, for both paths alike."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    headers = dict(headers, **{"Content-Type": "application/json"})
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def connection():
            nonlocal failures
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    failures += response.status != 200
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*[connection() for _ in range(concurrency)])
        return len(latencies) / (time.perf_counter() - started), latencies, failures


def setup(hub: Hub, work_ms: float = 0.0) -> tuple[str, dict, str, dict]:
    """(platform URL, its headers, direct URL, its headers) of a served one-line model."""
    from tests.hub import Api

    hub.create_user("bench")
    api = Api(hub, hub.token_for("bench"))
    r = api.submit({"train.py": TRAIN}, entry_point="train.py", gpus=0,
                   hyperparameters={"handler": HANDLER.format(work=work_ms / 1000)})
    run = api.wait_state(r.json()["id"], "COMPLETE", timeout=60)
    assert api("POST", "/models", json={"name": "double", "framework": "python",
                                        "source": {"run": run["id"]}}).status_code == 201
    assert api("POST", "/endpoints", json={"name": "bench", "model": "double", "cpus": 0}).status_code == 201
    wait_for_sync(lambda: api("GET", "/endpoints/bench").json()["state"] == "ACTIVE", timeout=120, interval=0.3,
                  message="the endpoint")
    [replica] = api("GET", "/runs?kind=serving").json()["runs"]
    run_dir = hub.root / "var" / "scheduler" / "runs" / str(replica["id"])
    port = json.loads((run_dir / "serving.json").read_text())["port"]
    secret = (run_dir / "src" / "replica.token").read_text().strip()
    token = hub.token_for("bench", scopes=["custom:nothing:inference!service=endpoint-bench"])
    return (f"{hub.url}/services/nothing/serve/bench/inference", {"Authorization": f"token {token}"},
            f"http://127.0.0.1:{port}/v1/models/double:predict", {"X-Nothing-Replica": secret})


NGINX_CONF = """daemon off; worker_processes 1; pid {dir}/nginx.pid; error_log stderr error;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};
  upstream replica {{ server 127.0.0.1:{upstream}; keepalive 32; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://replica; proxy_http_version 1.1;
    proxy_set_header Connection ""; }} }} }}
"""


def start_nginx(upstream: int) -> tuple[subprocess.Popen, int] | None:
    """nginx in front of the replica (keep-alive to it, one worker): what the cheapest proxy costs on this machine,
    the floor under any gateway's figures. None where nginx is not installed."""
    if shutil.which("nginx") is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="nothing-bench-nginx-"))
    port = free_port()
    (folder / "nginx.conf").write_text(NGINX_CONF.format(dir=folder, upstream=upstream, port=port))
    proc = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf"), "-p", str(folder)])
    wait_for_sync(lambda: _listening(port), timeout=10, message="nginx")
    return proc, port


def python_gateway(hub: Hub) -> str:
    """The Python gateway's loopback address behind the nginx data plane (its upstream in nginx.conf)."""
    import re

    conf = (hub.root / "var" / "scheduler" / "nginx" / "nginx.conf").read_text()
    port = re.search(r"upstream nothing_python \{ server 127\.0\.0\.1:(\d+);", conf)
    assert port is not None, "the nginx data plane is not running (is nginx installed?)"
    return f"http://127.0.0.1:{port[1]}"


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def switch_under_load(hub: Hub, url: str, headers: dict, seconds: float, concurrency: int) -> dict:
    """Steady load on the default stage's URL while the default changes to a new stage a third of the way in."""
    from tests.hub import Api

    api = Api(hub, hub.token_for("bench"))
    assert api("POST", "/endpoints/bench/stages", json={"name": "canary", "model": "double",
                                                        "cpus": 0}).status_code == 201
    wait_for_sync(lambda: api("GET", "/endpoints/bench").json()["state"] == "ACTIVE", timeout=120, interval=0.3,
                  message="the canary stage")
    load = asyncio.ensure_future(window(url, headers, seconds, concurrency))
    await asyncio.sleep(seconds / 3)
    started = time.perf_counter()
    r = await asyncio.to_thread(api, "POST", "/endpoints/bench/default-stage", json={"stage": "canary"})
    assert r.status_code == 200, r.text
    switched = time.perf_counter() - started
    rps, latencies, failed = await load
    drained = await asyncio.to_thread(
        wait_for_sync, lambda: not next(s for s in api("GET", "/endpoints/bench").json()["stages"]
                                        if s["name"] == "default")["resources"], 60, 0.2, "the old stage's resources")
    return {"requests": len(latencies), "failed": failed, "rps": rps, "switch_ms": 1000 * switched,
            "p99": 1000 * pct(latencies, 99), "max": 1000 * max(latencies), "drained": bool(drained)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--work-ms", type=float, default=0.0,
                        help="CPU milliseconds the model spends per request (0: a one-line model)")
    args = parser.parse_args()
    hub = Hub(Path(tempfile.mkdtemp(prefix="nothing-bench-serving-")), SCHEDULER_ARGS)
    hub.start()
    nginx = None
    try:
        platform, platform_headers, direct, direct_headers = setup(hub, args.work_ms)
        assert requests.post(direct, data=BODY, headers=direct_headers, timeout=5).json() == {"predictions": [20.0]}
        # The gateway's own listener (c.EndpointController.gateway_url): nginx, asking the service once per
        # connection; the Python gateway it falls back to, on its own loopback port, is a row of its own.
        gateway = f"{GATEWAY}/serve/bench/inference"
        paths = [("direct", direct, direct_headers), ("gateway", gateway, platform_headers),
                 ("python gw", f"{python_gateway(hub)}/serve/bench/inference", platform_headers),
                 ("hub proxy", platform, platform_headers)]
        nginx = start_nginx(int(direct.split(":")[2].split("/")[0]))
        if nginx is not None:
            paths.append(("nginx", f"http://127.0.0.1:{nginx[1]}/v1/models/double:predict", direct_headers))
        results: dict[str, dict[str, list[float]]] = {k: {"rps": [], "p50": [], "p99": [], "p50_1": [], "fail": []}
                                                      for k, _, _ in paths}
        for _ in range(args.rounds):
            for name, url, headers in paths:
                rps, lat, failed = asyncio.run(window(url, headers, args.seconds, args.concurrency))
                _, single, failed_1 = asyncio.run(window(url, headers, args.seconds / 2, 1))
                r = results[name]
                r["rps"].append(rps)
                r["p50"].append(1000 * statistics.median(lat))
                r["p99"].append(1000 * pct(lat, 99))
                r["p50_1"].append(1000 * statistics.median(single))
                r["fail"].append(failed + failed_1)
        med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in results.items()}
        print(f"{args.rounds} rounds of {args.seconds:.0f} s, {args.concurrency} connections (and 1 for p50 at 1), "
              f"a model of {args.work_ms:g} ms per request")
        print(f"{'':10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p50@1 ms':>9} {'failed':>7}")
        for name, _, _ in paths:
            m = med[name]
            print(f"{name:10} {m['rps']:8.0f} {m['p50']:8.2f} {m['p99']:8.2f} {m['p50_1']:9.2f} "
                  f"{sum(results[name]['fail']):7.0f}")
        for name in [p for p, _, _ in paths if p != "direct"]:
            m, d = med[name], med["direct"]
            # Each round's paths run back to back: the ratio within a round is less moved by the machine's load.
            per_round = statistics.median(a / b for a, b in zip(results[name]["rps"], results["direct"]["rps"]))
            print(f"{name}/direct throughput {m['rps'] / d['rps']:.2f} (median of the rounds' ratios "
                  f"{per_round:.2f}); added p50 at one connection {m['p50_1'] - d['p50_1']:+.2f} ms, "
                  f"at {args.concurrency} {m['p50'] - d['p50']:+.2f} ms")
        sw = asyncio.run(switch_under_load(hub, gateway, platform_headers, 3 * args.seconds, args.concurrency))
        print(f"default stage changed under load ({args.concurrency} connections, {3 * args.seconds:.0f} s): "
              f"{sw['requests']} requests, {sw['failed']} failed, {sw['rps']:.0f} req/s, the change answered in "
              f"{sw['switch_ms']:.0f} ms, p99 {sw['p99']:.1f} ms, slowest {sw['max']:.1f} ms; old stage's "
              f"replicas removed: {sw['drained']}")
    finally:
        if nginx is not None:
            nginx[0].terminate()
        hub.stop()


if __name__ == "__main__":
    main()
