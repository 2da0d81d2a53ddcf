"""The NothingAI GPU scheduler: a JupyterHub-managed service that queues runs and starts them on free GPUs."""

__version__ = "0.1.0"
