"""/api/tunings: hyperparameter tunings (EasyMaker's 하이퍼파라미터 튜닝): create, list, read, trials, stop, copy,
delete.

A tuning is checked whole before anything is kept (its settings, every trial's run
fields, the snapshot's size, the owner's storage), and its first trials are
submitted before the answer: a first trial the run checks refuse undoes it.
Access is the one rule of ``ownership.py``; others get 404 as for an absent tuning.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from pathlib import Path

from tornado import web

from .. import tuning as tc
from .. import tuning_spec as ts
from ..dispatcher import utcnow
from ..ownership import may
from ..spec import SpecError
from .base import APIHandler, parse_id
from .runs import RunAccessMixin, RunsHandler, submission_body_bytes


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def tuning_model(row, with_trials: bool = False) -> dict:
    spec = ts.TuningSpec.from_json(row.spec)
    trials = list(row.trials)
    best = None
    for t in trials:
        if t.state == ts.T_SUCCEEDED and t.value is not None and (best is None or spec.better(t.value, best.value)):
            best = t
    model = {
        "id": row.id, "owner": row.owner, "group": row.group, "name": row.name,
        "description": spec.description, "experiment": row.experiment,
        "state": row.state, "state_detail": row.state_detail, "reason": row.reason,
        "shown_state": f"{row.state} ({row.state_detail})" if row.state == ts.COMPLETE and row.state_detail
        else row.state,
        "strategy": spec.strategy, "random_seed": spec.random_seed,
        "hyperparameter_spec": [_hp(h) for h in spec.hyperparameters],
        "metrics": spec.metrics,
        "objective": {"metric": spec.objective_metric, "goal": spec.goal, "target": spec.target},
        "resources": {"max_trials": spec.max_trials, "max_failed_trials": spec.max_failed_trials,
                      "parallel_trials": spec.parallel_trials, "gpus_per_trial": spec.gpus_per_trial,
                      "max_time_per_trial": spec.max_seconds_per_trial, "max_time": spec.max_seconds},
        "early_stopping": spec.early_stopping,
        "trial_fields": {k: v for k, v in row.trial_fields.items() if not k.startswith("_")},
        "created_at": _iso(row.created_at), "started_at": _iso(row.started_at), "ended_at": _iso(row.ended_at),
        "trials": {
            "total": len(trials),
            "completed": sum(t.state not in ts.TRIAL_ACTIVE for t in trials),
            "running": sum(t.state in ts.TRIAL_ACTIVE for t in trials),
            "failed": sum(t.state in ts.TRIAL_FAILED for t in trials),
            "by_state": {s: n for s in ts.TRIAL_STATES if (n := sum(t.state == s for t in trials))},
        },
        "best_trial": trial_model(best) if best is not None else None,
    }
    if with_trials:
        model["trial_list"] = [trial_model(t) for t in trials]
    return model


def _hp(h: ts.Hyperparameter) -> dict:
    if h.type == "categorical":
        return {"name": h.name, "type": h.type, "values": list(h.values)}
    return {"name": h.name, "type": h.type, "min": h.min, "max": h.max, "step": h.step, "log": h.log}


def trial_model(t) -> dict:
    return {"number": t.number, "run_id": t.run_id, "hyperparameters": t.params, "state": t.state,
            "objective": t.value, "created_at": _iso(t.created_at), "ended_at": _iso(t.ended_at)}


class _TuningMixin(RunAccessMixin):
    @property
    def tunings(self) -> tc.TuningController:
        return self.scheduler.tunings

    async def visible(self, tuning_id: str):
        row = await self.dispatcher.db.run(tc.get_tuning, parse_id(tuning_id, "tuning"))
        if row is None or not may(self.principal, "see", row.owner, row.group):
            raise web.HTTPError(404, f"tuning {tuning_id} not found")
        return row

    def gpu_cap(self) -> int | None:
        cap = self.dispatcher.quotas.user(self.username).max_gpus
        total = sum(len(g) for g in self.scheduler.inventory.values())
        return min(cap, total) if cap is not None else total

    async def create_tuning(self, body: dict, archive: bytes) -> dict:
        try:
            spec, trial_fields = ts.parse_tuning(body, self.gpu_cap())
        except SpecError as e:
            raise web.HTTPError(400, str(e)) from None
        # Every trial is a run: its fields must pass a run's checks (here with the first suggestion).
        values = await self.checked_submission(ts.trial_body(spec, trial_fields, 0, ts.sample_params(spec)),
                                               archive, is_admin=False)
        trial_fields["_datasets"] = values["datasets"]
        now = utcnow()
        row_values = {
            "owner": self.username, "group": values["group"], "name": spec.name, "experiment": spec.experiment,
            "state": ts.CREATE_REQUESTED, "reason": "requested", "spec": spec.to_json(),
            "trial_fields": trial_fields, "owner_groups": sorted(self.current_user.get("groups") or []),
            "archive_path": str(self.tunings.archive_path(secrets.token_hex(8))), "created_at": now,
        }
        try:
            tuning_id = await self.tunings.create(row_values, archive)
        except (tc.TuningError, SpecError) as e:
            raise web.HTTPError(400, f"the tuning's first trial was refused: {e}") from None
        row = await self.dispatcher.db.run(tc.get_tuning, tuning_id)
        self.set_header("Location", f"{self.request.path.rstrip('/').rsplit('/copy', 1)[0]}/{tuning_id}")
        return tuning_model(row)


class TuningsHandler(_TuningMixin, APIHandler):
    @property
    def max_body_bytes(self) -> int:
        return submission_body_bytes(self.scheduler.max_snapshot_bytes)

    async def get(self):
        everyone = self.listing_everyone("tunings")
        rows = await self.dispatcher.db.run(tc.list_tunings, None if everyone else self.username)
        self.write_json({"tunings": [tuning_model(r) for r in rows]})

    async def post(self):
        from .templates import apply_template

        body, archive = await apply_template(self, *RunsHandler._submission(self), kind="tuning")
        self.write_json(await self.create_tuning(body, archive), status=201)


class TuningHandler(_TuningMixin, APIHandler):
    async def get(self, tuning_id):
        self.write_json(tuning_model(await self.visible(tuning_id)))

    async def delete(self, tuning_id):
        """As in the seed: a tuning in progress must be stopped first; one a model was made from stays."""
        row = await self.visible(tuning_id)
        if not may(self.principal, "delete", row.owner, row.group):
            raise web.HTTPError(403, f"only the owner of tuning {row.id} may delete it")
        if row.state not in ts.TUNING_TERMINAL:
            raise web.HTTPError(409, f"tuning {row.id} is {row.state}: stop it first "
                                     f"(POST /api/tunings/{row.id}/stop), then delete it")
        blockers = await self.dispatcher.db.run(tc.deletion_blockers, row.id)
        if blockers:
            raise web.HTTPError(409, f"tuning {row.id} cannot be deleted: {'; '.join(blockers)}")
        await self.tunings.remove(row.id)
        self.set_status(204)
        self.finish()


class TuningTrialsHandler(_TuningMixin, APIHandler):
    async def get(self, tuning_id):
        row = await self.visible(tuning_id)
        self.write_json({"trials": [trial_model(t) for t in row.trials]})


class TuningStopHandler(_TuningMixin, APIHandler):
    async def post(self, tuning_id):
        row = await self.visible(tuning_id)
        if not may(self.principal, "change", row.owner, row.group):
            raise web.HTTPError(403, f"only the owner of tuning {row.id} may stop it")
        if row.state in ts.TUNING_TERMINAL:
            raise web.HTTPError(409, f"tuning {row.id} has already ended ({row.state})")
        await self.tunings.stop_tuning(row.id, self.username)
        self.write_json(tuning_model(await self.visible(tuning_id)))


class TuningCopyHandler(_TuningMixin, APIHandler):
    """A new tuning with the same settings and code; fields in the body replace the copied ones."""

    async def post(self, tuning_id):
        row = await self.visible(tuning_id)
        overrides = self.json_body() if self.body else {}
        body = copy.deepcopy(tuning_model(row))
        settings = {k: body[k] for k in ("description", "experiment", "strategy", "random_seed",
                                         "hyperparameter_spec", "objective", "resources", "early_stopping")}
        settings["name"] = f"{row.name or 'tuning'}-copy"[:100]
        if row.spec.get("metrics") is not None:
            settings["metrics"] = row.spec["metrics"]
        settings.update(body["trial_fields"])
        settings.update(overrides)
        settings = {k: v for k, v in settings.items() if v is not None}
        archive = await asyncio.to_thread(Path(row.archive_path).read_bytes)
        self.write_json(await self.create_tuning(settings, archive), status=201)


default_handlers = [
    (r"/api/tunings/?", TuningsHandler),
    (r"/api/tunings/([^/]+)/?", TuningHandler),
    (r"/api/tunings/([^/]+)/trials/?", TuningTrialsHandler),
    (r"/api/tunings/([^/]+)/stop/?", TuningStopHandler),
    (r"/api/tunings/([^/]+)/copy/?", TuningCopyHandler),
]
