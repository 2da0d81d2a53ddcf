"""/api/runs: submit, list, read, cancel; a run's events, logs and outputs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from tornado import iostream, web

from .. import dataset_store, store, tracking_store
from ..checkpoints import list_checkpoints
from ..metrics import goal_of, rules_from_json
from ..dispatcher import RunNotActive
from ..orm import CLIENT_KEY_MAX, Run
from ..ownership import may
from ..rundir import remove_run_dir
from ..runenv import RunPaths
from ..snapshot import SnapshotError
from ..spec import SpecError, parse_submission
from ..states import RunState
from ..tracker import StorageQuotaExceeded
from .base import APIHandler, HandlerMixin, loads_json, parse_id

LOG_CHUNK = 64 * 1024
MAX_LIST_LIMIT = 1000
MAX_LIST_OFFSET = 10**9
MAX_LOG_OFFSET = 2**53
MAX_TAIL_LINES = 10**6


# ?kind=: training runs (the default), model-server replicas, batch inference jobs, or all of them.
RUN_KINDS = ("train", "serving", "batch", "all")


def run_model(row: Run, live: dict | None = None) -> dict:
    model = {
        "id": row.id,
        "kind": getattr(row, "kind", None) or "train",
        "parent_id": getattr(row, "parent_id", None),
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
        # Multi-node runs: the shape asked for, and every node with its GPUs once placed.
        "nodes": getattr(row, "nodes", None) or 1,
        "gpus_per_node": getattr(row, "gpus_per_node", None) or 0,
        "procs_per_node": getattr(row, "procs_per_node", None),
        "torchrun": bool(getattr(row, "torchrun", False)),
        "placement": getattr(row, "placement", None) or ([[row.node, row.assigned_gpus]] if row.node else []),
        "exit_code": row.exit_code,
        "snapshot_bytes": row.snapshot_bytes,
        # What the run leaves behind: metric rules and summary (latest, min, max per metric), disk use.
        "metrics": getattr(row, "metric_rules", None),
        "metric_summary": with_best(getattr(row, "metric_summary", None), getattr(row, "metric_rules", None)),
        "disk_bytes": getattr(row, "disk_bytes", None) or 0,
        "datasets": [{k: d[k] for k in ("name", "dataset", "version")} for d in getattr(row, "datasets", None) or ()],
        "checkpoint": (f"{row.checkpoint_run}" + (f":{row.checkpoint_name}" if row.checkpoint_name else "")
                       if getattr(row, "checkpoint_run", None) is not None else None),
    }
    if live:
        model.update(live)
    return model


def with_best(summary: dict | None, rules: list | None) -> dict:
    """The summary with each metric's ``best`` and ``goal`` (a rule's goal, else lower is better for losses)."""
    parsed = rules_from_json(rules)
    out = {}
    for name, entry in (summary or {}).items():
        goal = goal_of(name, parsed)
        out[name] = dict(entry, goal=goal, best=entry.get("min") if goal == "minimize" else entry.get("max"))
    return out


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def submission_body_bytes(max_snapshot_bytes: int) -> int:
    """The largest submission body: the snapshot base64-encoded (4/3) plus a MiB for the settings and framing."""
    return -(-max_snapshot_bytes // 3) * 4 + 1024**2


def idempotency_key(header: str | None) -> str | None:
    """A submission's ``Idempotency-Key`` (IETF httpapi draft; quoted or not), or 400 when malformed."""
    if header is None:
        return None
    key = header[1:-1] if len(header) >= 2 and header[0] == header[-1] == '"' else header
    if not key or len(key) > CLIENT_KEY_MAX or not all(" " <= c <= "~" for c in key):
        raise web.HTTPError(400, f"the Idempotency-Key header must be 1 to {CLIENT_KEY_MAX} printable ASCII "
                                 "characters, e.g. a UUID")
    return key


