"""/api/models: models (EasyMaker's 모델): create from a run, a tuning, an upload or a server folder; list, read,
edit name/description/tags, delete.

A model is addressed by id or by name (the caller's own, else their group's). Access is the one rule of
``ownership.py``: the owner and admins may do anything, the group's members see and use it, others get 404.
Creating one copies the artifact into the model store (``scheduler/models.py``) and checks it with the
serving runtime's ``artifacts.inspect`` before anything is kept; a refusal leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from tornado import web

from .. import models as md
from .. import store
from .. import tuning as tc
from .. import tuning_spec as ts
from ..accounts import AccountError
from ..dispatcher import utcnow
from ..orm import Model, Run
from ..ownership import Action, may
from ..serving_runtime import artifacts
from ..states import RunState
from .base import MAX_ID, APIHandler, HandlerMixin, loads_json
from .runs import submission_body_bytes
from .tunings import tuning_model


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def model_json(row: Model, run_name: str | None = None) -> dict:
    return {"id": row.id, "owner": row.owner, "group": row.group, "name": row.name,
            "description": row.description, "framework": row.framework,
            "framework_version": row.framework_version, "format": row.artifact_format,
            "artifact_path": row.artifact_path, "size_bytes": row.size_bytes, "tags": row.tags or {},
            "source": {"kind": row.source_kind, "run_id": row.source_run_id, "run_name": run_name,
                       "tuning_id": row.source_tuning_id, "path": row.source_path},
            "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}


async def find_model(handler: HandlerMixin, ref: str, action: Action = "see") -> Model:
    """The model ``ref`` (an id, or a name: the caller's own, else their group's) if the caller may ``action``
    it: 404 when they may not even see it, 403 when they may see but not ``action`` it."""
    db = handler.dispatcher.db
    principal = handler.principal
    ref = ref.strip()
    if ref.isascii() and ref.isdigit():
        row = await db.run(md.get_model, int(ref)) if len(ref) <= 19 and int(ref) <= MAX_ID else None
    elif not md.MODEL_NAME.fullmatch(ref):
        row = None  # no model has such a name
    else:
        row = await db.run(md.find_own, principal.name, ref)
        if row is None:
            shared = await db.run(md.models_named, ref, sorted(principal.groups))
            if len(shared) > 1:
                raise web.HTTPError(400, f"model {ref[:100]!r} is in several of your groups "
                                         f"({', '.join(r.group for r in shared)}): use its id")
            row = shared[0] if shared else None
    if row is None or not may(principal, "see", row.owner, row.group):
        raise web.HTTPError(404, f"model {ref[:100]!r} not found")
    if not may(principal, action, row.owner, row.group):
        raise web.HTTPError(403, f"only the owner of model {row.name!r} ({row.owner}) or an admin may {action} it")
    return row


class ModelMixin(HandlerMixin):
    @property
    def models(self) -> md.Models:
        return self.scheduler.models

    async def as_json(self, row: Model) -> dict:
        names = await self.dispatcher.db.run(md.run_names, [row.source_run_id])
        return model_json(row, names.get(row.source_run_id) if row.source_run_id is not None else None)

    async def source_run(self, run_id: int, what: str = "") -> Run:
        """A training run the caller may see, COMPLETE (the seed: only a completed training becomes a model)."""
        row = await self.dispatcher.db.run(store.get_run, run_id)
        if row is None or not may(self.principal, "use", row.owner):
            raise web.HTTPError(404, f"{what}run {run_id} not found")
        if getattr(row, "kind", "train") != "train":
            raise web.HTTPError(400, f"{what}run {run_id} is a {row.kind} run, not a training")
        if row.state != RunState.COMPLETE:
            raise web.HTTPError(409, f"{what}run {run_id} is {row.state.value}: only a COMPLETE run becomes a model")
        if row.id in self.dispatcher.active:
            raise web.HTTPError(409, f"{what}run {run_id} is still ending: try again in a moment")
        return row

    async def best_trial_run(self, tuning_id: int) -> Run:
        row = await self.dispatcher.db.run(tc.get_tuning, tuning_id)
        if row is None or not may(self.principal, "use", row.owner, row.group):
            raise web.HTTPError(404, f"tuning {tuning_id} not found")
        if row.state != ts.COMPLETE:
            raise web.HTTPError(409, f"tuning {tuning_id} is {row.state}: only a COMPLETE tuning becomes a model")
        best = tuning_model(row)["best_trial"]
        if best is None:
            raise web.HTTPError(409, f"tuning {tuning_id} has no succeeded trial to make a model from")
        return await self.source_run(best["run_id"], f"tuning {tuning_id}'s best trial (number {best['number']}), ")

    async def copy_source(self, source: md.Source, staging: str) -> tuple[dict[str, Any], md.Copied]:
        """Copy the artifact into ``staging``; the source columns of the model.  HTTPError for a refusal."""
        limits = (self.models.max_artifact_bytes, self.models.max_files)
        columns: dict[str, Any] = {"source_kind": source.kind, "source_path": source.path}
        if source.kind in ("run", "tuning"):
            if source.kind == "tuning":
                assert source.tuning_id is not None
                run = await self.best_trial_run(source.tuning_id)
                columns["source_tuning_id"] = source.tuning_id
            else:
                assert source.run_id is not None
                run = await self.source_run(source.run_id)
            columns["source_run_id"] = run.id
            try:
                account = await self.dispatcher.account(run.owner)
            except AccountError as e:
                raise web.HTTPError(409, f"run {run.id}'s files cannot be read: {e}") from None
            copied = await asyncio.to_thread(md.copy_folder, run.run_dir, source.path, staging, *limits,
                                             account.uid if account else None, f"run {run.id}'s folder")
        elif source.kind == "path":
            real = await asyncio.to_thread(md.allowed_folder, source.path, list(self.models.allowed_roots))
            columns["source_path"] = real
            copied = await asyncio.to_thread(md.copy_folder, "/", real.lstrip("/"), staging, *limits, None,
                                             "the server")
        else:
            assert source.upload is not None
            if len(source.upload) > self.models.max_upload_bytes:
                raise web.HTTPError(413, f"the uploaded model is {len(source.upload)} bytes; the limit is "
                                         f"{self.models.max_upload_bytes} bytes (make large models from a run or a "
                                         "server folder)")
            copied = await self.dispatcher.helper.call(md.unpack_upload, source.upload, staging, *limits)
        return columns, copied

    async def create(self, new: md.NewModel) -> Model:
        principal = self.principal
        if new.group and new.group not in principal.groups and not principal.admin:
            raise web.HTTPError(400, f"group {new.group[:60]!r} is not one of your groups")
        db = self.dispatcher.db
        if await db.run(md.find_own, principal.name, new.name) is not None:
            raise web.HTTPError(409, f"you already have a model named {new.name!r}")
        staging = self.models.staging()
        try:
            try:
                columns, copied = await self.copy_source(new.source, staging)
                artifact_format = await asyncio.to_thread(artifacts.inspect, Path(staging), new.framework, new.name)
            except artifacts.ArtifactError as e:
                raise web.HTTPError(400, f"{e}{copied.note()}") from None
            except md.ModelError as e:
                raise web.HTTPError(e.status, str(e)) from None
            now = utcnow()
            token = staging.rsplit(md.STAGING_PREFIX, 1)[1]
            values = dict(owner=principal.name, group=new.group, name=new.name, description=new.description,
                          framework=new.framework, framework_version=new.framework_version,
                          artifact_format=artifact_format, size_bytes=copied.bytes, tags=new.tags,
                          created_at=now, updated_at=now, **columns)
            try:
                row = await db.run(md.insert_model, values, str(self.models.root), token)
            except md.ModelError as e:
                raise web.HTTPError(e.status, str(e)) from None
            except IntegrityError:
                raise web.HTTPError(409, f"you already have a model named {new.name!r}") from None
            try:
                await asyncio.to_thread(os.rename, staging, row.artifact_path)
            except BaseException:
                await db.run(md.delete_model, row.id)
                raise
        except BaseException:
            await asyncio.to_thread(md.remove_folder, staging)
            raise
        return row


class ModelsHandler(ModelMixin, APIHandler):
    @property
    def max_body_bytes(self) -> int:
        if self.request.method == "POST":
            return submission_body_bytes(self.scheduler.models.max_upload_bytes)
        return super().max_body_bytes

    async def get(self):
        everyone = self.listing_everyone("models")
        principal = self.principal
        db = self.dispatcher.db
        rows = await db.run(md.list_models, None if everyone else principal.name, sorted(principal.groups))
        rows = [r for r in rows if may(principal, "see", r.owner, r.group)]
        names = await db.run(md.run_names, [r.source_run_id for r in rows])
        self.write_json({"models": [model_json(r, names.get(r.source_run_id) if r.source_run_id is not None
                                               else None) for r in rows]})

    async def post(self):
        """JSON ``{"name", "framework", "source": {...}, ...}``, or multipart: ``spec`` (that JSON without
        ``source``) and an ``archive`` file (the model folder as a .tar.gz)."""
        fields, files = self.form()
        upload = None
        if fields or files:
            if not fields.get("spec") or not files.get("archive"):
                raise web.HTTPError(400, "a multipart model needs a 'spec' field (its JSON) and an 'archive' file "
                                         "(the model folder as a .tar.gz)")
            body = loads_json(fields["spec"][0], "the 'spec' field")
            upload = files["archive"][0]["body"]
        else:
            body = self.json_body()
        try:
            new = md.parse_new_model(body, upload)
        except md.ModelError as e:
            raise web.HTTPError(e.status, str(e)) from None
        row = await self.create(new)
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{row.id}")
        self.write_json(await self.as_json(row), status=201)


class ModelHandler(ModelMixin, APIHandler):
    async def get(self, ref):
        self.write_json(await self.as_json(await find_model(self, ref)))

    async def patch(self, ref):
        row = await find_model(self, ref, "change")
        try:
            changes = md.parse_changes(self.json_body())
            updated = await self.dispatcher.db.run(md.update_model, row.id, changes, utcnow())
        except md.ModelError as e:
            raise web.HTTPError(e.status, str(e)) from None
        except IntegrityError:
            raise web.HTTPError(409, f"{row.owner} already has a model named {changes.get('name')!r}") from None
        if updated is None:
            raise web.HTTPError(404, f"model {ref[:100]!r} not found")
        self.write_json(await self.as_json(updated))

    async def delete(self, ref):
        """As in the seed: a model an endpoint serves (or a batch inference reads) stays; its artifact goes with it."""
        row = await find_model(self, ref, "delete")
        blockers = await self.dispatcher.db.run(md.delete_model, row.id)
        if blockers:
            raise web.HTTPError(409, f"model {row.id} {row.name!r} cannot be deleted: {'; '.join(blockers)}")
        await asyncio.to_thread(md.remove_folder, row.artifact_path)
        self.set_status(204)
        self.finish()


default_handlers = [
    (r"/api/models/?", ModelsHandler),
    (r"/api/models/([^/]+)/?", ModelHandler),
]
