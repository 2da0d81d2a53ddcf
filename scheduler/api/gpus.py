"""/api/gpus: the cluster's GPUs and who holds them."""

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


default_handlers = [(r"/api/gpus/?", GpusHandler)]
