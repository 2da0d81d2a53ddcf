"""/api/templates: training templates (EasyMaker's 학습 템플릿): create, list, read, copy, delete; and
:func:`apply_template`, which runs and tunings call when a submission names ``"template"``.

A template is addressed by id or by name (the caller's own, else their group's). Access is
the one rule of ``ownership.py``: others get 404 as for an absent template.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import secrets
from pathlib import Path

from tornado import web

from .. import templates as tp
from ..dispatcher import utcnow
from ..orm import TrainingTemplate
from ..ownership import may
from ..spec import SpecError
from .base import APIHandler, HandlerMixin, loads_json


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def template_model(row: TrainingTemplate) -> dict:
    settings = row.settings or {}
    return {"id": row.id, "owner": row.owner, "group": row.group, "name": row.name, "description": row.description,
            "settings": settings, "has_code": bool(row.archive_path),
            "kind": "tuning" if "strategy" in settings else "run",
            "hyperparameters": sorted({*(settings.get("hyperparameters") or {}),
                                       *(h.get("name") for h in settings.get("hyperparameter_spec") or []
                                         if isinstance(h, dict))} - {None}),
            "created_at": _iso(row.created_at)}


async def find_template(handler, ref: str) -> TrainingTemplate:
    """The template ``ref`` (an id, or a name: the caller's own, else their group's) the caller may see."""
    db = handler.dispatcher.db
    principal = handler.principal
    ref = ref.strip()
    if ref.isdigit():
        row = await db.run(tp.get_template, int(ref))
    else:
        row = await db.run(tp.find_template, principal.name, ref)
        if row is None:
            shared = await db.run(tp.templates_named, ref, sorted(principal.groups))
            if len(shared) > 1:
                raise web.HTTPError(400, f"template {ref!r} is in several of your groups "
                                         f"({', '.join(r.group for r in shared)}): use its id")
            row = shared[0] if shared else None
    if row is None or not may(principal, "see", row.owner, row.group):
        raise web.HTTPError(404, f"template {ref[:100]!r} not found")
    return row


class TemplateAccessMixin(HandlerMixin):
    async def find(self, ref: str) -> TrainingTemplate:
        return await find_template(self, ref)

    def template_dir(self) -> Path:
        return Path(self.scheduler.data_dir) / "templates"

    async def save_template(self, body: dict, archive: bytes | None) -> dict:
        try:
            name, description, group, settings = tp.parse_template(body)
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        principal = self.principal
        if group and group not in principal.groups and not principal.admin:
            raise web.HTTPError(403, f"you are not a member of group {group!r}")
        if archive is not None and len(archive) > self.scheduler.max_snapshot_bytes:
            raise web.HTTPError(413, f"the code snapshot is {len(archive)} bytes; the limit is "
                                     f"{self.scheduler.max_snapshot_bytes} bytes")
        db = self.dispatcher.db
        if await db.run(tp.find_template, principal.name, name) is not None:
            raise web.HTTPError(409, f"you already have a template named {name!r}")
        path = None
        if archive:
            path = self.template_dir() / f"{secrets.token_hex(8)}.tar.gz"
            await asyncio.to_thread(_write_private, path, archive)
        try:
            template_id = await db.run(tp.insert_template, dict(
                owner=principal.name, group=group, name=name, description=description, settings=settings,
                archive_path=str(path) if path else None, created_at=utcnow()))
        except Exception:
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        row = await db.run(tp.get_template, template_id)
        self.set_header("Location", f"{self.request.path.split('/api/templates')[0]}/api/templates/{template_id}")
        return template_model(row)


async def apply_template(handler: HandlerMixin, body: dict, archive: bytes, kind: str) -> tuple[dict, bytes]:
    """A submission naming ``"template"``: the template's fields under the body's, and its code when the body
    brings none. ``kind`` is "run" or "tuning". Without ``"template"`` the body is unchanged."""
    ref = body.pop("template", None)
    if ref is None:
        return body, archive
    if not isinstance(ref, (str, int)) or isinstance(ref, bool):
        raise web.HTTPError(400, "template must be a template's name or id")
    row = await find_template(handler, str(ref))
    if not may(handler.principal, "use", row.owner, row.group):
        raise web.HTTPError(404, f"template {str(ref)[:100]!r} not found")
    try:
        merged = (tp.merge_for_tuning if kind == "tuning" else tp.merge_for_run)(row.settings or {}, body)
    except SpecError as e:
        raise web.HTTPError(400, str(e)) from None
    if not archive:
        if not row.archive_path:
            raise web.HTTPError(400, f"template {row.name!r} holds no code: send the code with the submission")
        archive = await asyncio.to_thread(Path(row.archive_path).read_bytes)
    return merged, archive


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
    os.replace(tmp, path)


class TemplatesHandler(TemplateAccessMixin, APIHandler):
    @property
    def max_body_bytes(self) -> int:
        from .runs import submission_body_bytes

        return submission_body_bytes(self.scheduler.max_snapshot_bytes)

    async def get(self):
        everyone = self.listing_everyone("templates")
        principal = self.principal
        rows = await self.dispatcher.db.run(tp.list_templates, None if everyone else principal.name,
                                            sorted(principal.groups))
        self.write_json({"templates": [template_model(r) for r in rows
                                       if may(principal, "see", r.owner, r.group)]})

    async def post(self):
        """JSON ``{"name", "settings", "group"?, "description"?, "archive"?: base64 .tar.gz}``, or multipart
        with ``spec`` (that JSON) and an optional ``archive`` file."""
        fields, files = self.form()
        if fields or files:
            if not fields.get("spec"):
                raise web.HTTPError(400, "a multipart template needs a 'spec' field with its JSON")
            body = loads_json(fields["spec"][0], "the 'spec' field")
            if not isinstance(body, dict):
                raise web.HTTPError(400, "the 'spec' field must be a JSON object")
            archive = files["archive"][0]["body"] if files.get("archive") else None
        else:
            body = self.json_body()
            encoded = body.pop("archive", None)
            archive = None
            if encoded is not None:
                if not isinstance(encoded, str):
                    raise web.HTTPError(400, "'archive' must be the code as a base64-encoded .tar.gz")
                try:
                    archive = base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError):
                    raise web.HTTPError(400, "'archive' is not valid base64") from None
        self.write_json(await self.save_template(body, archive), status=201)


class TemplateHandler(TemplateAccessMixin, APIHandler):
    async def get(self, ref):
        self.write_json(template_model(await self.find(ref)))

    async def delete(self, ref):
        row = await self.find(ref)
        if not may(self.principal, "delete", row.owner, row.group):
            raise web.HTTPError(403, f"only the owner of template {row.name!r} may delete it")
        await self.dispatcher.db.run(tp.delete_template, row.id)
        if row.archive_path:
            Path(row.archive_path).unlink(missing_ok=True)
        self.set_status(204)
        self.finish()


class TemplateCopyHandler(TemplateAccessMixin, APIHandler):
    """A new template of the caller's with the same settings and code; the body's fields replace the copied ones
    (``settings`` key by key)."""

    async def post(self, ref):
        row = await self.find(ref)
        over = self.json_body()
        settings = dict(row.settings or {})
        if isinstance(over.get("settings"), dict):
            settings.update(over.pop("settings"))
        body = {"name": f"{row.name}-copy"[:100], "description": row.description, "settings": settings, **over}
        archive = await asyncio.to_thread(Path(row.archive_path).read_bytes) if row.archive_path else None
        self.write_json(await self.save_template(body, archive), status=201)


default_handlers = [
    (r"/api/templates/?", TemplatesHandler),
    (r"/api/templates/([^/]+)/?", TemplateHandler),
    (r"/api/templates/([^/]+)/copy/?", TemplateCopyHandler),
]
