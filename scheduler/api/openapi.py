"""/api/openapi.json: the API described as an OpenAPI 3.1 document.

Each operation lists the status codes it really answers and its request bodies as
precisely as the service checks them (bounds, lengths, patterns), so clients and
the fuzzer (``tests/test_openapi_fuzz.py``) can rely on it.  Unknown ``/api/``
paths answer a JSON 404 like every other refusal.
"""

from __future__ import annotations

from tornado import web

from .. import __version__
from ..spec import (MAX_ARGS, MAX_ENTRY_POINT_CHARS, MAX_HYPERPARAMETERS, MAX_MEMORY_BYTES, MAX_SECONDS,
                    MAX_VALUE_BYTES)
from ..spec import MAX_NODES, MAX_PROCS_PER_NODE
from ..orm import CLIENT_KEY_MAX
from ..states import RunState
from .base import MAX_ID, APIHandler
from .notebooks import MAX_SERVER_NAME_CHARS
from .runs import MAX_LIST_LIMIT, MAX_LIST_OFFSET, MAX_LOG_OFFSET, MAX_TAIL_LINES

_ERROR_TEXT = {400: "the request is malformed or breaks a limit; the message says which",
               403: "no valid token, a token without the service's scope, or not allowed to the caller",
               404: "no such run or file (also for other users' runs)", 409: "conflicts with the current state",
               413: "the request body is over the operation's limit", 503: "the hub could not be asked; try again"}
_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0,
                                                                      "maximum": MAX_ID}}
_BOOL = {"type": "string", "enum": ["0", "1", "false", "true"]}
_IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": CLIENT_KEY_MAX},
                    "description": "a retry with the same key answers 200 with the run the first attempt made"}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_. \-]{0,99}$"}
_COUNT = {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": r"^[+-]?[0-9]{1,19}$"}]}


def _errors(*codes: int) -> dict:
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(c): {"description": _ERROR_TEXT[c], "content": ref} for c in codes}


_EXP = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_MODEL_REF = {"name": "ref", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
              "description": "the model's id or name"}


def _json(ref: str, description: str = "ok") -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _query(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "schema": schema, **({"description": description} if description else {})}


def _op(summary: str, ok: dict, *errors: int, ok_code: str = "200", also: dict | None = None, **extra) -> dict:
    """One operation; every authenticated one may answer 403.  ``also``: more successful answers."""
    return {"summary": summary, **extra,
            "responses": {ok_code: ok, **(also or {}), **_errors(*sorted({403, *errors}))}}


