"""/api/gpus: the cluster's GPUs and who holds them."""

from __future__ import annotations

from .base import APIHandler


class GpusHandler(APIHandler):
    async def get(self):
        holders = {}
        for run in self.dispatcher.active.values():
            if run.state.holds_gpus and run.node:
                for gpu in run.assigned_gpus:
                    holders[(run.node, gpu)] = run
        nodes = []
        for node, gpus in self.scheduler.inventory.items():
            rows = []
            for gpu in gpus:
                holder = holders.get((node, gpu.index))
                row = dict(gpu.to_dict(), node=node, busy=holder is not None, run_id=None, owner=None)
                if holder is not None and (self.is_admin or holder.owner == self.username):
                    row.update(run_id=holder.id, owner=holder.owner)
                rows.append(row)
            nodes.append({"name": node, "mode": self.scheduler.gpu_mode_in_use, "gpus": rows})
        total = sum(len(n["gpus"]) for n in nodes)
        busy = sum(g["busy"] for n in nodes for g in n["gpus"])
        self.write_json({"nodes": nodes, "total": total, "busy": busy, "free": total - busy})


default_handlers = [(r"/api/gpus/?", GpusHandler)]
