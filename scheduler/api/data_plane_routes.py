"""GET /_nothing/route: nginx's question "where does this call go?" (its ``auth_request``; see ``data_plane.py``).

nginx sends the call's URI, method and Authorization header, without the body, and caches the answer per
client connection for ``c.EndpointController.route_cache_seconds``.  The answer is always 200 (nginx turns
other statuses into 500) with headers:

- ``X-Nothing-Upstream``: a replica's upstream group (``nothing_p41000``) or ``host:port``, picked round
  robin, so the cached answers spread client connections over the replicas; or ``nothing_python``, the
  service's own gateway, for anything that is not a ready replica of a caller who may use it (no or a bad
  token, no permission, an unknown endpoint, stage or path, no replica ready): that gateway then answers it
  exactly as it does through the hub's proxy;
- ``X-Nothing-Path``: the replica's path (``/v1/models/NAME:predict``), or the call's own URI;
- ``X-Nothing-Replica``: the replica's secret; ``X-Nothing-Stage``: the stage id, for its statistics.

Only nginx may ask: the request must carry the data plane's secret (in nginx.conf, readable by root only),
and the handler listens on loopback only; anyone else gets 404 and learns no replica secret.
"""

from __future__ import annotations

import hmac
import re

from tornado import web

from nothing.common.access import INFERENCE_SCOPE, SERVICE_NAME

from ..auth import HubUserMixin, authenticate
from ..data_plane import ROUTE_LOCATION, SECRET_HEADER, UPSTREAM_PYTHON
from .inference import endpoint_scope, find_route, replica_path

# What nginx may send to a replica itself: a plain path (anything escaped, or with a query, is the Python
# gateway's to parse, as it always has).
_PLAIN = re.compile(r"/serve/([a-z0-9-]{1,40})/([A-Za-z0-9/_.:-]*)")


class RouteHandler(HubUserMixin, web.RequestHandler):
    _endpoint = ""

    @property
    def hub_scopes(self):
        return {f"access:services!service={SERVICE_NAME}", INFERENCE_SCOPE, endpoint_scope(self._endpoint)}

    def check_xsrf_cookie(self) -> None:
        """A GET from nginx with a token: nothing a browser's cookie could forge."""

    async def get(self) -> None:
        secret = self.settings["data_plane_secret"]
        if not hmac.compare_digest(self.request.headers.get(SECRET_HEADER, "").encode(), secret.encode()):
            raise web.HTTPError(404)
        for name, value in (await self.answer()).items():
            self.set_header(name, value)
        self.finish()

    async def answer(self) -> dict[str, str]:
        uri = self.request.headers.get("X-Original-URI", "")
        python = {"X-Nothing-Upstream": UPSTREAM_PYTHON, "X-Nothing-Path": uri or "/"}
        plain = _PLAIN.fullmatch(uri)
        # Programs call with tokens; calls by cookie (refused) or query token are the Python gateway's.
        if (plain is None or self.request.headers.get("X-Original-Method") != "POST"
                or "Authorization" not in self.request.headers):
            return python
        self._endpoint = plain[1]
        try:
            if await authenticate(self) is None:
                return python
            controller = self.settings["scheduler"].endpoints
            stage_id, route, protocol = find_route(controller.routes, self.principal, plain[1], plain[2])
        except web.HTTPError:
            return python  # the Python gateway says why, in the same words
        replica = route.pick()
        upstream = controller.upstream_of(replica) if replica is not None else None
        if replica is None or upstream is None:
            return python
        return {"X-Nothing-Upstream": upstream, "X-Nothing-Path": replica_path(route.model, protocol),
                "X-Nothing-Replica": replica.token, "X-Nothing-Stage": str(stage_id)}


default_handlers = [(ROUTE_LOCATION, RouteHandler)]
