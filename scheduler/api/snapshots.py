"""/api/runs/<id>/snapshot: a run's code, for the init container of its Kubernetes pod.

Pods have no hub login and no shared filesystem.  The Kubernetes executor gives each run's pods a
token of their own (``kube_objects.snapshot_token``: an HMAC of the run id under the executor's key,
kept in a Secret only the pod reads); this handler answers with the run's code (the stored snapshot,
or its unpacked source folder packed again) to that token alone, while the run is starting or
running.  Any other case (no such run, a run that has ended, another run's token, an executor
without snapshot tokens) is the same 404, so nothing is learnt from the status.
"""

from __future__ import annotations

import asyncio
import hmac

from tornado import web

from ..executors.kube_objects import snapshot_token
from ..rundir import stored_code
from .base import APIHandler, parse_id

NOT_FOUND = "no such run, or the token does not open its code"


class SnapshotHandler(APIHandler):
    requires_login = False

    async def get(self, run_id):
        number = parse_id(run_id)
        key_of = getattr(self.dispatcher.executor, "snapshot_key", None)
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if key_of is None or scheme.lower() != "token" or not token.isascii():
            raise web.HTTPError(404, NOT_FOUND)
        expected = snapshot_token(await asyncio.to_thread(key_of), number)
        run = self.dispatcher.active.get(number)
        if not hmac.compare_digest(token.encode(), expected.encode()) or run is None or not run.state.holds_gpus:
            raise web.HTTPError(404, NOT_FOUND)
        account = await self.dispatcher.account(run.owner)
        archive = await self.dispatcher.helper.call(stored_code, run.run_dir,
                                                    *((account.uid, account.gid) if account else ()))
        if archive is None:
            raise web.HTTPError(404, NOT_FOUND)
        self.set_header("Content-Type", "application/gzip")
        self.finish(archive)


default_handlers = [(r"/api/runs/(\d+)/snapshot", SnapshotHandler)]
