"""The scheduler's REST API: thin tornado handlers, one module per resource."""

from . import gpus, openapi, runs

default_handlers = runs.default_handlers + gpus.default_handlers + openapi.default_handlers
