"""Notebooks on the hub's own machine, each user with a persistent folder standing in for /root/easymaker.

The single-user server runs as the hub's user (there are no system accounts to
switch to on a one-machine install), in ``<easymaker_root>/<user>``; the folder is
kept when the server stops, and its path is exported as ``NOTHING_EASYMAKER_DIR``.
"""

from __future__ import annotations

import os

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode, default


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

    def get_args(self):
        args = super().get_args()
        # As root, jupyter-server refuses to start without --allow-root.
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")
        return args

    def get_env(self):
        env = super().get_env()
        env["NOTHING_EASYMAKER_DIR"] = self.home_dir
        return env
