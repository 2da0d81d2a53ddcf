"""The scheduler's REST API: thin tornado handlers, one module per resource."""

from nothing.hub_extension import admin

from . import cluster, gpus, notebooks, openapi, runs, tensorboard

default_handlers = (runs.default_handlers + cluster.default_handlers + gpus.default_handlers
                    + notebooks.default_handlers + tensorboard.default_handlers + openapi.default_handlers + admin.default_handlers)
