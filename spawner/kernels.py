"""Jupyter kernels for the environments users keep in ``<easymaker>/custom-conda-envs``.

The seed ("사용자 가상 실행 환경 구성") promises that an environment a user creates
with ``conda create --prefix /root/easymaker/custom-conda-envs/NAME`` survives a
notebook restart and is ready to use afterwards. Only the data volume survives, so
no kernelspec installed on the boot disk can describe it; instead this
``KernelSpecManager`` looks at the folder every time the list of kernels is asked
for and offers one kernel per environment that can run one.

An environment qualifies when it has ``bin/python`` and that interpreter finds the
``ipykernel`` module; conda environments and ``python -m venv`` environments are
found the same way. Turn it on in the single-user server's configuration::

    c.ServerApp.kernel_spec_manager_class = "nothing.spawner.kernels.CustomEnvKernelSpecManager"
    c.CustomEnvKernelSpecManager.envs_dir = "/root/easymaker/custom-conda-envs"
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from traitlets import Float, Unicode, default

DEFAULT_EASYMAKER_DIR = "/root/easymaker"
ENVS_FOLDER = "custom-conda-envs"


def kernel_name_for(prefix: str, env_name: str) -> str:
    """A kernel name jupyter_client accepts (``[a-z0-9._-]+``) that is stable for an env folder name."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", env_name.lower()).strip("-") or "env"
    return prefix + slug


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


def has_ipykernel(python: Path, timeout: float = 30.0) -> bool:
    """True when ``python`` can import ``ipykernel`` (checked without importing it, so it is quick)."""
    try:
        proc = subprocess.run(
            [str(python), "-c", "import importlib.util, sys; "
             "sys.exit(0 if importlib.util.find_spec('ipykernel') else 1)"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def env_kernel_spec(env: Path, display_name: str, resource_dir: str) -> KernelSpec:
    """The kernelspec that runs ``env``'s own Python as if the environment were activated.

    ``PATH`` starts with the environment's ``bin`` so that ``!pip install`` and
    ``!conda install`` in a notebook change this environment, not the base one;
    ``${PATH}`` is filled in by jupyter_client from the server's environment.
    """
    bin_dir = env / "bin"
    kernel_env = {"PATH": f"{bin_dir}{os.pathsep}${{PATH}}"}
    if (env / "conda-meta").is_dir():
        kernel_env.update(CONDA_PREFIX=str(env), CONDA_DEFAULT_ENV=str(env))
    else:
        kernel_env["VIRTUAL_ENV"] = str(env)
    return KernelSpec(
        resource_dir=resource_dir,
        argv=[str(env_python(env)), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name=display_name,
        language="python",
        env=kernel_env,
        metadata={"nothing": {"env_path": str(env)}, "debugger": True},
    )


def _ipykernel_resources() -> str | None:
    """The folder with the Python logos that ipykernel ships, if the server has ipykernel."""
    try:
        from ipykernel.kernelspec import RESOURCES
    except ImportError:
        return None
    return RESOURCES


class CustomEnvKernelSpecManager(KernelSpecManager):
    """Adds one kernel per usable environment in ``envs_dir`` to the usual kernelspecs."""

    envs_dir = Unicode(
        config=True,
        help="""Folder whose sub-folders are environments to offer as kernels.

        Defaults to ``$NOTHING_EASYMAKER_DIR/custom-conda-envs`` (the spawners set
        ``NOTHING_EASYMAKER_DIR``), else ``/root/easymaker/custom-conda-envs``.
        Example: ``c.CustomEnvKernelSpecManager.envs_dir = "/home/alice/easymaker/custom-conda-envs"``
        """,
    )

    @default("envs_dir")
    def _envs_dir_default(self) -> str:
        root = os.environ.get("NOTHING_EASYMAKER_DIR") or DEFAULT_EASYMAKER_DIR
        return os.path.join(root, ENVS_FOLDER)

    display_name_template = Unicode(
        "Python (conda: {name})",
        config=True,
        help="""How an environment's kernel is named in the launcher; ``{name}`` is the folder name.

        Example: ``c.CustomEnvKernelSpecManager.display_name_template = "{name} (my envs)"``
        """,
    )

    kernel_name_prefix = Unicode(
        "conda-env-",
        config=True,
        help="""Prefix of the kernel names given to environments, so they never collide with
        installed kernelspecs. Use only ``a-z``, ``0-9``, ``.``, ``_`` and ``-``.

        Example: ``c.CustomEnvKernelSpecManager.kernel_name_prefix = "env-"``
        """,
    )

    probe_cache_seconds = Float(
        30.0,
        config=True,
        help="""How long the answer to "can this environment import ipykernel?" is reused.

        Checking starts the environment's Python, and the front end asks for the kernel
        list often; a newly installed ``ipykernel`` shows up within this many seconds.
        Example: ``c.CustomEnvKernelSpecManager.probe_cache_seconds = 0`` (always check).
        """,
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._probes: dict[str, tuple[float, bool]] = {}

    def _usable(self, env: Path) -> bool:
        python = env_python(env)
        try:
            if not (python.is_file() and os.access(python, os.X_OK)):
                return False
        except OSError:  # e.g. a link to an interpreter in a folder the user may not enter
            return False
        key = str(env)
        now = time.monotonic()
        cached = self._probes.get(key)
        if cached and now - cached[0] < self.probe_cache_seconds:
            return cached[1]
        ok = has_ipykernel(python)
        self._probes[key] = (now, ok)
        return ok

    def _env_dirs(self) -> list[Path]:
        try:
            return sorted(p for p in Path(self.envs_dir).iterdir() if p.is_dir())
        except OSError:
            return []

    def _named_envs(self) -> dict[str, Path]:
        """Kernel name -> folder for every sub-folder; of two folders giving the same
        kernel name the first in name order keeps it, so a name never moves between envs."""
        named: dict[str, Path] = {}
        for env in self._env_dirs():
            named.setdefault(kernel_name_for(self.kernel_name_prefix, env.name), env)
        return named

    def env_kernels(self) -> dict[str, Path]:
        """Kernel name -> environment folder, for every usable environment, in name order."""
        found = {name: env for name, env in self._named_envs().items() if self._usable(env)}
        if self.allowed_kernelspecs:
            found = {k: v for k, v in found.items() if k in self.allowed_kernelspecs}
        return found

    def _resource_dir(self, env: Path) -> str:
        own = env / "share" / "jupyter" / "kernels" / "python3"
        if own.is_dir():
            return str(own)
        return _ipykernel_resources() or str(env)

    def find_kernel_specs(self) -> dict[str, str]:
        specs = super().find_kernel_specs()
        for name, env in self.env_kernels().items():
            specs.setdefault(name, self._resource_dir(env))
        return specs

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name.startswith(self.kernel_name_prefix):
            env = self._named_envs().get(kernel_name)
            if env is not None and self._usable(env):
                display = self.display_name_template.format(name=env.name)
                return env_kernel_spec(env, display, self._resource_dir(env))
        return super().get_kernel_spec(kernel_name)
