"""The inference data plane in C: nginx in front of the model-server replicas on the gateway's listener.

The Python gateway costs more than a one-line model (0.38x of the model server's throughput, measured), so
on ``c.EndpointController.gateway_url`` nginx carries the requests: for each client connection it asks the
service once (``auth_request`` to ``api/data_plane_routes.py``, answered from nginx's cache for
``route_cache_seconds``) which upstream, path, replica secret and stage a request goes to, then forwards
the body itself over kept-alive connections.  Anything that is not a ready replica (a refusal, an unknown
endpoint, no replica yet) is answered "go to the Python gateway", which answers exactly as it always has.

The configuration is written once, when nginx starts, and nginx is never reloaded: a reload closes idle
kept-alive client connections of the old workers, and clients lose requests on them (219 errors in 30
reloads under load, measured).  Routes change in the service's answers instead; replica ports come from a
fixed range whose ``upstream`` groups (with keep-alive) are all declared up front.

nginx runs as a child of the scheduler (its own session, so its workers go with it), is restarted when it
dies, and writes one line per forwarded request (``$msec stage status seconds``) to a buffered access log
the endpoint controller reads for the stages' statistics (``read_stats``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import pwd
import shutil
import signal
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from traitlets import Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from .serving_stats import ServingStats

log = logging.getLogger("nothing.data_plane")

UPSTREAM_PYTHON = "nothing_python"  # the service's own gateway: refusals, fallbacks, the stats it counts itself
ROUTE_LOCATION = "/_nothing/route"  # the internal auth_request location, and the service's handler path
SECRET_HEADER = "X-Nothing-Data-Plane"
STATS_LOG = "stats.log"
ROTATE_BYTES = 16 * 1024**2  # the stats log is renamed and reopened past this


def replica_upstream(port: int) -> str:
    """The declared upstream group (kept-alive) of a local replica's port."""
    return f"nothing_p{port}"


def upstream_for(url: str, replica_ports: tuple[int, int]) -> str | None:
    """What nginx forwards a replica's calls to: its kept-alive upstream group when it listens here on a port of
    ``replica_ports``, ``host:port`` elsewhere (an address: nginx resolves no names here), else None (the Python
    gateway then carries its calls)."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    low, high = replica_ports
    if host == "127.0.0.1" and low <= int(port) <= high:
        return replica_upstream(int(port))
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return None
    return f"{host}:{port}"


def free_port_in(replica_ports: tuple[int, int], used: set[int], turn: int) -> int | None:
    """The first port of the range from its ``turn``-th on that is not ``used`` and can be bound on loopback now."""
    low, high = replica_ports
    count = high - low + 1
    for k in range(count):
        port = low + (turn + k) % count
        if port in used:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return None


def _json_text(text: str) -> str:
    """A JSON string literal that is also a plain nginx single-quoted string (no quotes, no backslashes)."""
    assert "'" not in text and '"' not in text and "\\" not in text and "$" not in text
    return '"' + text + '"'


def render_config(*, prefix: Path, listen: str, python_port: int, secret: str, replica_ports: tuple[int, int],
                  cache_seconds: int, max_body_bytes: int, request_timeout: float, workers: str = "1",
                  user: str = "") -> str:
    """nginx.conf of the data plane: a pure function of its settings (tests run ``nginx -t`` on it)."""
    low, high = replica_ports
    upstreams = "\n".join(f"  upstream {replica_upstream(p)} {{ server 127.0.0.1:{p}; keepalive 16; "
                          f"keepalive_requests 1000000; }}" for p in range(low, high + 1))
    timeout = max(1, round(request_timeout))
    too_large = _json_text(f"the request body is over {max_body_bytes} bytes, the most an endpoint accepts")
    slow = _json_text(f"the model server did not answer within {timeout}s")
    unavailable = _json_text("the platform service cannot be reached (restarting?); try again shortly")
    forwarded = """
      proxy_http_version 1.1;
      proxy_set_header Connection "";"""
    return f"""# Written once by the NothingAI scheduler when it starts nginx; never reloaded (see scheduler/data_plane.py).
daemon off;
worker_processes {workers};
{f'user {user};' if user else ''}
pid {prefix}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}

