"""/api/datasets: datasets of users and groups, immutable versions, streamed uploads, registered server folders.

A version is made by an upload: ``POST datasets/<id>/uploads`` opens one, each
file is sent on its own (``PUT .../files?path=a/b.csv``, streamed to disk, never
held in memory; or ``POST .../files?path=...&sha256=...&size=...`` when the
store already has that content, so an unchanged file is never sent twice), and
``POST .../commit`` makes the next version, whole or not at all.  A file cut off
half-way leaves nothing; sending it again replaces it.  A client on the service's
host may instead ask for a ticket (``POST .../tickets?path=...``, PUT's checks)
and pass the open file over the local socket (``scheduler/local_push.py``).  An
admin may register a server folder under ``c.Datasets.allowed_roots`` as a
version instead.

Access is the one rule of ``ownership``: the owner, the group's members (see,
use, add versions) and admins; anyone else gets 404.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import re

from tornado import web
from tornado.http1connection import HTTP1Connection

from .. import dataset_store as ds
from ..dataset_files import DISK_FULL, DatasetFileError, check_relative_path, registered_folder, too_large
from ..datasets import DATASET_NAME
from ..dispatcher import utcnow
from ..local_push import TICKET_SECONDS, Refused
from ..ownership import Action, may
from ..tracker import StorageQuotaExceeded
from .base import APIHandler, HandlerMixin, parse_id

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Hashed and written in a thread this many bytes at a time, while the next batch arrives (tornado's reads stay
# 64 KiB: 1 MiB reads measured no less CPU, the larger buffers' page faults eat what fewer reads save).
WRITE_BATCH = 4 * 1024 * 1024
MAX_DESCRIPTION = 10_000


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def dataset_model(row, used_by: list | None = None) -> dict:
    versions = [{"version": v.version, "created_at": _iso(v.created_at), "created_by": v.created_by,
                 "files": v.files, "bytes": v.bytes, "source": "folder" if v.source_path else "upload",
                 **({"path": v.source_path} if v.source_path else {})} for v in row.versions]
    model = {"id": row.id, "name": row.name, "owner": row.owner, "group": row.group or None,
             "ref": (f"{row.group}/" if row.group else "") + row.name, "description": row.description,
             "created_at": _iso(row.created_at), "versions": versions,
             "latest": versions[-1]["version"] if versions else None,
             "bytes": sum(v["bytes"] for v in versions), "files": versions[-1]["files"] if versions else 0}
    if used_by is not None:
        model["used_by"] = [{"run": run_id, "state": state.value} for run_id, state in used_by]
    return model


class DatasetMixin(HandlerMixin):
    @property
    def datasets(self):
        return self.scheduler.datasets

    async def get_dataset(self, dataset_id: str, action: Action = "see"):
        """The dataset if the caller may ``action`` it; 404 when they may not even see it, 403 otherwise."""
        row = await self.dispatcher.db.run(ds.get_dataset, parse_id(dataset_id, "dataset"))
        if row is None or not may(self.principal, "see", row.owner, row.group):
            raise web.HTTPError(404, f"dataset {dataset_id} not found")
        if not may(self.principal, action, row.owner, row.group):
            raise web.HTTPError(403, f"only the dataset's owner ({row.owner}) or an admin may {action} it")
        return row

    def check_quota(self, row) -> None:
        try:
            self.scheduler.tracker.check_submission(self.username, row.group)
        except StorageQuotaExceeded as e:
            raise web.HTTPError(403, str(e)) from None

    async def registered(self, path) -> tuple[str, int, int]:
        """A server folder under ``c.Datasets.allowed_roots``: ``(real path, files, bytes)``; 400 otherwise."""
        try:
            return await asyncio.to_thread(registered_folder, path, list(self.datasets.allowed_roots))
        except DatasetFileError as e:
            raise web.HTTPError(400, str(e)) from None

    def refuse_in_use(self, what: str, users: list) -> None:
        shown = ", ".join(f"run {i} ({s.value})" for i, s in users[:10])
        raise web.HTTPError(409, f"{what} is used by {shown}: deleting it would fail them (wait for them to end, "
                                 "or cancel them)")


class DatasetsHandler(DatasetMixin, APIHandler):
    async def get(self):
        everyone = self.listing_everyone("datasets")
        rows = await self.dispatcher.db.run(ds.list_datasets, None if everyone else self.username,
                                            sorted(self.principal.groups))
        self.write_json({"datasets": [dataset_model(r) for r in rows]})

    async def post(self):
        body = self.json_body()
        unknown = set(body) - {"name", "group", "description", "path"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(map(str, unknown)))[:200]}; allowed: "
                                     "name, group, description, path")
        name = body.get("name")
        if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
            raise web.HTTPError(400, f"dataset name {str(name)[:60]!r} must be 1-100 letters, digits, _, . or -, "
                                     "starting with a letter or digit")
        group = body.get("group") or ""
        if group and (not isinstance(group, str) or (group not in self.principal.groups and not self.is_admin)):
            raise web.HTTPError(403, f"you are not a member of group {str(group)[:60]!r}")
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise web.HTTPError(400, f"description must be text of at most {MAX_DESCRIPTION} characters")
        path = body.get("path")
        if path is not None and not self.is_admin:
            raise web.HTTPError(403, "only admins may register a server folder as a dataset")
        folder = await self.registered(path) if path is not None else None
        try:
            row = await self.dispatcher.db.run(ds.create_dataset, self.username, group, name, description, utcnow())
        except ds.DatasetExists:
            raise web.HTTPError(409, f"there is already a dataset {name!r} in "
                                     f"{'group ' + group if group else 'your datasets'}") from None
        if folder is not None:
            await self.dispatcher.db.run(ds.add_version, row.id, 1, self.username, folder[1], folder[2], folder[0],
                                         utcnow())
            row = await self.dispatcher.db.run(ds.get_dataset, row.id)
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{row.id}")
        self.write_json(dataset_model(row), status=201)


class DatasetHandler(DatasetMixin, APIHandler):
    async def get(self, dataset_id):
        row = await self.get_dataset(dataset_id)
        used = await self.dispatcher.db.run(ds.runs_using, row.id, None, False)
        visible = [(i, s) for i, s in used]
        self.write_json(dataset_model(row, visible if self.is_admin or row.owner == self.username else None))

    async def patch(self, dataset_id):
        row = await self.get_dataset(dataset_id, "change")
        body = self.json_body()
        if set(body) - {"description"} or not isinstance(body.get("description"), str) or \
                len(body["description"]) > MAX_DESCRIPTION:
            raise web.HTTPError(400, "only the description can be changed: {\"description\": \"...\"}")
        await self.dispatcher.db.run(ds.update_description, row.id, body["description"])
        self.write_json(dataset_model(await self.get_dataset(dataset_id)))

    async def delete(self, dataset_id):
        row = await self.get_dataset(dataset_id, "delete")
        users = await self.dispatcher.db.run(ds.delete_dataset, row.id)
        if users:
            self.refuse_in_use(f"dataset {row.name}", users)
        freed = 0
        for v in row.versions:
            freed += await asyncio.to_thread(self.datasets.files.remove_version, row.id, v.version)
        await asyncio.to_thread(self.datasets.files.remove_dataset, row.id)
        self.scheduler.tracker.add_dataset_bytes(ds.namespace_of(row.owner, row.group),
                                                 -sum(v.bytes for v in row.versions if not v.source_path))
        self.set_status(204)
        self.finish()


class VersionsHandler(DatasetMixin, APIHandler):
    async def post(self, dataset_id):
        """Register a server folder as the next version (admins)."""
        row = await self.get_dataset(dataset_id, "add")
        if not self.is_admin:
            raise web.HTTPError(403, "only admins may register a server folder as a dataset version")
        body = self.json_body()
        folder = await self.registered(body.get("path"))
        version = await self.dispatcher.db.run(ds.next_version, row.id)
        await self.dispatcher.db.run(ds.add_version, row.id, version, self.username, folder[1], folder[2],
                                     folder[0], utcnow())
        self.write_json(dataset_model(await self.get_dataset(dataset_id)), status=201)


class VersionHandler(DatasetMixin, APIHandler):
    async def get(self, dataset_id, version):
        """The version's files: ``[{"path", "bytes"}]`` (a registered folder: its counts only)."""
        row = await self.get_dataset(dataset_id)
        found = next((v for v in row.versions if v.version == int(version)), None)
        if found is None:
            raise web.HTTPError(404, f"dataset {row.name} has no version {version}")
        files = await asyncio.to_thread(self.datasets.files.version_files, row.id, found.version)
        limit = self.query_int("limit", 10_000, 1, 1_000_000)
        self.write_json({"dataset": row.id, "version": found.version, "files": found.files, "bytes": found.bytes,
                         "listing": [{"path": p, "bytes": n} for p, _, n in files[:limit]]})

    async def delete(self, dataset_id, version):
        row = await self.get_dataset(dataset_id, "delete")
        found = next((v for v in row.versions if v.version == int(version)), None)
        if found is None:
            raise web.HTTPError(404, f"dataset {row.name} has no version {version}")
        users = await self.dispatcher.db.run(ds.delete_version, row.id, found.version)
        if users:
            self.refuse_in_use(f"version {found.version} of dataset {row.name}", users)
        freed = await asyncio.to_thread(self.datasets.files.remove_version, row.id, found.version)
        if not found.source_path:
            self.scheduler.tracker.add_dataset_bytes(ds.namespace_of(row.owner, row.group), -found.bytes)
        self.write_json({"deleted": found.version, "freed_bytes": freed})


