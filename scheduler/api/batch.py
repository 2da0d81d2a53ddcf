"""/api/batch-inferences: batch inference (EasyMaker's 배치 추론): create, list, read, stop, copy, results, delete.

A batch inference is checked whole before anything is kept (its fields, the model the caller may
use, the input the caller may read, the job's resources as a run's), then stored and its job
submitted (``scheduler/batch_inference.py``).  Results are the job's run's ``output/`` files:
listed here, downloaded with the run outputs API, or here with ``?path=``.  Access is the one rule
of ``ownership.py``; others get 404 as for an absent batch inference.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tornado import web

from .. import batch_inference as bi
from .. import serving_states as ss
from .. import store
from ..datasets import parse_refs
from ..dispatcher import utcnow
from ..orm import BatchInference
from ..ownership import may
from ..runenv import RunPaths
from ..spec import SpecError, parse_submission
from ..tracker import StorageQuotaExceeded
from .base import APIHandler, parse_id
from .models import find_model
from .runs import RunAccessMixin, RunDeleteMixin, _FileStreamer, _list_outputs, _resolve_output, output_entry

RESULTS = "output/"


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def batch_json(row: BatchInference, model_name: str | None, job: dict | None = None) -> dict:
    """Every field of the seed's 배치 추론, its state and why, its job and, once ended, its summary."""
    elapsed = ((row.ended_at or utcnow()) - row.started_at).total_seconds() if row.started_at else None
    return {
        "id": row.id, "owner": row.owner, "group": row.group, "name": row.name, "description": row.description,
        "model": {"id": row.model_id, "name": model_name}, "instances": row.instances,
        "input_path": row.input_path, "input_type": row.input_type, "include_glob": list(row.include_glob or ()),
        "exclude_glob": list(row.exclude_glob or ()), "output_path": row.output_path, "batch_size": row.batch_size,
        "timeout_seconds": row.timeout_seconds, "max_time": row.max_seconds, "gpus": row.gpus, "cpus": row.cpus,
        "memory_bytes": row.memory_bytes, "tags": row.tags or {}, "state": row.state, "reason": row.reason,
        "run_id": row.run_id, "job": job, "summary": row.summary,
        "elapsed_seconds": round(elapsed, 3) if elapsed is not None else None,
        "created_at": _iso(row.created_at), "started_at": _iso(row.started_at), "ended_at": _iso(row.ended_at),
    }


