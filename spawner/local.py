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
from traitlets import Float, Integer, Unicode, default

from .continit import run_cont_init
from .gpu_hold import SchedulerGpusMixin

KERNEL_SPEC_MANAGER = "nothing.spawner.kernels.CustomEnvKernelSpecManager"


class NothingLocalSpawner(SchedulerGpusMixin, SimpleLocalProcessSpawner):
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

    max_notebook_gpus = Integer(
        8,
        help="""Most GPUs a user may ask for a notebook in the spawn form (0 hides the choice).

        The GPUs come from the scheduler, count against the user's quota and are
        never preempted. Example: ``c.NothingLocalSpawner.max_notebook_gpus = 2``
        """,
    ).tag(config=True)

    @default("options_form")
    def _default_options_form(self):
        if not self.max_notebook_gpus:
            return ""
        return (f'<label for="nothing-gpus">GPUs for this notebook</label> '
                f'<input id="nothing-gpus" name="gpus" type="number" min="0" max="{self.max_notebook_gpus}" '
                f'value="0" class="form-control">')

    def options_from_form(self, formdata):
        raw = (formdata.get("gpus") or ["0"])[0] or "0"
        try:
            gpus = int(raw)
        except ValueError:
            raise ValueError(f"GPUs must be a whole number, not {raw!r}") from None
        return {"gpus": gpus}

    def requested_gpus(self) -> int:
        gpus = self.user_options.get("gpus", 0)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= self.max_notebook_gpus:
            raise ValueError(f"a notebook may have 0 to {self.max_notebook_gpus} GPUs, not {gpus!r}")
        return gpus

    async def start(self):
        # The scheduler assigns the GPUs (and refuses, with the reason, when it cannot).
        return await self.start_holding_gpus(self.requested_gpus(), self._start_after_scripts)

    async def _start_after_scripts(self):
        root = Path(self.home_dir)
        root.mkdir(parents=True, exist_ok=True)
        # The user's start-up scripts run before every start, as in the images' entrypoint.
        await asyncio.to_thread(run_cont_init, root, self.cont_init_timeout, self.log, env=self.get_env())
        return await super().start()

    async def stop(self, now=False):
        await super().stop(now=now)
        await self.release_gpus()  # also after the process died on its own

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
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.notebook_gpus))
        return env

    def get_state(self):
        state = super().get_state()
        state.update(self.gpu_state())
        return state

    def load_state(self, state):
        super().load_state(state)
        self.load_gpu_state(state)

    # clear_state() leaves notebook_gpus alone: LocalProcessSpawner.poll() clears the
    # state as soon as the process is gone, and stop() must still give the GPUs back.