class RunAccessMixin(HandlerMixin):
    async def get_visible_run(self, run_id: str) -> Run:
        """The run, if the caller owns it or is an admin; 404 otherwise (even when it exists)."""
        row = await self.dispatcher.db.run(store.get_run, parse_id(run_id))
        if row is None or not may(self.principal, "see", row.owner):
            raise web.HTTPError(404, f"run {run_id} not found")
        return row

    async def _resolve_datasets(self, refs: list) -> list | None:
        """``--dataset`` entries as the exact versions the run will read; 400 naming what cannot be used.

        ``NAME`` is the caller's own dataset (else the one of that name among their groups'),
        ``GROUP/NAME`` a group's; without ``:VERSION``, the latest version now.
        """
        if not refs:
            return None
        if not self.dispatcher.executor.reads_inputs:
            raise web.HTTPError(400, "datasets need an executor whose runs can read them (bound read-only, or "
                                     "hard-linked on the data folder its nodes share); this cluster's cannot yet")
        principal = self.principal
        resolved = []
        for alias, group, name, version in refs:
            if group is not None:
                row = await self.dispatcher.db.run(dataset_store.find_dataset, f"group:{group}", name)
            else:
                row = await self.dispatcher.db.run(dataset_store.find_dataset, principal.name, name)
                if row is None:
                    found = [r for g in sorted(principal.groups) if (r := await self.dispatcher.db.run(
                        dataset_store.find_dataset, f"group:{g}", name)) is not None]
                    if len(found) > 1:
                        raise web.HTTPError(400, f"dataset {name!r} is in several of your groups ("
                                                 f"{', '.join(r.group for r in found)}): write GROUP/{name}")
                    row = found[0] if found else None
            shown = f"{group}/{name}" if group else name
            if row is None or not may(principal, "use", row.owner, row.group):
                raise web.HTTPError(400, f"dataset {shown!r} not found")
            versions = {v.version: v for v in row.versions}
            if not versions:
                raise web.HTTPError(400, f"dataset {shown!r} has no version yet: push its files first")
            chosen = versions.get(version if version is not None else max(versions))
            if chosen is None:
                raise web.HTTPError(400, f"dataset {shown!r} has no version {version} (versions: "
                                         f"{', '.join(map(str, sorted(versions)))})")
            resolved.append({"name": alias, "dataset_id": row.id, "dataset": (f"{row.group}/" if row.group else "")
                             + row.name, "version": chosen.version,
                             "path": self.scheduler.datasets.version_path(row, chosen)})
        return resolved

    async def _check_checkpoint_source(self, run_id: int, name: str | None) -> None:
        """``--checkpoint``: a run the caller may see, and the checkpoint, when named, one it has."""
        source = await self.dispatcher.db.run(store.get_run, run_id)
        if source is None or not may(self.principal, "use", source.owner):
            raise web.HTTPError(400, f"checkpoint: run {run_id} not found")
        if name is not None:
            folder = RunPaths(Path(source.run_dir)).checkpoints
            names = {c["raw_name"] for c in await asyncio.to_thread(list_checkpoints, str(folder))}
            if name not in names:
                raise web.HTTPError(400, f"checkpoint: run {run_id} has no checkpoint {name[:200]!r} "
                                         f"(see nothing model ls {run_id})")

    def model(self, row: Run) -> dict:
        active = self.dispatcher.active.get(row.id)
        return run_model(row, active.live_fields() if active else None)

    async def checked_submission(self, body: dict, archive: bytes, what: str = "the code snapshot",
                                 is_admin: bool | None = None) -> dict:
        """The values of a run the caller may queue (a run, or a tuning's trial), with its datasets resolved;
        every refusal a 4xx with the reason: the spec, the snapshot's size, storage quotas, the checkpoint source."""
        sched = self.scheduler
        try:
            values = parse_submission(body, sched.max_gpus_per_node, sched.max_cpus_per_node,
                                      self.is_admin if is_admin is None else is_admin,
                                      self.current_user.get("groups") or [], cluster_nodes=len(sched.inventory))
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        if len(archive) > sched.max_snapshot_bytes:
            raise web.HTTPError(413, f"{what} is {len(archive)} bytes; the limit is "
                                     f"{sched.max_snapshot_bytes} bytes (add large files to .nothingignore)")
        values.update(owner=self.username, snapshot_bytes=len(archive))
        try:
            sched.tracker.check_submission(self.username, values["group"])
        except StorageQuotaExceeded as e:
            raise web.HTTPError(403, str(e)) from None
        if values.get("checkpoint_run") is not None:
            await self._check_checkpoint_source(values["checkpoint_run"], values.get("checkpoint_name"))
        values["datasets"] = await self._resolve_datasets(values.pop("dataset_refs", []))
        return values

    async def queue_submission(self, body: dict, archive: bytes, what: str = "the code snapshot",
                               client_key: str | None = None):
        """Check a submission and queue it as the caller's run; every refusal is a 4xx with the reason.

        With ``client_key``, a repeat of the caller's earlier submission raises ``store.DuplicateSubmission``.
        """
        values = await self.checked_submission(body, archive, what)
        if client_key is not None:
            values["client_key"] = client_key
        try:
            return await self.dispatcher.submit(values, archive)
        except SnapshotError as e:
            raise web.HTTPError(400, str(e)) from None