def _submission_schema() -> dict:
    return {
        "type": "object", "additionalProperties": False, "required": ["entry_point", "archive"],
        "properties": {
            "name": _NAME, "experiment": _NAME,
            "entry_point": {"type": "string", "minLength": 1, "maxLength": MAX_ENTRY_POINT_CHARS,
                            "pattern": r"^(?!-)(?!.*/-)[^\x00]+$",
                            "description": "file in the snapshot to run; no part may start with '-'"},
            "args": {"type": "array", "maxItems": MAX_ARGS,
                     "items": {"type": "string", "maxLength": MAX_VALUE_BYTES}},
            "hyperparameters": {
                "type": "object", "maxProperties": MAX_HYPERPARAMETERS,
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$"},
                "additionalProperties": {"type": ["string", "number", "boolean"], "maxLength": MAX_VALUE_BYTES},
                "description": "passed as --key value, EM_HP_<KEY> and EM_HPS; with args at most 64 KiB in all"},
            "gpus": {**_COUNT, "description": "at most the largest node's GPUs"},
            "cpus": {**_COUNT, "description": "at most the largest node's CPUs"},
            "memory": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": MAX_MEMORY_BYTES},
                                 {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*([KMGTkmgt][iI]?[bB]?|[bB])?\s*$"}],
                       "examples": ["8G", "512Mi"], "description": f"at most {MAX_MEMORY_BYTES} bytes"},
            "priority": {"type": "integer", "maximum": 1000, "minimum": -1000,
                         "description": "above 0 for admins only"},
            "max_time": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": MAX_SECONDS},
                                   {"type": "string", "examples": ["2h", "90m", "1h30m"]}],
                         "description": "at most 365 days"},
            "group": {"type": "string", "description": "one of the caller's JupyterHub groups, charged for the run"},
            "preemptible": {"type": "boolean", "description": "may borrow idle GPUs; may be preempted"},
            "nodes": {"type": "integer", "minimum": 1, "maximum": MAX_NODES,
                      "description": "nodes of a distributed run, at most the cluster's (default 1)"},
            "gpus_per_node": {**_COUNT, "description": "GPUs on each node; then gpus is nodes x gpus_per_node"},
            "procs_per_node": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_PROCS_PER_NODE,
                               "description": "processes on each node (default 1), each with its RANK"},
            "torchrun": {"type": "boolean", "description": "start the entry point with torchrun on each node"},
            "metrics": {"type": ["array", "null"], "maxItems": 50, "items": {
                "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_./\-]{0,99}$"},
                    "regex": {"type": "string", "maxLength": 500, "description": "RE2; its first group (or the "
                                                                                  "group 'value') is the number"},
                    "goal": {"type": "string", "enum": ["", "maximize", "minimize"]}}},
                "description": "metrics to read from the log (default: every name=value pair)"},
            "checkpoint": {"type": ["string", "integer", "null"], "examples": ["12", "12:epoch-3.pt"],
                           "description": "RUN or RUN:CHECKPOINT to start from, read-only in "
                                          "EM_CHECKPOINT_INPUT_DIR"},
            "archive": {"type": "string", "contentEncoding": "base64",
                        "description": "the code snapshot, a .tar.gz (JSON submissions only)"},
        },
    }


def _model_schemas() -> dict:
    """The model (``/models``) as created and as answered; the limits are ``scheduler/models.py``'s."""
    from .. import models as md
    from ..serving_runtime.artifacts import FRAMEWORKS

    text = {"type": "string"}
    tags = {"type": "object", "maxProperties": md.MAX_TAGS,
            "propertyNames": {"minLength": 1, "maxLength": md.MAX_TAG_KEY},
            "additionalProperties": {"type": "string", "maxLength": md.MAX_TAG_VALUE}}
    name = {"type": "string", "pattern": r"^(?![0-9]+$)[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"}
    source = {"oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["run"], "properties": {
            "run": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "path": {"type": "string", "maxLength": md.MAX_PATH_CHARS,
                     "description": "a folder inside the run's folder (default: model, its EM_MODEL_DIR)"}}},
        {"type": "object", "additionalProperties": False, "required": ["tuning"], "properties": {
            "tuning": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}},
        {"type": "object", "additionalProperties": False, "required": ["upload"], "properties": {
            "upload": {"type": "string", "contentEncoding": "base64", "description": "the folder as a .tar.gz"}}},
        {"type": "object", "additionalProperties": False, "required": ["server_path"], "properties": {
            "server_path": {"type": "string", "description": "a folder under c.Models.allowed_roots"}}}]}
    return {
        "ModelCreate": {"type": "object", "additionalProperties": False, "required": ["name", "framework", "source"],
                        "properties": {
                            "name": name, "description": {"type": "string", "maxLength": md.MAX_DESCRIPTION},
                            "framework": {"type": "string", "enum": list(FRAMEWORKS)},
                            "framework_version": {"type": "string", "maxLength": md.MAX_FRAMEWORK_VERSION},
                            "tags": tags, "group": {"type": "string", "description": "one of the caller's groups"},
                            "source": source}},
        "ModelChange": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
            "name": name, "description": {"type": "string", "maxLength": md.MAX_DESCRIPTION}, "tags": tags}},
        "Model": {"type": "object", "properties": {
            "id": {"type": "integer"}, "owner": text, "group": text, "name": text, "description": text,
            "framework": text, "framework_version": text,
            "format": {"type": "string", "enum": ["savedmodel", "pytorch", "mar", "python"]},
            "artifact_path": text, "size_bytes": {"type": "integer"}, "tags": {"type": "object"},
            "source": {"type": "object", "properties": {
                "kind": {"type": "string", "enum": list(md.SOURCE_KINDS)},
                "run_id": {"type": ["integer", "null"]}, "run_name": {"type": ["string", "null"]},
                "tuning_id": {"type": ["integer", "null"]}, "path": text}},
            "created_at": text, "updated_at": text}},
    }


