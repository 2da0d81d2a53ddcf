"""The names both sides of the access rule agree on: the service's name and the scopes that make an admin.

The hub side (``nothing.hub_extension.service``) grants them in roles and OAuth
settings; the service (``nothing.scheduler.auth``) checks them.  Only constants, so
either side imports them without the other.
"""

from __future__ import annotations

SERVICE_NAME = "nothing"

# A token gives admin power in the scheduler only when the user is a hub admin AND the
# token itself carries one of these: an admin's full API token has both, the service's
# OAuth cookie of an admin has ``admin-ui`` (``oauth_client_allowed_scopes``; the hub
# drops it for everyone else), and a token created with only the access scope has neither.
ADMIN_SCOPES = frozenset({"admin:users", "admin-ui"})

# Calling endpoints (``/serve/...``) and nothing else of the service; narrowed to one endpoint with the
# filter ``!service=endpoint-NAME`` (JupyterHub allows filters only on its own kinds of objects).
INFERENCE_SCOPE = "custom:nothing:inference"
