"""Training templates (EasyMaker's 학습 템플릿): a training's settings, saved by name, to start runs and tunings from.

A template holds submission fields: a run's (entry point, arguments, hyperparameters,
resources, metrics, datasets ...) and, optionally, a tuning's (strategy, hyperparameter spec,
objective ...), with the code snapshot it was saved with. Starting from it, the submission's
own fields replace the template's (``hyperparameters`` and a tuning's ``resources`` key by key);
the merged submission then goes through the ordinary checks, so a template is never trusted
more than the fields it holds. ``merge_for_run`` and ``merge_for_tuning`` are pure.

Access is ``ownership.may``: the owner and admins may do anything, members of its group may
see and use it; a name is the caller's own template, else the one of that name in their groups.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .orm import TrainingTemplate
from .spec import FIELDS as RUN_FIELDS
from .spec import NAME, SpecError
from .tuning_spec import TRIAL_FIELDS, TUNING_FIELDS

# Fields a template may hold: every run field and every tuning field.
TEMPLATE_FIELDS = frozenset(RUN_FIELDS | (TUNING_FIELDS - {"archive"}))
# A tuning's own fields, which a run started from the template leaves out.
TUNING_ONLY = frozenset(TUNING_FIELDS - {"archive", "name", "experiment", "metrics"})
MAX_SETTINGS_BYTES = 256 * 1024
MAX_DESCRIPTION = 10_000


def parse_template(body: Any) -> tuple[str, str, str, dict]:
    """``{"name", "description", "group", "settings": {...}}`` → (name, description, group, settings)."""
    import json

    if not isinstance(body, dict) or set(body) - {"name", "description", "group", "settings"}:
        raise SpecError('a template is {"name": NAME, "settings": {...fields of a run or a tuning}, '
                        '"group": optional, "description": optional}')
    name = body.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name) or name.isdigit():
        raise SpecError(f"template name {str(name)[:60]!r} must be 1-100 letters, digits, spaces, _, . or -, "
                        "starting with a letter or digit, and not a number alone")
    description = body.get("description") or ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise SpecError(f"description must be text of at most {MAX_DESCRIPTION} characters")
    group = body.get("group") or ""
    if not isinstance(group, str) or len(group) > 255:
        raise SpecError("group must be the name of one of your groups")
    settings = body.get("settings") or {}
    if not isinstance(settings, dict):
        raise SpecError("settings must be a JSON object of a run's or a tuning's fields")
    unknown = sorted(set(settings) - TEMPLATE_FIELDS)
    if unknown:
        raise SpecError(f"unknown template field(s) {', '.join(map(str, unknown))[:200]}; allowed: "
                        f"{', '.join(sorted(TEMPLATE_FIELDS))}")
    if len(json.dumps(settings)) > MAX_SETTINGS_BYTES:
        raise SpecError(f"a template's settings are at most {MAX_SETTINGS_BYTES} bytes of JSON")
    return name, description, group, settings


def _merge(base: dict, over: dict, by_key: tuple[str, ...]) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key in by_key and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_for_run(settings: dict, body: dict) -> dict:
    """The run submission: the template's run fields, replaced by the body's (hyperparameters key by key)."""
    base = {k: v for k, v in settings.items() if k in RUN_FIELDS}
    return _merge(base, body, ("hyperparameters",))


def merge_for_tuning(settings: dict, body: dict) -> dict:
    """The tuning: the template's fields, replaced by the body's; a run template's ``gpus`` and ``max_time``
    become the trials' (``resources.gpus_per_trial``, ``resources.max_time_per_trial``)."""
    base = {k: v for k, v in settings.items() if k in TRIAL_FIELDS | TUNING_FIELDS}
    resources = dict(base.get("resources") or {})
    if "gpus" in settings:
        resources.setdefault("gpus_per_trial", settings["gpus"])
    if settings.get("max_time"):
        resources.setdefault("max_time_per_trial", settings["max_time"])
    multi = sorted(k for k in ("nodes", "gpus_per_node", "procs_per_node", "torchrun") if settings.get(k)
                   and settings[k] != 1)
    if multi:
        raise SpecError(f"the template's {', '.join(multi)} do not apply to a tuning (its trials are single-node "
                        "runs); start a run from it instead")
    if resources:
        base["resources"] = resources
    return _merge(base, body, ("hyperparameters", "resources"))


# ---------------------------------------------------------------- database work (on the database thread)
def insert_template(session: Session, values: dict) -> int:
    row = TrainingTemplate(**values)
    session.add(row)
    session.flush()
    return row.id


def get_template(session: Session, template_id: int) -> TrainingTemplate | None:
    return session.get(TrainingTemplate, template_id)


def find_template(session: Session, owner: str, name: str) -> TrainingTemplate | None:
    return session.scalar(select(TrainingTemplate).where(TrainingTemplate.owner == owner,
                                                         TrainingTemplate.name == name))


def templates_named(session: Session, name: str, groups: list[str]) -> list[TrainingTemplate]:
    """Templates of that name shared with any of ``groups``."""
    if not groups:
        return []
    return list(session.scalars(select(TrainingTemplate).where(TrainingTemplate.name == name,
                                                               TrainingTemplate.group.in_(groups))
                                .order_by(TrainingTemplate.id)))


def list_templates(session: Session, owner: str | None, groups: list[str]) -> list[TrainingTemplate]:
    """The caller's templates and their groups' (``owner`` None: everyone's)."""
    q = select(TrainingTemplate).order_by(TrainingTemplate.name, TrainingTemplate.id)
    if owner is not None:
        q = q.where((TrainingTemplate.owner == owner) | TrainingTemplate.group.in_(groups or [""]))
    return [r for r in session.scalars(q) if owner is None or r.owner == owner or r.group]


def delete_template(session: Session, template_id: int) -> None:
    row = session.get(TrainingTemplate, template_id)
    if row is not None:
        session.delete(row)
