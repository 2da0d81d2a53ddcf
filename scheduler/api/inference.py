"""/serve/ENDPOINT/...: inference calls, through the platform, to an endpoint's model servers (the seed's
엔드포인트 추론 호출).

``POST /serve/ENDPOINT/inference`` calls the default stage's resource ``/inference`` with the seed's
shape, ``{"instances": [...]}`` → ``{"predictions": [...]}`` (KServe's V1 protocol);
``POST .../inference/infer`` speaks the Open Inference Protocol (V2); ``/serve/ENDPOINT/stages/STAGE/...``
calls a named stage.  The caller needs a JupyterHub token of a user who may use the endpoint,
carrying the service's access scope or the inference scope ``custom:nothing:inference``,
optionally narrowed to one endpoint (``custom:nothing:inference!service=endpoint-NAME``).

The body goes to a ready replica as it came (no parsing), round robin, over kept-alive
connections; a replica that refuses the connection is skipped and the next one tried, so a
replica that just ended or a default-stage change loses no request.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp
from tornado import web

from nothing.common.access import INFERENCE_SCOPE, SERVICE_NAME

from ..dispatcher import utcnow
from ..endpoint_spec import V2_SUFFIX
from ..ownership import may
from .base import APIHandler

if TYPE_CHECKING:
    from ..endpoints import Route

_FORWARDED_HEADERS = ("Content-Type", "Accept")


def endpoint_scope(endpoint: str) -> str:
    """The scope that lets a token call this one endpoint and nothing else of the service."""
    return f"{INFERENCE_SCOPE}!service=endpoint-{endpoint}"


def find_route(routes: dict, principal, endpoint: str, rest: str) -> tuple[int, Route, str]:
    """(stage id, route, protocol) of a call to ``/serve/ENDPOINT/REST`` by ``principal``, or the 404 saying what
    is missing: one rule for this gateway and for nginx's route answers (``data_plane_routes``)."""
    table = routes.get(endpoint)
    if table is None or not may(principal, "use", table.owner, table.group):
        raise web.HTTPError(404, f"endpoint {endpoint[:100]!r} not found (or not ready yet)")
    stage = table.default_stage
    path = "/" + rest
    if rest.startswith("stages/"):
        _, stage, *parts = rest.split("/", 2) + [""]
        path = "/" + (parts[0] if parts else "")
    if stage is None or stage not in table.stages:
        raise web.HTTPError(404, f"endpoint {endpoint} has no stage {stage!r} serving")
    stage_id, paths = table.stages[stage]
    route, protocol = paths.get(path), "v1"
    if route is None and path.endswith(V2_SUFFIX):
        route, protocol = paths.get(path[:-len(V2_SUFFIX)]), "v2"
    if route is None:
        raise web.HTTPError(404, f"stage {stage} of endpoint {endpoint} serves nothing at {path[:200]} "
                                 f"(serving: {', '.join(sorted(paths)) or 'nothing yet'})")
    return stage_id, route, protocol


def replica_path(model: str, protocol: str) -> str:
    """Where a replica's model server answers a call of ``protocol`` (KServe's V1, or V2)."""
    return f"/v1/models/{model}:predict" if protocol == "v1" else f"/v2/models/{model}/infer"


class InferenceHandler(APIHandler):
    @property
    def max_body_bytes(self) -> int:
        return int(self.scheduler.endpoints.max_request_bytes)

    @property
    def hub_scopes(self):
        name = self.path_args[0] if self.path_args else ""
        return {f"access:services!service={SERVICE_NAME}", INFERENCE_SCOPE, endpoint_scope(name)}

    def check_xsrf_cookie(self) -> None:
        """Programs call with tokens; a browser's cookie alone is refused (no cross-site calls through it)."""
        if "Authorization" not in self.request.headers and "token" not in self.request.query_arguments:
            raise web.HTTPError(403, "call endpoints with a JupyterHub token (Authorization: token ...)")

    async def post(self, endpoint: str, rest: str):
        controller = self.scheduler.endpoints
        stage_id, route, protocol = find_route(controller.routes, self.principal, endpoint, rest)
        started = time.perf_counter()
        status = 502
        try:
            status = await self._forward(controller, route, protocol)
        finally:
            controller.stats.observe(stage_id, time.perf_counter() - started, status >= 400, utcnow())

    async def _forward(self, controller, route, protocol: str) -> int:
        suffix = replica_path(route.model, protocol)
        headers = {k: v for k in _FORWARDED_HEADERS if (v := self.request.headers.get(k))}
        body = self.body
        tried: set[int] = set()
        while True:
            replica = route.pick(tried)
            if replica is None:
                raise web.HTTPError(503, "no replica of this stage resource is ready; try again shortly")
            tried.add(replica.run_id)
            headers["X-Nothing-Replica"] = replica.token
            replica.in_flight += 1
            try:
                async with controller.session.post(replica.url + suffix, data=body, headers=headers) as response:
                    data = await response.read()
                    status = response.status
                    content_type = response.headers.get("Content-Type", "application/json")
            except (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError):
                continue  # the replica is gone or going: the next one
            except asyncio.TimeoutError:
                raise web.HTTPError(504, f"the model server did not answer within {controller.request_timeout:.0f}s") \
                    from None
            finally:
                replica.in_flight -= 1
            self.set_status(status)
            self.set_header("Content-Type", content_type)
            self.finish(data)
            return status


default_handlers = [
    (r"/serve/([a-z0-9-]{1,40})/(.*)", InferenceHandler),
]