class UploadsHandler(DatasetMixin, APIHandler):
    async def post(self, dataset_id):
        """Open an upload: the files sent to it become the next version at commit.

        ``direct_url`` (or null) is this service's own listener, for the files' PUTs without the hub's proxy
        (``c.Datasets.upload_url``): the same application, so the same token check and rules. ``local_socket`` (or
        null) is the local push socket, for clients on this host (:class:`UploadTicketHandler`)."""
        row = await self.get_dataset(dataset_id, "add")
        self.check_quota(row)
        files = self.datasets.files
        upload_id = await asyncio.to_thread(files.new_upload)
        meta = {"dataset_id": row.id, "user": self.username}
        await asyncio.to_thread((files.upload_dir(upload_id) / "meta.json").write_text, json.dumps(meta))
        direct = self.datasets.advertised_upload_url(self.scheduler.service_url, self.settings["service_prefix"])
        self.write_json({"upload": upload_id, "dataset": row.id, "direct_url": direct,
                         "local_socket": self.scheduler.local_push.path}, status=201)


class _UploadMixin(DatasetMixin):
    async def upload(self, dataset_id: str, upload_id: str):
        """The caller's own open upload of a dataset they may add to; 404 otherwise."""
        row = await self.get_dataset(dataset_id, "add")
        files = self.datasets.files
        try:
            meta = json.loads(await asyncio.to_thread((files.upload_dir(upload_id) / "meta.json").read_text))
        except (OSError, ValueError):
            meta = None
        if not _UPLOAD_ID.fullmatch(upload_id) or not meta or meta.get("dataset_id") != row.id or \
                meta.get("user") != self.username:
            raise web.HTTPError(404, f"upload {upload_id[:40]} not found")
        return row

    def file_path(self) -> str:
        raw = self.get_argument("path", None)
        try:
            return check_relative_path(raw or "")
        except DatasetFileError as e:
            raise web.HTTPError(400, str(e)) from None


