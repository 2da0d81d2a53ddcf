"""How the scheduler joins a JupyterHub: a managed service, roles, and what notebooks need to reach it.

``configure_hub(c, ...)`` is what ``jupyterhub_config.py`` calls; the pieces are
separate functions so a deployment with its own config can take only what it needs.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from nothing.common.access import ADMIN_SCOPES, INFERENCE_SCOPE, SERVICE_NAME

__all__ = ["ADMIN_SCOPES", "SERVER_TOKEN_SCOPES", "SERVICE_COOKIE_OPTIONS", "SERVICE_NAME", "configure_hub",
           "platform_roles", "scheduler_service"]

# Cookies the service sets (OAuth token and state) are not sent on cross-site requests.
SERVICE_COOKIE_OPTIONS = {"samesite": "Lax"}

# What every single-user server's own token needs: the default server scopes,
# the right to call the scheduler on its user's behalf, and to show the user's
# groups to it (runs are charged to a group for quotas and fair share).
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={SERVICE_NAME}",
    "read:users:groups!user",
]


def scheduler_service(port: int, data_dir: str, extra_args: list[str] | None = None,
                      environment: dict[str, str] | None = None, name: str = SERVICE_NAME) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry that runs the scheduler as a managed service.

    ``python -m nothing.scheduler`` is the scheduler's supervisor (``nothing.scheduler.supervise``):
    it restarts a crashed scheduler at once, where the hub would notice only on its 30 s poll.
    """
    return {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "nothing.scheduler", f"--NothingScheduler.data_dir={data_dir}",
                    *(extra_args or [])],
        "environment": {"JUPYTERHUB_COOKIE_OPTIONS": json.dumps(SERVICE_COOKIE_OPTIONS), **(environment or {})},
        "oauth_no_confirm": True,
        # What an admin's browser login to the service may carry, so the admin page works
        # from the cookie alone; the hub grants it only to users who hold it.
        "oauth_client_allowed_scopes": ["admin-ui"],
        "display": True,
        "info": {"description": "GPU training queue"},
    }


def platform_roles(name: str = SERVICE_NAME) -> list[dict[str, Any]]:
    """Roles: every user may use the scheduler; the scheduler may read users, groups and servers.

    ``read:servers`` lets it check that a notebook server asking for GPUs exists.
    """
    return [
        {
            "name": "user",
            "description": "Standard user privileges, plus submitting runs to the GPU scheduler",
            "scopes": ["self", f"access:services!service={name}", INFERENCE_SCOPE],
        },
        {
            "name": "nothing-scheduler",
            "description": "What the GPU scheduler service needs from the hub",
            "scopes": ["read:users", "read:groups", "list:users", "read:servers"],
            "services": [name],
        },
    ]


def configure_hub(c, *, data_dir: str, service_port: int, scheduler_args: list[str] | None = None,
                  scheduler_environment: dict[str, str] | None = None) -> None:
    """Wire the scheduler into a JupyterHub config object ``c``."""
    service = scheduler_service(service_port, data_dir, scheduler_args, scheduler_environment)
    services = c.JupyterHub.services if "services" in c.JupyterHub else []
    roles = c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else []
    ours = {r["name"] for r in platform_roles()}
    c.JupyterHub.services = [s for s in services if s.get("name") != SERVICE_NAME] + [service]
    c.JupyterHub.load_roles = [r for r in roles if r["name"] not in ours] + platform_roles()
    scopes = dict(c.JupyterHub.custom_scopes) if "custom_scopes" in c.JupyterHub else {}
    scopes[INFERENCE_SCOPE] = {"description": "Call the NothingAI endpoints you may use, and nothing else"}
    c.JupyterHub.custom_scopes = scopes
    c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES
    env = dict(c.Spawner.environment) if "environment" in c.Spawner else {}
    env["NOTHING_SERVICE_URL"] = f"{service['url']}/services/{SERVICE_NAME}/"
    c.Spawner.environment = env
