"""/api/runs: submit, list, read, cancel; a run's events, logs and outputs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import tarfile
import tempfile
from pathlib import Path

from tornado import iostream, web

from .. import store
from ..dispatcher import RunNotActive
from ..orm import Run
from ..runenv import RunPaths
from ..snapshot import SnapshotError
from ..spec import SpecError, parse_submission
from ..states import RunState
from .base import APIHandler

LOG_CHUNK = 64 * 1024


def run_model(row: Run, live: dict | None = None) -> dict:
    model = {
        "id": row.id,
        "owner": row.owner,
        "name": row.name,
        "experiment": row.experiment,
        "group": row.group,
        "preemptible": row.preemptible,
        "entry_point": row.entry_point,
        "args": row.args,
        "hyperparameters": row.hyperparameters,
        "gpus": row.gpus,
        "cpus": row.cpus,
        "memory_bytes": row.memory_bytes,
        "priority": row.priority,
        "max_seconds": row.max_seconds,
        "state": row.state.value,
        "reason": row.reason,
        "queue_position": None,
        "estimated_start": None,
        "zombie": None,
        "submitted_at": _iso(row.submitted_at),
        "started_at": _iso(row.started_at),
        "ended_at": _iso(row.ended_at),
        "node": row.node,
        "assigned_gpus": row.assigned_gpus,
        "exit_code": row.exit_code,
        "snapshot_bytes": row.snapshot_bytes,
    }
    if live:
        model.update(live)
    return model


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


class RunAccessMixin:
    async def get_visible_run(self, run_id: str) -> Run:
        """The run, if the caller owns it or is an admin; 404 otherwise (even when it exists)."""
        row = await self.dispatcher.db.run(store.get_run, int(run_id))
        if row is None or (row.owner != self.username and not self.is_admin):
            raise web.HTTPError(404, f"run {run_id} not found")
        return row

    def model(self, row: Run) -> dict:
        active = self.dispatcher.active.get(row.id)
        return run_model(row, active.live_fields() if active else None)

    async def queue_submission(self, body: dict, archive: bytes, what: str = "the code snapshot"):
        """Check a submission and queue it as the caller's run; every refusal is a 4xx with the reason."""
        sched = self.scheduler
        try:
            values = parse_submission(body, sched.max_gpus_per_node, sched.max_cpus_per_node, self.is_admin,
                                      self.current_user.get("groups") or [])
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        if len(archive) > sched.max_snapshot_bytes:
            raise web.HTTPError(413, f"{what} is {len(archive)} bytes; the limit is "
                                     f"{sched.max_snapshot_bytes} bytes (add large files to .nothingignore)")
        values.update(owner=self.username, snapshot_bytes=len(archive))
        try:
            return await self.dispatcher.submit(values, archive)
        except SnapshotError as e:
            raise web.HTTPError(400, str(e)) from None


class RunsHandler(RunAccessMixin, APIHandler):
    async def get(self):
        states = []
        for value in self.get_arguments("state"):
            try:
                states.append(RunState(value))
            except ValueError:
                raise web.HTTPError(400, f"unknown state {value!r}; states are: "
                                         f"{', '.join(s.value for s in RunState)}") from None
        everyone = self.get_argument("all", "0") in ("1", "true")
        owner = self.get_argument("owner", None)
        if (everyone or (owner and owner != self.username)) and not self.is_admin:
            raise web.HTTPError(403, "only admins may list other users' runs")
        if not everyone and owner is None:
            owner = self.username
        limit = min(int(self.get_argument("limit", "100")), 1000)
        offset = int(self.get_argument("offset", "0"))
        rows = await self.dispatcher.db.run(store.list_runs, owner, states, limit, offset)
        self.write_json({"runs": [self.model(r) for r in rows]})

    async def post(self):
        body, archive = self._submission()
        run = await self.queue_submission(body, archive)
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{run.id}")
        self.write_json(self.model(run.submitted_row), status=201)

    def _submission(self) -> tuple[dict, bytes]:
        if self.request.files or self.request.body_arguments:
            spec = self.get_body_argument("spec", None)
            if spec is None:
                raise web.HTTPError(400, "a multipart submission needs a 'spec' field with the run's JSON settings")
            try:
                body = json.loads(spec)
            except ValueError as e:
                raise web.HTTPError(400, f"the 'spec' field is not valid JSON: {e}") from None
            if not isinstance(body, dict):
                raise web.HTTPError(400, "the 'spec' field must be a JSON object")
            files = self.request.files.get("archive")
            if not files:
                raise web.HTTPError(400, "a multipart submission needs an 'archive' file (a .tar.gz of the code)")
            return body, files[0]["body"]
        body = self.json_body()
        encoded = body.pop("archive", None)
        if not isinstance(encoded, str):
            raise web.HTTPError(400, "a JSON submission needs 'archive': the code as a base64-encoded .tar.gz")
        try:
            return body, base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise web.HTTPError(400, "'archive' is not valid base64") from None


class RunHandler(RunAccessMixin, APIHandler):
    async def get(self, run_id):
        self.write_json(self.model(await self.get_visible_run(run_id)))


class CancelHandler(RunAccessMixin, APIHandler):
    async def post(self, run_id):
        row = await self.get_visible_run(run_id)
        try:
            await self.dispatcher.cancel(row.id, by=self.username)
        except RunNotActive:
            raise web.HTTPError(409, f"run {row.id} has already ended ({row.state.value})") from None
        row = await self.dispatcher.db.run(store.get_run, row.id)
        self.write_json(self.model(row))


