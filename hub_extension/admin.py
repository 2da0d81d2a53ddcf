"""The admin page of the GPU cluster, served by the scheduler service at ``<service prefix>admin``.

Why the service serves it rather than the hub: the data lives in the scheduler, the
service already authenticates browsers through the hub (OAuth), and one process
owns both the page and the API it calls.  The hub links to it from its navigation
bar through a template override (``TEMPLATE_DIR``, added to
``c.JupyterHub.template_paths``) and the service is in the hub's Services menu.

Only JupyterHub admins get the page; everyone else gets 403.  The page is static
HTML plus ``static/admin.js``; the script reads ``api/admin/overview`` and acts
through ``api/runs/<id>/cancel`` and ``api/runs/<id>/priority``, sending the
XSRF token rendered into the page.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

HERE = Path(__file__).parent
TEMPLATE_DIR = str(HERE / "templates")
STATIC_DIR = str(HERE / "static")


class AdminPageHandler(HubOAuthenticated, web.RequestHandler):
    """``GET <prefix>admin``: the page for admins; 403 for other users; the hub's login for strangers."""

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        self._hub_auth_user_cache = model
        if model is None:
            self.redirect(self.get_login_url())

    def get(self) -> None:
        user = self.current_user
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        if not user.get("admin"):
            self.set_status(403)
            self.finish(_page("Forbidden", f"<p role='alert'>{escape(user['name'])} is not a JupyterHub admin: "
                                           "the GPU cluster page is for admins only.</p>"))
            return
        prefix = self.settings["service_prefix"]
        config = {"prefix": prefix, "xsrf": self.xsrf_token.decode(), "user": user["name"],
                  "hub": prefix.split("/services/")[0] + "/hub/"}
        body = (HERE / "templates" / "admin_body.html").read_text()
        script = (f"<script>window.NOTHING_ADMIN = {json.dumps(config)};</script>"
                  f"<script src='{prefix}static/nothing-admin/admin.js'></script>")
        self.finish(_page("GPU cluster", body + script, prefix))


def _page(title: str, body: str, prefix: str = "") -> str:
    css = f"<link rel='stylesheet' href='{prefix}static/nothing-admin/admin.css'>" if prefix else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)} - NothingAI</title>"
            f"{css}</head><body><main>{body}</main></body></html>")


class AdminStaticHandler(web.StaticFileHandler):
    """The page's script and style sheet (no authentication: they hold no data)."""

    def initialize(self) -> None:  # the app's handler list holds (pattern, class) pairs only
        super().initialize(path=STATIC_DIR)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")


default_handlers = [
    (r"/admin/?", AdminPageHandler),
    (r"/static/nothing-admin/(admin\.(?:js|css))", AdminStaticHandler),
]
