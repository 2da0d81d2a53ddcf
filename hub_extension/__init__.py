"""JupyterHub side of NothingAI: registers the scheduler as a hub-managed service and grants access to it."""

from pathlib import Path

from .service import configure_hub, platform_roles, scheduler_service

# The hub's own template overrides (its navigation bar links to the service's admin page; the home page
# shows the notebook states): for ``c.JupyterHub.template_paths``.
TEMPLATE_DIR = str(Path(__file__).parent / "templates")

__all__ = ["TEMPLATE_DIR", "configure_hub", "platform_roles", "scheduler_service"]
