"""What a model-server replica tells the platform under the nginx data plane: how many calls it is answering (a
drained replica is stopped only at 0, since nginx's calls never pass the service), and a port it was given that
is taken ends it with that reason (it is started again on another)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import requests

from nothing.scheduler.runtime_jobs import RUNTIME_DIR, RUNTIME_FILES

from .test_serving_runtime import runtime, wait_for_port_file, write  # noqa: F401 - ``runtime`` is a fixture

SLOW_HANDLER = """import time

def load(model_dir):
    return 2

def predict(model, instances):
    if instances == ["slow"]:
        time.sleep(2)
        return ["done"]
    return [model * x for x in instances]
"""


def start(python: Path, tmp_path: Path, *args: str) -> subprocess.Popen:
    """A replica as the platform starts one: from a folder holding the runtime files and its secret."""
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    for name in RUNTIME_FILES:
        shutil.copy(RUNTIME_DIR / name, source / name)
    (source / "replica.token").write_text("s3cret\n")
    model = write(tmp_path / "m", {"handler.py": SLOW_HANDLER})
    return subprocess.Popen([str(python), str(source / "model_server.py"), "--name", "slow", "--framework", "python",
                             "--format", "python", "--port-file", str(tmp_path / "port.json"), *args],
                            env={**os.environ, "EM_DATASET_MODEL": str(model)}, cwd=source,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_replica_counts_the_calls_it_is_answering_for_the_platform_only(runtime, tmp_path):  # noqa: F811
    process = start(runtime, tmp_path)
    try:
        where = wait_for_port_file(process, tmp_path / "port.json")
        url = f"http://{where['host']}:{where['port']}"
        secret = {"X-Nothing-Replica": "s3cret"}
        count = f"{url}/nothing/in-flight"
        assert requests.get(count, headers=secret, timeout=5).json() == {"in_flight": 0}
        assert requests.get(count, timeout=5).status_code == 403  # its secret guards the count too
        slow = threading.Thread(target=requests.post, args=(f"{url}/v1/models/slow:predict",),
                                kwargs={"json": {"instances": ["slow"]}, "headers": secret, "timeout": 10})
        slow.start()
        try:
            seen = 0
            for _ in range(100):
                seen = requests.get(count, headers=secret, timeout=5).json()["in_flight"]
                if seen:
                    break
            assert seen == 1
        finally:
            slow.join()
        assert requests.get(count, headers=secret, timeout=5).json() == {"in_flight": 0}
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_replica_given_a_port_that_is_taken_ends_saying_so(runtime, tmp_path):  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(runtime, tmp_path, "--port", str(port))
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith(f"model_server: cannot listen on 127.0.0.1:{port}: ")
    assert not (tmp_path / "port.json").exists()
