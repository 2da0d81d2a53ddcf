"""The scheduler's REST API: thin tornado handlers, one module per resource."""

from . import batch, cluster, datasets, models, endpoints, inference, experiments, gpus, history, metrics, notebooks, openapi, pages, runs, snapshots, tensorboard, templates, tracking, tunings, usage

default_handlers = (runs.default_handlers + tunings.default_handlers + batch.default_handlers + templates.default_handlers + tracking.default_handlers + experiments.default_handlers
                    + datasets.default_handlers + models.default_handlers + endpoints.default_handlers + inference.default_handlers
                    + cluster.default_handlers + history.default_handlers + usage.default_handlers + gpus.default_handlers
                    + notebooks.default_handlers + tensorboard.default_handlers + openapi.default_handlers
                    + pages.default_handlers + metrics.default_handlers + snapshots.default_handlers)
