"""A Python client for the scheduler's REST API, used by the magics, the widget and the ``nothing`` command.

Inside a NothingAI notebook it needs no configuration: the service address comes
from ``NOTHING_SERVICE_URL`` (set by the platform's spawner) and the token from
``JUPYTERHUB_API_TOKEN`` (set by JupyterHub for every single-user server).

Calls that are safe to repeat are retried, with back-off and jitter, for up to
``retry_seconds`` while the service cannot be reached or answers 502, 503 or 504
(what the hub's proxy answers, as an HTML page, while the scheduler restarts):
reads, cancels, and submissions, which carry an ``Idempotency-Key`` so that a
retried submission is the same run, never a second one.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import os
import socket
import stat
import struct
import tarfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote
from typing import Any, Iterator

import requests

from ..common.backoff import Backoff

TERMINAL_STATES = {"COMPLETE", "STOPPED", "FAIL TRAIN", "CREATE FAILED"}
# Code archives up to this size are sent base64 in one JSON document; larger ones as multipart.
JSON_SUBMISSION_MAX_BYTES = 1024 * 1024
# Answers that mean "not now" (the hub's proxy while the service is down, a gateway): retried.
RETRY_STATUSES = frozenset({502, 503, 504})
# (connect, read) seconds for the check that an upload's direct address answers: short, a proxy is the fallback.
DIRECT_PROBE_TIMEOUT = (2.0, 10.0)
# How often a file handed to the local push socket checks whether its push was stopped, while the service copies.
LOCAL_POLL_SECONDS = 0.5


class NothingError(Exception):
    """The service refused a request; the message is the service's own explanation."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _error_message(response: requests.Response) -> str:
    """The service's own message from a JSON error; never parses an HTML error page (the hub's, the proxy's)."""
    if response.headers.get("Content-Type", "").startswith("application/json"):
        try:
            message = response.json()["message"]
            if isinstance(message, str) and message:
                return message
        except (ValueError, KeyError, TypeError):
            pass
    if response.status_code in RETRY_STATUSES:
        return (f"the NothingAI scheduler is not answering ({response.status_code} {response.reason}): "
                "it may be restarting; try again in a minute")
    text = response.text.strip() if response.headers.get("Content-Type", "").startswith("text/plain") else ""
    return text or f"{response.status_code} {response.reason}"


class LocalPushUnavailable(NothingError):
    """The upload's local push socket cannot take a file from here (absent, not this service's, not this user's
    process): the file, and the rest of the upload, go over HTTP."""


