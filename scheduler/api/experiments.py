"""/api/experiments: named sets of a user's runs (EasyMaker's 실험): create, list with counts, rename, delete.

An experiment is its owner's: others get 404 for it as for a name that does not
exist; admins see everyone's (``?all=1``, or ``?owner=``).  As in the seed, an
experiment that still has runs cannot be deleted.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import unquote

from tornado import web

from .. import tracking_store as ts
from ..dispatcher import utcnow
from ..metrics import best_of, rules_from_json
from ..spec import NAME, SpecError, parse_metric_rules
from ..states import RunState
from .base import APIHandler, HandlerMixin

MAX_DESCRIPTION = 10_000


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def check_name(value, label: str = "experiment name") -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise web.HTTPError(400, f"{label} {str(value)[:60]!r} must be 1-100 letters, digits, spaces, _, . or -, "
                                 "starting with a letter or digit")
    return value


def check_description(value) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION or "\0" in value:
        raise web.HTTPError(400, f"description must be text of at most {MAX_DESCRIPTION} characters")
    return value


def check_fields(body: dict) -> None:
    unknown = set(body) - {"name", "description", "metrics"}
    if unknown:
        raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(map(str, unknown)))[:200]}; "
                                 "allowed: name, description, metrics")


def check_rules(raw) -> list | None:
    """The experiment's default metric rules, checked as a run's are."""
    try:
        return parse_metric_rules(raw)
    except SpecError as e:
        raise web.HTTPError(400, str(e)) from None


def experiment_model(row, runs: list, metric: str | None) -> dict:
    """An experiment with its runs counted by state, its last activity and (given ``metric``) the best value."""
    counts = Counter(r.state.value for r in runs)
    last = max([row.updated_at] + [t for r in runs for t in (r.submitted_at, r.ended_at) if t])
    model = {
        "owner": row.owner, "name": row.name, "description": row.description, "group": row.group,
        "state": "ACTIVE",  # the seed's states; ours is made at once
        "metrics": row.metric_rules,
        "created_at": _iso(row.created_at), "last_activity": _iso(last), "runs": len(runs),
        "runs_by_state": {s.value: counts.get(s.value, 0) for s in RunState if counts.get(s.value)},
    }
    if metric:
        best = None
        for r in runs:
            value = best_of(r.metric_summary, metric, rules_from_json(r.metric_rules))
            if isinstance(value, (int, float)) and (best is None or _better(metric, value, best, r)):
                best = value
        model["metric"] = {"name": metric, "best": best}
    return model


def _better(metric: str, value: float, best: float, run) -> bool:
    from ..metrics import goal_of
    return value < best if goal_of(metric, rules_from_json(run.metric_rules)) == "minimize" else value > best


class _ExperimentMixin(HandlerMixin):
    def whose(self) -> str | None:
        """The owner asked about: the caller, another user (admins), or None for everyone (admins, ?all=1)."""
        owner = self.get_argument("owner", None)
        everyone = self.query_flag("all")
        if (everyone or (owner and owner != self.username)) and not self.is_admin:
            raise web.HTTPError(403, "only admins may see other users' experiments")
        return None if everyone and not owner else (owner or self.username)

    async def listed(self, owner: str | None, metric: str | None, names: list[str] | None = None) -> list[dict]:
        rows = await self.dispatcher.db.run(ts.list_experiments, owner)
        if names is not None:
            rows = [r for r in rows if r.name in names]
        runs = await self.dispatcher.db.run(ts.experiment_runs, owner, [r.name for r in rows] if rows else [])
        by_key: dict = {}
        for r in runs:
            by_key.setdefault((r.owner, r.experiment), []).append(r)
        return [experiment_model(row, by_key.get((row.owner, row.name), []), metric) for row in rows]


class ExperimentsHandler(_ExperimentMixin, APIHandler):
    async def get(self):
        metric = self.get_argument("metric", None) or None
        self.write_json({"experiments": await self.listed(self.whose(), metric)})

    async def post(self):
        body = self.json_body()
        check_fields(body)
        name = check_name(body.get("name"))
        description = check_description(body.get("description", ""))
        rules = check_rules(body.get("metrics"))
        groups = self.current_user.get("groups") or []
        try:
            await self.dispatcher.db.run(ts.create_experiment, self.username, name, description,
                                         sorted(groups)[0] if groups else "", utcnow(), rules)
        except ts.ExperimentExists:
            raise web.HTTPError(409, f"you already have an experiment called {name!r}") from None
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{name}")
        self.write_json((await self.listed(self.username, None, [name]))[0], status=201)


class ExperimentHandler(_ExperimentMixin, APIHandler):
    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        return unquote(value.decode("utf-8", "replace"))

    async def _own(self, name: str) -> str:
        owner = self.whose() or self.username
        found = await self.listed(owner, None, [name])
        if not found:
            raise web.HTTPError(404, f"experiment {name[:100]!r} not found")
        return owner

    async def get(self, name):
        owner = await self._own(name)
        metric = self.get_argument("metric", None) or None
        self.write_json((await self.listed(owner, metric, [name]))[0])

    async def patch(self, name):
        owner = await self._own(name)
        body = self.json_body()
        check_fields(body)
        new_name = check_name(body["name"], "new name") if "name" in body else None
        description = check_description(body["description"]) if "description" in body else None
        rules = check_rules(body["metrics"]) if "metrics" in body else ts.UNCHANGED
        try:
            await self.dispatcher.db.run(ts.update_experiment, owner, name, new_name, description, utcnow(), rules)
        except ts.ExperimentExists:
            raise web.HTTPError(409, f"there is already an experiment called {new_name!r}") from None
        if new_name and new_name != name:
            for run in self.dispatcher.active.values():  # queued runs show the new name at once
                if run.owner == owner and run.experiment == name:
                    run.experiment = new_name
            self.dispatcher.view_version += 1  # the cached queue views show experiments
        self.write_json((await self.listed(owner, None, [new_name or name]))[0])

    async def delete(self, name):
        owner = await self._own(name)
        try:
            await self.dispatcher.db.run(ts.delete_experiment, owner, name)
        except ts.ExperimentHasRuns as e:
            raise web.HTTPError(409, f"experiment {name!r} still has {e.count} run{'s' if e.count != 1 else ''}: "
                                     "delete them first (nothing rm RUN), then the experiment") from None
        self.set_status(204)
        self.finish()


default_handlers = [
    (r"/api/experiments/?", ExperimentsHandler),
    (r"/api/experiments/([^/]+)/?", ExperimentHandler),
]
