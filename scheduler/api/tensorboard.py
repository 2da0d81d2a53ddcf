"""TensorBoard behind the platform's login, at stable URLs under the service prefix.

* ``<prefix>tensorboard/run/<id>/`` shows one run's ``EM_TENSORBOARD_LOG_DIR``;
* ``<prefix>tensorboard/experiment/<owner>/<experiment>/`` shows every run of an
  experiment side by side (one TensorBoard "run" per training run).

Only the owner, admins and, when ``TensorBoardManager.group_access`` is on, users
who share a JupyterHub group with the owner may open a board; anyone else gets 404
(as for the runs API, a board never tells whether a run exists).  The first visit
starts the board (``nothing.scheduler.tensorboard``); the proxy forwards requests to
it without the caller's cookies or token.  Callers are identified by the service's
one access rule (``nothing.scheduler.auth``), and the boards' pages may not be
framed by other sites.
"""

from __future__ import annotations

import asyncio
import json
import time
from html import escape
from pathlib import Path
from urllib.parse import quote, urlparse

from sqlalchemy import select
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..orm import Run
from ..runenv import RunPaths
from ..tensorboard import TensorBoardError, TensorBoardManager
from .base import APIHandler, BoundedBodyMixin, HubUserMixin, authenticate, is_admin, parse_id

# Request headers TensorBoard may see; cookies and Authorization never reach it.
FORWARD_REQUEST_HEADERS = ("Accept", "Accept-Encoding", "Accept-Language", "Content-Type", "If-None-Match",
                           "If-Modified-Since", "X-Requested-With")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "set-cookie", "server", "date", "x-frame-options"}


def tensorboard_manager(settings: dict) -> TensorBoardManager:
    """The application's manager (``settings["tensorboards"]``), created on first use when not wired."""
    manager = settings.get("tensorboards")
    if manager is None:
        manager = settings["tensorboards"] = TensorBoardManager(parent=settings.get("scheduler"))
    return manager


def run_board_url(prefix: str, run_id: int | str) -> str:
    return f"{prefix}tensorboard/run/{run_id}/"


def experiment_board_url(prefix: str, owner: str, experiment: str) -> str:
    return f"{prefix}tensorboard/experiment/{quote(owner, safe='')}/{quote(experiment, safe='')}/"


def _get_run(session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def _experiment_runs(session, owner: str, experiment: str) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.owner == owner, Run.experiment == experiment)
                                .order_by(Run.id)))


MAX_BOARD_NAME = 160


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", "="), default=str)
    return text if len(text) <= 24 else text[:21] + "..."


def board_name(run: Run) -> str:
    """A TensorBoard run name for a training run: ``run-<id> <name> lr=0.1 batch=32``.

    Hyperparameters are sorted by name so runs of one experiment line up; TensorBoard's
    separators (``:`` and ``,`` in ``--logdir_spec``) become ``_``, and a long label is cut.
    TensorBoard itself adds ``/.`` when the event files lie directly in the run's folder.
    """
    parts = [f"run-{run.id}"] + ([run.name] if run.name else [])
    parts += [f"{key}={_short(value)}" for key, value in sorted((run.hyperparameters or {}).items())]
    label = " ".join(parts).replace(":", "_").replace(",", "_").replace("\n", " ")
    return label if len(label) <= MAX_BOARD_NAME else label[:MAX_BOARD_NAME - 3] + "..."


class HubGroups:
    """Group membership from the hub API (the service's own token has ``read:users``), cached briefly."""

    ttl = 30.0

    def __init__(self, hub_auth):
        self.hub_auth = hub_auth
        self._cache: dict[str, tuple[float, set[str]]] = {}

    async def of(self, name: str) -> set[str]:
        hit = self._cache.get(name)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        url = f"{self.hub_auth.api_url}/users/{quote(name, safe='')}"
        try:
            r = await AsyncHTTPClient().fetch(url, headers={"Authorization": f"token {self.hub_auth.api_token}"},
                                              request_timeout=10)
            groups = set(json.loads(r.body).get("groups") or ())
        except (HTTPClientError, OSError, ValueError):
            groups = set()
        self._cache[name] = (time.monotonic(), groups)
        return groups


def hub_groups(handler) -> HubGroups:
    groups = handler.settings.get("nothing_hub_groups")
    if groups is None:
        groups = handler.settings["nothing_hub_groups"] = HubGroups(handler.hub_auth)
    return groups


async def may_view(handler, owner: str) -> bool:
    """Owner, admin, or a fellow group member where the manager allows group access."""
    user = handler.current_user
    if user["name"] == owner or is_admin(user):
        return True
    if not tensorboard_manager(handler.settings).group_access:
        return False
    groups = hub_groups(handler)
    return bool(await groups.of(user["name"]) & await groups.of(owner))