class UploadHandler(_UploadMixin, APIHandler):
    async def get(self, dataset_id, upload_id):
        """What the upload holds so far (to resume: send only what is missing)."""
        await self.upload(dataset_id, upload_id)
        manifest = await asyncio.to_thread(self.datasets.files.upload_manifest, upload_id)
        self.write_json({"upload": upload_id, "files": [{"path": p, "sha256": s, "bytes": n}
                                                        for p, (s, n) in sorted(manifest.items())]})

    async def delete(self, dataset_id, upload_id):
        await self.upload(dataset_id, upload_id)
        await asyncio.to_thread(self.datasets.files.abandon, upload_id)
        self.set_status(204)
        self.finish()


class CommitHandler(_UploadMixin, APIHandler):
    async def post(self, dataset_id, upload_id):
        row = await self.upload(dataset_id, upload_id)
        files = self.datasets.files
        manifest = await asyncio.to_thread(files.upload_manifest, upload_id)
        if not manifest:
            raise web.HTTPError(400, "the upload has no files: send them before committing")
        self.check_quota(row)
        version = await self.dispatcher.db.run(ds.next_version, row.id)
        count, size = await asyncio.to_thread(files.build_version, row.id, version, manifest)
        try:
            await self.dispatcher.db.run(ds.add_version, row.id, version, self.username, count, size, None,
                                         utcnow())
        except BaseException:
            await asyncio.to_thread(files.remove_version, row.id, version)
            raise
        await asyncio.to_thread(files.abandon, upload_id)
        self.scheduler.tracker.add_dataset_bytes(ds.namespace_of(row.owner, row.group), size)
        self.write_json(dataset_model(await self.get_dataset(dataset_id)), status=201)


