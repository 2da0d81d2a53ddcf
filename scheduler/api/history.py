"""``GET /api/cluster/history?hours=24``: the cluster over time, for the admin page's charts (admins only).

Per node, points of GPUs held (``allocated``), GPUs (``total``) and mean utilisation in percent
(``null`` where nothing measures it); for the cluster, points of queued runs, the median and p95
of how long they had waited, in seconds, and runs running (starting, running or stopping).  ``time`` is seconds since the
epoch.  The samples (``cluster_history.ClusterHistory``, every ``interval_seconds``) are averaged
server-side into buckets of ``bucket_seconds``, so no series has more than ``MAX_POINTS`` points
whatever the window (1 to 720 hours).
"""

from __future__ import annotations

import time

from tornado import web

from ..cluster_history import MAX_POINTS, bucket_seconds, read_history
from .base import APIHandler

MAX_HOURS = 720


class ClusterHistoryHandler(APIHandler):
    """``GET /api/cluster/history``: 403 for non-admins, 400 for ``hours`` outside 1..720."""

    async def get(self):
        if not self.is_admin:
            raise web.HTTPError(403, "only JupyterHub admins may see the cluster's history")
        hours = self.query_int("hours", 24, 1, MAX_HOURS)
        until = int(time.time())
        since = until - hours * 3600
        width = bucket_seconds(hours)
        nodes, cluster = await self.dispatcher.db.run(read_history, since, until, width)
        history = getattr(self.scheduler, "cluster_history", None)
        measured = any(p["utilization"] is not None for points in nodes.values() for p in points)
        self.write_json({
            "hours": hours, "since": since, "until": until, "bucket_seconds": width, "max_points": MAX_POINTS,
            "interval_seconds": history.interval if history is not None else None,
            "retention_days": history.retention_days if history is not None else None,
            "nodes": [{"name": name, "points": points} for name, points in sorted(nodes.items())],
            "cluster": cluster,
            "utilization_note": None if measured else "n/a: no utilisation measured (virtual GPUs, or no NVML)",
        })


default_handlers = [
    (r"/api/cluster/history/?", ClusterHistoryHandler),
]
