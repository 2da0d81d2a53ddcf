"""``RunHandle``: what a notebook holds after submitting a run (wait, logs, outputs, cancel)."""

from __future__ import annotations

from pathlib import Path

from .client import NothingClient


class RunHandle:
    def __init__(self, record: dict, client: NothingClient):
        self.id = int(record["id"])
        self.record = record
        self.client = client

    def __repr__(self) -> str:
        return f"<RunHandle {self.id} {self.record.get('state')}>"

    @property
    def state(self) -> str:
        return self.refresh()["state"]

    def refresh(self) -> dict:
        self.record = self.client.run(self.id)
        return self.record

    def wait(self, timeout: float | None = None) -> dict:
        self.record = self.client.wait(self.id, timeout=timeout)
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
        from .widget import RunWidget

        return RunWidget(self.id, self.client)
