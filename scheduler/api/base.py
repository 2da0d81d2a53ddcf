"""What every API handler shares: the one access rule, bounded bodies, JSON in and out, one error writer.

Who the caller is and whether they are admin is decided by
``nothing.scheduler.auth.authenticate`` for every handler of the service
(API, TensorBoard proxy, admin page).  Bodies are streamed (``BoundedBodyMixin``):
a handler declares ``max_body_bytes`` and a larger request is answered 413 before
it is buffered.  Every refusal is a 4xx with a sentence saying why.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tornado import httputil, web
from tornado.http1connection import HTTP1Connection
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.log import gen_log

from ..auth import HubUserMixin, authenticate, is_admin, wants_html

__all__ = ["APIHandler", "BoundedBodyMixin", "HandlerMixin", "HubUserMixin", "authenticate", "is_admin", "hub_api", "loads_json",
           "parse_id"]

DEFAULT_MAX_BODY_BYTES = 1024**2
# A declared body over the limit but under this is read and dropped, then refused; a larger one is cut off.
MAX_DISCARD_BYTES = 1024**3
_WHOLE = re.compile(r"[+-]?[0-9]{1,19}")
# The largest id the 64-bit database columns hold; a bigger number in a URL names nothing.
MAX_ID = 2**63 - 1


def _message(error: web.HTTPError) -> str:
    """The sentence of an ``HTTPError``; what the caller sent never acts as a format string."""
    text = error.log_message or ""
    return text % error.args if error.args else text


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def loads_json(data: bytes | str, what: str = "the request body") -> Any:
    """``json.loads`` that refuses ``NaN``/``Infinity`` and answers 400 for anything it cannot parse."""
    try:
        return json.loads(data, parse_constant=_no_constants)
    except (ValueError, RecursionError) as e:
        raise web.HTTPError(400, f"{what} is not valid JSON: {e}") from None


def parse_id(text: str, what: str = "run") -> int:
    """An id from a URL; 404 for one no row can have (the route already allows only digits)."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_ID:
        raise web.HTTPError(404, f"{what} {text if len(text) <= 24 else text[:20] + '...'} not found")
    return int(text)


async def hub_api(handler, path: str) -> Any:
    """GET the hub API with the service's own token; ``None`` when the hub refuses or is unreachable."""
    auth = handler.hub_auth
    try:
        r = await AsyncHTTPClient().fetch(f"{auth.api_url}{path}", request_timeout=10,
                                          headers={"Authorization": f"token {auth.api_token}"})
        return json.loads(r.body)
    except (HTTPClientError, OSError, ValueError):
        return None


def hub_user_path(name: str) -> str:
    return f"/users/{quote(name, safe='')}"


