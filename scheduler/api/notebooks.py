"""/api/notebooks: GPUs for notebook servers, asked for by the spawner as the user when a server starts."""

from __future__ import annotations

from tornado import web

from ..dispatcher import NotebookGpusUnavailable
from .base import APIHandler


class NotebooksHandler(APIHandler):
    async def get(self):
        everyone = self.get_argument("all", "0") in ("1", "true")
        if everyone and not self.is_admin:
            raise web.HTTPError(403, "only admins may list other users' notebooks")
        holds = [h.to_dict() for h in self.dispatcher.notebooks.values() if everyone or h.owner == self.username]
        self.write_json({"notebooks": holds})

    async def post(self):
        body = self.json_body()
        server, gpus, external = body.get("server", ""), body.get("gpus"), body.get("external", False)
        if not isinstance(server, str) or isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1 \
                or not isinstance(external, bool):
            raise web.HTTPError(400, "send {\"server\": NAME, \"gpus\": N, \"external\": false} with N at least 1")
        if not external and gpus > self.scheduler.max_gpus_per_node:
            raise web.HTTPError(400, f"the notebook asks for {gpus} GPUs, but the largest node has "
                                     f"{self.scheduler.max_gpus_per_node}")
        groups = sorted(self.current_user.get("groups") or [])
        try:
            hold = await self.dispatcher.hold_notebook_gpus(self.username, server, groups[0] if groups else "", gpus,
                                                            external=external)
        except NotebookGpusUnavailable as e:
            raise web.HTTPError(409, str(e)) from None
        self.write_json(dict(hold.to_dict(), release_token=hold.release_token), status=201)

    async def delete(self):
        server = self.get_argument("server", "")
        if not await self.dispatcher.release_notebook_gpus(self.username, server):
            raise web.HTTPError(404, f"notebook {server or '(default)'} holds no GPUs")
        self.set_status(204)
        self.finish()


class NotebookReleaseHandler(APIHandler):
    """Give a notebook's GPUs back with the hold's release token.

    The spawner calls this when the server stops, after JupyterHub has already
    revoked the server's own token; the token handed out with the GPUs is the proof.
    """

    async def prepare(self) -> None:
        pass

    async def post(self):
        body = self.json_body()
        owner, server, token = body.get("owner"), body.get("server", ""), body.get("release_token")
        if not all(isinstance(v, str) for v in (owner, server, token)):
            raise web.HTTPError(400, "send {\"owner\": NAME, \"server\": NAME, \"release_token\": TOKEN}")
        if not await self.dispatcher.release_notebook_gpus(owner, server, release_token=token):
            raise web.HTTPError(404, "no such GPU hold (or the release token does not match)")
        self.set_status(204)
        self.finish()


default_handlers = [(r"/api/notebooks/?", NotebooksHandler), (r"/api/notebooks/release", NotebookReleaseHandler)]
