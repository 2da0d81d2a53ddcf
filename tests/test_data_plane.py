"""The nginx data plane's one configuration and its stats log, without a hub: nginx itself checks the config."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from datetime import datetime

import requests

from nothing.scheduler.data_plane import free_port_in, read_stats, render_config, replica_upstream, upstream_for


def config(prefix, **changes) -> str:
    args = dict(prefix=prefix, listen="127.0.0.1:18010", python_port=18011, secret="s3cret", replica_ports=(41000, 41003),
                cache_seconds=2, max_body_bytes=1000, request_timeout=60.0)
    return render_config(**{**args, **changes})


def test_nginx_accepts_the_rendered_configuration(tmp_path):
    assert shutil.which("nginx"), "nginx is not installed (scripts/test.sh installs it)"
    for name in ("cache", "temp", "logs"):
        (tmp_path / name).mkdir()
    (tmp_path / "nginx.conf").write_text(config(tmp_path))
    r = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_every_local_replica_port_has_a_kept_alive_upstream_declared_once(tmp_path):
    text = config(tmp_path)
    for port in range(41000, 41004):
        assert f"upstream {replica_upstream(port)} {{ server 127.0.0.1:{port}; keepalive 16;" in text
    assert "nothing_p41004" not in text
    # Routes are the service's answers, cached per client connection for the configured seconds.
    assert "proxy_cache_valid 200 2s;" in text and "$connection" in text
    # The caller's token never reaches a replica; the replica's secret does.
    assert "proxy_pass_request_headers off;" in text and "X-Nothing-Replica $nothing_replica_token" in text


def test_a_replica_is_reached_kept_alive_on_a_declared_port_else_at_its_address_else_through_python():
    assert upstream_for("http://127.0.0.1:41002", (41000, 41003)) == "nothing_p41002"
    assert upstream_for("http://127.0.0.1:5000", (41000, 41003)) == "127.0.0.1:5000"  # no declared group
    assert upstream_for("http://10.0.0.7:41002", (41000, 41003)) == "10.0.0.7:41002"  # a Slurm node's NodeAddr
    assert upstream_for("http://node7:41002", (41000, 41003)) is None  # a name nginx would have to resolve


def test_a_new_replica_gets_the_next_port_that_is_neither_in_use_nor_bound():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        assert free_port_in((port, port + 1), set(), 0) == port + 1  # bound by someone else
        assert free_port_in((port, port + 1), {port + 1}, 0) is None
    assert free_port_in((port, port + 1), set(), 1) == port + 1  # in turn: a restart gets another one
    assert free_port_in((port, port + 1), {port + 1}, 1) == port


def test_the_stats_log_is_counted_per_stage_and_minute_from_complete_lines(tmp_path):
    log = tmp_path / "stats.log"
    log.write_bytes(b"1796140800.125 7 200 0.002\n1796140801.500 7 503 0.010\n1796140861.000 8 200 0.001\n"
                    b"garbage\n1796140862.0 8 2")
    stats, offset = read_stats(log, 0)
    assert offset == log.read_bytes().rfind(b"\n") + 1  # the half-written last line waits for the next read
    counts = {(stage, minute): (c.requests, c.errors) for (stage, minute), c in stats.pending.items()}
    assert counts == {(7, datetime(2026, 12, 1, 16, 0)): (2, 1), (8, datetime(2026, 12, 1, 16, 1)): (1, 0)}
    with open(log, "ab") as f:
        f.write(b"00 0.003\n")
    stats, offset = read_stats(log, offset)
    assert [(k[0], c.requests) for k, c in stats.pending.items()] == [(8, 1)] and offset == log.stat().st_size


def test_while_the_service_cannot_be_reached_nginx_answers_a_retryable_503_in_the_gateways_json(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    for name in ("cache", "temp", "logs"):
        (tmp_path / name).mkdir()
    (tmp_path / "nginx.conf").write_text(config(tmp_path, listen=f"127.0.0.1:{ports[0]}", python_port=ports[1]))
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = requests.post(f"http://127.0.0.1:{ports[0]}/serve/ep/inference", json={"instances": [1]},
                                  headers={"Authorization": "token t"}, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        assert r.status_code == 503 and r.headers["Content-Type"] == "application/json; charset=utf-8"
        assert json.loads(r.text) == {"status": 503, "message": "the platform service cannot be reached "
                                                                "(restarting?); try again shortly"}
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
