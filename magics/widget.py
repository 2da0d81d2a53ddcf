"""A live view of one run in the notebook: state, queue position and reason, GPUs, elapsed time, a TensorBoard
link, the live curve of the run's main metric and the last log lines.

The widget polls the service from a background thread and stops once the run has
ended.  ``RunWidget(run_id)`` re-creates it for any run, e.g. after reopening a
notebook.  Front ends without widgets get the same facts as plain text.
"""

from __future__ import annotations

import html
import math
import threading
from datetime import datetime, timezone
from urllib.parse import urlparse

from .client import TERMINAL_STATES, NothingClient, NothingError
from .failure import failure_reason

COLORS = {"QUEUED": "#8a6d00", "RUNNING": "#1565c0", "COMPLETE": "#2e7d32", "FAIL TRAIN": "#c62828",
          "STOPPED": "#616161", "CREATE FAILED": "#c62828", "STOP IN PROGRESS": "#6a1b9a"}


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.rstrip("Z")).replace(tzinfo=timezone.utc)


def elapsed(run: dict, now: datetime | float | None = None) -> str:
    """``h:mm:ss`` from the service's ``started_at`` to its ``ended_at`` or ``now``, as the sidebar counts it.

    ``now`` is the service's clock (``NothingClient.server_now()``) so that a kernel
    whose clock is off shows what the sidebar shows; the local clock if not given.
    """
    start = _parse_time(run.get("started_at"))
    if start is None:
        return "-"
    if isinstance(now, (int, float)):
        now = datetime.fromtimestamp(now, timezone.utc)
    end = _parse_time(run.get("ended_at")) or now or datetime.now(timezone.utc)
    seconds = max(0, int((end - start).total_seconds()))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def gpu_text(run: dict) -> str:
    """``GPU #0`` / ``GPUs #0,#1`` once assigned (indexes, not a count); before that the count: ``1 GPU``."""
    assigned = run.get("assigned_gpus") or []
    if assigned:
        return ("GPU " if len(assigned) == 1 else "GPUs ") + ",".join(f"#{g}" for g in assigned)
    count = run.get("gpus") or 0
    return "no GPU" if count == 0 else f"{count} GPU" + ("s" if count > 1 else "")


def tensorboard_url(client: NothingClient, run_id: int) -> str:
    """The run's TensorBoard as a path on the hub's origin (the browser opens it, not the kernel).

    The client's address is the service's internal one; its path is the public prefix.
    """
    prefix = urlparse(client.api).path.rsplit("/api", 1)[0]
    return f"{prefix}/tensorboard/run/{int(run_id)}/"


def status_line(run: dict, now: datetime | float | None = None) -> str:
    parts = [f"Run {run['id']}", run["name"] or run["entry_point"], run["state"]]
    if run["state"] == "QUEUED" and run.get("queue_position"):
        parts.append(f"position {run['queue_position']}")
    parts.append(gpu_text(run))
    parts.append(f"elapsed {elapsed(run, now)}")
    if run.get("experiment"):
        parts.append(f"experiment {run['experiment']}")
    line = " | ".join(parts)
    if run.get("reason"):
        line += f"\n  {run['reason']}"
    return line


