"""What a spawner does to give a notebook GPUs through the scheduler, shared by the local and Kubernetes spawners.

At start the spawner asks the scheduler, as the user (with the server's own
token), for the notebook's GPUs; the scheduler assigns them (local) or only
counts them against the user's and group's quotas (Kubernetes, where the device
plugin picks the devices), and refuses with the reason when it cannot.  At stop
the hub has already revoked the server's token, so the hold's release token,
kept in the spawner state, gives them back.
"""

from __future__ import annotations

import json

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError


class SchedulerRefusal(web.HTTPError):
    """The scheduler's refusal of a notebook's GPUs, as JupyterHub shows it on the spawn page.

    JupyterHub renders a spawn failure's ``jupyterhub_message`` on the spawn form, the
    spawn-pending page and in the progress events; without it the user sees only
    "HTTP 500: Internal Server Error" and the reason stays in the hub's log.  It is an
    ``HTTPError`` (with the scheduler's status and sentence as ``log_message``) so the
    form's answer carries that status rather than 500.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status if 400 <= status < 600 else 500, "%s", message)
        self.message = message
        self.jupyterhub_message = f"The notebook cannot get its GPUs: {message}"

    def __str__(self) -> str:
        return self.message


class SchedulerGpusMixin:
    """Mixed into a JupyterHub Spawner (needs ``environment``, ``api_token``, ``user``, ``name``, ``log``)."""

    notebook_gpus: tuple[int, ...] = ()
    gpu_release_token: str = ""

    async def _scheduler(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        base = self.environment.get("NOTHING_SERVICE_URL", "")
        if not base:
            raise RuntimeError("NOTHING_SERVICE_URL is not configured: notebooks cannot get GPUs")
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"token {self.api_token}"
        try:
            response = await AsyncHTTPClient().fetch(
                base.rstrip("/") + "/api" + path, method=method, headers=headers, request_timeout=30,
                body=json.dumps(body) if body is not None else None, allow_nonstandard_methods=True)
        except HTTPClientError as e:
            message = e.message
            if e.response is not None and e.response.body:
                try:
                    message = json.loads(e.response.body).get("message", message)
                except (ValueError, AttributeError):
                    pass
            raise SchedulerRefusal(e.code, message) from None
        except OSError as e:
            raise SchedulerRefusal(503, f"the GPU scheduler cannot be reached ({e}); try again shortly") from None
        return json.loads(response.body) if response.body else None

    async def largest_node_gpus(self) -> int | None:
        """The largest node's GPUs, from the scheduler (``GET /api/gpus/shape``); ``None`` when it cannot say.

        A notebook runs on one node, so no notebook can get more.  Asked without a token:
        the spawn form is drawn before the server (and its token) exists.
        """
        try:
            shape = await self._scheduler("GET", "/gpus/shape", auth=False)
            gpus = shape["largest_node_gpus"]
        except (RuntimeError, web.HTTPError, ValueError, KeyError, TypeError) as e:
            self.log.warning("The spawn form cannot ask the scheduler for its nodes' GPUs: %s", e)
            return None
        return gpus if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0 else None

    async def hold_gpus(self, count: int, external: bool = False) -> tuple[int, ...]:
        """Ask the scheduler for ``count`` GPUs for this server; raises ``SchedulerRefusal`` with its reason."""
        self.notebook_gpus, self.gpu_release_token = (), ""
        if count:
            hold = await self._scheduler("POST", "/notebooks", {"server": self.name, "gpus": count,
                                                               "external": external})
            self.notebook_gpus, self.gpu_release_token = tuple(hold["gpus"]), hold["release_token"]
        return self.notebook_gpus

    async def start_holding_gpus(self, count: int, start, external: bool = False):
        """Hold ``count`` GPUs, then await ``start()``; the GPUs go back if the start fails."""
        await self.hold_gpus(count, external=external)
        try:
            return await start()
        except BaseException:
            await self.release_gpus()
            raise

    async def release_gpus(self) -> None:
        if not self.gpu_release_token:
            return
        body = {"owner": self.user.name, "server": self.name, "release_token": self.gpu_release_token}
        self.notebook_gpus, self.gpu_release_token = (), ""
        try:
            await self._scheduler("POST", "/notebooks/release", body, auth=False)
        except (RuntimeError, web.HTTPError) as e:
            self.log.warning("Could not release the GPUs of %s: %s", self._log_name, e)

    def gpu_state(self) -> dict:
        if not self.gpu_release_token:
            return {}
        return {"notebook_gpus": list(self.notebook_gpus), "gpu_release_token": self.gpu_release_token}

    def load_gpu_state(self, state: dict) -> None:
        self.notebook_gpus = tuple(state.get("notebook_gpus", ()))
        self.gpu_release_token = state.get("gpu_release_token", "")