class TensorBoardProxyHandler(HubUserMixin, BoundedBodyMixin):
    """Starts the board on first visit and reverse-proxies it; browsers without a login go to the hub's."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST")

    def set_default_headers(self) -> None:
        self.deny_framing()

    @property
    def dispatcher(self):
        return self.settings["dispatcher"]

    @property
    def public_prefix(self) -> str:
        raise NotImplementedError

    def check_xsrf_cookie(self) -> None:
        """TensorBoard's own scripts send no XSRF token: accept same-origin requests made from the board's pages.

        ``Sec-Fetch-Site`` is set by the browser and cannot be forged by a script; the
        Referer must be a page of this board.  Requests without fetch metadata fall
        back to JupyterHub's token check.
        """
        site = self.request.headers.get("Sec-Fetch-Site")
        referer = urlparse(self.request.headers.get("Referer", "")).path
        if site in ("same-origin", "none") and (site == "none" or referer.startswith(self.public_prefix)):
            return
        self.hub_auth.check_xsrf_cookie(self)

    async def admit(self) -> None:
        if await authenticate(self) is None:
            if self.request.method in ("GET", "HEAD"):
                self.redirect(self.get_login_url())
                return
            raise web.HTTPError(403, "authentication required: log in through the hub")
        self.check_declared_length()

    async def locate(self, *args) -> tuple[str, dict[str, str]]:
        """``(key, logdirs)`` of the board, after the access check."""
        raise NotImplementedError

    async def get(self, *args) -> None:
        *ids, rest = args
        if rest is None:
            query = f"?{self.request.query}" if self.request.query else ""
            self.redirect(self.request.path + "/" + query, permanent=False)
            return
        key, logdirs = await self.locate(*ids)
        if not logdirs:
            raise web.HTTPError(404, "no TensorBoard logs yet: the run writes them to EM_TENSORBOARD_LOG_DIR")
        manager = tensorboard_manager(self.settings)
        try:
            board = await manager.ensure(key, logdirs)
        except TensorBoardError as e:
            raise web.HTTPError(503, str(e)) from None
        await self.forward(board, rest)

    head = get
    post = get

    async def forward(self, board, rest: str) -> None:
        # ``rest`` arrives percent-decoded; quote it again so no space, "?" or newline changes the request.
        url = board.url + quote(rest) + (f"?{self.request.query}" if self.request.query else "")
        headers = {h: self.request.headers[h] for h in FORWARD_REQUEST_HEADERS if h in self.request.headers}
        body = self.body if self.request.method == "POST" else None
        request = HTTPRequest(url, method=self.request.method, headers=headers, body=body, follow_redirects=False,
                              decompress_response=False, request_timeout=120, allow_nonstandard_methods=True)
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, ValueError) as e:
            raise web.HTTPError(502, f"TensorBoard did not answer: {e}") from None
        if response.code == 599:
            raise web.HTTPError(502, f"TensorBoard did not answer: {response.error}")
        board.touch()
        self.set_status(response.code, response.reason)
        self.clear_header("Content-Type")
        for name, value in response.headers.get_all():
            if name.lower() in HOP_BY_HOP:
                continue
            if name.lower() == "location" and value.startswith(board.prefix):
                value = self.public_prefix.rstrip("/") + value[len(board.prefix):]
            self.add_header(name, value)
        if response.body and self.request.method != "HEAD":
            self.write(response.body)
        self.finish()

    def error_payload(self, status: int, message: str) -> tuple[str, bytes]:
        page = f"<!doctype html><title>TensorBoard</title><h2>{status}</h2><p>{escape(message)}</p>"
        return "text/html; charset=utf-8", page.encode()


class RunTensorBoardHandler(TensorBoardProxyHandler):
    @property
    def public_prefix(self) -> str:
        return run_board_url(self.settings["service_prefix"], self.path_args[0])

    async def locate(self, run_id: str) -> tuple[str, dict[str, str]]:
        row = await self.dispatcher.db.run(_get_run, parse_id(run_id))
        if row is None or not await may_view(self, row.owner):
            raise web.HTTPError(404, f"run {run_id} not found")
        folder = RunPaths(Path(row.run_dir)).tensorboard
        exists = await asyncio.to_thread(folder.is_dir)
        return f"run/{row.id}", ({board_name(row): str(folder)} if exists else {})


class ExperimentTensorBoardHandler(TensorBoardProxyHandler):
    @property
    def public_prefix(self) -> str:
        owner, experiment = self.path_args[:2]  # tornado has percent-decoded them
        return experiment_board_url(self.settings["service_prefix"], owner, experiment)

    async def locate(self, owner: str, experiment: str) -> tuple[str, dict[str, str]]:
        if "\0" in owner + experiment or not await may_view(self, owner):  # PostgreSQL refuses NUL in text
            raise web.HTTPError(404, f"experiment {experiment!r} of {owner} not found")
        rows = await self.dispatcher.db.run(_experiment_runs, owner, experiment)
        if not rows:
            raise web.HTTPError(404, f"experiment {experiment!r} of {owner} not found")
        folders = {board_name(r): RunPaths(Path(r.run_dir)).tensorboard for r in rows}
        present = await asyncio.to_thread(lambda: {k: str(v) for k, v in folders.items() if v.is_dir()})
        return f"experiment/{owner}/{experiment}", present


class TensorBoardsHandler(APIHandler):
    """``GET /api/tensorboards``: the boards running now (admins), for the admin page."""

    async def get(self):
        if not self.is_admin:
            raise web.HTTPError(403, "only admins may list TensorBoards")
        self.write_json({"tensorboards": tensorboard_manager(self.settings).describe()})


default_handlers = [
    (r"/tensorboard/run/(\d+)(/.*)?", RunTensorBoardHandler),
    (r"/tensorboard/experiment/([^/]+)/([^/]+)(/.*)?", ExperimentTensorBoardHandler),
    (r"/api/tensorboards/?", TensorBoardsHandler),
]
