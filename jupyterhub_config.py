"""NothingAI on one machine: JupyterHub, the GPU scheduler service and local notebooks, all on 127.0.0.1.

This is the embedded default that the README's first command starts.  It is a
working demo, NOT a production configuration.  For production, change:

- the authenticator (DEMO ONLY below: any user name logs in with one shared
  password), e.g. ``c.JupyterHub.authenticator_class = "github"`` or an LDAP/OIDC one;
- ``bind_url`` to your public address behind TLS (``c.JupyterHub.ssl_cert``/``ssl_key``
  or a TLS-terminating proxy);
- the scheduler database to PostgreSQL:
  ``NOTHING_SCHEDULER_ARGS='--NothingScheduler.db_url=postgresql+psycopg://...'``;
- the spawner to ``nothing.spawner.kube`` on Kubernetes, where each notebook gets
  a persistent volume at /root/easymaker.

Started as root, every user's notebooks and runs execute as their own Unix account
(``c.UnixAccounts``, created on first use), and the hub's own state below is
readable by the services only; see docs/multi-user.md.

Every path and port below can be overridden through the environment, which is
how the tests start private hubs on free ports.
"""

import os
import shlex
import shutil
import sys

# Everything the hub and the services it starts create is theirs alone (the cookie
# secret, the databases, the proxy's pid file): user code runs as other accounts.
os.umask(0o077)

from nothing.hub_extension import TEMPLATE_DIR, configure_hub  # noqa: E402
from nothing.hub_extension.notebook_states import user_notebook_states  # noqa: E402
from nothing.hub_extension.state_dir import secure_data_dir  # noqa: E402
from nothing.scheduler.accounts import config_args  # noqa: E402

c = get_config()  # noqa: F821 (provided by JupyterHub)

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.path.abspath(os.environ.get("NOTHING_DATA_DIR", os.path.join(here, "var")))
# Users' accounts may pass through to users/<name> and scheduler/runs/<id>; all else is private.
secure_data_dir(data_dir)

# --- network: everything on loopback ------------------------------------------------
c.JupyterHub.bind_url = os.environ.get("NOTHING_BIND_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("NOTHING_HUB_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('NOTHING_PROXY_API_PORT', '8001')}"

# --- state ----------------------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{os.path.join(data_dir, 'jupyterhub.sqlite')}"
c.JupyterHub.cookie_secret_file = os.path.join(data_dir, "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = os.path.join(data_dir, "jupyterhub-proxy.pid")

# --- the proxy: configurable-http-proxy, installed next to the venv by scripts/install.sh
venv_bin = os.path.dirname(sys.executable)
chp = os.environ.get("NOTHING_CHP") or os.path.join(
    os.path.dirname(venv_bin), "chp", "node_modules", ".bin", "configurable-http-proxy"
)
c.ConfigurableHTTPProxy.command = [chp if os.path.exists(chp) else (shutil.which("configurable-http-proxy") or chp)]

# --- notebooks: local processes, one persistent folder per user -------------------------
c.JupyterHub.spawner_class = "nothing-local"
c.NothingLocalSpawner.easymaker_root = os.path.join(data_dir, "users")
# Each hub user's notebooks and runs execute as their Unix account (as root: created on
# first use, login nothing-<name>, uids 20000-29999; see docs/multi-user.md). Set
# c.UnixAccounts.* before the scheduler section below, which hands them to the scheduler.
if "home_template" not in c.UnixAccounts:
    c.UnixAccounts.home_template = os.path.join(data_dir, "users", "{username}")
c.Spawner.cmd = [os.path.join(venv_bin, "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {"PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
c.JupyterHub.allow_named_servers = True

# --- the admin page's link in the hub's navigation bar ------------------------------------
c.JupyterHub.template_paths = [TEMPLATE_DIR]
c.JupyterHub.template_vars = {"nothing_notebook_states": user_notebook_states}

# --- DEMO ONLY authentication: any user name, one shared password --------------------------
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("NOTHING_DEMO_PASSWORD", "nothing")
c.Authenticator.allow_all = True
c.Authenticator.admin_users = set(os.environ.get("NOTHING_ADMIN_USERS", "admin").split(","))

# --- the GPU scheduler, as a hub-managed service at /services/nothing/ -------------------
# Endpoints are also served on a listener of their own, for programs (docs/endpoints.md): nginx carries the calls
# there when it is installed (the data plane), else the service itself. Empty NOTHING_GATEWAY_URL: none.
gateway_url = os.environ.get("NOTHING_GATEWAY_URL", "http://127.0.0.1:8010")
gateway_args = [f"--EndpointController.gateway_url={gateway_url}"] if gateway_url else []
configure_hub(
    c,
    data_dir=os.path.join(data_dir, "scheduler"),
    service_port=int(os.environ.get("NOTHING_SERVICE_PORT", "10101")),
    scheduler_args=[*config_args(c), *gateway_args, *shlex.split(os.environ.get("NOTHING_SCHEDULER_ARGS", ""))],
)
