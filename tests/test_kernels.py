"""Kernels for environments in custom-conda-envs, with real venvs and a real kernel process.

The environments are ``python -m venv --system-site-packages`` folders; the one that
should qualify gets a ``.pth`` line pointing at the test interpreter's site-packages
so that it can import ipykernel without a download. A conda environment has the same
``bin/python`` layout and is found by the same code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager
from jupyter_server.serverapp import ServerApp
from traitlets.config import Config

from nothing.spawner.kernels import CustomEnvKernelSpecManager, kernel_name_for


def make_venv(path: Path, with_ipykernel: bool, python: str = sys.executable) -> Path:
    subprocess.run([python, "-m", "venv", "--without-pip", "--system-site-packages", str(path)],
                   check=True, timeout=120)
    if with_ipykernel:
        site = subprocess.run(
            [str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "parent-site-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


@pytest.fixture(scope="module")
def envs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("easymaker") / "custom-conda-envs"
    root.mkdir()
    make_venv(root / "easymaker_env", with_ipykernel=True)
    make_venv(root / "No Kernel", with_ipykernel=False)
    (root / "not-an-env").mkdir()
    (root / "stray-file").write_text("not a folder")
    return root


@pytest.fixture
def ksm(envs_dir, tmp_path, monkeypatch) -> CustomEnvKernelSpecManager:
    # An empty Jupyter data path, so only the native kernel and the envs are found.
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    return CustomEnvKernelSpecManager(envs_dir=str(envs_dir))


def test_kernel_names_are_valid_and_stable():
    assert kernel_name_for("conda-env-", "easymaker_env") == "conda-env-easymaker_env"
    assert kernel_name_for("conda-env-", "My Env!") == "conda-env-my-env"
    assert kernel_name_for("conda-env-", "!!!") == "conda-env-env"


def test_an_env_with_ipykernel_becomes_a_kernel_and_others_do_not(ksm, envs_dir):
    specs = ksm.get_all_specs()

    env_specs = {k: v for k, v in specs.items() if k.startswith("conda-env-")}
    assert list(env_specs) == ["conda-env-easymaker_env"]
    spec = env_specs["conda-env-easymaker_env"]["spec"]
    env = envs_dir / "easymaker_env"
    assert spec["display_name"] == "Python (conda: easymaker_env)"
    assert spec["argv"] == [str(env / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["language"] == "python"
    assert spec["env"] == {"PATH": f"{env / 'bin'}{os.pathsep}${{PATH}}", "VIRTUAL_ENV": str(env)}
    assert "python3" in specs, "the server's own kernel is still offered"


def test_an_unusable_env_name_is_no_such_kernel(ksm):
    with pytest.raises(NoSuchKernel):
        ksm.get_kernel_spec("conda-env-no-kernel")
    with pytest.raises(NoSuchKernel):
        ksm.get_kernel_spec("conda-env-not-an-env")


def test_an_env_the_user_may_not_reach_is_left_out_and_the_others_still_listed(ksm, envs_dir, monkeypatch):
    # As the user's account, stat() on a link into a folder closed to them fails with EACCES
    # (root, running the tests, is never refused: the refusal is faked at the file system call).
    blocked = envs_dir / "easymaker_env" / "bin" / "python"
    real_is_file = Path.is_file

    def is_file(path):
        if path == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", is_file)
    specs = ksm.get_all_specs()
    assert "python3" in specs and not [k for k in specs if k.startswith("conda-env-")]


def test_a_missing_envs_folder_offers_only_the_usual_kernels(tmp_path):
    ksm = CustomEnvKernelSpecManager(envs_dir=str(tmp_path / "absent"))
    assert ksm.get_all_specs() == KernelSpecManager().get_all_specs()


def test_envs_dir_follows_the_easymaker_dir_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTHING_EASYMAKER_DIR", str(tmp_path))
    assert CustomEnvKernelSpecManager().envs_dir == str(tmp_path / "custom-conda-envs")
    monkeypatch.delenv("NOTHING_EASYMAKER_DIR")
    assert CustomEnvKernelSpecManager().envs_dir == "/root/easymaker/custom-conda-envs"


def test_the_server_config_lines_select_and_configure_the_manager(envs_dir):
    config = Config()
    config.ServerApp.kernel_spec_manager_class = "nothing.spawner.kernels.CustomEnvKernelSpecManager"
    config.CustomEnvKernelSpecManager.envs_dir = str(envs_dir)
    config.CustomEnvKernelSpecManager.display_name_template = "{name} (saved)"
    app = ServerApp(config=config)

    ksm = app.kernel_spec_manager_class(parent=app)

    assert isinstance(ksm, CustomEnvKernelSpecManager)
    assert ksm.get_kernel_spec("conda-env-easymaker_env").display_name == "easymaker_env (saved)"


def test_a_kernel_started_from_the_spec_runs_in_the_env(ksm, envs_dir):
    km = KernelManager(kernel_name="conda-env-easymaker_env", kernel_spec_manager=ksm)
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = kc.execute_interactive(
            "import os, sys; print(sys.prefix); print(os.environ['PATH'].split(os.pathsep)[0])",
            timeout=60, output_hook=lambda msg: out.append(msg["content"].get("text", "")))
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
    env = envs_dir / "easymaker_env"
    assert reply["content"]["status"] == "ok"
    assert "".join(out) == f"{env}\n{env / 'bin'}\n"
