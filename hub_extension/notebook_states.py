"""Notebook states as the EasyMaker seed names them, from what JupyterHub knows about each server.

JupyterHub can tell a server that is starting, running and answering, running but
not answering, stopping, stopped, or whose last start failed; those map onto the
seed's ``START IN PROGRESS``, ``ACTIVE (HEALTHY)``, ``ACTIVE (UNHEALTHY)``,
``STOP IN PROGRESS``, ``STOPPED`` and ``START FAILED``.  States the hub cannot
observe (reboot, delete in progress) are not invented.
"""

from __future__ import annotations

from typing import Any


def notebook_state(spawner: Any) -> str:
    """The seed's state for one JupyterHub spawner (anything with ``pending``, ``ready``, ``active``, ``_failed``)."""
    if spawner.pending == "spawn":
        return "START IN PROGRESS"
    if spawner.pending == "stop":
        return "STOP IN PROGRESS"
    if spawner.pending == "delete":
        return "DELETE IN PROGRESS"
    if spawner.ready:
        return "ACTIVE (HEALTHY)"
    if spawner.active:
        return "ACTIVE (UNHEALTHY)"
    if getattr(spawner, "_failed", False):
        return "START FAILED"
    return "STOPPED"


def user_notebook_states(user) -> list[dict[str, str]]:
    """``c.JupyterHub.template_vars`` callable: every server of the user with its state, default first.

    JupyterHub calls it for every page, the login page included, where there is no user.
    """
    if user is None:
        return []
    rows = []
    for spawner in user.all_spawners(include_default=True):
        rows.append({"name": spawner.name or "(default)", "state": notebook_state(spawner)})
    return rows