class UploadFileHandler(_UploadMixin, APIHandler):
    """``PUT ...?path=P``: one file, streamed to disk and hashed as it arrives; ``POST ...?path=P&sha256=H&size=N``:
    the same without sending it, when the store already has that content (404 otherwise)."""

    @property
    def max_body_bytes(self) -> int:
        if self.request.method == "PUT":
            return self.scheduler.datasets.max_file_bytes
        return super().max_body_bytes

    async def admit(self) -> None:
        await super().admit()
        if self.request.method != "PUT":
            return
        self.check_declared_length()
        row = await self.upload(*self.path_args)
        self.check_quota(row)
        self._path = self.file_path()
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(self.max_body_bytes)
            # The server's body timeout is for code snapshots; a file may take long, but not for ever:
            # at least 1 MB/s.
            connection.set_body_timeout(300 + (self.declared_length() or 0) / 1e6)
        self._fd, self._temp = await asyncio.to_thread(self.datasets.files.incoming)
        self._digest, self._received = hashlib.sha256(), 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writing: asyncio.Future | None = None
        self._write_error: str | None = None

    async def data_received(self, chunk: bytes):  # type: ignore[override]  # tornado awaits what it returns
        if getattr(self, "_temp", None) is None:
            return super().data_received(chunk)
        self._received += len(chunk)
        if self._received > self.max_body_bytes:
            self._write_error = self._write_error or "too large"
            return
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= WRITE_BATCH:
            await self._hand_off()

    async def _hand_off(self) -> None:
        """Give the batch received so far to a thread that hashes and writes it, and go on receiving.

        The socket waits only while the batch before is still in the thread: batches are hashed in order,
        and at most two are held (one in the thread, one arriving), so memory stays flat.
        """
        await self._drain()
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if batch and not self._write_error and self._temp is not None:  # None: cut off meanwhile
            self._writing = asyncio.get_running_loop().run_in_executor(None, self._write, batch)

    async def _drain(self) -> None:
        """Wait for the batch in the thread, if any; its error is the upload's."""
        if self._writing is not None:
            error = await self._writing
            self._writing = None
            self._write_error = self._write_error or error

    def _write(self, batch: list[bytes]) -> str | None:
        """Hash and write one batch (in a thread: both release the GIL); the error, if any, as text."""
        try:
            for chunk in batch:
                self._digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view):]
        except OSError as e:
            return "disk full" if e.errno == errno.ENOSPC else str(e)
        return None

    def _discard(self) -> None:
        if getattr(self, "_temp", None) is None:
            return
        fd, temp, self._temp = self._fd, self._temp, None

        def remove(_=None) -> None:
            try:
                os.close(fd)
            except OSError:
                pass
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass

        if self._writing is not None and not self._writing.done():
            # The thread still writes to the file: closing it now could hand its number to another file.
            self._writing.add_done_callback(remove)
        else:
            remove()

    def on_connection_close(self) -> None:
        """Cut off half-way: nothing of the file is kept."""
        self._discard()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._discard()

    async def put(self, dataset_id, upload_id):
        await self._hand_off()
        await self._drain()
        try:
            sha256 = self._check_received()
        except web.HTTPError:
            # Gone before the refusal is heard, not once it has been logged; in a thread: freeing a large file takes
            # a while (nothing writes to it any more: drained above).
            await asyncio.to_thread(self._discard)
            raise
        os.close(self._fd)
        temp, self._temp = self._temp, None
        size = await asyncio.to_thread(self.datasets.files.keep, temp, sha256)
        await self._add(upload_id, sha256, size)

    def _check_received(self) -> str:
        """The file's SHA-256 once all of it is in, hashed and written; the refusal if it must not be kept."""
        if self._write_error == "too large":
            raise web.HTTPError(413, too_large(self.max_body_bytes))
        if self._write_error == "disk full":
            raise web.HTTPError(413, DISK_FULL)
        if self._write_error:
            raise web.HTTPError(400, f"the file could not be stored: {self._write_error}")
        declared = self.declared_length()
        if declared is not None and declared != self._received:
            raise web.HTTPError(400, f"the body was cut off: {self._received} of {declared} bytes")
        sha256 = self._digest.hexdigest()
        expected = self.request.headers.get("X-Content-SHA256")
        if expected and expected.lower() != sha256:
            raise web.HTTPError(400, f"the file's SHA-256 is {sha256}, not the {expected[:64]} that was sent")
        return sha256

    async def post(self, dataset_id, upload_id):
        await self.upload(dataset_id, upload_id)
        path = self.file_path()
        sha256 = (self.get_argument("sha256", "") or "").lower()
        if not _SHA256.fullmatch(sha256):
            raise web.HTTPError(400, "sha256 must be 64 hexadecimal digits")
        size = self.query_int("size", -1, 0, 2**62)
        if not await asyncio.to_thread(self.datasets.files.has_object, sha256, size):
            raise web.HTTPError(404, "the store has no file with this content: send it with PUT")
        self._path = path
        await self._add(upload_id, sha256, size)

    async def _add(self, upload_id: str, sha256: str, size: int) -> None:
        try:
            await asyncio.to_thread(self.datasets.files.add_to_upload, upload_id, self._path, sha256, size)
        except DatasetFileError as e:
            raise web.HTTPError(400, str(e)) from None
        self.write_json({"path": self._path, "sha256": sha256, "bytes": size})


