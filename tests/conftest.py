"""Fixtures: a scheduler dispatcher with real processes and a real database."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import pytest

from nothing.scheduler.db import Database
from nothing.scheduler.dispatcher import Dispatcher
from nothing.scheduler.executors.local import LocalExecutor
from nothing.scheduler.policy import Node, PriorityFifoPolicy
from nothing.scheduler.snapshot import SnapshotLimits

from .hub import free_port


@contextlib.asynccontextmanager
async def running_dispatcher(data_dir: Path, **kwargs):
    """A dispatcher started on ``data_dir`` and stopped (its database closed) on leaving: one life of the service."""
    d = build_dispatcher(data_dir, **kwargs)
    await d.start()
    try:
        yield d
    finally:
        await d.stop()
        d.db.close()


def build_dispatcher(data_dir: Path, gpus: int = 4, cpus: int = 64, db_url: str | None = None,
                     kill_grace: float = 1.0, accounts=None) -> Dispatcher:
    db = Database(db_url or f"sqlite:///{data_dir / 'scheduler.sqlite'}")
    db.upgrade()
    executor = LocalExecutor(on_exit=None)
    executor.reattach_poll_interval = 0.05
    return Dispatcher(db, executor, PriorityFifoPolicy(), [Node("node-a", tuple(range(gpus)), cpus, 0)],
                      data_dir / "runs", sys.executable, SnapshotLimits(64 * 1024**2), kill_grace_seconds=kill_grace,
                      accounts=accounts)


@pytest.fixture
async def dispatcher(tmp_path):
    d = build_dispatcher(tmp_path)
    await d.start()
    yield d
    for run in list(d.active.values()):
        if run.process:
            import os
            import signal

            try:
                os.killpg(run.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    await d.stop()
    d.db.close()


# The server folder the session's hub lets models be registered from (tests/test_models_live.py).
MODELS_ALLOWED_ROOT = Path(tempfile.gettempdir()) / "nothing-test-models-allowed"
# The session hub's inference gateway listener (tests/test_endpoints_live.py calls endpoints there too). Only the
# session hub gets it: other schedulers of the session (their own hubs, takeover tests) would find the port taken.
GATEWAY_URL = f"http://127.0.0.1:{free_port()}"
SCHEDULER_TEST_ARGS = [
    f"--Models.allowed_roots={MODELS_ALLOWED_ROOT}",
    "--NothingScheduler.gpu_mode=virtual",
    "--NothingScheduler.virtual_gpus=4",
    "--NothingScheduler.node_cpus=16",
    "--NothingScheduler.kill_grace_seconds=2",
    "--NothingScheduler.max_snapshot_bytes=2000000",
    "--NothingScheduler.max_unpacked_bytes=5000000",
    "--ClusterHistory.interval=1",  # the admin page's charts get points within seconds (test_browser_admin_history)
]


@pytest.fixture(scope="session")
def hub():
    """One real JupyterHub + proxy + scheduler for the session; users are made fresh per test.

    Its folder is not under pytest's: the users' accounts must pass through every folder
    above it, and each pytest session makes /tmp/pytest-of-<user> 0700 again.
    """
    import shutil
    import tempfile

    from .hub import Hub

    root = Path(tempfile.mkdtemp(prefix="nothing-hub-"))
    # The gateway listener is nginx (the C data plane, tests/test_data_plane_live.py): installed where the suite
    # runs (scripts/test.sh installs it), so a missing one fails here rather than skipping its tests.
    assert shutil.which("nginx"), "nginx is not installed (scripts/test.sh installs it)"
    h = Hub(root, [*SCHEDULER_TEST_ARGS, f"--EndpointController.gateway_url={GATEWAY_URL}",
                   "--EndpointController.data_plane=nginx"])
    h.start()
    try:
        yield h
    finally:
        h.stop()  # also removes the Unix accounts its users got
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_user(hub):
    """Creates a fresh hub user and returns an API client with a token of theirs."""
    import secrets as _secrets

    from .hub import Api

    def make(prefix: str = "user", admin: bool = False) -> tuple[str, Api]:
        name = f"{prefix}-{_secrets.token_hex(3)}"
        hub.create_user(name, admin=admin)
        return name, Api(hub, hub.token_for(name))

    return make


@pytest.fixture(scope="session")
def postgres_url():
    from .postgres import Postgres

    pg = Postgres()
    url = pg.start()
    yield url
    pg.stop()


FAKE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {server: "https://127.0.0.1:9"}
contexts:
- name: nowhere
  context: {cluster: nowhere, namespace: notebooks, user: nobody}
current-context: nowhere
users:
- name: nobody
  user: {token: not-a-token}
"""


@pytest.fixture
def make_spawner(tmp_path, monkeypatch):
    """A real NothingKubeSpawner for a real hub user (in-memory hub database), pointed at no cluster."""
    from jupyterhub import orm
    from jupyterhub.objects import Hub
    from jupyterhub.user import User
    from kubernetes_asyncio.config import kube_config
    from traitlets.config import Config

    from nothing.spawner.kube import NothingKubeSpawner

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(FAKE_KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # kubernetes_asyncio reads KUBECONFIG once, when first imported.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    db = orm.new_session_factory("sqlite://")()

    def make(server_name: str = "", user_options: dict | None = None, config: Config | None = None,
             state: dict | None = None) -> NothingKubeSpawner:
        orm_user = db.query(orm.User).filter_by(name="alice").first()
        if orm_user is None:
            orm_user = orm.User(name="alice")
            db.add(orm_user)
            db.commit()
        user = User(orm_user, settings={"spawner_class": NothingKubeSpawner, "config": config or Config(),
                                        "hub": Hub(), "allow_named_servers": True}, db=db)
        if server_name not in orm_user.orm_spawners:
            user._new_orm_spawner(server_name, "")
        spawner = user.spawners[server_name]
        if state is not None:
            spawner.load_state(state)
        spawner.user_options = user_options or {}
        return spawner

    yield make
    db.close()


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test(request):
    """Runs outlive their scheduler by design; a test's runs (in its tmp_path) do not outlive the test."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is not None:
        from .helpers import kill_jobs

        kill_jobs(tmp / "runs")


@pytest.fixture(scope="session")
def slurm():
    """A real Slurm cluster for the session: munged, slurmctld and three slurmd (node1-3, 4 GRES GPUs,
    4 CPUs, 4 GiB each) on loopback, all under one folder of its own; stopped with all its jobs after.

    The folder is under /tmp and 0711, so jobs of other accounts can reach their files through it.
    """
    import shutil
    import tempfile

    from .slurm import Slurm

    root = Path(tempfile.mkdtemp(prefix="nothing-slurm-"))
    root.chmod(0o711)
    cluster = Slurm(root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hub_root():
    """A folder for a test's own hub, directly under /tmp (see ``hub``: users must pass through its parents)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="nothing-hub-"))
    yield root / "hub"
    shutil.rmtree(root, ignore_errors=True)
