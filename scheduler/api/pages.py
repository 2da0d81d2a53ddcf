"""The service's own pages: the platform's home page at ``<service prefix>`` and the GPU cluster's admin page
at ``<service prefix>admin``.

Why the service serves them rather than the hub: the data lives in the scheduler, the
service already authenticates browsers through the hub (OAuth), and one process
owns both the page and the API it calls.  The hub links to the admin page from its
navigation bar through its own template override (``nothing.hub_extension.TEMPLATE_DIR``)
and the service is in the hub's Services menu.

Only JupyterHub admins get the admin page, and only with a token or cookie that carries
an admin scope (``nothing.scheduler.auth``); everyone else gets 403.  The pages
may not be framed by other sites.  The admin page is static
HTML (``templates/admin_body.html``) plus ``static/admin.js``; the script reads ``api/admin/overview``
and acts through ``api/runs/<id>/cancel`` and ``api/runs/<id>/priority``, sending the
XSRF token rendered into the page.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from tornado import web

from ..auth import HubUserMixin, authenticate, wants_html

HERE = Path(__file__).parent
STATIC_DIR = str(HERE / "static")


class AdminPageHandler(HubUserMixin, web.RequestHandler):
    """``GET <prefix>admin``: the page for admins; 403 for other users; the hub's login for strangers."""

    def set_default_headers(self) -> None:
        self.deny_framing()
        self.set_header("Cache-Control", "no-store")

    async def prepare(self) -> None:
        if await authenticate(self) is None:
            self.redirect(self.get_login_url())

    def get(self) -> None:
        user = self.current_user
        self.set_header("Content-Type", "text/html; charset=utf-8")
        if not self.is_admin:
            self.set_status(403)
            why = ("is a JupyterHub admin, but this token does not carry admin rights" if user.get("admin")
                   else "is not a JupyterHub admin")
            self.finish(_page("Forbidden", f"<p role='alert'>{escape(user['name'])} {why}: "
                                           "the GPU cluster page is for admins only.</p>"))
            return
        prefix = self.settings["service_prefix"]
        config = {"prefix": prefix, "xsrf": self.xsrf_token.decode(), "user": user["name"],
                  "hub": prefix.split("/services/")[0] + "/hub/"}
        body = (HERE / "templates" / "admin_body.html").read_text()
        inline = json.dumps(config).replace("<", "\\u003c")  # no "</script>" can end the script early
        script = (f"<script>window.NOTHING_ADMIN = {inline};</script>"
                  f"<script src='{prefix}static/nothing-admin/admin.js'></script>")
        self.finish(_page("GPU cluster", body + script, prefix))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_page(self._reason, f"<p role='alert'>{escape(message)}</p>"))


class HomePageHandler(HubUserMixin, web.RequestHandler):
    """``GET <prefix>``: the platform's own page for a browser (where the hub's Services menu leads).

    API clients (``Accept: application/json``, or no ``text/html`` at all) get the service's
    JSON description instead, as before.  It comes before the scheduler's root handler in
    the application's list (the API's handlers are added first), so it answers the root.
    """

    def set_default_headers(self) -> None:
        self.deny_framing()
        self.set_header("Cache-Control", "no-store")

    async def get(self) -> None:
        prefix = self.settings["service_prefix"]
        if not wants_html(self.request):
            from nothing.scheduler import __version__

            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish({"service": "nothing", "version": __version__, "api": prefix + "api/"})
            return
        if await authenticate(self) is None:
            self.redirect(self.get_login_url())
            return
        hub = prefix.split("/services/")[0] + "/hub/"
        links = [
            (f"{hub}user-redirect/lab", "My runs",
             "in JupyterLab: the GPU icon in the left sidebar (queue position, logs, TensorBoard)"),
            (f"{prefix}api/runs", "My runs as JSON", "the same list from the REST API"),
        ]
        if self.is_admin:
            links.append((f"{prefix}admin", "GPU cluster", "nodes, the whole queue, usage and quotas (admins)"))
        links += [
            (f"{prefix}api/openapi.json", "API docs", "the OpenAPI description of the REST API"),
            (f"{hub}home", "Hub home", "start or stop your notebook server"),
        ]
        items = "".join(f"<li><a href='{escape(href)}'>{escape(label)}</a>: {escape(why)}</li>"
                        for href, label, why in links)
        body = (f"<header class='nai-header'><h1>NothingAI GPU platform</h1></header>"
                f"<p>Signed in as {escape(self.current_user['name'])}.</p>"
                f"<nav aria-label='Platform'><ul>{items}</ul></nav>")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_page("NothingAI", body, prefix))

    def write_error(self, status_code: int, **kwargs) -> None:
        AdminPageHandler.write_error(self, status_code, **kwargs)


def _page(title: str, body: str, prefix: str = "") -> str:
    css = f"<link rel='stylesheet' href='{prefix}static/nothing-admin/admin.css'>" if prefix else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)} - NothingAI</title>"
            f"{css}</head><body><main>{body}</main></body></html>")


class AdminStaticHandler(web.StaticFileHandler):
    """The page's script and style sheet (no authentication: they hold no data)."""

    def initialize(self, path: str = STATIC_DIR, *args: Any, **kwargs: Any) -> None:
        # The app's handler list holds (pattern, class) pairs only: the folder is the default.
        super().initialize(path, *args, **kwargs)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")


default_handlers = [
    (r"/?", HomePageHandler),
    (r"/admin/?", AdminPageHandler),
    (r"/static/nothing-admin/(admin\.(?:js|css))", AdminStaticHandler),
]