def saved_text(run: dict, seen_at: float, now: datetime | float | None = None) -> str:
    """What the notebook file keeps of the widget: the last known state and how to see the run live again.

    A reopened notebook has no widget model any more; this text is what remains readable.
    """
    if run["state"] in TERMINAL_STATES:
        tail = f"final state {run['state']}; %nothing_watch {run['id']} shows the run again"
    else:
        when = datetime.fromtimestamp(seen_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        tail = f"last seen {run['state']} at {when}; %nothing_watch {run['id']} re-attaches the live view"
    return f"{status_line(run, now)}\n  ({tail})"


def main_metric(run: dict) -> str | None:
    """The metric the widget draws: the first of the run's rules, else ``loss`` if reported, else the first reported."""
    rules = run.get("metrics") or []
    if rules and rules[0].get("name"):
        return rules[0]["name"]
    summary = run.get("metric_summary") or {}
    if "loss" in summary:
        return "loss"
    return next(iter(summary), None)


def _finite(value) -> float | None:
    """A point's value as a float, or None for the service's ``"NaN"``/``"Infinity"`` strings (not drawn)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_svg(name: str, points: list, width: int = 360, height: int = 120) -> str:
    """A small inline SVG line chart of ``[[step, wall_time, value], ...]``; non-finite values are skipped.

    The path carries ``data-steps``/``data-values`` so what is drawn can be compared with what was reported.
    """
    drawn = [(int(p[0]), v) for p in points if (v := _finite(p[2])) is not None]
    label = html.escape(name)
    if not drawn:
        return (f"<div class='nai-metric-chart' data-metric='{label}' style='color:#757575'>"
                f"{label}: no finite points yet</div>")
    pad = 6
    steps = [s for s, _ in drawn]
    values = [v for _, v in drawn]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(values), max(values)
    sx = (width - 2 * pad) / ((x1 - x0) or 1)
    sy = (height - 2 * pad) / ((y1 - y0) or 1)
    coords = [(pad + (s - x0) * sx, height - pad - (v - y0) * sy) for s, v in drawn]
    d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    latest = drawn[-1][1]
    return (
        f"<div class='nai-metric-chart' data-metric='{label}'>"
        f"<div style='font-size:12px'>{label}: latest {latest:.6g} at step {drawn[-1][0]} "
        f"(min {y0:.6g}, max {y1:.6g})</div>"
        f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' "
        f"aria-label='{label} by step' style='border:1px solid #e0e0e0'>"
        f"<path d='{d}' fill='none' stroke='#1565c0' stroke-width='1.5' "
        f"data-steps='{','.join(str(s) for s in steps)}' "
        f"data-values='{','.join(repr(v) for v in values)}'/></svg></div>"
    )


class RunWidget:
    """Shows one run live; ``display(RunWidget(run_id))`` or let the magic do it.

    Given the display handle it was shown with (``attach``), it also keeps the
    notebook's saved text (``text/plain``) current: each change of state, queue
    position, GPUs or reason replaces it, so a reopened notebook reads the last
    known state and ``%nothing_watch N`` rather than a frozen "RUNNING 0:00:00".
    """

    def __init__(self, run_id: int, client: NothingClient | None = None, log_lines: int = 12,
                 interval: float = 1.0, record: dict | None = None):
        import ipywidgets as w

        self.run_id = int(run_id)
        self.client = client or NothingClient()
        self.log_lines = log_lines
        self.interval = interval
        self.run: dict = record if record is not None else self.client.run(self.run_id)
        self.seen_at = self.client.server_now()
        self._log = ""
        self._offset = 0
        self._lock = threading.RLock()
        self._display = None
        self._published = None
        self.header = w.HTML()
        self.detail = w.HTML()
        self.chart = w.HTML()
        self.log_view = w.HTML()
        self._points: list = []
        self._points_at = -1
        self.box = w.VBox([self.header, self.detail, self.chart, self.log_view])
        self._stop = threading.Event()
        self._render()
        self._thread = threading.Thread(target=self._poll, name=f"nothing-run-{self.run_id}", daemon=True)
        self._thread.start()

    @property
    def reason(self) -> str:
        """The reason to show: the service's, completed from the log for a failed run."""
        return failure_reason(self.run, self._log)

    def _shown(self) -> dict:
        return dict(self.run, reason=self.reason)

    def _render(self) -> None:
        run = self.run
        now = self.client.server_now()
        color = COLORS.get(run["state"], "#37474f")
        title = html.escape(run["name"] or run["entry_point"])
        self.header.value = (
            f"<b>Run {run['id']}</b> &middot; {title} &middot; "
            f"<span style='color:{color};font-weight:bold'>{html.escape(run['state'])}</span>"
        )
        bits = [f"experiment {html.escape(run.get('experiment') or '-')}"]
        if run["state"] == "QUEUED" and run.get("queue_position"):
            bits.append(f"queue position {run['queue_position']}")
        reason = self.reason
        if reason:
            bits.append(html.escape(reason))
        gpus = gpu_text(run)
        bits.append(gpus if run.get("assigned_gpus") or not run.get("gpus") else f"{gpus} requested")
        bits.append(f"elapsed {elapsed(run, now)}")
        bits.append(f"<a href='{html.escape(tensorboard_url(self.client, run['id']))}' target='_blank' "
                    f"rel='noopener'>TensorBoard</a>")
        self.detail.value = " &middot; ".join(bits)
        name = main_metric(run)
        self.chart.value = metric_svg(name, self._points) if name and self._points else ""
        tail = "\n".join(self._log.splitlines()[-self.log_lines:])
        self.log_view.value = f"<pre style='margin:0;max-height:16em;overflow:auto'>{html.escape(tail)}</pre>"

    def attach(self, display_handle) -> None:
        """The handle (``display(..., display_id=True)``) whose saved text this widget keeps current."""
        with self._lock:
            self._display = display_handle
            self._published = self._key()

    def _key(self) -> tuple:
        run = self.run
        return (run["state"], run.get("queue_position"), tuple(run.get("assigned_gpus") or []), self.reason,
                run.get("ended_at"))

    def publish(self, force: bool = False) -> None:
        """Replace the saved text when what it says has changed (not on every tick of the clock).

        ``force``: send it even if unchanged, from the caller's cell (``RunHandle.wait``
        does, so a front end that only hears the running cell gets the final state too).
        """
        if self._display is None or (self._key() == self._published and not force):
            return
        self._published = self._key()
        self._display.update(self)

    def refresh(self) -> None:
        with self._lock:
            run = self.client.run(self.run_id)
            text, self._offset, _ = self.client.logs(self.run_id, offset=self._offset)
            self.run, self.seen_at = run, self.client.server_now()
            if text:
                self._log = (self._log + text)[-64 * 1024:]
            self._refresh_metric()
            self._render()
            self.publish()

    def _refresh_metric(self) -> None:
        """Fetch the main metric's series when the run's count of points moved (not on every tick)."""
        name = main_metric(self.run)
        if not name:
            return
        count = ((self.run.get("metric_summary") or {}).get(name) or {}).get("count", 0)
        if count == self._points_at:
            return
        series = self.client.metrics(self.run_id, [name]).get("series") or {}
        self._points = series.get(name) or []
        self._points_at = count

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except NothingError as e:
                self.detail.value = f"<span style='color:#c62828'>{html.escape(str(e))}</span>"
            if self.run["state"] in TERMINAL_STATES:
                break
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = saved_text(self._shown(), self.seen_at, self.client.server_now())
        return bundle
