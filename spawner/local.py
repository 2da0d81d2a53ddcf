"""Notebooks on the hub's own machine, each user with a persistent folder standing in for /root/easymaker.

The single-user server runs as the hub's user (there are no system accounts to
switch to on a one-machine install), in ``<easymaker_root>/<user>``; the folder is
kept when the server stops, and its path is exported as ``NOTHING_EASYMAKER_DIR``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Float, Unicode, default

from .continit import run_cont_init

KERNEL_SPEC_MANAGER = "nothing.spawner.kernels.CustomEnvKernelSpecManager"


class NothingLocalSpawner(SimpleLocalProcessSpawner):
    easymaker_root = Unicode(
        help="""Folder holding every user's persistent folder (their /root/easymaker).

        Example: ``c.NothingLocalSpawner.easymaker_root = "/srv/nothing/users"``
        """
    ).tag(config=True)

    @default("easymaker_root")
    def _default_easymaker_root(self):
        return os.path.abspath("nothing-users")

    @default("home_dir_template")
    def _default_home_dir_template(self):
        return os.path.join(self.easymaker_root, "{username}")

    cont_init_timeout = Float(
        300,
        help="""Seconds each script in ``cont-init.d`` may run before it is stopped.

        Example: ``c.NothingLocalSpawner.cont_init_timeout = 60``
        """,
    ).tag(config=True)

    async def start(self):
        root = Path(self.home_dir)
        root.mkdir(parents=True, exist_ok=True)
        # The user's start-up scripts run before every start, as in the images' entrypoint.
        await asyncio.to_thread(run_cont_init, root, self.cont_init_timeout, self.log, env=self.get_env())
        return await super().start()

    def get_args(self):
        args = super().get_args()
        # As root, jupyter-server refuses to start without --allow-root.
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")
        # Environments in custom-conda-envs/ appear as kernels.
        args.append(f"--ServerApp.kernel_spec_manager_class={KERNEL_SPEC_MANAGER}")
        return args

    def get_env(self):
        env = super().get_env()
        env["NOTHING_EASYMAKER_DIR"] = self.home_dir
        return env
