"""A Python client for the scheduler's REST API, used by the magics, the widget and the ``nothing`` command.

Inside a NothingAI notebook it needs no configuration: the service address comes
from ``NOTHING_SERVICE_URL`` (set by the platform's spawner) and the token from
``JUPYTERHUB_API_TOKEN`` (set by JupyterHub for every single-user server).
"""

from __future__ import annotations

import base64
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

import requests

TERMINAL_STATES = {"COMPLETE", "STOPPED", "FAIL TRAIN", "CREATE FAILED"}
# Code archives up to this size are sent base64 in one JSON document; larger ones as multipart.
JSON_SUBMISSION_MAX_BYTES = 1024 * 1024


class NothingError(Exception):
    """The service refused a request; the message is the service's own explanation."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class NothingClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        url = url or os.environ.get("NOTHING_SERVICE_URL")
        if not url:
            raise NothingError(
                "cannot find the NothingAI scheduler: NOTHING_SERVICE_URL is not set "
                "(this works inside a notebook started by the NothingAI hub)"
            )
        token = token or os.environ.get("NOTHING_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN")
        if not token:
            raise NothingError("no API token: JUPYTERHUB_API_TOKEN is not set")
        self.api = url.rstrip("/") + "/api"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.api + path, **kwargs)
        except requests.ConnectionError as e:
            raise NothingError(f"cannot reach the NothingAI scheduler at {self.api}: {e}") from None
        if response.status_code >= 400:
            try:
                message = response.json()["message"]
            except (ValueError, KeyError):
                message = response.text.strip() or response.reason
            raise NothingError(message, response.status_code)
        return response

    def submit(self, spec: dict[str, Any], archive: bytes) -> dict:
        """Queue a run: small code goes as one JSON document (cheaper to parse), larger as multipart."""
        import json

        if len(archive) <= JSON_SUBMISSION_MAX_BYTES:
            body = dict(spec, archive=base64.b64encode(archive).decode("ascii"))
            return self._request("POST", "/runs", json=body).json()
        files = {"archive": ("snapshot.tar.gz", archive, "application/gzip")}
        return self._request("POST", "/runs", data={"spec": json.dumps(spec)}, files=files).json()

    def runs(self, everyone: bool = False, states: list[str] | None = None) -> list[dict]:
        params: dict[str, Any] = {"state": states or []}
        if everyone:
            params["all"] = "1"
        return self._request("GET", "/runs", params=params).json()["runs"]

    def run(self, run_id: int) -> dict:
        return self._request("GET", f"/runs/{int(run_id)}").json()

    def events(self, run_id: int) -> list[dict]:
        return self._request("GET", f"/runs/{int(run_id)}/events").json()["events"]

    def cancel(self, run_id: int) -> dict:
        return self._request("POST", f"/runs/{int(run_id)}/cancel").json()

    def gpus(self) -> dict:
        return self._request("GET", "/gpus").json()

    def logs(self, run_id: int, tail: int | None = None, offset: int | None = None) -> tuple[str, int, str]:
        """Returns ``(text, next_offset, run_state)``."""
        params = {}
        if offset is not None:
            params["offset"] = offset
        elif tail is not None:
            params["tail"] = tail
        r = self._request("GET", f"/runs/{int(run_id)}/logs", params=params)
        return r.content.decode(errors="replace"), int(r.headers.get("X-Log-Offset", 0)), r.headers.get("X-Run-State", "")

    def follow_logs(self, run_id: int) -> Iterator[str]:
        """Yields the log as it grows, until the run ends."""
        with self._request("GET", f"/runs/{int(run_id)}/logs", params={"follow": "1"}, stream=True,
                           timeout=(self.timeout, None)) as r:
            for chunk in r.iter_content(chunk_size=None):
                yield chunk.decode(errors="replace")

    def outputs(self, run_id: int) -> list[dict]:
        return self._request("GET", f"/runs/{int(run_id)}/outputs").json()["files"]

    def download(self, run_id: int, dest: str | Path = ".", path: str | None = None) -> list[Path]:
        """Download one output file, or all of them (keeping ``model/`` and ``checkpoints/``), into ``dest``."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        if path:
            r = self._request("GET", f"/runs/{int(run_id)}/outputs/{path}", stream=True)
            target = dest / Path(path).name
            with open(target, "wb") as f:
                for chunk in r.iter_content(chunk_size=1024 * 1024):
                    f.write(chunk)
            return [target]
        r = self._request("GET", f"/runs/{int(run_id)}/outputs.tar.gz")
        written = []
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
            written = [dest / m.name for m in tar.getmembers() if m.isfile()]
        return written

    def wait(self, run_id: int, timeout: float | None = None, interval: float = 0.5) -> dict:
        """Poll until the run ends; returns its final record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["state"] in TERMINAL_STATES:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {run['state']} after {timeout}s")
            time.sleep(interval)
