"""What every API handler shares: JupyterHub authentication, JSON in and out, one error writer."""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

from ..dispatcher import Dispatcher


class APIHandler(HubOAuthenticated, web.RequestHandler):
    """Identifies the caller through JupyterHub (API token or the service's OAuth cookie)."""

    @property
    def dispatcher(self) -> Dispatcher:
        return self.settings["dispatcher"]

    @property
    def scheduler(self):
        return self.settings["scheduler"]

    async def prepare(self) -> None:
        # HubAuth's get_current_user blocks on the hub API; resolve the user
        # asynchronously here and let get_current_user read the cache.
        model = await self.hub_auth.get_user(self, sync=False)
        user = None
        if model:
            if self.hub_scopes and not self.hub_auth.check_scopes(self.hub_scopes, model):
                raise web.HTTPError(403, f"{model.get('kind', 'user')} {model.get('name')} may not use this service")
            user = model
        self._hub_auth_user_cache = user
        if user is None:
            raise web.HTTPError(403, "authentication required: send a JupyterHub API token or log in through the hub")

    @property
    def username(self) -> str:
        return self.current_user["name"]

    @property
    def is_admin(self) -> bool:
        return bool(self.current_user.get("admin"))

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def json_body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as e:
            raise web.HTTPError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return body

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        if isinstance(exc, web.HTTPError) and exc.args[1:]:
            message = message % exc.args[1:]
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"status": status_code, "message": message}))
