"""The scheduler's REST API: thin tornado handlers, one module per resource."""

from . import cluster, gpus, notebooks, openapi, pages, runs, tensorboard

default_handlers = (runs.default_handlers + cluster.default_handlers + gpus.default_handlers
                    + notebooks.default_handlers + tensorboard.default_handlers + openapi.default_handlers
                    + pages.default_handlers)