def _batch_schemas() -> dict:
    """The batch inference (``/batch-inferences``) as created and as answered; limits: ``batch_inference.py``'s."""
    from .. import batch_inference as bi

    globs = {"oneOf": [{"type": "string", "minLength": 1, "maxLength": bi.MAX_GLOB_CHARS},
                       {"type": "array", "maxItems": bi.MAX_GLOBS,
                        "items": {"type": "string", "minLength": 1, "maxLength": bi.MAX_GLOB_CHARS}}],
             "description": "glob patterns relative to the input folder (** spans folders); exclude wins"}
    return {
        "BatchInferenceCreate": {
            "type": "object", "additionalProperties": False, "required": ["name", "model", "input_path", "input_type"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"},
                "description": {"type": "string", "maxLength": bi.MAX_DESCRIPTION},
                "model": {"type": ["string", "integer"], "description": "a model's id or name (mine, else my group's)"},
                "instances": {"type": "integer", "minimum": 1, "maximum": bi.MAX_INSTANCES,
                              "description": "model processes working in parallel"},
                "input_path": {"type": "string", "maxLength": bi.MAX_INPUT_CHARS, "pattern": "^(dataset|run):",
                               "examples": ["dataset:reviews:2", "run:12/output/data"]},
                "input_type": {"type": "string", "enum": ["JSON", "JSONL", "json", "jsonl"]},
                "include_glob": globs, "exclude_glob": globs,
                "batch_size": {"type": "integer", "minimum": 1, "maximum": bi.MAX_BATCH_SIZE},
                "timeout_seconds": {"type": "number", "minimum": bi.MIN_TIMEOUT, "maximum": bi.MAX_TIMEOUT,
                                    "description": "seconds one inference request may take"},
                "max_time": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": MAX_SECONDS},
                                       {"type": "string", "examples": ["2h", "90m"]}]},
                "tags": {"type": "object", "maxProperties": bi.MAX_TAGS,
                         "additionalProperties": {"type": "string", "maxLength": bi.MAX_TAG_VALUE}},
                "gpus": _COUNT, "cpus": _COUNT,
                "memory": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": MAX_MEMORY_BYTES},
                                     {"type": "string", "examples": ["8G"]}]},
                "group": {"type": "string", "description": "one of the caller's groups"}}},
        "BatchInference": {"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "state": {"type": "string"},
            "reason": {"type": "string"}, "run_id": {"type": ["integer", "null"]},
            "output_path": {"type": "string", "description": "run:RUN/output: the job's result files"},
            "summary": {"type": ["object", "null"]}, "elapsed_seconds": {"type": ["number", "null"]}}},
    }