class _BatchMixin(RunDeleteMixin, RunAccessMixin):
    @property
    def controller(self) -> bi.BatchController:
        return self.scheduler.batch

    async def visible(self, batch_id: str) -> BatchInference:
        row = await self.dispatcher.db.run(bi.get_batch, parse_id(batch_id, "batch inference"))
        if row is None or not may(self.principal, "see", row.owner, row.group):
            raise web.HTTPError(404, f"batch inference {batch_id} not found")
        return row

    def job(self, row: BatchInference) -> dict | None:
        live = self.dispatcher.active.get(row.run_id) if row.run_id is not None else None
        if live is None:
            return None
        fields = live.live_fields()
        return {k: fields[k] for k in ("state", "reason", "queue_position", "estimated_start")}

    async def as_json(self, rows: list[BatchInference]) -> list[dict]:
        names = await self.dispatcher.db.run(bi.model_names, [r.model_id for r in rows])
        return [batch_json(r, names.get(r.model_id), self.job(r)) for r in rows]

    async def usable_model(self, ref: str):
        try:
            return await find_model(self, ref, "use")
        except web.HTTPError as e:
            raise web.HTTPError(400, f"model: {e.log_message}") from None

    async def checked_input(self, ref: bi.InputRef) -> str:
        """The input as it is stored: a dataset pinned to the version it reads now, or a folder of the caller's
        ended run; 400 naming what cannot be used (another user's run or dataset reads as absent)."""
        if ref.kind == "dataset":
            resolved = (await self._resolve_datasets(parse_refs({bi.INPUT_NAME: ref.dataset})) or [])[0]
            return f"dataset:{resolved['dataset']}:{resolved['version']}"
        run = await self.dispatcher.db.run(store.get_run, ref.run_id)
        if run is None or not may(self.principal, "use", run.owner):
            raise web.HTTPError(400, f"input_path: run {ref.run_id} not found")
        live = self.dispatcher.active.get(run.id)
        if live is not None:
            raise web.HTTPError(400, f"input_path: run {run.id} is {live.state.value}: its folder can be an input "
                                     "once it has ended")
        problem = await asyncio.to_thread(bi.input_folder_problem, run.run_dir, ref.path)
        if problem:
            raise web.HTTPError(400, f"input_path: run {run.id} {problem}")
        return ref.text

    async def create_batch(self, body: dict) -> dict:
        try:
            fields = bi.parse_batch(body)
        except bi.BatchError as e:
            raise web.HTTPError(400, str(e)) from None
        if not self.dispatcher.executor.reads_inputs:
            raise web.HTTPError(400, "batch inference needs an executor whose jobs can read the model and the "
                                     "input (bound read-only, or hard-linked on a shared data folder); this "
                                     "cluster's cannot yet")
        model = await self.usable_model(fields.model)
        input_path = await self.checked_input(fields.input)
        sched = self.scheduler
        job = {"entry_point": bi.JOB_ENTRY, "gpus": fields.gpus, "cpus": fields.cpus}
        if fields.memory_bytes:
            job["memory"] = str(fields.memory_bytes)
        if fields.group:
            job["group"] = fields.group
        try:
            values = parse_submission(job, sched.max_gpus_per_node, sched.max_cpus_per_node, False,
                                      self.current_user.get("groups") or [], cluster_nodes=len(sched.inventory))
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        try:
            sched.tracker.check_submission(self.username, values["group"])
        except StorageQuotaExceeded as e:
            raise web.HTTPError(403, str(e)) from None
        now = utcnow()
        batch_id = await self.controller.create({
            "owner": self.username, "group": values["group"], "name": fields.name,
            "description": fields.description, "model_id": model.id, "instances": fields.instances,
            "input_path": input_path, "input_type": fields.input_type, "include_glob": fields.include_glob,
            "exclude_glob": fields.exclude_glob, "batch_size": fields.batch_size,
            "timeout_seconds": fields.timeout_seconds, "max_seconds": fields.max_seconds, "cpus": fields.cpus,
            "memory_bytes": fields.memory_bytes, "gpus": fields.gpus, "tags": fields.tags,
            "state": ss.CREATE_REQUESTED, "reason": f"requested by {self.username}", "created_at": now})
        row = await self.dispatcher.db.run(bi.get_batch, batch_id)
        assert row is not None
        self.set_header("Location", f"{self.settings.get('service_prefix', '/')}api/batch-inferences/{batch_id}")
        return (await self.as_json([row]))[0]


class BatchInferencesHandler(_BatchMixin, APIHandler):
    async def get(self):
        everyone = self.listing_everyone("batch inferences")
        principal = self.principal
        rows = await self.dispatcher.db.run(bi.list_batches, None if everyone else principal.name,
                                            sorted(principal.groups))
        rows = [r for r in rows if may(principal, "see", r.owner, r.group)]
        self.write_json({"batch_inferences": await self.as_json(rows)})

    async def post(self):
        self.write_json(await self.create_batch(self.json_body()), status=201)


class BatchInferenceHandler(_BatchMixin, APIHandler):
    async def get(self, batch_id):
        self.write_json((await self.as_json([await self.visible(batch_id)]))[0])

    async def delete(self, batch_id):
        """As in the seed: one in progress must be stopped first; its job's run and results go with it."""
        row = await self.visible(batch_id)
        if not may(self.principal, "delete", row.owner, row.group):
            raise web.HTTPError(403, f"only the owner of batch inference {row.id} may delete it")
        if row.state not in ss.BATCH_TERMINAL:
            raise web.HTTPError(409, f"batch inference {row.id} is {row.state}: stop it first "
                                     f"(POST /api/batch-inferences/{row.id}/stop), then delete it")
        run = await self.dispatcher.db.run(bi.job_run, row.id, row.run_id)
        if run is not None:
            await self.delete_run(run, stop=False, by_owner_object=True)
        await self.controller.forget(row.id)
        self.set_status(204)
        self.finish()