class UploadTicketHandler(_UploadMixin, APIHandler):
    """``POST ...?path=P``: a ticket to pass the file P to the local push socket (``scheduler/local_push.py``)
    instead of sending it with PUT: the same checks as PUT (the caller's own upload, quota, path), and good for
    that file of that upload, once, for ``expires_in`` seconds. ``service_uid``: the account the service runs as,
    which the client checks the socket's listener is (``SO_PEERCRED``) before it hands it a file. 404 when the
    service takes no local pushes."""

    async def post(self, dataset_id, upload_id):
        row = await self.upload(dataset_id, upload_id)
        self.check_quota(row)
        path = self.file_path()
        local = self.scheduler.local_push
        if local.path is None:
            raise web.HTTPError(404, "this service takes no local pushes (c.Datasets.local_push is off, or its "
                                     "socket could not be made): send the file with PUT")
        try:
            ticket = local.tickets.issue(self.username, row.id, upload_id, path)
        except Refused as e:
            raise web.HTTPError(e.status, str(e)) from None
        self.write_json({"ticket": ticket, "path": path, "socket": local.path, "service_uid": os.geteuid(),
                         "expires_in": TICKET_SECONDS}, status=201)


default_handlers = [
    (r"/api/datasets/?", DatasetsHandler),
    (r"/api/datasets/(\d+)/?", DatasetHandler),
    (r"/api/datasets/(\d+)/versions/?", VersionsHandler),
    (r"/api/datasets/(\d+)/versions/(\d+)/?", VersionHandler),
    (r"/api/datasets/(\d+)/uploads/?", UploadsHandler),
    (r"/api/datasets/(\d+)/uploads/([^/]+)/?", UploadHandler),
    (r"/api/datasets/(\d+)/uploads/([^/]+)/commit", CommitHandler),
    (r"/api/datasets/(\d+)/uploads/([^/]+)/files", UploadFileHandler),
    (r"/api/datasets/(\d+)/uploads/([^/]+)/tickets", UploadTicketHandler),
]
