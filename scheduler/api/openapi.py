"""/api/openapi.json: the API described as an OpenAPI 3.1 document."""

from __future__ import annotations

from tornado import web

from .. import __version__
from ..states import RunState

_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(ref: str, description: str = "ok") -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def document(prefix: str) -> dict:
    run_ref = "#/components/schemas/Run"
    return {
        "openapi": "3.1.0",
        "info": {"title": "NothingAI scheduler", "version": __version__,
                 "description": "Queue training runs on the shared GPU pool. Authenticate with a JupyterHub API "
                                "token (`Authorization: token ...`) or the service's OAuth cookie."},
        "servers": [{"url": prefix.rstrip("/") + "/api"}],
        "components": {
            "securitySchemes": {"hubToken": {"type": "apiKey", "in": "header", "name": "Authorization"}},
            "schemas": {
                "Error": {"type": "object", "required": ["status", "message"],
                          "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}},
                "Submission": {
                    "type": "object", "additionalProperties": False, "required": ["entry_point"],
                    "properties": {
                        "name": {"type": "string"}, "experiment": {"type": "string"},
                        "entry_point": {"type": "string", "description": "file in the snapshot to run"},
                        "args": {"type": "array", "items": {"type": "string"}},
                        "hyperparameters": {"type": "object", "additionalProperties": {"type": "string"}},
                        "gpus": {"type": "integer", "minimum": 0}, "cpus": {"type": "integer", "minimum": 0},
                        "memory": {"type": ["string", "integer"], "examples": ["8G"]},
                        "priority": {"type": "integer", "maximum": 1000, "minimum": -1000},
                        "max_time": {"type": ["string", "integer"], "examples": ["2h", "90m"]},
                        "group": {"type": "string", "description": "JupyterHub group to charge"},
                        "preemptible": {"type": "boolean", "description": "may borrow idle GPUs; may be preempted"},
                        "archive": {"type": "string", "contentEncoding": "base64",
                                    "description": "the code snapshot, a .tar.gz (JSON submissions only)"},
                    },
                },
                "Run": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"}, "owner": {"type": "string"}, "name": {"type": "string"},
                        "experiment": {"type": "string"}, "entry_point": {"type": "string"},
                        "group": {"type": "string"}, "preemptible": {"type": "boolean"},
                        "estimated_start": {"type": ["string", "null"]},
                        "state": {"type": "string", "enum": [s.value for s in RunState]},
                        "reason": {"type": "string"},
                        "queue_position": {"type": ["integer", "null"]},
                        "gpus": {"type": "integer"}, "assigned_gpus": {"type": "array", "items": {"type": "integer"}},
                        "exit_code": {"type": ["integer", "null"]},
                        "submitted_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
                        "ended_at": {"type": ["string", "null"]},
                    },
                },
                "RunList": {"type": "object", "properties": {"runs": {"type": "array", "items": {"$ref": run_ref}}}},
            },
        },
        "security": [{"hubToken": []}],
        "paths": {
            "/runs": {
                "get": {"summary": "List my runs (admins: all=1 or owner=NAME)",
                        "parameters": [{"name": "state", "in": "query", "schema": {"type": "string"}},
                                       {"name": "all", "in": "query", "schema": {"type": "boolean"}}],
                        "responses": {"200": _json("#/components/schemas/RunList"), "403": _ERR}},
                "post": {"summary": "Submit a run",
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": {"$ref": "#/components/schemas/Submission"}},
                             "multipart/form-data": {"schema": {"type": "object", "properties": {
                                 "spec": {"type": "string", "description": "Submission as JSON, without archive"},
                                 "archive": {"type": "string", "format": "binary"}}}}}},
                         "responses": {"201": _json(run_ref, "queued"), "400": _ERR, "413": _ERR}},
            },
            "/runs/{run_id}": {"get": {"summary": "One run", "parameters": [_ID],
                                       "responses": {"200": _json(run_ref), "404": _ERR}}},
            "/runs/{run_id}/cancel": {"post": {"summary": "Cancel a queued or running run", "parameters": [_ID],
                                               "responses": {"200": _json(run_ref), "404": _ERR, "409": _ERR}}},
            "/runs/{run_id}/events": {"get": {"summary": "The run's state transitions with reasons",
                                              "parameters": [_ID], "responses": {"200": {"description": "ok"}}}},
            "/runs/{run_id}/logs": {"get": {
                "summary": "The run's log (stdout and stderr)", "parameters": [
                    _ID, {"name": "tail", "in": "query", "schema": {"type": "integer"}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                    {"name": "follow", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": {"description": "log text", "content": {"text/plain": {}}}, "404": _ERR}}},
            "/runs/{run_id}/outputs": {"get": {"summary": "Files in EM_MODEL_DIR and EM_CHECKPOINT_DIR with sizes",
                                               "parameters": [_ID], "responses": {"200": {"description": "ok"}}}},
            "/runs/{run_id}/outputs.tar.gz": {"get": {"summary": "All outputs as one archive", "parameters": [_ID],
                                                      "responses": {"200": {"description": "tar.gz"}}}},
            "/runs/{run_id}/outputs/{path}": {"get": {
                "summary": "One output file", "parameters": [
                    _ID, {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "file"}, "404": _ERR}}},
            "/gpus": {"get": {"summary": "Nodes and GPUs, free or busy", "responses": {"200": {"description": "ok"}}}},
            "/runs/{run_id}/copy": {"post": {"summary": "Submit the run's code again with the same settings",
                                             "parameters": [_ID],
                                             "responses": {"201": _json(run_ref, "queued"), "404": _ERR}}},
            "/runs/{run_id}/priority": {"post": {
                "summary": "Change a queued run's priority (admins)", "parameters": [_ID],
                "requestBody": {"content": {"application/json": {"schema": {
                    "type": "object", "properties": {"priority": {"type": "integer"}}}}}},
                "responses": {"200": _json(run_ref), "403": _ERR, "404": _ERR, "409": _ERR}}},
            "/summary": {"get": {"summary": "My quota headroom, GPU-hours this period and active runs",
                                 "responses": {"200": {"description": "ok"}}}},
            "/queue": {"get": {"summary": "Every active run; other users' names hidden as configured",
                               "parameters": [{"name": "mine", "in": "query", "schema": {"type": "boolean"}}],
                               "responses": {"200": {"description": "ok"}}}},
            "/admin/overview": {"get": {"summary": "GPUs, queue, usage against quotas, zombies, totals (admins)",
                                        "responses": {"200": {"description": "ok"}, "403": _ERR}}},
            "/tensorboards": {"get": {"summary": "Running TensorBoards (admins)",
                                      "responses": {"200": {"description": "ok"}, "403": _ERR}}},
        },
    }


class OpenAPIHandler(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(document(self.settings["service_prefix"]))


default_handlers = [(r"/api/openapi\.json", OpenAPIHandler)]
