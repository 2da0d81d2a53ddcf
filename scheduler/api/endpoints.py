"""/api/endpoints: endpoints with stages and stage resources (EasyMaker's 엔드포인트), as in the seed.

Create an endpoint (with its default stage) or a stage on an existing one; add and delete stage
resources; change the default stage (the old default's resources are then removed, without
losing a request); delete a non-default stage; delete an endpoint once only its default stage
is left. Statistics per stage (API 통계) and the stage's Kubernetes objects are read here too;
calls go to ``/serve/...`` (``api/inference.py``).

Access is the one rule of ``ownership.py``: the owner and admins change and delete, members of
the endpoint's group see and call it, everyone else gets 404 as for an absent endpoint.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from sqlalchemy.exc import IntegrityError
from tornado import web

from .. import endpoint_spec as spec
from .. import endpoint_store as es
from .. import serving_states as ss
from .. import serving_stats
from ..dispatcher import utcnow
from ..endpoints import EndpointController
from ..orm import Endpoint, EndpointStage, Model, StageResource
from ..ownership import may
from ..spec import SpecError, parse_group
from .base import APIHandler, HandlerMixin, parse_id
from .models import find_model


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def _is_id(ref: str) -> bool:
    """An object's id (ASCII digits only: ``"¹".isdigit()`` is true too), small enough for the database."""
    return ref.isascii() and ref.isdigit() and len(ref) <= 18


def serve_path(prefix: str, endpoint: str, stage: str | None = None) -> str:
    """Where callers ``POST``: the default stage's URL, or a named stage's."""
    return f"{prefix}serve/{endpoint}" + (f"/stages/{stage}" if stage else "")