def _batch_paths() -> dict:
    ref = _json("#/components/schemas/BatchInference")
    one = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0,
                                                                          "maximum": MAX_ID}}
    create = {"required": True, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/BatchInferenceCreate"}}}}
    return {
        "/batch-inferences": {
            "get": _op("My batch inferences and my groups' (admins: all=1)", {"description": "the list"}, 400,
                       parameters=[_query("all", _BOOL)]),
            "post": _op("Create a batch inference: a model over a dataset's or a run folder's JSON/JSONL files",
                        ref, 400, 413, ok_code="201", requestBody=create)},
        "/batch-inferences/{batch_id}": {
            "get": _op("One batch inference", ref, 404, parameters=[one]),
            "delete": _op("Delete an ended batch inference with its job's run and results",
                          {"description": "deleted"}, 404, 409, ok_code="204", parameters=[one])},
        "/batch-inferences/{batch_id}/stop": {"post": _op("Stop a batch inference in progress", ref, 404, 409, 413,
                                                          parameters=[one])},
        "/batch-inferences/{batch_id}/copy": {"post": _op(
            "A new batch inference with the same settings (fields in the body replace them)", ref, 400, 404, 413,
            ok_code="201", parameters=[one], requestBody={"required": False, "content": {"application/json": {
                "schema": {"type": "object"}}}})},
        "/batch-inferences/{batch_id}/results": {"get": _op(
            "The summary and the result files (output/ of the job's run); with ?path= one of them",
            {"description": "the list, or the file", "content": {"application/json": {"schema": {"type": "object"}},
                                                                 "application/octet-stream": {}}},
            404, parameters=[one, _query("path", {"type": "string"}, "output/<name> of one result file")])},
    }


def _endpoint_paths() -> dict:
    """Endpoints, stages and stage resources (docs/endpoints.md); calls themselves are ``/serve/...``, outside
    ``/api``."""
    from ..endpoint_spec import ENDPOINT_NAME, MAX_DESCRIPTION, MAX_REPLICAS, MAX_TAGS, RESOURCE_PATH

    name = {"type": "string", "pattern": f"^{ENDPOINT_NAME.pattern}$"}
    ep = {"name": "endpoint", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
          "description": "the endpoint's name or id"}
    stage = {"name": "stage", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    resource_id = {"name": "resource_id", "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}
    resource = {
        "model": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 255}, {"type": "integer"}],
                  "description": "a model's name or id"},
        "resource_path": {"type": "string", "pattern": f"^{RESOURCE_PATH.pattern}$", "default": "/inference"},
        "replicas": {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS},
        "cpus": {"type": "integer", "minimum": 0}, "gpus": {"type": "integer", "minimum": 0},
        "memory": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": MAX_MEMORY_BYTES},
                             {"type": "string", "examples": ["2G"]}]}}
    tags = {"type": "object", "maxProperties": MAX_TAGS,
            "additionalProperties": {"type": "string", "maxLength": 256}}
    text = {"type": "string", "maxLength": MAX_DESCRIPTION}
    body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["name", "model"], "additionalProperties": False, "properties": {
            "name": name, "description": text, "group": {"type": "string"}, "tags": tags, "stage": name,
            "stage_description": text, "resource_description": text, **resource}}}}}
    stage_body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["name", "model"], "additionalProperties": False, "properties": {
            "name": name, "description": text, "resource_description": text, **resource}}}}}
    resource_body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["model"], "additionalProperties": False, "properties": {
            "description": text, **resource}}}}}
    one = {"description": "the endpoint with its stages and stage resources",
           "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "/endpoints": {
            "get": _op("My endpoints and my groups' (admins: all=1)", {"description": "the endpoints"}, 400,
                       parameters=[_query("all", _BOOL)]),
            "post": _op("A new endpoint with its default stage serving a model", one, 400, 404, 409, 413,
                        ok_code="201", requestBody=body)},
        "/endpoints/{endpoint}": {
            "get": _op("One endpoint", one, 404, parameters=[ep]),
            "patch": _op("Change an endpoint's description or tags", one, 400, 404, 413, parameters=[ep],
                         requestBody={"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "properties": {"description": text, "tags": tags}}}}}),
            "delete": _op("Delete an endpoint whose only stage is the default", one, 404, 409, ok_code="202",
                          parameters=[ep])},
        "/endpoints/{endpoint}/default-stage": {"post": _op(
            "Make an ACTIVE stage the default; the old default's resources are removed once drained", one, 400,
            404, 409, 413, parameters=[ep], requestBody={"required": True, "content": {"application/json": {
                "schema": {"type": "object", "required": ["stage"], "properties": {"stage": name}}}}})},
        "/endpoints/{endpoint}/stages": {
            "get": _op("The endpoint's stages", {"description": "the stages"}, 404, parameters=[ep]),
            "post": _op("A new stage on the endpoint", one, 400, 404, 409, 413, ok_code="201", parameters=[ep],
                        requestBody=stage_body)},
        "/endpoints/{endpoint}/stages/{stage}": {
            "get": _op("One stage", {"description": "the stage"}, 404, parameters=[ep, stage]),
            "delete": _op("Delete a stage that is not the default", one, 404, 409, ok_code="202",
                          parameters=[ep, stage])},
        "/endpoints/{endpoint}/stages/{stage}/stats": {"get": _op(
            "The stage's API statistics: requests, errors and p50/p95/p99 per minute and in total",
            {"description": "the statistics"}, 400, 404,
            parameters=[ep, stage, _query("minutes", {"type": "integer", "minimum": 1, "maximum": 60 * 24 * 31})])},
        "/endpoints/{endpoint}/stages/{stage}/manifests": {"get": _op(
            "The Kubernetes objects the stage becomes (kserve=1: an InferenceService)", {"description": "objects"},
            404, 409, parameters=[ep, stage, _query("kserve", _BOOL)])},
        "/endpoints/{endpoint}/stages/{stage}/resources": {"post": _op(
            "Serve another model at another resource path of the stage", one, 400, 404, 409, 413, ok_code="201",
            parameters=[ep, stage], requestBody=resource_body)},
        "/endpoints/{endpoint}/stages/{stage}/resources/{resource_id}": {"delete": _op(
            "Remove a stage resource (its replicas stop once drained)", one, 400, 404, ok_code="202",
            parameters=[ep, stage, resource_id])},
    }


def document(prefix: str) -> dict:
    run_ref = "#/components/schemas/Run"
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "NothingAI scheduler", "version": __version__,
                 "description": "Queue training runs on the shared GPU pool. Authenticate with a JupyterHub API "
                                "token (`Authorization: token ...`) or the service's OAuth cookie. Every refusal "
                                "is a 4xx with a JSON `message`; request bodies are limited per operation "
                                "(1 MiB, submissions: the snapshot limit base64-encoded plus 1 MiB)."},
        "servers": [{"url": prefix.rstrip("/") + "/api"}],
        "components": {
            "securitySchemes": {"hubToken": {"type": "apiKey", "in": "header", "name": "Authorization"}},
            "schemas": {
                "Error": {"type": "object", "required": ["status", "message"],
                          "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}},
                "Submission": _submission_schema(),
                **_model_schemas(),
                **_batch_schemas(),
                "Run": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"}, "owner": {"type": "string"}, "name": {"type": "string"},
                        "experiment": {"type": "string"}, "entry_point": {"type": "string"},
                        "group": {"type": "string"}, "preemptible": {"type": "boolean"},
                        "estimated_start": {"type": ["string", "null"]},
                        "state": {"type": "string", "enum": [s.value for s in RunState]},
                        "reason": {"type": ["string", "null"]},
                        "queue_position": {"type": ["integer", "null"]},
                        "gpus": {"type": "integer"},
                        "assigned_gpus": {"type": ["array", "null"], "items": {"type": "integer"}},
                        "nodes": {"type": "integer"}, "gpus_per_node": {"type": "integer"},
                        "procs_per_node": {"type": ["integer", "null"]}, "torchrun": {"type": "boolean"},
                        "placement": {"type": "array", "description": "[[node, [GPU, ...]], ...]",
                                      "items": {"type": "array"}},
                        "exit_code": {"type": ["integer", "null"]},
                        "submitted_at": {"type": ["string", "null"]}, "started_at": {"type": ["string", "null"]},
                        "ended_at": {"type": ["string", "null"]},
                    },
                },
                "RunList": {"type": "object", "properties": {
                    "runs": {"type": "array", "items": {"$ref": run_ref}},
                    "total": {"type": "integer", "description": "runs matching the filters over all pages"},
                    "limit": {"type": "integer"}, "offset": {"type": "integer"}}},
                "OutputFile": {"type": "object", "required": ["path", "href", "size"], "properties": {
                    "path": {"type": "string", "description": "the name to show (U+FFFD where it is not UTF-8)"},
                    "href": {"type": "string", "description": "downloads the file, relative to the run: "
                                                                      "runs/{run_id}/<href>"},
                    "size": {"type": "integer"}}},
                "NotebookRequest": {
                    "type": "object", "additionalProperties": False, "required": ["gpus"],
                    "properties": {"server": {"type": "string", "maxLength": MAX_SERVER_NAME_CHARS},
                                   "gpus": {"type": "integer", "minimum": 1},
                                   "external": {"type": "boolean"}}},
                "NotebookRelease": {
                    "type": "object", "required": ["owner", "release_token"],
                    "properties": {"owner": {"type": "string"}, "server": {"type": "string"},
                                   "release_token": {"type": "string"}}},
            },
        },
        "security": [{"hubToken": []}],
        "paths": {
            "/runs": {
                "get": _op("List my runs (admins: all=1 or owner=NAME)", _json("#/components/schemas/RunList"), 400,
                           parameters=[
                               {**_query("state", {"type": "array", "items": {
                                   "type": "string", "enum": [s.value for s in RunState]}}), "explode": True},
                               _query("all", _BOOL), _query("owner", {"type": "string"}),
                               _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT}),
                               _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_LIST_OFFSET}),
                               _query("experiment", {"type": "string"}),
                               _query("since", {"type": "string", "format": "date-time"})]),
                "post": _op("Submit a run", _json(run_ref, "queued"), 400, 413, ok_code="201",
                            also={"200": _json(run_ref, "already submitted with this Idempotency-Key")},
                            parameters=[_IDEMPOTENCY_KEY], requestBody={
                    "required": True, "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Submission"}},
                        "multipart/form-data": {"schema": {
                            "type": "object", "required": ["spec", "archive"], "properties": {
                                "spec": {"type": "string", "description": "Submission as JSON, without archive"},
                                "archive": {"type": "string", "format": "binary"}}}}}}),
            },
            "/runs/{run_id}": {
                "get": _op("One run", _json(run_ref), 404, parameters=[_ID]),
                "delete": _op("Delete a run: its record, folder, log, checkpoints and metrics (an active run "
                              "only with stop=true)", {"description": "deleted"}, 400, 404, 409, ok_code="204",
                              parameters=[_ID, _query("stop", _BOOL)])},
            "/runs/{run_id}/metrics": {"get": _op(
                "The run's metric time series (JSON, or CSV with format=csv)", {"description": "the series"},
                400, 404, parameters=[_ID, {**_query("name", {"type": "array", "items": {"type": "string"}}),
                                            "explode": True},
                                      _query("format", {"type": "string", "enum": ["json", "csv"]}),
                                      _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000000})])},
            "/runs/{run_id}/checkpoints": {
                "get": _op("The run's checkpoints (NSML's model ls), newest last; all of them, or a page with "
                           "offset and limit (count and total_bytes are always of all)", {"description": "the listing"},
                           400, 404, parameters=[_ID, _query("offset", {"type": "integer", "minimum": 0,
                                                                        "maximum": 10**9}),
                                                 _query("limit", {"type": "integer", "minimum": 1,
                                                                  "maximum": 1000000})]),
                "delete": _op("Delete checkpoints by name or shell pattern ('*': all)", {"description": "removed"},
                              400, 404, parameters=[_ID, {**_query("name", {"type": "array", "items": {
                                  "type": "string"}}), "explode": True}])},
            "/experiments": {
                "get": _op("My experiments with run counts (admins: all=1 or owner=NAME)",
                           {"description": "the experiments"}, 400,
                           parameters=[_query("all", _BOOL), _query("owner", {"type": "string"}),
                                       _query("metric", {"type": "string"})]),
                "post": _op("Create an experiment", {"description": "created"}, 400, 409, ok_code="201",
                            requestBody={"required": True, "content": {"application/json": {"schema": {
                                "type": "object", "required": ["name"], "properties": {
                                    "name": _NAME, "description": {"type": "string"}}}}}})},
            "/experiments/{name}": {
                "get": _op("One experiment", {"description": "the experiment"}, 400, 404, parameters=[_EXP]),
                "patch": _op("Rename or describe an experiment (its runs move along)", {"description": "changed"},
                             400, 404, 409, parameters=[_EXP], requestBody={"required": True, "content": {
                                 "application/json": {"schema": {"type": "object", "properties": {
                                     "name": _NAME, "description": {"type": "string"}}}}}}),
                "delete": _op("Delete an experiment that has no runs left", {"description": "deleted"}, 400, 404,
                              409, ok_code="204", parameters=[_EXP])},
            "/models": {
                "get": _op("My models and my groups' (admins: all=1)", {"description": "the models", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {"models": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Model"}}}}}}}, 400,
                    parameters=[_query("all", _BOOL)]),
                "post": _op("Make a model from a COMPLETE run, a COMPLETE tuning's best trial, an upload or a server "
                            "folder (the artifact is copied and checked)", _json("#/components/schemas/Model",
                                                                                  "created"),
                            400, 404, 409, 413, ok_code="201", requestBody={"required": True, "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ModelCreate"}},
                                "multipart/form-data": {"schema": {
                                    "type": "object", "required": ["spec", "archive"], "properties": {
                                        "spec": {"type": "string", "description": "ModelCreate without source"},
                                        "archive": {"type": "string", "format": "binary"}}}}}})},
            "/models/{ref}": {
                "get": _op("One model (by id, or by name: mine, else my group's)", _json("#/components/schemas/Model"),
                           400, 404, parameters=[_MODEL_REF]),
                "patch": _op("Change a model's name, description or tags (owner, admins)",
                             _json("#/components/schemas/Model"), 400, 404, 409, 413, parameters=[_MODEL_REF],
                             requestBody={"required": True, "content": {"application/json": {"schema": {
                                 "$ref": "#/components/schemas/ModelChange"}}}}),
                "delete": _op("Delete a model and its artifact, unless an endpoint or a batch inference uses it",
                              {"description": "deleted"}, 400, 404, 409, ok_code="204", parameters=[_MODEL_REF])},
            **_batch_paths(),
            **_endpoint_paths(),
            "/storage": {"get": _op("What my runs take on disk, against my and my groups' storage quotas "
                                    "(admins: all=1)", {"description": "usage"}, 400,
                                    parameters=[_query("all", _BOOL)])},
            "/runs/{run_id}/cancel": {"post": _op("Cancel a queued or running run", _json(run_ref), 404, 409, 413,
                                                  parameters=[_ID])},
            "/runs/{run_id}/events": {"get": _op("The run's state transitions with reasons",
                                                 {"description": "ok", "content": {"application/json": {
                                                     "schema": obj}}}, 404, parameters=[_ID])},
            "/runs/{run_id}/logs": {"get": _op(
                "The run's log (stdout and stderr)", {"description": "log text", "content": {"text/plain": {
                    "schema": {"type": "string"}}}}, 400, 404, parameters=[
                    _ID, _query("tail", {"type": "integer", "minimum": 1, "maximum": MAX_TAIL_LINES}),
                    _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_LOG_OFFSET}),
                    _query("follow", _BOOL, "stream until the run ends")])},
            "/runs/{run_id}/outputs": {"get": _op(
                "Files in EM_MODEL_DIR and EM_CHECKPOINT_DIR with sizes; with ?path= one of them (its href)",
                {"description": "the list, or the file when ?path= is given", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "files": {"type": "array", "items": {"$ref": "#/components/schemas/OutputFile"}},
                        "total_bytes": {"type": "integer"}}}},
                    "application/octet-stream": {}}}, 404, parameters=[
                    _ID, _query("path", {"type": "string"}, "kind/name of one file, its bytes percent-encoded")])},
            "/runs/{run_id}/outputs.tar.gz": {"get": _op(
                "All outputs as one archive", {"description": "tar.gz", "content": {"application/gzip": {}}}, 404,
                parameters=[_ID])},
            "/runs/{run_id}/outputs/{path}": {"get": _op(
                "One output file (path: an entry's href)", {"description": "file", "content": {
                    "application/octet-stream": {}}}, 404, parameters=[
                    _ID, {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}])},
            "/gpus": {"get": _op("Nodes and GPUs, free or busy",
                                 {"description": "ok", "content": {"application/json": {"schema": obj}}})},
            "/gpus/shape": {"get": {
                "summary": "How many nodes, and the largest node's GPUs (no login: for the hub's spawn form)",
                "security": [], "responses": {"200": {"description": "ok", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["nodes", "largest_node_gpus"], "properties": {
                        "nodes": {"type": "integer", "minimum": 0},
                        "largest_node_gpus": {"type": "integer", "minimum": 0}}}}}}}}},
            "/runs/{run_id}/copy": {"post": _op("Submit the run's code again with the same settings (owner only)",
                                                _json(run_ref, "queued"), 400, 404, 409, 413, ok_code="201",
                                                parameters=[_ID])},
            "/runs/{run_id}/priority": {"post": _op(
                "Change a queued run's priority (admins)", _json(run_ref), 400, 404, 409, 413, parameters=[_ID],
                requestBody={"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["priority"],
                    "properties": {"priority": {"type": "integer", "minimum": -1000, "maximum": 1000}}}}}})},
            "/summary": {"get": _op("My quota headroom, GPU-hours this period and active runs",
                                    {"description": "ok", "content": {"application/json": {"schema": obj}}})},
            "/usage/me": {"get": _op("My GPU-hours per UTC day (default: the current period's days so far), the "
                                     "period's total and my quota", {"description": "ok", "content": {
                                         "application/json": {"schema": obj}}}, 400,
                                     parameters=[_query("days", {"type": "integer", "minimum": 1, "maximum": 366},
                                                        "how many days up to today")])},
            "/queue": {"get": _op("Every active run; other users' names hidden as configured",
                                  {"description": "ok", "content": {"application/json": {"schema": obj}}},
                                  parameters=[_query("mine", _BOOL)])},
            "/admin/overview": {"get": _op("GPUs, queue, usage against quotas, zombies, totals (admins)",
                                           {"description": "ok", "content": {"application/json": {"schema": obj}}})},
            "/cluster/history": {"get": _op(
                "Per node GPUs held, GPUs and utilisation, and the queue's length, waits (p50, p95) and running runs "
                "over the last hours, at most 300 points per series (admins)",
                {"description": "ok", "content": {"application/json": {"schema": obj}}}, 400,
                parameters=[_query("hours", {"type": "integer", "minimum": 1, "maximum": 720, "default": 24})])},
            "/tensorboards": {"get": _op("Running TensorBoards (admins)",
                                         {"description": "ok", "content": {"application/json": {"schema": obj}}})},
            "/notebooks": {
                "get": _op("GPUs held by my notebook servers (admins: all=1)",
                           {"description": "ok", "content": {"application/json": {"schema": obj}}},
                           parameters=[_query("all", _BOOL)]),
                "post": _op("Hold GPUs for a starting notebook server (that server's own token only)",
                            {"description": "held", "content": {"application/json": {"schema": obj}}},
                            400, 409, 413, 503, ok_code="201", requestBody={"required": True, "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/NotebookRequest"}}}}),
                "delete": _op("Give back the GPUs of one of my notebook servers", {"description": "released"},
                              404, ok_code="204", parameters=[_query("server", {"type": "string"})]),
            },
            "/notebooks/release": {"post": {
                "summary": "Give back a stopped server's GPUs with the hold's release token (no login)",
                "security": [], "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/NotebookRelease"}}}},
                "responses": {"204": {"description": "released"}, **_errors(400, 404, 413)}}},
        },
    }


class OpenAPIHandler(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(document(self.settings["service_prefix"]))


class NotFoundHandler(APIHandler):
    """Any other ``/api/`` path: a JSON 404, like every other refusal (no login needed to learn it)."""

    requires_login = False
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    async def admit(self) -> None:
        raise web.HTTPError(404, f"no API endpoint {self.request.path}; see api/openapi.json")


default_handlers = [(r"/api/openapi\.json", OpenAPIHandler), (r"/api/.*", NotFoundHandler)]