def parse_since(raw: str | None) -> datetime | None:
    """``?since=``: an ISO 8601 date or time (UTC unless it says otherwise), as naive UTC; 400 otherwise."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise web.HTTPError(400, f"?since= must be an ISO 8601 date or time such as 2026-12-01 or "
                                 f"2026-12-01T08:00:00Z, not {raw[:40]!r}") from None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


class RunsHandler(RunAccessMixin, APIHandler):
    @property
    def max_body_bytes(self) -> int:
        return submission_body_bytes(self.scheduler.max_snapshot_bytes)

    async def get(self):
        states = []
        for value in self.get_arguments("state"):
            try:
                states.append(RunState(value))
            except ValueError:
                raise web.HTTPError(400, f"unknown state {value!r}; states are: "
                                         f"{', '.join(s.value for s in RunState)}") from None
        everyone = self.query_flag("all")
        owner = self.get_argument("owner", None)
        if (everyone or (owner and owner != self.username)) and not self.is_admin:
            raise web.HTTPError(403, "only admins may list other users' runs")
        if not everyone and owner is None:
            owner = self.username
        limit = self.query_int("limit", 100, 1, MAX_LIST_LIMIT)
        offset = self.query_int("offset", 0, 0, MAX_LIST_OFFSET)
        experiment = self.get_argument("experiment", None) or None
        since = parse_since(self.get_argument("since", None))
        kind: str | None = self.get_argument("kind", "train")
        if kind not in RUN_KINDS:
            raise web.HTTPError(400, f"?kind= is one of {', '.join(RUN_KINDS)}, not {str(kind)[:40]!r}")
        kind = None if kind == "all" else kind
        rows = await self.dispatcher.db.run(store.list_runs, owner, states, limit, offset, experiment, since, kind)
        total = await self.dispatcher.db.run(store.count_runs, owner, states, experiment, since, kind)
        self.write_json({"runs": [self.model(r) for r in rows], "total": total, "limit": limit, "offset": offset})

    async def post(self):
        key = idempotency_key(self.request.headers.get("Idempotency-Key"))
        from .templates import apply_template

        body, archive = await apply_template(self, *self._submission(), kind="run")
        try:
            run = await self.queue_submission(body, archive, client_key=key)
        except store.DuplicateSubmission as e:  # a retry: 200 with the run the first attempt made
            self.set_header("Location", f"{self.request.path.rstrip('/')}/{e.run.id}")
            self.write_json(self.model(e.run))
            return
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{run.id}")
        self.write_json(self.model(run.submitted_row), status=201)

    def _submission(self) -> tuple[dict, bytes]:
        fields, files = self.form()
        if fields or files:
            spec = fields.get("spec")
            if not spec:
                raise web.HTTPError(400, "a multipart submission needs a 'spec' field with the run's JSON settings")
            body = loads_json(spec[0], "the 'spec' field")
            if not isinstance(body, dict):
                raise web.HTTPError(400, "the 'spec' field must be a JSON object")
            if not files.get("archive"):
                if "template" in body:
                    return body, b""  # the template's code
                raise web.HTTPError(400, "a multipart submission needs an 'archive' file (a .tar.gz of the code)")
            return body, files["archive"][0]["body"]
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/") or "form-urlencoded" in content_type:
            raise web.HTTPError(400, "the form has no readable fields: send 'spec' (JSON) and 'archive' (a file)")
        body = self.json_body()
        encoded = body.pop("archive", None)
        if encoded is None and "template" in body:
            return body, b""  # the template's code
        if not isinstance(encoded, str):
            raise web.HTTPError(400, "a JSON submission needs 'archive': the code as a base64-encoded .tar.gz")
        try:
            return body, base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise web.HTTPError(400, "'archive' is not valid base64") from None


class RunDeleteMixin(HandlerMixin):
    async def delete_run(self, row: Run, stop: bool, by_owner_object: bool = False) -> None:
        """Remove a run: its rows, folder, log, TensorBoard files, checkpoints and metrics; 409 with the reason
        while it is active (unless ``stop``) or while something else needs it (``by_owner_object``: the batch
        inference or stage resource it belongs to is being deleted, and takes it along)."""
        dispatcher = self.dispatcher
        if row.id in dispatcher.active:
            if not stop:
                raise web.HTTPError(409, f"run {row.id} is {dispatcher.active[row.id].state.value}: stop it first "
                                         f"(nothing cancel {row.id}), or delete with ?stop=true")
            try:
                await dispatcher.cancel(row.id, by=self.username)
            except RunNotActive:
                pass
            deadline = dispatcher.kill_grace_seconds + 30
            waited = 0.0
            while row.id in dispatcher.active and waited < deadline:
                await asyncio.sleep(0.1)
                waited += 0.1
            if row.id in dispatcher.active:
                raise web.HTTPError(409, f"run {row.id} is still stopping; delete it once it has ended")
            row = await dispatcher.db.run(store.get_run, row.id)
        blockers = await dispatcher.db.run(tracking_store.run_deletion_blockers, row.id, by_owner_object)
        if blockers:
            raise web.HTTPError(409, f"run {row.id} cannot be deleted: {'; '.join(blockers)}")
        await dispatcher.helper.call_idempotent(remove_run_dir, row.run_dir)
        if not await dispatcher.db.run(tracking_store.delete_run, row.id, by_owner_object):
            raise web.HTTPError(409, f"run {row.id} cannot be deleted: another run started from it meanwhile")
        self.scheduler.tracker.forget(row.id, row.owner, row.group or "", row.disk_bytes or 0)


class RunHandler(RunDeleteMixin, RunAccessMixin, APIHandler):
    async def get(self, run_id):
        self.write_json(self.model(await self.get_visible_run(run_id)))

    async def delete(self, run_id):
        """As in the seed, an active run must be stopped first: ``?stop=true`` stops it, then deletes it."""
        row = await self.get_visible_run(run_id)
        await self.delete_run(row, self.query_flag("stop"))
        self.set_status(204)
        self.finish()


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
    """Up to ``size`` bytes from ``offset``; nothing past the end (some file systems refuse such a seek)."""
    with open(path, "rb") as f:
        if offset >= os.fstat(f.fileno()).st_size:
            return b""
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
        offset = self.query_int("offset", -1, 0, MAX_LOG_OFFSET)
        tail = self.query_int("tail", 0, 1, MAX_TAIL_LINES)
        if not os.path.exists(path):
            raise web.HTTPError(404, f"run {row.id} has no log yet")
        if offset < 0:
            offset = await asyncio.to_thread(_tail_offset, path, tail) if tail else 0
        follow = self.query_flag("follow")
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


def _list_outputs(paths: RunPaths) -> list[tuple[str, int]]:
    """``(kind/relative path, size)`` of every regular file; names as the OS gives them (surrogateescape)."""
    files = []
    for kind, folder in paths.output_dirs().items():
        if not folder.is_dir():
            continue
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                full = Path(root, name)
                try:
                    if full.is_symlink() or not full.is_file():
                        continue
                    size = full.stat().st_size
                except OSError:  # removed while we looked: the run is still writing
                    continue
                files.append((f"{kind}/{full.relative_to(folder).as_posix()}", size))
    return files


def output_entry(path: str, size: int) -> dict:
    """One file as the API lists it.

    ``path`` is the name to show: exact for UTF-8 names, with U+FFFD for bytes that are
    not UTF-8.  ``href`` downloads exactly that file, relative to the run's URL
    (``runs/<id>/<href>``): the name's bytes percent-encoded in a query, because
    configurable-http-proxy refuses paths whose escapes are not UTF-8, and a query also
    keeps ``#``, ``?`` and newlines in names harmless.
    """
    raw = os.fsencode(path)
    return {"path": raw.decode("utf-8", "replace"), "href": f"outputs/?path={quote(raw, safe='/')}", "size": size}


def content_disposition(filename: str) -> str:
    """RFC 6266: a printable-ASCII fallback and the real name in RFC 5987 form; no name can break the header."""
    shown = os.fsencode(filename).decode("utf-8", "replace")
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in shown).strip() or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(shown, safe='')}"


def _resolve_output(paths: RunPaths, relpath: str) -> Path:
    kind, _, rest = relpath.partition("/")
    folder = paths.output_dirs().get(kind)
    if folder is None or not rest:
        raise web.HTTPError(404, f"no output {relpath!r}: paths start with model/ or checkpoints/")
    try:
        target = (folder / rest).resolve()
        found = target.is_relative_to(folder.resolve()) and target.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system
        found = False
    if not found:
        raise web.HTTPError(404, f"no output file {relpath!r}")
    return target


def _write_archive(paths: RunPaths, files: list[tuple[str, int]]) -> str:
    fd, name = tempfile.mkstemp(suffix=".tar.gz")
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for path, _ in files:
            kind, _, rest = path.partition("/")
            try:
                tar.add(str(paths.output_dirs()[kind] / rest), arcname=path, recursive=False)
            except FileNotFoundError:  # removed since it was listed; nothing of it was written yet
                continue
    return name


class _FileStreamer(HandlerMixin):
    async def stream_file(self, path: str, content_type: str, filename: str) -> None:
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Disposition", content_disposition(filename))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Length", str(os.path.getsize(path)))
        offset = 0
        try:
            while True:
                chunk = await asyncio.to_thread(_read_from, path, offset, 1024 * 1024)
                if not chunk:
                    break
                offset += len(chunk)
                self.write(chunk)
                await self.flush()
        except iostream.StreamClosedError:  # the client went away
            return
        self.finish()


class _OutputFile(_FileStreamer, RunAccessMixin, APIHandler):
    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """File names are bytes: keep those that are not UTF-8 as the OS does (surrogateescape)."""
        return value.decode("utf-8", "surrogateescape")

    async def send_output(self, row: Run, relpath: str) -> None:
        target = await asyncio.to_thread(_resolve_output, RunPaths(Path(row.run_dir)), relpath)
        await self.stream_file(str(target), "application/octet-stream", target.name)


class OutputsHandler(_OutputFile):
    """The run's output files (``?path=`` one of them, by its ``href``)."""

    async def get(self, run_id):
        row = await self.get_visible_run(run_id)
        # The exact bytes: get_argument would strip the name and turn control characters into spaces.
        exact = self.request.query_arguments.get("path")
        if exact is not None:
            await self.send_output(row, exact[0].decode("utf-8", "surrogateescape"))
            return
        files = await asyncio.to_thread(_list_outputs, RunPaths(Path(row.run_dir)))
        self.write_json({"files": [output_entry(p, n) for p, n in files], "total_bytes": sum(n for _, n in files)})


class OutputFileHandler(_OutputFile):
    """``outputs/<kind>/<path>``: a file by a readable URL (UTF-8 names)."""

    async def get(self, run_id, relpath):
        await self.send_output(await self.get_visible_run(run_id), relpath)


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