def endpoint_model(row: Endpoint, controller: EndpointController, prefix: str, models: dict[int, Model]) -> dict:
    table = controller.routes.get(row.name)
    default = next((s for s in row.stages if s.id == row.default_stage_id), None)

    def ready(stage: EndpointStage, resource: StageResource) -> int:
        if table is None or stage.name not in table.stages:
            return 0
        route = table.stages[stage.name][1].get(resource.resource_path)
        return len(route.replicas) if route is not None and route.resource_id == resource.id else 0

    def resource_model(stage: EndpointStage, r: StageResource) -> dict:
        model = models.get(r.model_id)
        base = serve_path(prefix, row.name, None if stage is default else stage.name)
        return {"id": r.id, "model": {"id": r.model_id, "name": model.name if model else None},
                "resource_path": r.resource_path, "url": base + r.resource_path, "description": r.description,
                "replicas": r.replicas, "ready_replicas": ready(stage, r), "cpus": r.cpus,
                "memory_bytes": r.memory_bytes, "gpus": r.gpus, "state": r.state, "reason": r.reason,
                "restarts": r.restarts, "last_failure_log": r.last_failure_log,
                "created_at": _iso(r.created_at), "updated_at": _iso(r.updated_at)}

    stages = [{"id": s.id, "name": s.name, "description": s.description, "state": s.state, "reason": s.reason,
               "default": s is default, "url": serve_path(prefix, row.name, s.name),
               "resources": [resource_model(s, r) for r in s.resources],
               "created_at": _iso(s.created_at), "updated_at": _iso(s.updated_at)} for s in row.stages]
    return {"id": row.id, "name": row.name, "owner": row.owner, "group": row.group, "description": row.description,
            "tags": row.tags or {}, "state": row.state, "reason": row.reason,
            "default_stage": default.name if default else None, "url": serve_path(prefix, row.name),
            "gpus": sum(r.gpus * r.replicas for s in row.stages for r in s.resources),
            "stages": stages, "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}


class EndpointMixin(HandlerMixin):
    @property
    def endpoints(self) -> EndpointController:
        return self.scheduler.endpoints

    async def find(self, ref: str) -> Endpoint:
        """The endpoint ``ref`` (its name or id) the caller may see; 404 otherwise."""
        db = self.dispatcher.db
        if _is_id(ref):
            row = await db.run(es.get_endpoint, int(ref))
        else:
            row = await db.run(es.endpoint_named, ref) if spec.ENDPOINT_NAME.fullmatch(ref) else None
        if row is None or not may(self.principal, "see", row.owner, row.group):
            raise web.HTTPError(404, f"endpoint {ref[:100]!r} not found")
        return row

    def must(self, action, row: Endpoint) -> None:
        if not may(self.principal, action, row.owner, row.group):
            raise web.HTTPError(403, f"only the owner of endpoint {row.name} (or an admin) may {action} it")

    @staticmethod
    def stage_of(row: Endpoint, name: str) -> EndpointStage:
        stage = next((s for s in row.stages if s.name == name or (_is_id(name) and s.id == int(name))), None)
        if stage is None:
            raise web.HTTPError(404, f"endpoint {row.name} has no stage {name[:100]!r}")
        return stage

    async def model_for(self, ref: str) -> Model:
        """A model the caller may use (their own, or their group's), by id or name: the models API's rule."""
        return await find_model(self, ref, "use")

    async def resource_values(self, resources: list[spec.ResourceSpec]) -> list[dict]:
        values = []
        for r in resources:
            model = await self.model_for(r.model)
            values.append({"model_id": model.id, "resource_path": r.resource_path, "description": r.description,
                           "replicas": r.replicas, "cpus": r.cpus, "memory_bytes": r.memory_bytes, "gpus": r.gpus,
                           "state": ss.CREATE_REQUESTED, "reason": "requested"})
        return values

    async def updating(self, row: Endpoint, reason: str) -> None:
        """An ACTIVE endpoint reads UPDATE IN PROGRESS from the moment a stage or resource is asked for, not from
        the controller's next pass (a caller waiting for ACTIVE would otherwise see the old state)."""
        if row.state == ss.ACTIVE:
            await self.dispatcher.db.run(es.set_state, Endpoint, row.id, ss.UPDATE_IN_PROGRESS, reason, utcnow())

    def limits(self) -> tuple[int, int]:
        return self.scheduler.max_gpus_per_node, self.scheduler.max_cpus_per_node

    async def answer(self, endpoint_id: int, status: int = 200) -> None:
        row = await self.dispatcher.db.run(es.get_endpoint, endpoint_id)
        if row is None:
            raise web.HTTPError(404, f"endpoint {endpoint_id} not found")
        models = await self.dispatcher.db.run(es.models_by_id, sorted({r.model_id for s in row.stages
                                                                       for r in s.resources}))
        self.write_json(endpoint_model(row, self.endpoints, self.settings["service_prefix"], models), status)


class EndpointsHandler(EndpointMixin, APIHandler):
    async def get(self):
        everyone = self.listing_everyone("endpoints")
        db = self.dispatcher.db
        rows = [r for r in await db.run(es.list_endpoints)
                if everyone or may(self.principal, "see", r.owner, r.group)]  # everyone: an admin
        models = await db.run(es.models_by_id, sorted({r.model_id for e in rows for s in e.stages
                                                       for r in s.resources}))
        prefix = self.settings["service_prefix"]
        self.write_json({"endpoints": [endpoint_model(r, self.endpoints, prefix, models) for r in rows]})

    async def post(self):
        max_gpus, max_cpus = self.limits()
        try:
            body = spec.parse_endpoint(self.json_body(), max_gpus, max_cpus)
            # An endpoint is its owner's alone unless it names a group (runs default to one for quotas).
            group = parse_group(body["group"], self.current_user.get("groups") or []) if body["group"] else ""
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        resources = await self.resource_values(body["resources"])
        at = utcnow()
        values = {"owner": self.username, "group": group, "name": body["name"], "description": body["description"],
                  "tags": body["tags"], "state": ss.CREATE_REQUESTED, "reason": "requested"}
        stage = {"name": body["stage"], "description": body["stage_description"], "state": ss.CREATE_REQUESTED,
                 "reason": "requested"}
        try:
            endpoint_id = await self.dispatcher.db.run(es.insert_endpoint, values, stage, resources, at)
        except IntegrityError:
            raise web.HTTPError(409, f"an endpoint named {body['name']} exists already: endpoint names are "
                                     "unique") from None
        self.endpoints.wake()
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{endpoint_id}")
        await self.answer(endpoint_id, 201)


class EndpointHandler(EndpointMixin, APIHandler):
    async def get(self, ref):
        await self.answer((await self.find(ref)).id)

    async def patch(self, ref):
        """Description and tags; the name is what callers use, so it stays."""
        row = await self.find(ref)
        self.must("change", row)
        body = self.json_body()
        if set(body) - {"description", "tags"}:
            raise web.HTTPError(400, "an endpoint's description and tags may change: send "
                                     '{"description": ..., "tags": {...}}')
        changes = {}
        try:
            if "description" in body:
                changes["description"] = spec.parse_description(body["description"])
            if "tags" in body:
                changes["tags"] = spec.parse_tags(body["tags"])
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        await self.dispatcher.db.run(partial(es.set_state, **changes), Endpoint, row.id, row.state, row.reason,
                                     utcnow())
        await self.answer(row.id)

    async def delete(self, ref):
        """As in the seed: only when the default stage is the only one left; it takes its resources along."""
        row = await self.find(ref)
        self.must("delete", row)
        others = [s.name for s in row.stages if s.id != row.default_stage_id]
        if others:
            raise web.HTTPError(409, f"endpoint {row.name} still has stage {', '.join(others)}: delete every stage "
                                     "but the default first")
        await self.dispatcher.db.run(es.set_state, Endpoint, row.id, ss.DELETE_IN_PROGRESS, "deleting", utcnow())
        self.endpoints.wake()
        await self.answer(row.id, 202)


class StagesHandler(EndpointMixin, APIHandler):
    async def get(self, ref):
        row = await self.find(ref)
        models = await self.dispatcher.db.run(es.models_by_id, sorted({r.model_id for s in row.stages
                                                                       for r in s.resources}))
        self.write_json({"stages": endpoint_model(row, self.endpoints, self.settings["service_prefix"],
                                                  models)["stages"]})

    async def post(self, ref):
        """A new stage on an existing endpoint: tried without touching the default (the seed's 스테이지 생성)."""
        row = await self.find(ref)
        self.must("change", row)
        if row.state == ss.DELETE_IN_PROGRESS:
            raise web.HTTPError(409, f"endpoint {row.name} is being deleted")
        try:
            body = spec.parse_stage(self.json_body(), *self.limits())
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        if any(s.name == body["name"] for s in row.stages):
            raise web.HTTPError(409, f"endpoint {row.name} has a stage named {body['name']} already: stage names "
                                     "are unique")
        resources = await self.resource_values(body["resources"])
        stage = {"name": body["name"], "description": body["description"], "state": ss.CREATE_REQUESTED,
                 "reason": "requested"}
        try:
            await self.dispatcher.db.run(es.insert_stage, row.id, stage, resources, utcnow())
        except IntegrityError:
            raise web.HTTPError(409, f"endpoint {row.name} has a stage named {body['name']} already") from None
        await self.updating(row, f"stage {body['name']} is being created")
        self.endpoints.wake()
        await self.answer(row.id, 201)


class StageHandler(EndpointMixin, APIHandler):
    async def get(self, ref, stage_name):
        row = await self.find(ref)
        stage = self.stage_of(row, stage_name)
        models = await self.dispatcher.db.run(es.models_by_id, sorted({r.model_id for r in stage.resources}))
        model = endpoint_model(row, self.endpoints, self.settings["service_prefix"], models)
        self.write_json(next(s for s in model["stages"] if s["id"] == stage.id))

    async def delete(self, ref, stage_name):
        """A stage that is not the default, with its resources (the seed: the default cannot be deleted)."""
        row = await self.find(ref)
        self.must("change", row)
        stage = self.stage_of(row, stage_name)
        if stage.id == row.default_stage_id:
            raise web.HTTPError(409, f"stage {stage.name} is endpoint {row.name}'s default stage: make another "
                                     "stage the default, or delete the endpoint")
        await self.dispatcher.db.run(es.set_state, EndpointStage, stage.id, ss.DELETE_IN_PROGRESS, "deleting", utcnow())
        self.endpoints.wake()
        await self.answer(row.id, 202)


class StageResourcesHandler(EndpointMixin, APIHandler):
    async def post(self, ref, stage_name):
        row = await self.find(ref)
        self.must("change", row)
        stage = self.stage_of(row, stage_name)
        if ss.DELETE_IN_PROGRESS in (row.state, stage.state):
            raise web.HTTPError(409, f"stage {stage.name} is being deleted")
        try:
            resource = spec.parse_resource_body(self.json_body(), *self.limits())
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        if any(r.resource_path == resource.resource_path for r in stage.resources):
            raise web.HTTPError(409, f"stage {stage.name} serves {resource.resource_path} already")
        values = (await self.resource_values([resource]))[0]
        try:
            await self.dispatcher.db.run(es.insert_resource, stage.id, values, utcnow())
        except IntegrityError:
            raise web.HTTPError(409, f"stage {stage.name} serves {resource.resource_path} already") from None
        if stage.state == ss.ACTIVE:
            await self.dispatcher.db.run(es.set_state, EndpointStage, stage.id, ss.DEPLOY_IN_PROGRESS,
                                         f"deploying {resource.resource_path}", utcnow())
        await self.updating(row, f"stage {stage.name} is deploying {resource.resource_path}")
        self.endpoints.wake()
        await self.answer(row.id, 201)


class StageResourceHandler(EndpointMixin, APIHandler):
    async def delete(self, ref, stage_name, resource_id):
        row = await self.find(ref)
        self.must("change", row)
        stage = self.stage_of(row, stage_name)
        resource = next((r for r in stage.resources if r.id == parse_id(resource_id, "stage resource")), None)
        if resource is None:
            raise web.HTTPError(404, f"stage {stage.name} has no stage resource {resource_id}")
        await self.dispatcher.db.run(es.set_state, StageResource, resource.id, ss.DELETE_IN_PROGRESS, "deleting",
                                     utcnow())
        self.endpoints.wake()
        await self.answer(row.id, 202)


class DefaultStageHandler(EndpointMixin, APIHandler):
    async def post(self, ref):
        """Make an ACTIVE stage the default (the seed's 기본 스테이지 변경): no request is lost."""
        row = await self.find(ref)
        self.must("change", row)
        name = self.json_body().get("stage")
        if not isinstance(name, str):
            raise web.HTTPError(400, 'send {"stage": NAME}: the stage to make the default')
        stage = self.stage_of(row, name)
        if stage.id == row.default_stage_id:
            raise web.HTTPError(409, f"stage {stage.name} is the default already")
        table = self.endpoints.routes.get(row.name)
        serving = table.stages.get(stage.name, (0, {}))[1] if table else {}
        if stage.state != ss.ACTIVE or not stage.resources or len(serving) < len(stage.resources):
            raise web.HTTPError(409, f"stage {stage.name} is {stage.state}, not serving every resource: only an "
                                     "ACTIVE stage can become the default")
        await self.endpoints.switch_default(row.id, stage.id)
        await self.answer(row.id)


class StageStatsHandler(EndpointMixin, APIHandler):
    async def get(self, ref, stage_name):
        """Requests, errors and latency percentiles per minute and in total (the seed's API 통계)."""
        row = await self.find(ref)
        stage = self.stage_of(row, stage_name)
        minutes = self.query_int("minutes", 60, 1, 60 * 24 * 31)
        since = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
        rows = await self.dispatcher.db.run(es.stats_since, [stage.id], since)
        pending = [c for (sid, minute), c in self.endpoints.stats.pending.items() if sid == stage.id]
        by_minute: dict = {}
        for r in rows:
            by_minute.setdefault(r.minute, []).append(r)
        for (sid, minute), counts in self.endpoints.stats.pending.items():
            if sid == stage.id and minute >= since:
                by_minute.setdefault(minute, []).append(counts)
        series = [{"minute": _iso(m), **serving_stats.summarize(*serving_stats.merge(parts))}
                  for m, parts in sorted(by_minute.items())]
        total = serving_stats.summarize(*serving_stats.merge([*rows, *pending]))
        self.write_json({"endpoint": row.name, "stage": stage.name, "minutes": minutes, "total": total,
                         "series": series})


class StageManifestsHandler(EndpointMixin, APIHandler):
    async def get(self, ref, stage_name):
        """The Kubernetes objects this stage becomes on a cluster (a Deployment and a Service per stage resource,
        or an InferenceService with ``?kserve=1``), from the Kubernetes executor's settings: the seed's "설정
        보기", for the owner and admins."""
        row = await self.find(ref)
        self.must("change", row)
        stage = self.stage_of(row, stage_name)
        models = await self.dispatcher.db.run(es.models_by_id, sorted({r.model_id for r in stage.resources}))
        account = await self.dispatcher.account(row.owner)
        kserve = self.query_flag("kserve")
        try:
            objects = stage_manifests(self.scheduler, row, stage, models, account, kserve)
        except ValueError as e:
            raise web.HTTPError(409, f"stage {stage.name} cannot be rendered for Kubernetes: {e}") from None
        self.write_json({"objects": objects})


def stage_manifests(scheduler, endpoint: Endpoint, stage: EndpointStage, models: dict[int, Model], account,
                    kserve: bool) -> list[dict]:
    """Every object of the stage's resources, through the pure builders of ``executors/kube_serving``."""
    from ..executors.kube_serving import ServingOptions, claim_sub_path, serving_objects
    from ..executors.kubernetes import KubernetesExecutor
    from ..runtime_jobs import RUNTIME_DIR, RUNTIME_FILES

    executor = scheduler.dispatcher.executor
    kube = executor if isinstance(executor, KubernetesExecutor) else KubernetesExecutor(None, parent=scheduler)
    files = {name: (RUNTIME_DIR / name).read_text() for name in RUNTIME_FILES}
    objects: list[dict] = []
    for r in stage.resources:
        model = models.get(r.model_id)
        if model is None:
            continue
        options = ServingOptions(
            endpoint=endpoint.name, stage=stage.name, resource_id=r.id, resource_path=r.resource_path,
            model_name=model.name, model_id=model.id, framework=model.framework, model_format=model.artifact_format,
            model_claim=kube.output_claim or "nothing-data",
            model_sub_path=claim_sub_path(scheduler.data_dir, model.artifact_path), owner=endpoint.owner,
            uid=account.uid if account else 1000, gid=account.gid if account else 1000,
            image=kube.serving_image or "nothingai/serving", namespace=kube.namespace, replicas=r.replicas,
            cpus=r.cpus, memory_bytes=r.memory_bytes, gpus=r.gpus, scope=kube.job_scope, runtime_files=files,
            inference_service=kserve)
        objects += serving_objects(options)
    return objects


default_handlers = [
    (r"/api/endpoints/?", EndpointsHandler),
    (r"/api/endpoints/([^/]+)/?", EndpointHandler),
    (r"/api/endpoints/([^/]+)/default-stage/?", DefaultStageHandler),
    (r"/api/endpoints/([^/]+)/stages/?", StagesHandler),
    (r"/api/endpoints/([^/]+)/stages/([^/]+)/?", StageHandler),
    (r"/api/endpoints/([^/]+)/stages/([^/]+)/stats/?", StageStatsHandler),
    (r"/api/endpoints/([^/]+)/stages/([^/]+)/manifests/?", StageManifestsHandler),
    (r"/api/endpoints/([^/]+)/stages/([^/]+)/resources/?", StageResourcesHandler),
    (r"/api/endpoints/([^/]+)/stages/([^/]+)/resources/([^/]+)/?", StageResourceHandler),
]