@web.stream_request_body
class BoundedBodyMixin(web.RequestHandler):
    """Streams the request body instead of buffering it, refusing one over ``max_body_bytes`` with 413.

    A declared ``Content-Length`` over the limit is refused in ``prepare``: no byte of the
    body is kept, and no handler code runs (see ``refuse_early``).  A body without a
    length is counted as it arrives, dropped past the limit, and refused when the
    handler reads ``body``.
    """

    @property
    def max_body_bytes(self) -> int:
        """The largest request body this handler reads; a handler overrides it with a number or a property."""
        return DEFAULT_MAX_BODY_BYTES

    def __init__(self, *args, **kwargs) -> None:
        self._body_chunks: list[bytes] = []
        self._body_received = 0
        self._body_overflow = False
        self._discard_left: int | None = None
        self._refusal: web.HTTPError | None = None
        self._close_after = False
        self._before_body = True  # until prepare is through: a 405 may come even before it
        super().__init__(*args, **kwargs)

    async def prepare(self) -> None:
        try:
            await self.admit()
        except web.HTTPError as e:
            self.refuse_early(e)
        self._before_body = False

    async def admit(self) -> None:
        """Who may call, and how large a body they may send: refusals here come before the body."""
        self.check_declared_length()

    def finish(self, chunk: str | bytes | dict | None = None):
        """Say ``Connection: close`` when tornado will close after this answer (it came before the body).

        tornado closes a streaming request's connection when it is answered before the
        body was read, even when there is none; configurable-http-proxy would otherwise
        send the next request down the closing connection and answer it 503.
        """
        if (self._before_body or self._close_after) and not self._headers_written:
            self.set_header("Connection", "close")
        return super().finish(chunk)

    def declared_length(self) -> int | None:
        declared = self.request.headers.get("Content-Length")
        if declared is None:
            return None
        if not _WHOLE.fullmatch(declared) or int(declared) < 0:
            raise web.HTTPError(400, f"Content-Length must be a number of bytes, not {declared!r}")
        return int(declared)

    def check_declared_length(self) -> None:
        """413 when the declared body is over the limit (call from ``prepare``, before the body is read)."""
        size = self.declared_length()
        if size is not None and size > self.max_body_bytes:
            raise web.HTTPError(413, f"the request body is {size} bytes; {self.request.path} accepts at most "
                                     f"{self.max_body_bytes}")

    def error_payload(self, status: int, message: str) -> tuple[str, bytes]:
        """``(content type, body)`` of a refusal; the one JSON error shape unless a handler serves pages."""
        return "application/json; charset=utf-8", json.dumps({"status": status, "message": message}).encode()

    def log_exception(self, typ, value, tb) -> None:
        """Refusals are logged as one line; their messages quote what the caller sent, never as a format string."""
        if isinstance(value, web.HTTPError):
            gen_log.warning("%d %s: %s", value.status_code, self._request_summary(), _message(value))
        else:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = (_message(exc) if isinstance(exc, web.HTTPError) else None) or self._reason
        content_type, payload = self.error_payload(status_code, message)
        self.set_header("Content-Type", content_type)
        self.finish(payload)

    def refuse_early(self, error: web.HTTPError) -> None:
        """Refuse from ``prepare`` without buffering the declared body: it is read, dropped, then answered.

        Answering while the client (or the proxy) is still sending makes tornado close
        the connection under it, and configurable-http-proxy turns that into a 503 (or
        stops forwarding and leaves the connection hanging); so the answer waits for
        the last byte.  A client that sent ``Expect: 100-continue`` is answered at once.
        """
        try:
            size = self.declared_length() or 0
        except web.HTTPError:
            size = 0
        # The connection ends after this answer: say so, or a proxy may send the next request down it.
        self._close_after = size > 0 or "Transfer-Encoding" in self.request.headers
        if not 0 < size <= MAX_DISCARD_BYTES or self.request.headers.get("Expect", "").lower() == "100-continue":
            raise error  # nothing to drain, too much to read, or the client waits to send it
        self._refusal = error
        self._discard_left = size
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):  # tornado's own server: always, here
            connection.set_max_body_size(size)

    def data_received(self, chunk: bytes) -> None:
        if self._discard_left is not None:
            self._discard_left -= len(chunk)
            if self._discard_left <= 0:
                # Answered before tornado sees the body end: it then closes, and the verb method never runs.
                refusal = self._refusal
                assert refusal is not None  # set together with _discard_left
                self.log_exception(type(refusal), refusal, None)
                self.send_error(refusal.status_code, exc_info=(type(refusal), refusal, None))
            return
        self._body_received += len(chunk)
        if self._body_received > self.max_body_bytes:
            self._body_overflow, self._body_chunks = True, []
        if not self._body_overflow:
            self._body_chunks.append(chunk)

    @property
    def body(self) -> bytes:
        """The whole request body (joined on first use; verb methods run only once it is all in)."""
        if self._body_overflow:
            raise web.HTTPError(413, f"the request body is over {self.max_body_bytes} bytes, the most "
                                     f"{self.request.path} accepts")
        if self._body_chunks:
            self.request.body = b"".join(self._body_chunks)
            self._body_chunks = []
        return self.request.body

    def form(self) -> tuple[dict[str, list[bytes]], dict[str, list[httputil.HTTPFile]]]:
        """``(fields, files)`` of a urlencoded or multipart body, parsed as tornado parses a buffered one."""
        fields: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        body = self.body
        if body:
            try:
                httputil.parse_body_arguments(self.request.headers.get("Content-Type", ""), body, fields, files,
                                              self.request.headers)
            except httputil.HTTPInputError as e:
                raise web.HTTPError(400, f"the request body is not a readable form: {e}") from None
        return fields, files


class APIHandler(HubUserMixin, BoundedBodyMixin):
    """Identifies the caller through JupyterHub (API token or the service's OAuth cookie)."""

    requires_login = True

    @property
    def dispatcher(self):
        return self.settings["dispatcher"]

    @property
    def scheduler(self):
        return self.settings["scheduler"]

    async def admit(self) -> None:
        if self.requires_login and await authenticate(self) is None:
            if self.browser_navigation():
                # Someone opened the URL in the address bar before any service page: log in, then come back.
                self.redirect(self.get_login_url())
                return
            raise web.HTTPError(403, "authentication required: send a JupyterHub API token or log in through the hub")
        self.check_declared_length()

    def browser_navigation(self) -> bool:
        """A browser's page load (GET, ``Accept: text/html`` first, no token): worth a login redirect, not a 403."""
        request = self.request
        return (request.method in ("GET", "HEAD") and "Authorization" not in request.headers
                and "token" not in request.query_arguments and wants_html(request))

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def json_body(self) -> dict:
        body = loads_json(self.body or b"{}")
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return body

    def query_int(self, name: str, default: int, low: int, high: int) -> int:
        """A whole-number query argument within ``low..high``; 400 with the range otherwise."""
        raw = self.get_argument(name, None)
        if raw is None:
            return default
        if not _WHOLE.fullmatch(raw.strip()) or not low <= int(raw) <= high:
            raise web.HTTPError(400, f"?{name}= must be a whole number from {low} to {high}, not {raw!r}")
        return int(raw)

    def query_flag(self, name: str) -> bool:
        """A yes/no query argument: ``1`` or ``true`` is yes."""
        return self.get_argument(name, "0") in ("1", "true")

    def listing_everyone(self, what: str) -> bool:
        """``?all=1`` on a listing of ``what``: every owner's, for admins only (403 for anyone else)."""
        everyone = self.query_flag("all")
        if everyone and not self.is_admin:
            raise web.HTTPError(403, f"only admins may list every user's {what}")
        return everyone


# The handlers' mixins (``RunAccessMixin``, ``ClusterMixin``, ...) are only ever mixed into APIHandler subclasses:
# type checkers see them as APIHandlers, while at run time they stay plain classes (one RequestHandler in the MRO).
if TYPE_CHECKING:
    HandlerMixin = APIHandler
else:
    HandlerMixin = object
