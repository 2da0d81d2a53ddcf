"""The one access rule of the service's handlers: who the caller is, whether they may use it, whether they are admin.

The REST API, the TensorBoard proxy and the admin page all call ``authenticate``,
so a token without the service's access scope is refused everywhere alike, and
admin power always needs a token (or OAuth cookie) that itself carries an admin
scope: an admin's narrow token (``scopes=["access:services!service=nothing"]``)
is a normal user's token here.

It lives in the service, which owns the objects and enforces who may touch them; the
hub extension only grants the scopes (roles, OAuth settings).  The names both sides
agree on (the service's name, the admin scopes) are in ``nothing.common.access``, so
neither imports the other.
"""

from __future__ import annotations

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

from .ownership import Principal

from nothing.common.access import ADMIN_SCOPES, SERVICE_NAME

# Pages of the service never show inside another site's frame (clickjacking).
FRAME_DENY_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY"}


def wants_html(request) -> bool:
    """A browser navigating (``Accept`` prefers ``text/html``) rather than an API client asking for JSON."""
    accept = request.headers.get("Accept", "")
    if "text/html" not in accept:
        return False
    return "application/json" not in accept or accept.index("text/html") < accept.index("application/json")


def is_admin(model: dict | None) -> bool:
    """A JupyterHub admin whose token itself carries an admin scope (``ADMIN_SCOPES``)."""
    return bool(model and model.get("admin")) and not ADMIN_SCOPES.isdisjoint(model.get("scopes") or ())


async def authenticate(handler: HubOAuthenticated) -> dict | None:
    """The caller's hub model (cached for ``current_user``), or ``None`` when nothing identifies them.

    Raises 403 when the token or cookie lacks the service's access scope.
    """
    try:
        model = await handler.hub_auth.get_user(handler, sync=False)
    except web.HTTPError as e:
        if e.status_code < 500:
            raise
        # HubAuth says 500 when the hub itself cannot be reached (restarting): a retryable "not now".
        raise web.HTTPError(503, "the hub cannot be reached to check the token; try again shortly") from None
    if model is not None:
        required = handler.hub_scopes or {f"access:services!service={SERVICE_NAME}"}
        if not handler.hub_auth.check_scopes(required, model):
            raise web.HTTPError(403, f"{model.get('kind', 'user')} {model.get('name')} may not use this service: "
                                     f"the token lacks the scope {' or '.join(sorted(required))}")
    handler._hub_auth_user_cache = model
    return model


class HubUserMixin(HubOAuthenticated):
    """``username`` and ``is_admin`` of the caller ``authenticate`` identified; SameSite cookies.

    Put it before the ``RequestHandler`` base so the hub's ``get_current_user`` wins.
    """

    @property
    def username(self) -> str:
        return self.current_user["name"]

    @property
    def is_admin(self) -> bool:
        return is_admin(self.current_user)

    @property
    def principal(self) -> Principal:
        """The caller as the ownership rule sees them (``ownership.may``)."""
        return Principal(self.username, frozenset(self.current_user.get("groups") or ()), self.is_admin)

    def set_cookie(self, name: str, value: str | bytes, *args, **kwargs) -> None:
        """Cookies these handlers set (OAuth state, XSRF) are SameSite=Lax unless a caller says otherwise."""
        kwargs.setdefault("samesite", "Lax")
        super().set_cookie(name, value, *args, **kwargs)

    def deny_framing(self) -> None:
        for name, value in FRAME_DENY_HEADERS.items():
            self.set_header(name, value)
