"""A real JupyterHub (with configurable-http-proxy and the scheduler service) started for the tests.

It runs the repository's own ``jupyterhub_config.py`` on free loopback ports, with
an extra admin service token so tests can create users and tokens.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# The uids of the Unix accounts test hubs map their users to: a range of their own, never a real user's.
TEST_UID_RANGE = (44000, 44999)


def open_to_others(path: str) -> bool:
    """Whether every folder above ``path`` (and its real path) lets other users through, and it is executable."""
    for candidate in {path, os.path.realpath(path)}:
        for folder in Path(candidate).parents:
            if not folder.stat().st_mode & 0o001:
                return False
        if not os.stat(candidate).st_mode & 0o001:
            return False
    return True


def users_python() -> str:
    """A Python with the venv's packages that the users' accounts can execute.

    The venv's own when it can (an install anywhere but under /root). On machines whose Python
    lives under /root (0700, e.g. pyenv), a venv of the system's Python of the same version,
    built once in /tmp, that reads the venv's packages, configuration and JupyterLab assets.
    """
    if open_to_others(sys.executable):
        return sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin:/bin")
    if base is None or not open_to_others(base):
        raise RuntimeError(f"{sys.executable} is closed to other users and there is no system python{version}")
    venv = Path(sys.prefix)
    target = Path(tempfile.gettempdir()) / f"nothing-users-python-{hashlib.sha256(bytes(venv)).hexdigest()[:8]}"
    python = target / "bin" / "python"
    if not python.exists():
        building = Path(tempfile.mkdtemp(prefix=target.name + "-", dir=target.parent))
        subprocess.run([base, "-m", "venv", "--without-pip", str(building)], check=True)
        site = building / "lib" / f"python{version}" / "site-packages"
        packages = venv / "lib" / f"python{version}" / "site-packages"
        (site / "nothing-venv.pth").write_text(f"import site; site.addsitedir({str(packages)!r})\n")
        for shared in ("etc", "share"):  # Jupyter's and IPython's sys.prefix folders: the venv's
            (building / shared).symlink_to(venv / shared)
        building.chmod(0o755)
        try:
            building.rename(target)
        except OSError:  # another session built it first
            shutil.rmtree(building)
    return str(python)


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
    # Every hub folder its own account names, so that stopping a hub removes only its own accounts
    # (and a hub restarted on the same folder finds the same accounts).
    account_prefix: str = ""
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        if not self.account_prefix:
            self.account_prefix = f"nt{hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:4]}-"

    @property
    def accounts_config(self) -> dict:
        """The hub's ``c.UnixAccounts`` settings (the scheduler gets the same on its command line)."""
        return {"name_template": self.account_prefix + "{username}", "uid_min": TEST_UID_RANGE[0],
                "uid_max": TEST_UID_RANGE[1]}

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
        # Users' accounts must pass through the (0700) pytest folders to reach their own.
        tmp = Path(tempfile.gettempdir()).resolve()
        for folder in [self.root.resolve(), *self.root.resolve().parents]:
            if tmp not in folder.parents:
                break
            folder.chmod(folder.stat().st_mode | 0o011)
        python = users_python()
        config = self.root / "test_config.py"
        config.touch()
        config.chmod(0o600)  # it holds the admin token
        config.write_text(textwrap.dedent(f"""
            c = get_config()
            load_subconfig({str(REPO / 'jupyterhub_config.py')!r})
            c.UnixAccounts.update({self.accounts_config!r})
            c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
            c.NothingLocalSpawner.cont_init_python = {python!r}
            c.Spawner.mem_limit = "4G"
            c.Spawner.cpu_limit = 2.0
            c.Spawner.poll_interval = 3  # servers that die are noticed within seconds
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
            NOTHING_GATEWAY_URL="",  # hubs of one session would share its port; the session hub sets its own
            NOTHING_SCHEDULER_ARGS=" ".join(
                [*self.scheduler_args, *(f"--UnixAccounts.{k}={v}" for k, v in self.accounts_config.items()),
                 *([f"--NothingScheduler.python={python}"] if python != sys.executable else [])]),
            NOTHING_CHP=chp_path(),
        )
        self.log_file = open(self.root / "hub.log", "ab")
        os.chmod(self.root / "hub.log", 0o600)
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
        from .helpers import kill_jobs

        kill_jobs(self.root / "var" / "scheduler" / "runs")
        scheduler = self.root / "var" / "scheduler"
        # control/<id>/pid, runs/<id>/pid, and the data plane's nginx (its own process group), which a SIGKILLed
        # scheduler leaves for the next one to stop.
        for pid_file in [*scheduler.glob("*/*/pid"), scheduler / "nginx" / "nginx.pid"]:
            try:
                os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError, ValueError, PermissionError):
                pass
        remove_accounts(self.account_prefix)

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
        """The real scheduler (``python -m nothing.scheduler.app``, its supervisor's child); exactly one."""
        return self._one_process("nothing.scheduler.app", "scheduler")

    def supervisor_pid(self) -> int:
        """The scheduler's supervisor (``python -m nothing.scheduler``, what the hub runs); exactly one."""
        return self._one_process("nothing.scheduler", "supervisor")

    def _one_process(self, module: str, what: str, settle: float = 5.0, absent: float = 30.0) -> int:
        """The one such process; during a takeover the old and the new live side by side for a moment, and
        after a crash there is none while the supervisor backs off (deaths within a minute of each other wait
        0.5 s, 1 s, 2 s ... up to 10 s: tests that SIGKILL the service one after another meet that)."""
        started = time.monotonic()
        deadline = started + settle
        while True:
            # The module name ends at the space: "nothing.scheduler " does not match "nothing.scheduler.app ".
            out = subprocess.run(["pgrep", "-f", "--", f"-m {module} --NothingScheduler.data_dir={self.root}/var"],
                                 capture_output=True, text=True)
            pids = [int(p) for p in out.stdout.split()]
            if len(pids) == 1:
                return pids[0]
            now = time.monotonic()
            if (pids and now > deadline) or (not pids and now > started + absent):
                raise RuntimeError(f"expected one {what} process, found {pids}")
            time.sleep(0.1)


def remove_accounts(prefix: str, timeout: float = 10) -> None:
    """Delete the Unix accounts (and their groups) whose login starts with ``prefix``, killing their processes.

    For the accounts tests create only: ``prefix`` must be a test template's.
    """
    for entry in pwd.getpwall():
        if not entry.pw_name.startswith(prefix):
            continue
        deadline = time.monotonic() + timeout
        while pids := processes_of(entry.pw_uid):
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        subprocess.run(["userdel", entry.pw_name], capture_output=True)
        subprocess.run(["groupdel", entry.pw_name], capture_output=True)  # when userdel kept it


def processes_of(uid: int) -> list[int]:
    """Live processes (zombies left out) whose real uid is ``uid``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            found.append(int(pid))
    return found


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