http {{
  access_log off;
  server_tokens off;
  default_type application/octet-stream;
  client_body_temp_path {prefix}/temp/body;
  proxy_temp_path {prefix}/temp/proxy;
  client_max_body_size {max_body_bytes};
  client_body_buffer_size 1m;
  keepalive_requests 1000000;
  proxy_read_timeout {timeout}s;
  proxy_send_timeout {timeout}s;
  log_format nothing_stats '$msec $nothing_stage $status $request_time';
  # The service's answers per client connection; they hold replica secrets and the callers' tokens (the key).
  proxy_cache_path {prefix}/cache levels=1:2 keys_zone=nothing_routes:8m inactive=60s max_size=256m
                   use_temp_path=off;

  upstream {UPSTREAM_PYTHON} {{ server 127.0.0.1:{python_port}; keepalive 32; keepalive_requests 1000000; }}
{upstreams}

  server {{
    listen {listen};

    location /serve/ {{
      auth_request {ROUTE_LOCATION};
      auth_request_set $nothing_upstream $upstream_http_x_nothing_upstream;
      auth_request_set $nothing_path $upstream_http_x_nothing_path;
      auth_request_set $nothing_replica_token $upstream_http_x_nothing_replica;
      auth_request_set $nothing_stage $upstream_http_x_nothing_stage;
      access_log {prefix}/logs/{STATS_LOG} nothing_stats buffer=64k flush=1s if=$nothing_stage;
      proxy_pass http://$nothing_upstream$nothing_path;{forwarded}
      # What a replica gets is what the Python gateway sends it: never the caller's token or cookies.
      proxy_pass_request_headers off;
      proxy_set_header Content-Type $content_type;
      proxy_set_header Accept $http_accept;
      proxy_set_header Authorization $nothing_forward_authorization;
      proxy_set_header Cookie $nothing_forward_cookie;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Nothing-Replica $nothing_replica_token;
      # A replica that is gone (connection refused or reset): the Python gateway tries the next one.
      error_page 502 = @python;
      error_page 504 = @slow;
      error_page 413 = @too_large;
      error_page 500 = @unavailable;  # only nginx makes one here: the service did not answer the route question
    }}

    location = {ROUTE_LOCATION} {{
      internal;
      proxy_pass http://{UPSTREAM_PYTHON}{ROUTE_LOCATION};{forwarded}
      proxy_method GET;
      proxy_pass_request_body off;
      proxy_pass_request_headers off;
      proxy_set_header Content-Length "";
      proxy_set_header Authorization $http_authorization;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header {SECRET_HEADER} {secret};
      proxy_cache nothing_routes;
      proxy_cache_key "$connection $request_method $request_uri $http_authorization";
      proxy_cache_valid 200 {cache_seconds}s;
      proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Expires X-Accel-Buffering;
    }}

    location @python {{
      set $nothing_stage "";
      proxy_pass http://{UPSTREAM_PYTHON};{forwarded}
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_read_timeout {timeout + 10}s;  # the Python gateway's own 504 comes first
      error_page 502 504 = @unavailable;
    }}

    location @unavailable {{
      default_type "application/json; charset=utf-8";
      return 503 '{{"status": 503, "message": {unavailable}}}';
    }}

    location @slow {{
      default_type "application/json; charset=utf-8";
      return 504 '{{"status": 504, "message": {slow}}}';
    }}

    location @too_large {{
      default_type "application/json; charset=utf-8";
      return 413 '{{"status": 413, "message": {too_large}}}';
    }}

    location /_nothing/ {{ return 404; }}

    location / {{
      proxy_pass http://{UPSTREAM_PYTHON};{forwarded}
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_read_timeout {timeout + 10}s;  # the Python gateway's own 504 comes first
      error_page 502 504 = @unavailable;
    }}
  }}

  # Only the Python gateway gets the caller's token and cookies (map values are taken when the request is sent).
  map $nothing_upstream $nothing_forward_authorization {{ {UPSTREAM_PYTHON} $http_authorization; default ""; }}
  map $nothing_upstream $nothing_forward_cookie {{ {UPSTREAM_PYTHON} $http_cookie; default ""; }}
}}
"""


def read_stats(path: Path, offset: int) -> tuple[ServingStats, int]:
    """The counts of the stats log's complete lines from ``offset`` on, and the offset after them (blocking: call
    in a thread).  A line is ``$msec stage status seconds``; one that does not parse is skipped."""
    stats = ServingStats()
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return stats, 0
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        try:
            at, stage, status, seconds = line.split()
            when = datetime.fromtimestamp(float(at), timezone.utc).replace(tzinfo=None)
            stats.observe(int(stage), float(seconds), int(status) >= 400, when)
        except ValueError:
            continue
    return stats, offset + end


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class NginxDataPlane(LoggingConfigurable):
    """Starts and supervises nginx with the one configuration; reads and rotates its stats log."""

    nginx = Unicode("nginx", help="The nginx executable (a name on PATH or a path). Example: ``/usr/sbin/nginx``").tag(
        config=True)
    worker_processes = Unicode(
        "1", help="""nginx's ``worker_processes``: ``1`` leaves the cores to the model servers on a small machine;
        ``auto`` is one per core. Example: ``c.NginxDataPlane.worker_processes = "auto"``""",
    ).tag(config=True)
    worker_user = Unicode(
        help="""The Unix account nginx's workers run as when the scheduler is root (nginx's ``user``): one that
        reads no user's files. Its cache and temporary folders are its own, 0700. Default: ``www-data`` where it
        exists, else ``nobody``. Example: ``c.NginxDataPlane.worker_user = "nginx"``""",
    ).tag(config=True)

    @default("worker_user")
    def _default_worker_user(self):
        try:
            pwd.getpwnam("www-data")
            return "www-data"
        except KeyError:
            return "nobody"

    restart_seconds = Integer(1, help="Seconds before nginx is started again after it ended on its own.").tag(
        config=True)

    def __init__(self, prefix: Path, config_args: dict, **kwargs):
        super().__init__(**kwargs)
        self.prefix = Path(prefix)
        self.config_args = config_args
        self.listen = config_args["listen"]
        self.stats_log = self.prefix / "logs" / STATS_LOG
        self.process: asyncio.subprocess.Process | None = None
        self._offset = 0
        self._rotated: Path | None = None  # the renamed log, read to its end at the next read
        self._stopping = False
        self._task: asyncio.Task | None = None
        self.starts = 0

    # ------------------------------------------------------------------ files
    def _prepare(self) -> Path:
        """The prefix (0711: the workers pass through it), its config (0600) and the workers' own 0700 folders,
        emptied of an earlier nginx's cache and files."""
        self.prefix.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.prefix.chmod(0o711)
        root = os.geteuid() == 0
        user = pwd.getpwnam(self.worker_user) if root else None
        for name in ("cache", "temp", "logs"):
            folder = self.prefix / name
            if name != "logs":
                shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)
            if user is not None:
                os.chown(folder, user.pw_uid, user.pw_gid)
        config = self.prefix / "nginx.conf"
        text = render_config(prefix=self.prefix, user=self.worker_user if root else "",
                             workers=self.worker_processes, **self.config_args)
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return config

    def _kill_leftover(self) -> None:
        """An nginx of an earlier scheduler (killed with SIGKILL) still holds the port: end its process group."""
        try:
            pid = int((self.prefix / "nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if b"nginx" not in cmdline or str(self.prefix).encode() not in cmdline:
            return
        log.info("Stopping the nginx (pid %s) an earlier scheduler left", pid)
        try:
            os.killpg(pid, signal.SIGKILL)  # its own session: the master's pid is the group of its workers
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 5
        host, port = self._host_port()
        while _listening(host, port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        return ("127.0.0.1" if host in ("0.0.0.0", "*") else host), int(port)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """nginx running and listening (within 10 s), or an error saying why not."""
        await self._start_once()
        self._task = asyncio.ensure_future(self._supervise())

    async def _start_once(self) -> None:
        config = await asyncio.to_thread(self._prepare)
        await asyncio.to_thread(self._kill_leftover)
        self._offset, self._rotated = 0, None
        self.process = await asyncio.create_subprocess_exec(
            self.nginx, "-p", str(self.prefix), "-c", str(config), "-e", "stderr",
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        host, port = self._host_port()
        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(_listening, host, port):
            if self.process.returncode is not None:
                raise RuntimeError(f"nginx ended at start with status {self.process.returncode} (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx is not listening on {self.listen} after 10 s")
            await asyncio.sleep(0.05)
        log.info("nginx data plane (pid %s) listening on %s", self.process.pid, self.listen)

    async def _supervise(self) -> None:
        while not self._stopping:
            process = self.process
            assert process is not None
            status = await process.wait()
            if self._stopping:
                return
            log.warning("nginx (pid %s) ended with status %s; starting it again in %ss", process.pid, status,
                        self.restart_seconds)
            await self._kill_group(process.pid)
            await asyncio.sleep(self.restart_seconds)
            try:
                await self._start_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep trying: the gateway is down until it starts
                log.error("nginx did not start again: %s", e)

    async def _kill_group(self, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)  # workers a killed master left
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGQUIT)  # graceful: requests in flight finish
        try:
            await asyncio.wait_for(process.wait(), 5)
        except asyncio.TimeoutError:
            pass
        await self._kill_group(process.pid)
        await process.wait()

    # ------------------------------------------------------------------ statistics
    async def take_stats(self) -> ServingStats:
        """The counts nginx logged since the last call; renames and reopens (SIGUSR1, no connection dropped) the
        log once it is large.  The rename's last lines are read at the next call, after nginx flushed them."""
        stats = ServingStats()
        if self._rotated is not None:
            old, _ = await asyncio.to_thread(read_stats, self._rotated, self._offset)
            stats.merge(old)
            await asyncio.to_thread(self._rotated.unlink, missing_ok=True)
            self._rotated, self._offset = None, 0
        new, self._offset = await asyncio.to_thread(read_stats, self.stats_log, self._offset)
        stats.merge(new)
        process = self.process
        if self._offset > ROTATE_BYTES and process is not None and process.returncode is None:
            self._rotated = self.stats_log.with_name(STATS_LOG + ".1")
            await asyncio.to_thread(os.replace, self.stats_log, self._rotated)
            process.send_signal(signal.SIGUSR1)
        return stats
