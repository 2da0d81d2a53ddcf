"""The few calls of the Kubernetes API the executor makes, over tornado's async HTTP client.

Why not the ``kubernetes`` client: it is synchronous (every call would need a thread), large, and
the executor needs six calls (create, get, list, patch, delete, and the two streams: watch and
logs).  tornado is already the service's HTTP stack, so this module adds no dependency and never
blocks the event loop.  The executor only talks to :class:`KubeApi`'s small surface, which the tests
replace with a fake that serves recorded API responses (``tests/kube_fake.py``).

Errors come back as :class:`KubeApiError` with the API's own ``Status`` (code, reason, message):
``409 AlreadyExists``, ``404 NotFound``, ``403 Forbidden``, ``410 Gone`` (an expired watch).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

IN_CLUSTER = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubeApiError(Exception):
    """The API refused or failed a call; ``status`` is its HTTP status (599: no answer)."""

    def __init__(self, status: int, reason: str, message: str, body: Mapping[str, Any] | None = None):
        self.status, self.reason, self.message, self.body = status, reason, message, dict(body or {})
        super().__init__(f"Kubernetes API {status} {reason}: {message}")

    @classmethod
    def from_response(cls, status: int, text: bytes | str) -> KubeApiError:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("kind") == "Status":
            return cls(int(body.get("code") or status), body.get("reason") or "", body.get("message") or "", body)
        shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        return cls(status, "", shown.strip()[:300] or "no answer")


class KubeApi:
    """One API server: its URL, credentials and a dedicated tornado client.

    ``token_file`` is re-read every minute (projected service-account tokens rotate); ``token`` is
    used as given.  ``ca_file`` checks the server's certificate; ``verify=False`` does not (tests on a
    private cluster only).
    """

    def __init__(self, url: str, token: str = "", token_file: str = "", ca_file: str = "", verify: bool = True,
                 request_timeout: float = 30.0, max_clients: int = 100):
        self.url = url.rstrip("/")
        self._token, self._token_file, self._token_read = token, token_file, 0.0
        self.request_timeout = request_timeout
        self._ssl: ssl.SSLContext | None = None
        if self.url.startswith("https:"):
            self._ssl = ssl.create_default_context(cafile=ca_file or None)
            if not verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._client = AsyncHTTPClient(force_instance=True, max_clients=max_clients)

    @classmethod
    def in_cluster(cls, **kwargs) -> KubeApi:
        """The API server of the cluster this process runs in (its pod's service account)."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError("not inside a Kubernetes pod (no KUBERNETES_SERVICE_HOST): set "
                               "c.KubernetesExecutor.api_url and api_token_file")
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", token_file=f"{IN_CLUSTER}/token", ca_file=f"{IN_CLUSTER}/ca.crt",
                   **kwargs)

    def close(self) -> None:
        self._client.close()

    async def _headers(self, content_type: str = "application/json") -> dict[str, str]:
        if self._token_file and time.monotonic() - self._token_read > 60:
            self._token = (await asyncio.to_thread(_read, self._token_file)).strip()
            self._token_read = time.monotonic()
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        return self.url + path + ("?" + query if query else "")

    async def _fetch(self, method: str, path: str, params=None, body: Any = None,
                     content_type: str = "application/json", timeout: float | None = None):
        request = HTTPRequest(self._url(path, params), method=method, headers=await self._headers(content_type),
                              body=None if body is None else json.dumps(body),
                              request_timeout=timeout or self.request_timeout, ssl_options=self._ssl)
        try:
            response = await self._client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:
            raise KubeApiError(599, "Unreachable", str(e)) from e
        if response.code >= 400 or response.code == 599:
            raise KubeApiError.from_response(response.code, response.body or str(response.error or "").encode())
        return response

    async def request(self, method: str, path: str, params: Mapping[str, Any] | None = None, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        """One call; the answer's JSON object.  PATCH needs ``content_type`` (e.g. merge-patch+json)."""
        response = await self._fetch(method, path, params, body, content_type)
        return json.loads(response.body) if response.body else {}

    async def read_text(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """A plain-text answer (a pod's log)."""
        response = await self._fetch("GET", path, params)
        return response.body.decode("utf-8", "replace")

    async def line_batches(self, path: str, params: Mapping[str, Any] | None = None,
                           timeout: float = 3600.0) -> AsyncIterator[list[str]]:
        """A streamed answer (a watch, a followed log) as the complete lines of each chunk received,
        until the server ends it."""
        queue: asyncio.Queue = asyncio.Queue()
        status: dict[str, int] = {}

        def on_header(line: str) -> None:
            if line.startswith("HTTP/"):
                status["code"] = int(line.split()[1])

        request = HTTPRequest(self._url(path, params), headers=await self._headers(), request_timeout=timeout,
                              ssl_options=self._ssl, header_callback=on_header, streaming_callback=queue.put_nowait)
        fetch = asyncio.ensure_future(self._client.fetch(request, raise_error=False))
        fetch.add_done_callback(lambda _: queue.put_nowait(None))
        buffer, error = b"", b""
        try:
            while (chunk := await queue.get()) is not None:
                if status.get("code", 200) >= 400:
                    error += chunk
                    continue
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                lines = [line.decode("utf-8", "replace") for line in complete if line.strip()]
                if lines:
                    yield lines
            try:
                response = fetch.result()
            except (OSError, HTTPClientError) as e:
                raise KubeApiError(599, "Unreachable", str(e)) from e
            if response.code >= 400 or (response.code == 599 and not buffer and not status):
                raise KubeApiError.from_response(response.code, error or str(response.error or "").encode())
            if buffer.strip():
                yield [buffer.decode("utf-8", "replace")]
        finally:
            if not fetch.done():
                fetch.cancel()

    async def watch(self, path: str, params: Mapping[str, Any] | None = None,
                    timeout_seconds: int = 300) -> AsyncIterator[dict[str, Any]]:
        """The watch events (``{"type": ..., "object": ...}``) of a collection until the server ends the watch."""
        query = dict(params or {}, watch="true", timeoutSeconds=str(timeout_seconds), allowWatchBookmarks="true")
        async for lines in self.line_batches(path, query, timeout=timeout_seconds + 30):
            for line in lines:
                yield json.loads(line)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