class NothingClient:
    """The scheduler's API as one user.

    ``timeout``: seconds one request may take; ``retry_seconds``: how long calls that
    are safe to repeat keep being retried while the service is unreachable (0: never);
    ``local_push``: hand dataset files to the service's local socket when it offers one
    on this host (False: always over HTTP).
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 retry_seconds: float = 30.0, local_push: bool = True):
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
        self.retry_seconds = retry_seconds
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"
        self.clock_offset = 0.0  # the service's clock minus ours, from its last answer's Date header
        self.direct_uploads: dict[str, str | None] = {}  # upload -> the API address its files go to directly
        self.local_push = local_push
        self.local_sockets: dict[str, str | None] = {}  # upload -> the local push socket its files go to

    def server_now(self) -> float:
        """The service's time now (epoch seconds), as of its last answer: what elapsed times are counted in."""
        return time.time() + self.clock_offset

    def _note_clock(self, response: requests.Response) -> None:
        try:
            date = email.utils.parsedate_to_datetime(response.headers["Date"])
        except (KeyError, TypeError, ValueError):
            return
        # Date has whole seconds: keep the offset only when it is more than that rounding.
        offset = date.timestamp() - time.time()
        self.clock_offset = offset if abs(offset) > 1.5 else 0.0

    def _request(self, method: str, path: str, retry: bool = False, attempts: list | None = None,
                 api: str | None = None, **kwargs) -> requests.Response:
        """One call; with ``retry``, repeated while the service is unreachable (see the module docstring).

        ``attempts``, if given, gets one entry per attempt made; ``api``: another address of the service's API
        (a dataset upload's direct one) instead of :attr:`api`.
        """
        api = api or self.api
        kwargs.setdefault("timeout", self.timeout)
        delays = Backoff(initial=0.2, maximum=5.0, jitter=0.5, budget=self.retry_seconds).delays() if retry \
            else iter(())
        while True:
            if attempts is not None:
                attempts.append(time.monotonic())
            try:
                response = self.session.request(method, api + path, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as e:
                error = NothingError(f"cannot reach the NothingAI scheduler at {api}: {e}")
            else:
                if response.status_code not in RETRY_STATUSES:
                    break
                error = NothingError(_error_message(response), response.status_code)
                response.close()
            delay = next(delays, None)
            if delay is None:
                raise error
            time.sleep(delay)
        self._note_clock(response)
        if response.status_code >= 400:
            raise NothingError(_error_message(response), response.status_code)
        return response

    def submit(self, spec: dict[str, Any], archive: bytes) -> dict:
        """Queue a run: small code goes as one JSON document (cheaper to parse), larger as multipart.

        Retried like a read: every attempt carries the same fresh ``Idempotency-Key``,
        so however many reach the service, they make one run.
        """
        import json

        headers = {"Idempotency-Key": str(uuid.uuid4())}
        if len(archive) <= JSON_SUBMISSION_MAX_BYTES:
            body = dict(spec, archive=base64.b64encode(archive).decode("ascii"))
            return self._request("POST", "/runs", retry=True, json=body, headers=headers).json()
        files = {"archive": ("snapshot.tar.gz", archive, "application/gzip")}
        return self._request("POST", "/runs", retry=True, data={"spec": json.dumps(spec)}, files=files,
                             headers=headers).json()

    def runs(self, everyone: bool = False, states: list[str] | None = None) -> list[dict]:
        params: dict[str, Any] = {"state": states or []}
        if everyone:
            params["all"] = "1"
        return self._request("GET", "/runs", params=params, retry=True).json()["runs"]

    def run(self, run_id: int, retry: bool = True) -> dict:
        return self._request("GET", f"/runs/{int(run_id)}", retry=retry).json()

    def events(self, run_id: int) -> list[dict]:
        return self._request("GET", f"/runs/{int(run_id)}/events", retry=True).json()["events"]

    def cancel(self, run_id: int) -> dict:
        """Cancel a run; retried like a read (cancelling twice is cancelling once)."""
        attempts: list = []
        try:
            return self._request("POST", f"/runs/{int(run_id)}/cancel", retry=True, attempts=attempts).json()
        except NothingError as e:
            if e.status == 409 and len(attempts) > 1:
                return self.run(run_id)  # an earlier attempt ended it; only its answer was lost
            raise

    def gpus(self) -> dict:
        return self._request("GET", "/gpus", retry=True).json()

    def submit_tuning(self, spec: dict[str, Any], archive: bytes) -> dict:
        """Create a tuning (not retried: a tuning has no Idempotency-Key, a second attempt would make a second)."""
        import json

        if len(archive) <= JSON_SUBMISSION_MAX_BYTES:
            body = dict(spec, archive=base64.b64encode(archive).decode("ascii"))
            return self._request("POST", "/tunings", json=body).json()
        files = {"archive": ("snapshot.tar.gz", archive, "application/gzip")}
        return self._request("POST", "/tunings", data={"spec": json.dumps(spec)}, files=files).json()

    def templates(self) -> list[dict]:
        return self._request("GET", "/templates", retry=True).json()["templates"]

    def template(self, ref: str | int) -> dict:
        return self._request("GET", f"/templates/{quote(str(ref), safe='')}", retry=True).json()

    def save_template(self, body: dict[str, Any], archive: bytes | None = None) -> dict:
        if archive is not None:
            body = dict(body, archive=base64.b64encode(archive).decode("ascii"))
        return self._request("POST", "/templates", json=body).json()

    def copy_template(self, ref: str | int, overrides: dict[str, Any] | None = None) -> dict:
        return self._request("POST", f"/templates/{quote(str(ref), safe='')}/copy", json=overrides or {}).json()

    def delete_template(self, ref: str | int) -> None:
        self._request("DELETE", f"/templates/{quote(str(ref), safe='')}")

    def tunings(self) -> list[dict]:
        return self._request("GET", "/tunings", retry=True).json()["tunings"]

    def tuning(self, tuning_id: int) -> dict:
        return self._request("GET", f"/tunings/{int(tuning_id)}", retry=True).json()

    def tuning_trials(self, tuning_id: int) -> list[dict]:
        return self._request("GET", f"/tunings/{int(tuning_id)}/trials", retry=True).json()["trials"]

    def stop_tuning(self, tuning_id: int) -> dict:
        return self._request("POST", f"/tunings/{int(tuning_id)}/stop").json()

    def copy_tuning(self, tuning_id: int, overrides: dict[str, Any] | None = None) -> dict:
        return self._request("POST", f"/tunings/{int(tuning_id)}/copy", json=overrides or {}).json()

    def delete_tuning(self, tuning_id: int) -> None:
        self._request("DELETE", f"/tunings/{int(tuning_id)}")

    def models(self, everyone: bool = False) -> list[dict]:
        """The caller's models and their groups' (``everyone``: all of them, admins)."""
        return self._request("GET", "/models", params={"all": "1"} if everyone else {}, retry=True).json()["models"]

    def model(self, ref: str | int) -> dict:
        return self._request("GET", f"/models/{quote(str(ref), safe='')}", retry=True).json()

    def create_model(self, body: dict[str, Any], archive: bytes | None = None) -> dict:
        """Make a model; with ``archive`` (the folder as a .tar.gz) it is the upload. Not retried: a second
        attempt would be refused as a duplicate name, hiding the first one's answer."""
        import json

        wait = (self.timeout, None)  # the service copies the whole artifact before it answers
        if archive is None:
            return self._request("POST", "/models", json=body, timeout=wait).json()
        if len(archive) <= JSON_SUBMISSION_MAX_BYTES:
            source = {"upload": base64.b64encode(archive).decode("ascii")}
            return self._request("POST", "/models", json=dict(body, source=source), timeout=wait).json()
        files = {"archive": ("model.tar.gz", archive, "application/gzip")}
        return self._request("POST", "/models", data={"spec": json.dumps(body)}, files=files, timeout=wait).json()

    def update_model(self, ref: str | int, changes: dict[str, Any]) -> dict:
        return self._request("PATCH", f"/models/{quote(str(ref), safe='')}", json=changes).json()

    def delete_model(self, ref: str | int) -> None:
        self._request("DELETE", f"/models/{quote(str(ref), safe='')}")

    def logs(self, run_id: int, tail: int | None = None, offset: int | None = None) -> tuple[str, int, str]:
        """Returns ``(text, next_offset, run_state)``."""
        params = {}
        if offset is not None:
            params["offset"] = offset
        elif tail is not None:
            params["tail"] = tail
        r = self._request("GET", f"/runs/{int(run_id)}/logs", params=params, retry=True)
        return r.content.decode(errors="replace"), int(r.headers.get("X-Log-Offset", 0)), r.headers.get("X-Run-State", "")

    def follow_logs(self, run_id: int) -> Iterator[str]:
        """Yields the log as it grows, until the run ends."""
        with self._request("GET", f"/runs/{int(run_id)}/logs", retry=True, params={"follow": "1"}, stream=True,
                           timeout=(self.timeout, None)) as r:
            for chunk in r.iter_content(chunk_size=None):
                yield chunk.decode(errors="replace")

    def outputs(self, run_id: int) -> list[dict]:
        return self._request("GET", f"/runs/{int(run_id)}/outputs", retry=True).json()["files"]

    def download(self, run_id: int, dest: str | Path = ".", path: str | None = None) -> list[Path]:
        """Download one output file, or all of them (keeping ``model/`` and ``checkpoints/``), into ``dest``.

        ``dest`` is made only once there is something to write into it: an unknown run
        raises (the service's "run N not found") and a run without outputs returns ``[]``,
        both leaving no empty folder behind.
        """
        dest = Path(dest)
        if path:
            r = self._request("GET", f"/runs/{int(run_id)}/outputs/{path}", stream=True, retry=True)
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / Path(path).name
            with open(target, "wb") as f:
                for chunk in r.iter_content(chunk_size=1024 * 1024):
                    f.write(chunk)
            return [target]
        r = self._request("GET", f"/runs/{int(run_id)}/outputs.tar.gz", retry=True)
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            files = [m for m in tar.getmembers() if m.isfile()]
            if not files:
                return []
            dest.mkdir(parents=True, exist_ok=True)
            return [_extract_file(tar, member, dest) for member in files]

    # ---------------------------------------------------------------- what runs leave behind
    def metrics(self, run_id: int, names: list[str] | None = None) -> dict:
        """The run's metric series: ``{"summary": {...}, "series": {name: [[step, time, value], ...]}}``."""
        return self._request("GET", f"/runs/{int(run_id)}/metrics", params={"name": names or []}, retry=True).json()

    def metrics_csv(self, run_id: int, names: list[str] | None = None) -> str:
        return self._request("GET", f"/runs/{int(run_id)}/metrics", retry=True,
                             params={"name": names or [], "format": "csv"}).text

    def checkpoints(self, run_id: int) -> dict:
        return self._request("GET", f"/runs/{int(run_id)}/checkpoints", retry=True).json()

    def remove_checkpoints(self, run_id: int, patterns: list[str]) -> dict:
        """Remove the checkpoints matching the shell-style ``patterns`` (``"*"``: all); retried (idempotent)."""
        return self._request("DELETE", f"/runs/{int(run_id)}/checkpoints", params={"name": patterns},
                             retry=True).json()

    def delete_run(self, run_id: int, stop: bool = False) -> None:
        self._request("DELETE", f"/runs/{int(run_id)}", params={"stop": "true"} if stop else {}, retry=True)

    def experiments(self, metric: str | None = None, everyone: bool = False) -> list[dict]:
        params = {"metric": metric} if metric else {}
        if everyone:
            params["all"] = "1"
        return self._request("GET", "/experiments", params=params, retry=True).json()["experiments"]

    def create_experiment(self, name: str, description: str = "") -> dict:
        return self._request("POST", "/experiments", json={"name": name, "description": description}).json()

    def update_experiment(self, name: str, new_name: str | None = None, description: str | None = None) -> dict:
        body = {k: v for k, v in (("name", new_name), ("description", description)) if v is not None}
        return self._request("PATCH", f"/experiments/{quote(name, safe='')}", json=body).json()

    def delete_experiment(self, name: str) -> None:
        self._request("DELETE", f"/experiments/{quote(name, safe='')}")

    def storage(self) -> dict:
        return self._request("GET", "/storage", retry=True).json()

    # ---------------------------------------------------------------- datasets (push: see .datasets)
    def datasets(self, everyone: bool = False) -> list[dict]:
        """The caller's own datasets and their groups' (``everyone``: all of them, admins)."""
        return self._request("GET", "/datasets", params={"all": "1"} if everyone else {}, retry=True).json()["datasets"]

    def dataset(self, dataset_id: int) -> dict:
        return self._request("GET", f"/datasets/{int(dataset_id)}", retry=True).json()

    def dataset_version(self, dataset_id: int, version: int) -> dict:
        return self._request("GET", f"/datasets/{int(dataset_id)}/versions/{int(version)}", retry=True).json()

    def create_dataset(self, name: str, group: str | None = None, description: str = "") -> dict:
        body = {"name": name, "description": description, **({"group": group} if group else {})}
        return self._request("POST", "/datasets", json=body).json()

    def delete_dataset(self, dataset_id: int, version: int | None = None) -> None:
        path = f"/datasets/{int(dataset_id)}" + (f"/versions/{int(version)}" if version is not None else "")
        self._request("DELETE", path)

    def open_upload(self, dataset_id: int) -> str:
        """Open an upload; its files will go straight to the service's own listener when the service
        advertises one (``direct_url``) and it answers from here, else the way every other call goes; and
        to its local push socket (``local_socket``) when there is one on this host (:meth:`local_socket`)."""
        body = self._request("POST", f"/datasets/{int(dataset_id)}/uploads").json()
        upload = body["upload"]
        self.direct_uploads[upload] = self._reach_direct(body.get("direct_url"), int(dataset_id), upload)
        local = body.get("local_socket")
        self.local_sockets[upload] = local if self.local_push and isinstance(local, str) and _is_socket(local) \
            else None
        return upload

    def local_socket(self, upload: str) -> str | None:
        """The socket this upload's files are handed to (None: they go over HTTP)."""
        return self.local_sockets.get(upload)

    def _reach_direct(self, url: str | None, dataset_id: int, upload: str) -> str | None:
        """The direct API address if it is the same service (it knows this fresh upload, for this token); None
        when there is none or it does not answer so within :data:`DIRECT_PROBE_TIMEOUT` (another host's
        loopback, a firewall): then the files take the hub's proxy, as everything else does."""
        if not url or not url.startswith(("http://", "https://")):
            return None
        api = url.rstrip("/") + "/api"
        try:
            found = self._request("GET", f"/datasets/{dataset_id}/uploads/{upload}", api=api,
                                  timeout=DIRECT_PROBE_TIMEOUT).json()
        except (NothingError, ValueError):
            return None
        return api if isinstance(found, dict) and found.get("upload") == upload else None

    def offer_upload_file(self, dataset_id: int, upload: str, path: str, sha256: str, size: int) -> bool:
        """Add a file by its content's hash; False when the store does not have it (then send it)."""
        try:
            self._request("POST", f"/datasets/{int(dataset_id)}/uploads/{upload}/files", retry=True,
                          params={"path": path, "sha256": sha256, "size": size})
        except NothingError as e:
            if e.status == 404:
                return False
            raise
        return True

    def put_upload_file(self, dataset_id: int, upload: str, path: str, local: str | Path, sha256: str) -> dict:
        """Stream one file from disk, never all of it in memory (``requests`` reads the open file in blocks), to
        the upload's direct address when it has one.  When that address cannot be reached (no answer, cut off)
        the error is raised as any transfer error is, and the upload's later attempts take the proxy."""
        direct = self.direct_uploads.get(upload)
        where = f"/datasets/{int(dataset_id)}/uploads/{upload}/files"
        with open(local, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                return self._request("PUT", where, api=direct, params={"path": path}, data=_BlockReader(f, size),
                                     headers={"X-Content-SHA256": sha256}, timeout=(self.timeout, None)).json()
            except NothingError as e:
                if direct and e.status is None:
                    self.direct_uploads[upload] = None
                raise

    def push_upload_file_locally(self, dataset_id: int, upload: str, path: str, local: str | Path,
                                 stop: threading.Event | None = None) -> dict:
        """Hand one file to the service on this host: open it here (so only what this account may read can be
        passed), get a one-time ticket for it over HTTP, and pass the open file with the ticket over the
        upload's local socket (``SCM_RIGHTS``); the service reads, hashes and stores it and answers
        ``{"path", "sha256", "bytes", "reused"}``. No hashing here: the service hashes what it stores.

        :class:`LocalPushUnavailable` (and the upload's later files go over HTTP) when the socket is absent,
        refuses the connection, is not the service's (its listener runs as another account than the ticket
        says the service does: nothing is handed to it), or refuses the ticket (403: not this service, or not
        this user's process);
        :class:`NothingError` with the status PUT would have had when the file itself is refused; with status
        None when the connection breaks before the answer (the service keeps nothing of it: send it again).
        ``stop``, once set, gives the file up (the service then drops what it copied)."""
        where = self.local_sockets.get(upload)
        if not where:
            raise LocalPushUnavailable("this upload has no local push socket")
        with open(local, "rb") as f:
            try:
                ticket = self._ticket(dataset_id, upload, path)
            except NothingError as e:
                if e.status != 404:
                    raise
                self.local_sockets[upload] = None  # the service takes no local pushes (any more)
                raise LocalPushUnavailable(str(e), e.status) from None
            request = {"ticket": ticket["ticket"], "dataset": int(dataset_id), "upload": upload,
                       "path": ticket["path"]}
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                try:
                    s.connect(where)
                    listener = _peer_uid(s)
                except OSError as e:
                    self.local_sockets[upload] = None
                    raise LocalPushUnavailable(f"cannot connect to the local push socket {where}: {e}") from None
                if listener != ticket.get("service_uid"):  # never hand a file to whoever else listens there
                    self.local_sockets[upload] = None
                    raise LocalPushUnavailable(f"the local push socket {where} is not the service's (its listener "
                                               f"runs as uid {listener}, the service as {ticket.get('service_uid')})")
                try:
                    socket.send_fds(s, [json.dumps(request).encode() + b"\n"], [f.fileno()])
                    answer = _read_answer(s, stop)
                except OSError as e:
                    raise NothingError(f"the local push of {path} was cut off: {e}") from None
        if "error" in answer:
            status = answer.get("status")
            if status == 403:
                self.local_sockets[upload] = None
                raise LocalPushUnavailable(str(answer["error"]), status)
            raise NothingError(str(answer["error"]), status if isinstance(status, int) else None)
        return answer

    def _ticket(self, dataset_id: int, upload: str, path: str) -> dict:
        """A one-time ticket for one file: from the service's own listener when the upload has it (a direct
        address that no longer answers is dropped, as for PUT), else through the proxy."""
        where, params = f"/datasets/{int(dataset_id)}/uploads/{upload}/tickets", {"path": path}
        direct = self.direct_uploads.get(upload)
        if direct:
            try:
                return self._request("POST", where, api=direct, params=params).json()
            except NothingError as e:
                if e.status is not None:
                    raise
                self.direct_uploads[upload] = None
        return self._request("POST", where, retry=True, params=params).json()

    def commit_upload(self, dataset_id: int, upload: str) -> dict:
        self.direct_uploads.pop(upload, None)
        self.local_sockets.pop(upload, None)
        return self._request("POST", f"/datasets/{int(dataset_id)}/uploads/{upload}/commit").json()

    def abandon_upload(self, dataset_id: int, upload: str) -> None:
        self.direct_uploads.pop(upload, None)
        self.local_sockets.pop(upload, None)
        self._request("DELETE", f"/datasets/{int(dataset_id)}/uploads/{upload}")

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


def _peer_uid(s: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (Linux), the kernel's word for it."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise OSError("this system does not tell a Unix socket's peer (SO_PEERCRED)")
    return struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))[1]


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _read_answer(s: socket.socket, stop: threading.Event | None) -> dict:
    """The service's one-line JSON answer; it comes once the whole file is stored, however long that takes
    (checking ``stop`` every :data:`LOCAL_POLL_SECONDS`)."""
    s.settimeout(LOCAL_POLL_SECONDS)
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            if stop is not None and stop.is_set():
                raise Stopped("the push was stopped") from None
            continue
        if not chunk:
            raise ConnectionResetError("the service closed the connection without an answer")
        data += chunk
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ConnectionResetError(f"the service's answer is not a JSON object: {data[:200]!r}")
    return answer


class Stopped(Exception):
    """Work for a push that has ended (stopped or failed meanwhile) was given up."""


class _BlockReader:
    """An open file that ``http.client`` reads in 1 MB blocks instead of its 8 kB (half the client CPU:
    0.08 s instead of 0.17 s for 300 MB here), with its length, so ``requests`` sends a Content-Length rather
    than a chunked body.  Every block is read into the same buffer (a view of it is returned): the socket has
    sent one block before the next is read, and a fresh megabyte per block costs page faults."""

    BLOCK = 1024 * 1024

    def __init__(self, f, size: int):
        self._f, self._size = f, size
        self._buffer = bytearray(self.BLOCK)

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes | memoryview:
        if n is None or n < 0:
            return self._f.read()
        buffer = self._buffer if n <= self.BLOCK else bytearray(n)
        return memoryview(buffer)[:self._f.readinto(buffer)]


def _extract_file(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> Path:
    """Write one regular file of the outputs archive below ``dest``; refuse a name that would leave it.

    By hand rather than ``extractall(filter="data")``: that filter is missing from the Pythons that
    predate it (3.11.3 and older), and only regular files are ever wanted here.
    """
    parts = Path(member.name).parts
    if not parts or Path(member.name).is_absolute() or ".." in parts:
        raise NothingError(f"the outputs archive has an unsafe name: {member.name!r}")
    target = dest.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    with open(target, "wb") as f:
        while chunk := source.read(1024 * 1024):
            f.write(chunk)
    return target
