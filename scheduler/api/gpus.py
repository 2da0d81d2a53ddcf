"""/api/gpus: the cluster's GPUs and who holds them; /api/gpus/shape: how big its nodes are, for the spawn form."""

from __future__ import annotations

from ..dispatcher import NotebookHold
from .base import APIHandler


def holder_kind(holder) -> str | None:
    if holder is None:
        return None
    return "notebook" if isinstance(holder, NotebookHold) else "run"


def holder_ids(holder) -> dict:
    """``run_id`` for a run, ``server`` for a notebook server."""
    if isinstance(holder, NotebookHold):
        return {"run_id": None, "server": holder.server}
    return {"run_id": holder.id, "server": None}


class GpusHandler(APIHandler):
    async def get(self):
        holders = self.dispatcher.gpu_holders()
        nodes = []
        for node, gpus in self.scheduler.inventory.items():
            rows = []
            for gpu in gpus:
                holder = holders.get((node, gpu.index))
                row = dict(gpu.to_dict(), node=node, busy=holder is not None, run_id=None, owner=None,
                           holder_kind=holder_kind(holder), server=None)
                if holder is not None and (self.is_admin or holder.owner == self.username):
                    row.update(owner=holder.owner, **holder_ids(holder))
                rows.append(row)
            nodes.append({"name": node, "mode": self.scheduler.gpu_mode_in_use, "gpus": rows})
        total = sum(len(n["gpus"]) for n in nodes)
        busy = sum(g["busy"] for n in nodes for g in n["gpus"])
        self.write_json({"nodes": nodes, "total": total, "busy": busy, "free": total - busy})


class GpuShapeHandler(APIHandler):
    """``GET /api/gpus/shape``: the number of nodes and the largest node's GPUs, e.g. ``{"nodes": 3,
    "largest_node_gpus": 4}``.

    The hub's spawn form asks before the notebook exists (so before it has a token) and offers only the GPU
    counts a notebook, which runs on one node, can get.  No login: the two numbers are what every spawn form
    shows anyway, and they say nothing of users, runs or holders.
    """

    requires_login = False

    async def get(self):
        self.write_json({"nodes": len(self.scheduler.inventory), "largest_node_gpus": self.scheduler.max_gpus_per_node})


default_handlers = [(r"/api/gpus/?", GpusHandler), (r"/api/gpus/shape", GpuShapeHandler)]
