"""What a request to create an endpoint, a stage or a stage resource may say, checked whole (pure).

The fields are the seed's (엔드포인트 생성, 스테이지 리소스 생성): names unique as the seed says
(an endpoint's name among all endpoints, a stage's within its endpoint), a stage resource's model,
resource path (``/inference``: where callers ``POST``), replicas (the seed's 파드 수) and
resources; up to 10 tags.  Names are DNS labels, since they are parts of URLs and, on
Kubernetes, of object names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .spec import SpecError, parse_memory

ENDPOINT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
RESOURCE_PATH = re.compile(r"(/[A-Za-z0-9_.\-]{1,64}){1,8}")
DEFAULT_STAGE = "default"
MAX_TAGS = 10
MAX_DESCRIPTION = 10_000
MAX_REPLICAS = 16
RESERVED_FIRST_SEGMENTS = {"stages"}  # /serve/ENDPOINT/stages/STAGE/... names a stage
V2_SUFFIX = "/infer"  # POST <resource path>/infer: the Open Inference Protocol (V2)

ENDPOINT_FIELDS = {"name", "description", "group", "tags", "stage", "stage_description", "resources",
                   "model", "resource_path", "replicas", "cpus", "memory", "gpus", "resource_description"}
STAGE_FIELDS = {"name", "description", "resources", "model", "resource_path", "replicas", "cpus", "memory", "gpus",
                "resource_description"}
RESOURCE_FIELDS = {"model", "resource_path", "replicas", "cpus", "memory", "gpus", "description"}


@dataclass(frozen=True)
class ResourceSpec:
    model: str  # an id or a name, resolved by the handler
    resource_path: str
    replicas: int = 1
    cpus: int = 1
    memory_bytes: int = 0
    gpus: int = 0
    description: str = ""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ENDPOINT_NAME.fullmatch(value):
        raise SpecError(f"{what} name {_short(value)} must be 1-40 lower-case letters, digits or '-', starting and "
                        "ending with a letter or digit (it is part of the endpoint's URL)")
    return value


def parse_description(value: Any, what: str = "description") -> str:
    value = value or ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise SpecError(f"{what} must be text of at most {MAX_DESCRIPTION} characters")
    return value


def parse_tags(value: Any) -> dict[str, str]:
    """At most 10 key-value tags, as in the seed; keys 1-64 characters, values at most 256."""
    value = value or {}
    if not isinstance(value, dict):
        raise SpecError('tags must be an object of key-value pairs, e.g. {"team": "vision"}')
    if len(value) > MAX_TAGS:
        raise SpecError(f"at most {MAX_TAGS} tags, not {len(value)}")
    for key, text in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 64 or not key.isprintable():
            raise SpecError(f"tag key {_short(key)} must be 1-64 printable characters")
        if not isinstance(text, str) or len(text) > 256 or not text.isprintable():
            raise SpecError(f"tag {key[:64]!r}: its value must be text of at most 256 printable characters")
    return dict(value)


def parse_resource_path(value: Any) -> str:
    if not isinstance(value, str) or not RESOURCE_PATH.fullmatch(value) or ".." in value.split("/") \
            or "." in value.split("/"):
        raise SpecError(f"resource path {_short(value)} must look like /inference: 1-8 segments of letters, digits, "
                        "_ . or -")
    if value.split("/")[1] in RESERVED_FIRST_SEGMENTS or value.endswith(V2_SUFFIX):
        raise SpecError(f"resource path {value!r} may not start with /stages or end with {V2_SUFFIX} "
                        "(they name a stage and the V2 protocol)")
    return value


def _count(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f"{key} must be a whole number from {low} to {high}, not {_short(value)}")
    return value


def parse_resource(body: Any, max_gpus: int, max_cpus: int, description_key: str = "description") -> ResourceSpec:
    if not isinstance(body, dict):
        raise SpecError("a stage resource is an object: {\"model\": MODEL, \"resource_path\": \"/inference\", ...}")
    model = body.get("model")
    if isinstance(model, bool) or not isinstance(model, (str, int)) or not str(model).strip() or len(str(model)) > 255:
        raise SpecError("model: the id or name of one of your models (or your group's)")
    memory = parse_memory(body.get("memory") or 0)
    return ResourceSpec(
        model=str(model).strip(), resource_path=parse_resource_path(body.get("resource_path", "/inference")),
        replicas=_count(body, "replicas", 1, 1, MAX_REPLICAS), cpus=_count(body, "cpus", 1, 0, max_cpus),
        memory_bytes=memory, gpus=_count(body, "gpus", 0, 0, max_gpus),
        description=parse_description(body.get(description_key), "a stage resource's description"))


def parse_resources(body: dict, max_gpus: int, max_cpus: int) -> list[ResourceSpec]:
    """The stage's resources: a ``resources`` list, or one resource given by the body's own fields."""
    listed = body.get("resources")
    if listed is not None:
        if "model" in body:
            raise SpecError("give either resources: [...] or one resource's fields (model, resource_path ...), "
                            "not both")
        if not isinstance(listed, list) or not 1 <= len(listed) <= 8:
            raise SpecError("resources must be a list of 1 to 8 stage resources")
        specs = [parse_resource(r, max_gpus, max_cpus) for r in listed]
    else:
        specs = [parse_resource(body, max_gpus, max_cpus, "resource_description")]
    paths = [s.resource_path for s in specs]
    if len(set(paths)) != len(paths):
        raise SpecError("two stage resources of one stage may not share a resource path")
    return specs


def _known(body: Any, fields: set[str], what: str) -> dict:
    if not isinstance(body, dict):
        raise SpecError(f"{what} must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise SpecError(f"unknown field(s) {', '.join(map(str, unknown))[:200]}; allowed: {', '.join(sorted(fields))}")
    return body


def parse_endpoint(body: Any, max_gpus: int, max_cpus: int) -> dict[str, Any]:
    """A new endpoint with its default stage and that stage's resources."""
    body = _known(body, ENDPOINT_FIELDS, "an endpoint")
    group = body.get("group") or ""
    if not isinstance(group, str) or len(group) > 255:
        raise SpecError("group must be the name of one of your groups")
    return {"name": parse_name(body.get("name"), "endpoint"), "description": parse_description(body.get("description")),
            "group": group, "tags": parse_tags(body.get("tags")),
            "stage": parse_name(body.get("stage") or DEFAULT_STAGE, "stage"),
            "stage_description": parse_description(body.get("stage_description"), "the stage's description"),
            "resources": parse_resources({k: v for k, v in body.items()
                                          if k in STAGE_FIELDS - {"name", "description"}}, max_gpus, max_cpus)}


def parse_stage(body: Any, max_gpus: int, max_cpus: int) -> dict[str, Any]:
    body = _known(body, STAGE_FIELDS, "a stage")
    return {"name": parse_name(body.get("name"), "stage"), "description": parse_description(body.get("description")),
            "resources": parse_resources({k: v for k, v in body.items() if k not in ("name", "description")},
                                         max_gpus, max_cpus)}


def parse_resource_body(body: Any, max_gpus: int, max_cpus: int) -> ResourceSpec:
    return parse_resource(_known(body, RESOURCE_FIELDS, "a stage resource"), max_gpus, max_cpus)
