"""/api/notebooks: GPUs for notebook servers, asked for by the spawner with the server's own token when it starts.

Only that token may hold GPUs for its server: it carries
``access:servers!server=<user>/<server>`` (JupyterHub gives every server token that
scope, ``SERVER_TOKEN_SCOPES``), which a user's own token (``access:servers!user=``)
and an admin's (``access:servers``) do not.  The hub must also list the server as
starting or running, so no one holds GPUs outside the queue for a server that does
not exist.
"""

from __future__ import annotations

from traitlets import Integer
from traitlets.config import Configurable
from tornado import web

from ..dispatcher import NotebookGpusUnavailable
from .base import APIHandler, hub_api, hub_user_path

MAX_SERVER_NAME_CHARS = 255


class NotebookGpuLimits(Configurable):
    """Bounds on what a notebook server may hold."""

    max_external_gpus = Integer(
        64,
        help="""Most GPUs a notebook whose devices are placed by someone else (Kubernetes' device
        plugin) may count against its quotas; local notebooks are bounded by the largest node.
        Example: ``c.NotebookGpuLimits.max_external_gpus = 16``
        """,
    ).tag(config=True)


def notebook_limits(settings: dict) -> NotebookGpuLimits:
    limits = settings.get("nothing_notebook_limits")
    if limits is None:
        limits = settings["nothing_notebook_limits"] = NotebookGpuLimits(parent=settings.get("scheduler"))
    return limits


def server_scope(owner: str, server: str) -> str:
    """The scope JupyterHub puts on a server's own token, and on no other."""
    return f"access:servers!server={owner}/{server}"


class NotebooksHandler(APIHandler):
    async def get(self):
        everyone = self.listing_everyone("notebooks")
        holds = [h.to_dict() for h in self.dispatcher.notebooks.values() if everyone or h.owner == self.username]
        self.write_json({"notebooks": holds})

    async def post(self):
        body = self.json_body()
        server, gpus, external = body.get("server", ""), body.get("gpus"), body.get("external", False)
        if not isinstance(server, str) or isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1 \
                or not isinstance(external, bool) or set(body) - {"server", "gpus", "external"}:
            raise web.HTTPError(400, "send {\"server\": NAME, \"gpus\": N, \"external\": false} with N at least 1")
        if len(server) > MAX_SERVER_NAME_CHARS:
            raise web.HTTPError(400, f"a server name has at most {MAX_SERVER_NAME_CHARS} characters")
        if external and gpus > notebook_limits(self.settings).max_external_gpus:
            raise web.HTTPError(400, f"the notebook asks for {gpus} GPUs; a notebook may count at most "
                                     f"{notebook_limits(self.settings).max_external_gpus}")
        if not external and gpus > self.scheduler.max_gpus_per_node:
            raise web.HTTPError(400, f"the notebook asks for {gpus} GPUs, but the largest node has "
                                     f"{self.scheduler.max_gpus_per_node}")
        if server_scope(self.username, server) not in (self.current_user.get("scopes") or ()):
            raise web.HTTPError(403, f"only the notebook server {self.username}/{server} itself, with its own "
                                     "token, may hold GPUs for it: start the server through the hub")
        await self.check_server_exists(server)
        groups = sorted(self.current_user.get("groups") or [])
        try:
            hold = await self.dispatcher.hold_notebook_gpus(self.username, server, groups[0] if groups else "", gpus,
                                                            external=external)
        except NotebookGpusUnavailable as e:
            raise web.HTTPError(409, str(e)) from None
        self.write_json(dict(hold.to_dict(), release_token=hold.release_token), status=201)

    async def check_server_exists(self, server: str) -> None:
        """409 unless the hub lists the server as starting or running; 503 when the hub cannot tell."""
        user = await hub_api(self, hub_user_path(self.username))
        if not isinstance(user, dict) or not isinstance(user.get("servers"), dict):
            raise web.HTTPError(503, "the hub did not say which servers are running; try again")
        if server not in user["servers"]:
            raise web.HTTPError(409, f"the hub has no server {self.username}/{server} starting or running")

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

    requires_login = False

    async def post(self):
        body = self.json_body()
        owner, server, token = body.get("owner"), body.get("server", ""), body.get("release_token")
        if not all(isinstance(v, str) for v in (owner, server, token)):
            raise web.HTTPError(400, "send {\"owner\": NAME, \"server\": NAME, \"release_token\": TOKEN}")
        if not token.isascii():
            raise web.HTTPError(404, "no such GPU hold (or the release token does not match)")
        if not await self.dispatcher.release_notebook_gpus(owner, server, release_token=token):
            raise web.HTTPError(404, "no such GPU hold (or the release token does not match)")
        self.set_status(204)
        self.finish()


default_handlers = [(r"/api/notebooks/?", NotebooksHandler), (r"/api/notebooks/release", NotebookReleaseHandler)]
