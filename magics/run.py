"""``RunHandle``: what a notebook holds after submitting a run (wait, logs, outputs, cancel)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from .client import NothingClient, NothingError


class RunHandle:
    """One run; ``record`` is its last fetched state, ``refresh()`` fetches it again.

    Its ``repr`` fetches the state; when the service cannot answer it says
    "last seen" with the time, so a stale state is never shown as the current one.
    """

    def __init__(self, record: dict, client: NothingClient):
        self.id = int(record["id"])
        self.record = record
        self.client = client
        self.seen_at = time.time()
        self._widget = None

    def __repr__(self) -> str:
        try:
            self.refresh(retry=False)
        except NothingError as e:
            when = datetime.fromtimestamp(self.seen_at, timezone.utc).strftime("%H:%M:%S UTC")
            return f"<RunHandle {self.id} {self.record.get('state')} (last seen at {when}; now: {e})>"
        return f"<RunHandle {self.id} {self.record.get('state')}>"

    @property
    def state(self) -> str:
        return self.refresh()["state"]

    def refresh(self, retry: bool = True) -> dict:
        self.record = self.client.run(self.id, retry=retry)
        self.seen_at = time.time()
        return self.record

    def wait(self, timeout: float | None = None) -> dict:
        """Wait for the run to end; the widget shown for it shows the end before this returns."""
        self.record = self.client.wait(self.id, timeout=timeout)
        self.seen_at = time.time()
        if self._widget is not None:
            try:
                self._widget.refresh()
                self._widget.publish(force=True)
            except NothingError:
                pass  # the record is what wait() promises; the widget catches up on its own
        return self.record

    def logs(self, tail: int | None = None) -> str:
        return self.client.logs(self.id, tail=tail)[0]

    def outputs(self) -> list[dict]:
        return self.client.outputs(self.id)

    def download(self, dest: str | Path | None = None, path: str | None = None) -> list[Path]:
        return self.client.download(self.id, dest or Path.cwd() / f"run-{self.id}", path)

    def cancel(self) -> dict:
        self.record = self.client.cancel(self.id)
        return self.record

    def widget(self):
        """The live widget of this run (one per handle)."""
        from .widget import RunWidget

        if self._widget is None:
            self._widget = RunWidget(self.id, self.client, record=self.record)
        return self._widget
