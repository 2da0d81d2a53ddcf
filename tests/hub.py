"""A real JupyterHub (with configurable-http-proxy and the scheduler service) started for the tests.

It runs the repository's own ``jupyterhub_config.py`` on free loopback ports, with
an extra admin service token so tests can create users and tokens.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chp_path() -> str:
    local = VENV_BIN.parent / "chp" / "node_modules" / ".bin" / "configurable-http-proxy"
    return os.environ.get("NOTHING_CHP", str(local))


@dataclass
class Hub:
    root: Path
    scheduler_args: list[str]
    public_port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    service_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/services/nothing/api"

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}/services/nothing/"

    def start(self, timeout: float = 60) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "test_config.py"
        config.write_text(textwrap.dedent(f"""
            c = get_config()
            load_subconfig({str(REPO / 'jupyterhub_config.py')!r})
            c.JupyterHub.services.append({{"name": "test-admin", "api_token": {self.admin_token!r}}})
            c.JupyterHub.load_roles.append({{"name": "admin", "services": ["test-admin"]}})
            c.Spawner.environment["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] = "1"
        """))
        env = dict(
            os.environ,
            NOTHING_DATA_DIR=str(self.root / "var"),
            NOTHING_BIND_URL=self.url,
            NOTHING_HUB_PORT=str(self.hub_port),
            NOTHING_PROXY_API_PORT=str(self.proxy_api_port),
            NOTHING_SERVICE_PORT=str(self.service_port),
            NOTHING_SCHEDULER_ARGS=" ".join(self.scheduler_args),
            NOTHING_CHP=chp_path(),
        )
        self.log_file = open(self.root / "hub.log", "ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(config)], cwd=self.root, env=env,
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterHub exited early:\n{self.log()[-4000:]}")
            try:
                if requests.get(f"{self.api_url}/openapi.json", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"JupyterHub did not come up in {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return (self.root / "hub.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log_file.close()
        # Runs outlive the service by design; a test hub takes its runs with it.
        for pid_file in (self.root / "var" / "scheduler" / "runs").glob("*/pid"):
            try:
                os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError, PermissionError):
                pass

    # ---- hub API as the test admin -------------------------------------------------
    def hub_api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.admin_token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kwargs)

    def create_user(self, name: str, admin: bool = False) -> None:
        r = self.hub_api("POST", f"/users/{name}", json={"admin": admin})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating user {name}: {r.status_code} {r.text}")

    def token_for(self, name: str, scopes: list[str] | None = None) -> str:
        body = {"note": "tests"}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.hub_api("POST", f"/users/{name}/tokens", json=body)
        r.raise_for_status()
        return r.json()["token"]

    def scheduler_pid(self) -> int:
        out = subprocess.run(["pgrep", "-f", f"nothing.scheduler --NothingScheduler.data_dir={self.root}/var"],
                             capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        if len(pids) != 1:
            raise RuntimeError(f"expected one scheduler process, found {pids}")
        return pids[0]


class Api:
    """The scheduler's REST API as one user (through the hub's proxy)."""

    def __init__(self, hub: Hub, token: str):
        self.base = hub.api_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.base + path, **kwargs)

    def submit(self, files: dict, archive: bytes | None = None, **spec) -> requests.Response:
        import json

        from .helpers import make_archive

        data = archive if archive is not None else make_archive(files)
        return self("POST", "/runs", data={"spec": json.dumps(spec)},
                    files={"archive": ("code.tar.gz", data, "application/gzip")})

    def run(self, run_id: int) -> dict:
        r = self("GET", f"/runs/{run_id}")
        r.raise_for_status()
        return r.json()

    def wait_state(self, run_id: int, states: set[str] | str, timeout: float = 30) -> dict:
        from .helpers import wait_for_sync

        wanted = {states} if isinstance(states, str) else states
        return wait_for_sync(lambda: (lambda r: r if r["state"] in wanted else None)(self.run(run_id)),
                             timeout=timeout, message=f"run {run_id} to reach {wanted}")
