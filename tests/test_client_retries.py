"""The client retries what is safe to repeat while the service restarts, and a retried submission is one run."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nothing.magics.client import NothingClient, NothingError
from nothing.common.backoff import Backoff

from .helpers import make_archive, wait_for_sync
from .hub import free_port

HUB_503 = b"<!DOCTYPE HTML>\n<html><head><title>503 Service Unavailable</title></head><body>...</body></html>"
RUN = {"id": 7, "state": "QUEUED", "name": "", "entry_point": "t.py"}


class ResettingListener:
    """Accepts connections on ``port`` and resets each at once (as a scheduler restarting would), counting them."""

    def __init__(self, port: int):
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.sock.settimeout(0.05)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
            conn.close()
            self.connections += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


class FlakyService:
    """A tiny HTTP server that answers ``failures`` (status, body, content type) first, then ``answer``."""

    def __init__(self, failures: list[tuple[int, bytes, str]], answer: tuple[int, dict] = (200, RUN),
                 port: int | None = None):
        self.failures = list(failures)
        self.answer = answer
        self.requests: list[tuple[str, str, dict]] = []
        self.port = port or free_port()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                service.requests.append((self.command, self.path, dict(self.headers)))
                if service.failures:
                    status, body, ctype = service.failures.pop(0)
                else:
                    status, body, ctype = service.answer[0], json.dumps(service.answer[1]).encode(), \
                        "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/nothing/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def client(url: str, retry_seconds: float = 10.0) -> NothingClient:
    return NothingClient(url, "a-token", timeout=5, retry_seconds=retry_seconds)


def test_reads_are_retried_through_the_hubs_503_page_and_502_504_until_the_service_answers():
    failures = [(503, HUB_503, "text/html"), (502, b"bad gateway", "text/plain"), (504, b"", "text/plain")]
    with FlakyService(failures) as service:
        assert client(service.url).run(7) == RUN
    assert [r[:2] for r in service.requests] == [("GET", "/services/nothing/api/runs/7")] * 4


def test_a_submission_is_retried_with_the_same_idempotency_key_on_every_attempt():
    with FlakyService([(503, HUB_503, "text/html")] * 2, answer=(201, RUN)) as service:
        c = client(service.url)
        assert c.submit({"entry_point": "t.py"}, make_archive({"t.py": "pass"})) == RUN
        assert c.submit({"entry_point": "t.py"}, make_archive({"t.py": "pass"})) == RUN
    keys = [r[2]["Idempotency-Key"] for r in service.requests]
    assert len(keys) == 4 and len(set(keys[:3])) == 1 and keys[3] != keys[0], "one key per submission"


def test_calls_are_retried_while_nothing_listens_yet():
    port = free_port()
    result: list = []
    c = client(f"http://127.0.0.1:{port}/s/")
    tries, request = [], c.session.request
    c.session.request = lambda *a, **k: tries.append(1) or request(*a, **k)
    caller = threading.Thread(target=lambda: result.append(c.gpus()))
    caller.start()
    wait_for_sync(lambda: len(tries) >= 3, timeout=10, interval=0.01, message='"connection refused" three times')
    with FlakyService([], answer=(200, {"nodes": []}), port=port):
        caller.join(15)
    assert result == [{"nodes": []}]


def test_after_the_retry_budget_the_error_is_one_line_and_never_the_html_page():
    with FlakyService([(503, HUB_503, "text/html")] * 1000) as service:
        with pytest.raises(NothingError) as e:
            client(service.url, retry_seconds=1.0).runs()
    assert e.value.status == 503
    assert "<" not in str(e.value) and "\n" not in str(e.value)
    assert "not answering (503" in str(e.value)
    # The client's delays start at 0.2 s, halved at most by jitter, and double: 0.1 + 0.2 + 0.4 + 0.8 > 1 s, so a
    # 1 s budget allows at most 4 retries however fast or slow the machine is; at least one always happens.
    assert 2 <= len(service.requests) <= 5, "retried with back-off, and only within the budget"


@pytest.mark.parametrize("status", [400, 403, 404, 409, 500])
def test_refusals_are_not_retried_and_carry_the_services_message(status):
    body = json.dumps({"status": status, "message": "no such thing"}).encode()
    with FlakyService([(status, body, "application/json")]) as service:
        with pytest.raises(NothingError, match="^no such thing$") as e:
            client(service.url).run(7)
    assert e.value.status == status and len(service.requests) == 1


def test_a_cancel_whose_answer_was_lost_reads_back_the_run_instead_of_failing():
    conflict = json.dumps({"status": 409, "message": "run 7 has already ended (STOPPED)"}).encode()
    stopped = dict(RUN, state="STOPPED")
    with FlakyService([(502, b"", "text/plain"), (409, conflict, "application/json")], answer=(200, stopped)) as s:
        assert client(s.url).cancel(7) == stopped
    assert [r[:2] for r in s.requests] == [("POST", "/services/nothing/api/runs/7/cancel")] * 2 + [
        ("GET", "/services/nothing/api/runs/7")]


def test_backoff_doubles_with_jitter_and_stops_at_the_budget():
    now = [0.0]
    backoff = Backoff(initial=1, maximum=4, jitter=0.5, budget=10, clock=lambda: now[0])
    delays = []
    for delay in backoff.delays():
        delays.append(delay)
        now[0] += delay
    steps = [1, 2, 4, 4, 4, 4, 4, 4, 4, 4]
    assert all(s / 2 <= d <= s for d, s in zip(delays[:-1], steps))
    assert 0 < delays[-1] <= steps[len(delays) - 1]
    assert abs(sum(delays) - 10) < 1e-9, "the last delay is cut to the budget"


# ---------------------------------------------------------------------- the sidebar's server extension
@pytest.fixture
def jupyter_server(tmp_path):
    """A real jupyter-server with the extension, forwarding to a scheduler address where nothing listens yet."""
    import subprocess
    import sys

    import requests

    port, service_port, token = free_port(), free_port(), "ext-token"
    env = dict(os.environ, NOTHING_SERVICE_URL=f"http://127.0.0.1:{service_port}/services/nothing/",
               JUPYTERHUB_API_TOKEN="service-token", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    for name in ("JUPYTERHUB_SERVICE_PREFIX", "JUPYTERHUB_API_URL"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", f"--ServerApp.port={port}", "--no-browser",
                             "--allow-root", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        try:
            return requests.get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"},
                                timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for_sync(up, timeout=60, message="jupyter-server to start")
        yield f"http://127.0.0.1:{port}", token, service_port
    finally:
        proc.terminate()
        proc.wait(20)


def test_the_sidebars_server_extension_retries_reads_and_cancels_until_the_scheduler_is_back(jupyter_server):
    import requests

    base, token, service_port = jupyter_server
    headers = {"Authorization": f"token {token}"}
    answers: list = []
    calls = [("GET", "runs/7"), ("POST", "runs/7/cancel")]
    callers = [threading.Thread(target=lambda m=m, p=p: answers.append(
        requests.request(m, f"{base}/nothing/api/{p}", headers=headers, timeout=30))) for m, p in calls]
    with ResettingListener(service_port) as down:  # the scheduler is not there: every connection is reset
        for caller in callers:
            caller.start()
        wait_for_sync(lambda: down.connections >= 2, timeout=30, interval=0.01, message="both calls to fail once")
    with FlakyService([], port=service_port) as service:
        for caller in callers:
            caller.join(30)
    assert [a.status_code for a in answers] == [200, 200] and all(a.json() == RUN for a in answers)
    assert sorted(r[:2] for r in service.requests) == [("GET", "/services/nothing/api/runs/7"),
                                                        ("POST", "/services/nothing/api/runs/7/cancel")]
    assert all(r[2]["Authorization"] == "token service-token" for r in service.requests)


# ---------------------------------------------------------------------- live, through the hub
@pytest.mark.hub
def test_submissions_while_the_scheduler_is_killed_make_exactly_one_run_each(hub, make_user):
    name, api = make_user("persistent")
    c = NothingClient(f"{hub.url}/services/nothing/", api.session.headers["Authorization"].split()[1], timeout=10)
    attempts = []
    c.session.hooks["response"].append(lambda r, *a, **k: attempts.append(r.status_code))
    made, errors, done = [], [], threading.Event()

    def submit_many():
        try:
            for i in range(30):
                made.append(c.submit({"entry_point": "t.py", "gpus": 0, "name": f"n{i}"},
                                     make_archive({"t.py": "pass"}))["id"])
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)
        finally:
            done.set()

    submitter = threading.Thread(target=submit_many)
    submitter.start()
    for _ in range(2):
        wait_for_sync(lambda: len(made) >= 5 or done.is_set(), timeout=60)
        before = len(made)
        old = hub.scheduler_pid()
        os.kill(old, signal.SIGKILL)
        wait_for_sync(lambda before=before: len(made) > before + 3 or done.is_set(), timeout=60,
                      message="submissions to go on")
    submitter.join(120)
    assert not errors, errors
    assert len(made) == 30 and len(set(made)) == 30
    runs = api("GET", "/runs", params={"limit": 100}).json()["runs"]
    assert sorted(r["id"] for r in runs) == sorted(made), "one run per submission, none twice, none lost"
    assert sorted(r["name"] for r in runs) == sorted(f"n{i}" for i in range(30))
    assert len(attempts) > 30, "some submissions were retried across the restarts"
