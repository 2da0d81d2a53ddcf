"""The hub's data folder, kept private from the users' Unix accounts.

The folder holds what must never reach user code: the hub's database and cookie
secret (with either, anyone can log in as anyone), the proxy's pid file and the
scheduler's database.  Users' accounts may only pass through the folders that lead
to their own: ``users/<user>`` (their persistent folders) and
``scheduler/runs/<id>`` (each run's folder, owned by the run's user).
"""

from __future__ import annotations

import os
import stat

# Folders user accounts pass through (mode 0711: they can open what they know the name of, never list).
TRAVERSABLE = ("", "users", "scheduler", os.path.join("scheduler", "runs"))


def secure_data_dir(data_dir: str) -> None:
    """Create the traversable folders with mode 0711 and take group and others' rights off everything else there.

    Only the levels the services own are changed: nothing inside ``users/`` or
    ``scheduler/runs/`` (those belong to the users) and nothing below a private
    folder (its mode already keeps everyone out). Call it with the hub's umask at
    077, so that files created later are private too.
    """
    passable = {os.path.normpath(os.path.join(data_dir, rel)) for rel in TRAVERSABLE}
    for folder in sorted(passable):
        os.makedirs(folder, exist_ok=True)
        os.chmod(folder, 0o711)
    for folder in (data_dir, os.path.join(data_dir, "scheduler")):
        for entry in os.scandir(folder):
            path = os.path.normpath(entry.path)
            if path in passable or entry.is_symlink():
                continue
            mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