class BatchStopHandler(_BatchMixin, APIHandler):
    async def post(self, batch_id):
        row = await self.visible(batch_id)
        if not may(self.principal, "change", row.owner, row.group):
            raise web.HTTPError(403, f"only the owner of batch inference {row.id} may stop it")
        if row.state in ss.BATCH_TERMINAL:
            raise web.HTTPError(409, f"batch inference {row.id} has already ended ({row.state})")
        await self.controller.stop_batch(row.id, self.username)
        self.write_json((await self.as_json([await self.visible(batch_id)]))[0])


class BatchCopyHandler(_BatchMixin, APIHandler):
    """A new batch inference with the same settings (the seed's 배치 추론 복사); fields in the body replace them."""

    async def post(self, batch_id):
        row = await self.visible(batch_id)
        overrides = self.json_body() if self.body else {}
        settings = {
            "name": f"{row.name}-copy"[:100], "description": row.description, "model": str(row.model_id),
            "instances": row.instances, "input_path": row.input_path, "input_type": row.input_type,
            "include_glob": list(row.include_glob or ()), "exclude_glob": list(row.exclude_glob or ()),
            "batch_size": row.batch_size, "timeout_seconds": row.timeout_seconds, "max_time": row.max_seconds,
            "tags": dict(row.tags or {}), "gpus": row.gpus, "cpus": row.cpus, "memory": row.memory_bytes or None,
            "group": row.group or None}
        settings.update(overrides)
        self.write_json(await self.create_batch({k: v for k, v in settings.items() if v is not None}), status=201)


class BatchResultsHandler(_FileStreamer, _BatchMixin, APIHandler):
    """The summary and the result files (``output/`` of the job's run); ``?path=`` one of them."""

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        return value.decode("utf-8", "surrogateescape")

    async def get(self, batch_id):
        row = await self.visible(batch_id)
        run = await self.dispatcher.db.run(store.get_run, row.run_id) if row.run_id is not None else None
        paths = RunPaths(Path(run.run_dir)) if run is not None else None
        exact = self.request.query_arguments.get("path")
        if exact is not None:
            relpath = exact[0].decode("utf-8", "surrogateescape")
            if paths is None or not relpath.startswith(RESULTS):
                raise web.HTTPError(404, f"no result file {relpath[:200]!r}: paths start with {RESULTS}")
            target = await asyncio.to_thread(_resolve_output, paths, relpath)
            await self.stream_file(str(target), "application/octet-stream", target.name)
            return
        files = [(p, n) for p, n in await asyncio.to_thread(_list_outputs, paths) if p.startswith(RESULTS)] \
            if paths is not None else []
        entries = []
        for path, size in files:  # both links relative to the API's root: the run's outputs, or here
            entry = output_entry(path, size)
            query = entry["href"].partition("?")[2]
            entries.append(dict(entry, href=f"runs/{row.run_id}/outputs/?{query}",
                                results_href=f"batch-inferences/{row.id}/results?{query}"))
        self.write_json({"id": row.id, "state": row.state, "run_id": row.run_id, "output_path": row.output_path,
                         "summary": row.summary, "files": entries, "total_bytes": sum(n for _, n in files)})


default_handlers = [
    (r"/api/batch-inferences/?", BatchInferencesHandler),
    (r"/api/batch-inferences/([^/]+)/?", BatchInferenceHandler),
    (r"/api/batch-inferences/([^/]+)/stop/?", BatchStopHandler),
    (r"/api/batch-inferences/([^/]+)/copy/?", BatchCopyHandler),
    (r"/api/batch-inferences/([^/]+)/results/?", BatchResultsHandler),
]