class EventsHandler(RunAccessMixin, APIHandler):
    async def get(self, run_id):
        row = await self.get_visible_run(run_id)
        events = await self.dispatcher.db.run(store.run_events, row.id)
        self.write_json({"events": [
            {"at": _iso(e.at), "from": e.from_state.value if e.from_state else None, "to": e.to_state.value,
             "reason": e.reason} for e in events
        ]})


def _read_from(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _tail_offset(path: str, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of the file start."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        found = 0
        while pos > 0:
            step = min(LOG_CHUNK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            if pos + step == end and block.endswith(b"\n"):
                block = block[:-1]
            for i in range(len(block) - 1, -1, -1):
                if block[i] == 10:
                    found += 1
                    if found == lines:
                        return pos + i + 1
        return 0


class LogsHandler(RunAccessMixin, APIHandler):
    """Plain-text log: ``?tail=N`` lines, ``?offset=B`` bytes on, ``?follow=1`` to stream until the run ends."""

    async def get(self, run_id):
        row = await self.get_visible_run(run_id)
        path = row.log_path
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        try:
            if self.get_argument("offset", None) is not None:
                offset = max(0, int(self.get_argument("offset")))
            elif self.get_argument("tail", None) is not None:
                offset = await asyncio.to_thread(_tail_offset, path, max(1, int(self.get_argument("tail"))))
            else:
                offset = 0
        except ValueError:
            raise web.HTTPError(400, "offset and tail must be whole numbers") from None
        if not os.path.exists(path):
            raise web.HTTPError(404, f"run {row.id} has no log yet")
        follow = self.get_argument("follow", "0") in ("1", "true")
        if not follow:
            data = await asyncio.to_thread(_read_from, path, offset, 8 * 1024 * 1024)
            self.set_header("X-Log-Offset", str(offset + len(data)))
            self.set_header("X-Run-State", self.model(row)["state"])
            self.finish(data)
            return
        try:
            while True:
                data = await asyncio.to_thread(_read_from, path, offset, LOG_CHUNK)
                if data:
                    offset += len(data)
                    self.write(data)
                    await self.flush()
                    continue
                if row.id not in self.dispatcher.active:
                    break
                await asyncio.sleep(0.2)
        except iostream.StreamClosedError:
            return
        self.finish()


def _list_outputs(paths: RunPaths) -> list[dict]:
    files = []
    for kind, folder in paths.output_dirs().items():
        if not folder.is_dir():
            continue
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                full = Path(root, name)
                if full.is_symlink() or not full.is_file():
                    continue
                files.append({"path": f"{kind}/{full.relative_to(folder).as_posix()}", "size": full.stat().st_size})
    return files


def _resolve_output(paths: RunPaths, relpath: str) -> Path:
    kind, _, rest = relpath.partition("/")
    folder = paths.output_dirs().get(kind)
    if folder is None or not rest:
        raise web.HTTPError(404, f"no output {relpath!r}: paths start with model/ or checkpoints/")
    target = (folder / rest).resolve()
    if not target.is_relative_to(folder.resolve()) or not target.is_file():
        raise web.HTTPError(404, f"no output file {relpath!r}")
    return target


def _write_archive(paths: RunPaths, files: list[dict]) -> str:
    fd, name = tempfile.mkstemp(suffix=".tar.gz")
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for entry in files:
            kind, _, rest = entry["path"].partition("/")
            tar.add(str(paths.output_dirs()[kind] / rest), arcname=entry["path"], recursive=False)
    return name


class OutputsHandler(RunAccessMixin, APIHandler):
    async def get(self, run_id):
        row = await self.get_visible_run(run_id)
        files = await asyncio.to_thread(_list_outputs, RunPaths(Path(row.run_dir)))
        self.write_json({"files": files, "total_bytes": sum(f["size"] for f in files)})


class _FileStreamer:
    async def stream_file(self, path: str, content_type: str, filename: str) -> None:
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.set_header("Content-Length", str(os.path.getsize(path)))
        offset = 0
        while True:
            chunk = await asyncio.to_thread(_read_from, path, offset, 1024 * 1024)
            if not chunk:
                break
            offset += len(chunk)
            self.write(chunk)
            await self.flush()
        self.finish()


class OutputFileHandler(_FileStreamer, RunAccessMixin, APIHandler):
    async def get(self, run_id, relpath):
        row = await self.get_visible_run(run_id)
        target = await asyncio.to_thread(_resolve_output, RunPaths(Path(row.run_dir)), relpath)
        await self.stream_file(str(target), "application/octet-stream", target.name)


class OutputArchiveHandler(_FileStreamer, RunAccessMixin, APIHandler):
    async def get(self, run_id):
        row = await self.get_visible_run(run_id)
        paths = RunPaths(Path(row.run_dir))
        files = await asyncio.to_thread(_list_outputs, paths)
        archive = await asyncio.to_thread(_write_archive, paths, files)
        try:
            await self.stream_file(archive, "application/gzip", f"run-{row.id}-outputs.tar.gz")
        finally:
            os.unlink(archive)


default_handlers = [
    (r"/api/runs/?", RunsHandler),
    (r"/api/runs/(\d+)/?", RunHandler),
    (r"/api/runs/(\d+)/cancel", CancelHandler),
    (r"/api/runs/(\d+)/events", EventsHandler),
    (r"/api/runs/(\d+)/logs", LogsHandler),
    (r"/api/runs/(\d+)/outputs/?", OutputsHandler),
    (r"/api/runs/(\d+)/outputs\.tar\.gz", OutputArchiveHandler),
    (r"/api/runs/(\d+)/outputs/(.+)", OutputFileHandler),
]
