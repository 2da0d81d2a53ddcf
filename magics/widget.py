"""A live view of one run in the notebook: state, queue position and reason, GPUs, elapsed time, a TensorBoard
link and the last log lines.

The widget polls the service from a background thread and stops once the run has
ended.  ``RunWidget(run_id)`` re-creates it for any run, e.g. after reopening a
notebook.  Front ends without widgets get the same facts as plain text.
"""

from __future__ import annotations

import html
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlparse

from .client import TERMINAL_STATES, NothingClient, NothingError

COLORS = {"QUEUED": "#8a6d00", "RUNNING": "#1565c0", "COMPLETE": "#2e7d32", "FAIL TRAIN": "#c62828",
          "STOPPED": "#616161", "CREATE FAILED": "#c62828", "STOP IN PROGRESS": "#6a1b9a"}


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.rstrip("Z")).replace(tzinfo=timezone.utc)


def elapsed(run: dict, now: datetime | None = None) -> str:
    start = _parse_time(run.get("started_at"))
    if start is None:
        return "-"
    end = _parse_time(run.get("ended_at")) or now or datetime.now(timezone.utc)
    seconds = int((end - start).total_seconds())
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def tensorboard_url(client: NothingClient, run_id: int) -> str:
    """The run's TensorBoard as a path on the hub's origin (the browser opens it, not the kernel).

    The client's address is the service's internal one; its path is the public prefix.
    """
    prefix = urlparse(client.api).path.rsplit("/api", 1)[0]
    return f"{prefix}/tensorboard/run/{int(run_id)}/"


def status_line(run: dict) -> str:
    parts = [f"Run {run['id']}", run["name"] or run["entry_point"], run["state"]]
    if run["state"] == "QUEUED" and run.get("queue_position"):
        parts.append(f"position {run['queue_position']}")
    if run.get("assigned_gpus"):
        parts.append("GPUs " + ",".join(map(str, run["assigned_gpus"])))
    parts.append(f"elapsed {elapsed(run)}")
    line = " | ".join(parts)
    if run.get("reason"):
        line += f"\n  {run['reason']}"
    return line


class RunWidget:
    """Shows one run live; ``display(RunWidget(run_id))`` or let the magic do it."""

    def __init__(self, run_id: int, client: NothingClient | None = None, log_lines: int = 12,
                 interval: float = 1.0):
        import ipywidgets as w

        self.run_id = int(run_id)
        self.client = client or NothingClient()
        self.log_lines = log_lines
        self.interval = interval
        self.run: dict = self.client.run(self.run_id)
        self._log = ""
        self._offset = 0
        self.header = w.HTML()
        self.detail = w.HTML()
        self.log_view = w.HTML()
        self.box = w.VBox([self.header, self.detail, self.log_view])
        self._stop = threading.Event()
        self._render()
        self._thread = threading.Thread(target=self._poll, name=f"nothing-run-{self.run_id}", daemon=True)
        self._thread.start()

    def _render(self) -> None:
        run = self.run
        color = COLORS.get(run["state"], "#37474f")
        title = html.escape(run["name"] or run["entry_point"])
        self.header.value = (
            f"<b>Run {run['id']}</b> &middot; {title} &middot; "
            f"<span style='color:{color};font-weight:bold'>{html.escape(run['state'])}</span>"
        )
        bits = []
        if run["state"] == "QUEUED" and run.get("queue_position"):
            bits.append(f"queue position {run['queue_position']}")
        if run.get("reason"):
            bits.append(html.escape(run["reason"]))
        gpus = ",".join(map(str, run.get("assigned_gpus") or [])) or f"{run['gpus']} requested"
        bits.append(f"GPUs: {gpus}")
        bits.append(f"elapsed {elapsed(run)}")
        bits.append(f"<a href='{html.escape(tensorboard_url(self.client, run['id']))}' target='_blank' "
                    f"rel='noopener'>TensorBoard</a>")
        self.detail.value = " &middot; ".join(bits)
        tail = "\n".join(self._log.splitlines()[-self.log_lines:])
        self.log_view.value = f"<pre style='margin:0;max-height:16em;overflow:auto'>{html.escape(tail)}</pre>"

    def refresh(self) -> None:
        self.run = self.client.run(self.run_id)
        text, self._offset, _ = self.client.logs(self.run_id, offset=self._offset)
        if text:
            self._log = (self._log + text)[-64 * 1024:]
        self._render()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except NothingError as e:
                self.detail.value = f"<span style='color:#c62828'>{html.escape(str(e))}</span>"
            if self.run["state"] in TERMINAL_STATES:
                break
            time.sleep(self.interval)

    def close(self) -> None:
        self._stop.set()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = status_line(self.run)
        return bundle
