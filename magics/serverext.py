"""A jupyter-server extension that lets JupyterLab reach the scheduler without its own login.

The single-user server already holds what the service needs: ``NOTHING_SERVICE_URL``
(set by the platform's spawner) and ``JUPYTERHUB_API_TOKEN`` (set by JupyterHub,
with ``access:services!service=nothing``).  This extension forwards
``<server>/nothing/api/<path>`` to ``<service>/api/<path>`` with that token, after
jupyter-server's own authentication (the server's owner, XSRF-checked), so the
browser never sees the token and needs no OAuth round trip to the service.
Responses are streamed chunk by chunk, so ``logs?follow=1`` follows live and ``views/stream`` (the
sidebar's server-sent events) is pushed as it comes.
Calls that are safe to repeat (reads, cancels, submissions with an
``Idempotency-Key``) are retried with back-off for up to ``RETRY_SECONDS`` while
the scheduler cannot be reached (it is restarting), before answering 502.

``<server>/nothing/config`` tells the front end where the service's pages live
(for TensorBoard links, which the browser opens directly under the service prefix).

Enabled by ``etc/jupyter/jupyter_server_config.d/nothing.json``.
"""

from __future__ import annotations

import asyncio
import os
import re
from urllib.parse import parse_qsl, urlencode, urlparse

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError

from ..common.backoff import Backoff

FORWARD_REQUEST_HEADERS = ("Accept", "Content-Type", "Idempotency-Key", "If-None-Match")
RETRY_SECONDS = 30.0
_CANCEL = re.compile(r"runs/\d+/cancel/?")
_STREAM = re.compile(r"views/stream/?")
FORWARD_RESPONSE_HEADERS = ("Content-Type", "Content-Disposition", "X-Log-Offset", "X-Run-State", "Location", "ETag")


def service_url() -> str | None:
    url = os.environ.get("NOTHING_SERVICE_URL")
    return url.rstrip("/") + "/" if url else None


class ServiceProxyHandler(JupyterHandler):
    """Forwards one API call to the scheduler as the server's user."""

    SUPPORTED_METHODS = ("GET", "POST", "DELETE")

    def check_xsrf_cookie(self) -> None:
        # JupyterLab's ServerConnection sends the token for every method; check GETs too,
        # since the answer may hold the user's data.
        return super().check_xsrf_cookie()

    async def _forward(self, path: str) -> None:
        base = service_url()
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        if not base or not token:
            raise web.HTTPError(503, "this server is not connected to a NothingAI scheduler "
                                     "(NOTHING_SERVICE_URL or JUPYTERHUB_API_TOKEN is not set)")
        # ``_xsrf`` (in the query where the browser cannot send headers: an EventSource) is this server's.
        query = self.request.query or ""
        if "_xsrf=" in query:
            query = urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "_xsrf"])
        url = base + "api/" + path + (f"?{query}" if query else "")
        headers = {h: self.request.headers[h] for h in FORWARD_REQUEST_HEADERS if h in self.request.headers}
        headers["Authorization"] = f"token {token}"
        started = False

        def on_chunk(chunk: bytes) -> None:
            nonlocal started
            if self._client_gone:
                # Raising here aborts the upstream request (e.g. a followed log nobody reads).
                raise StreamClosedError()
            started = True
            self.write(chunk)
            fut = self.flush()
            fut.add_done_callback(lambda f: f.exception())

        # A followed log and a view stream stay open as long as the browser reads them.
        endless = "follow=" in query or _STREAM.fullmatch(path) is not None
        request = HTTPRequest(
            url, method=self.request.method, headers=headers,
            body=self.request.body if self.request.method == "POST" else None,
            follow_redirects=False, request_timeout=0 if endless else 60,
            allow_nonstandard_methods=True, header_callback=self._on_header, streaming_callback=on_chunk,
        )
        # An endless answer gets a client of its own: the shared one runs at most 10 requests at once and
        # queues the rest, so a few open tabs' streams would hold up every other call.
        client = AsyncHTTPClient(force_instance=True) if endless else AsyncHTTPClient()
        try:
            await self._fetch(client, request, path, lambda: started)
        finally:
            if endless:
                client.close()

    async def _fetch(self, client: AsyncHTTPClient, request: HTTPRequest, path: str, started) -> None:
        delays = Backoff(initial=0.2, maximum=5.0, jitter=0.5, budget=RETRY_SECONDS).delays() \
            if self._repeatable(path) else iter(())
        while True:
            try:
                response = await client.fetch(request, raise_error=False)
            except StreamClosedError:
                return
            except (HTTPClientError, OSError) as e:
                error = e
            else:
                if response.code != 599 or started() or self._status_seen:
                    break
                error = response.error
            # Nothing of an answer reached the browser yet: the scheduler was not there (restarting).
            delay = next(delays, None)
            if delay is None or self._client_gone:
                raise web.HTTPError(502, f"cannot reach the NothingAI scheduler: {error}")
            await asyncio.sleep(delay)
        if not self._client_gone:
            self.finish()

    _client_gone = False
    _status_seen = False

    def _repeatable(self, path: str) -> bool:
        """Whether forwarding this call twice is the same as once."""
        if self.request.method == "GET":
            return True
        return self.request.method == "POST" and (
            bool(_CANCEL.fullmatch(path)) or "Idempotency-Key" in self.request.headers)

    def on_connection_close(self) -> None:
        self._client_gone = True

    def _on_header(self, line: str) -> None:
        """Copy the status line and chosen headers before the first body chunk is written."""
        line = line.strip()
        if not line:
            return
        if line.startswith("HTTP/"):
            parts = line.split(" ", 2)
            code = int(parts[1])
            if code == 100:
                return
            self._status_seen = True
            self.set_status(code, parts[2] if len(parts) > 2 else None)
            self.clear_header("Content-Type")
            return
        name, _, value = line.partition(":")
        if name.strip().lower() in {h.lower() for h in FORWARD_RESPONSE_HEADERS}:
            self.set_header(name.strip(), value.strip())

    @web.authenticated
    async def get(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    async def post(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    async def delete(self, path: str) -> None:
        await self._forward(path)

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")


class ConfigHandler(JupyterHandler):
    """Where the service's pages are, as a path on this origin (e.g. ``/services/nothing/``)."""

    @web.authenticated
    def get(self) -> None:
        base = service_url()
        self.set_header("Content-Type", "application/json")
        self.finish({
            "connected": bool(base and os.environ.get("JUPYTERHUB_API_TOKEN")),
            "service_prefix": urlparse(base).path if base else None,
            "user": os.environ.get("JUPYTERHUB_USER"),
        })


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "nothing.magics.serverext"}]


def _load_jupyter_server_extension(serverapp) -> None:
    base_url = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base_url, "nothing/api/(.*)"), ServiceProxyHandler),
        (url_path_join(base_url, "nothing/config"), ConfigHandler),
    ])
    serverapp.log.info("NothingAI: forwarding %snothing/api/ to %s", base_url, service_url() or "(not configured)")


# jupyter_server < 2 looked for this name.
load_jupyter_server_extension = _load_jupyter_server_extension
