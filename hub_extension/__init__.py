"""JupyterHub side of NothingAI: registers the scheduler as a hub-managed service and grants access to it."""

from .service import configure_hub, platform_roles, scheduler_service

__all__ = ["configure_hub", "platform_roles", "scheduler_service"]
