"""The sidebar's pushed views (``GET /api/views/stream``): an event when what a tab shows changes, nothing else.

The first tests drive ``views.ViewStreams`` with fake connections (what a stream writes and when its
client reads it); the last ones open real streams through the hub's proxy.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time

import pytest

from nothing.scheduler.api.views import StreamView, ViewStream, ViewStreams

from .helpers import wait_for, wait_for_sync
from .test_cluster_api import GATED, release, wait_all_gpus_free


class FakeConnection:
    """A stream's connection: what was written, and a client that reads it (``reading``) or not."""

    def __init__(self, reading: bool = True):
        self.request = self
        self.connection = None
        self.reading = reading
        self.chunks: list[bytes] = []
        self.unread: list[asyncio.Future] = []

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def flush(self) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.reading:
            future.set_result(None)
        else:
            self.unread.append(future)
        return future

    def read_all(self) -> None:
        self.reading = True
        for future in self.unread:
            future.set_result(None)
        self.unread.clear()

    def events(self) -> list[tuple[str, dict]]:
        out = []
        for block in b"".join(self.chunks).decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            if "event" in lines:
                out.append((lines["event"], json.loads(lines["data"])))
        return out


class Source:
    """A view whose answer is ``value`` (changed by the test, as the dispatcher's state would be)."""

    def __init__(self):
        self.value = {"queued": 0}
        self.builds = 0

    async def make(self, _context) -> str:
        self.builds += 1
        return json.dumps(self.value)


async def context():
    return None


def open_stream(streams: ViewStreams, source: Source, reading: bool = True) -> FakeConnection:
    connection = FakeConnection(reading)
    stream = ViewStream(connection, [StreamView("queue", "queue", source.make)],  # type: ignore[arg-type]
                        time.monotonic())
    streams.add(stream)
    return connection


async def test_a_change_is_sent_to_every_open_stream_once_and_nothing_while_quiet():
    source, streams = Source(), ViewStreams(context, interval=0.01)
    tabs = [open_stream(streams, source) for _ in range(3)]
    for stream in streams.streams:
        await streams.send_current(stream)
    assert all(tab.events() == [("queue", {"queued": 0})] for tab in tabs)

    source.value = {"queued": 1}
    builds = source.builds
    streams.changed()
    streams.changed()  # a burst of changes: one update
    await wait_for(lambda: all(len(tab.events()) == 2 for tab in tabs), timeout=5)
    assert all(tab.events()[-1] == ("queue", {"queued": 1}) for tab in tabs)
    assert source.builds == builds + 1  # built once for every stream that shows the same answer

    # A change the tabs do not see (the answer is the same) and no change at all: nothing is written.
    written = [len(tab.chunks) for tab in tabs]
    streams.changed()
    await wait_for(lambda: streams._flushing is None and streams._due is None, timeout=5)
    await asyncio.sleep(0.05)
    assert [len(tab.chunks) for tab in tabs] == written
    for stream in list(streams.streams):
        streams.remove(stream)


async def test_a_client_that_does_not_read_holds_one_answer_not_a_backlog():
    source, streams = Source(), ViewStreams(context, interval=0.0)
    slow = open_stream(streams, source, reading=False)
    (stream,) = streams.streams
    await streams.send_current(stream)
    for i in range(1, 200):
        source.value = {"queued": i, "padding": "x" * 1000}
        streams.changed()
        await wait_for(lambda: streams._flushing is None and streams._due is None, timeout=5)
    # One write in flight (the first answer), and only the latest answer waits behind it.
    assert len(slow.chunks) == 1 and len(stream.waiting) == 1
    slow.read_all()
    await wait_for(lambda: len(slow.chunks) == 2, timeout=5)
    assert slow.events()[-1][1]["queued"] == 199

    # A client that stops reading for longer than ``stall_seconds`` is dropped (the browser reconnects).
    slow.reading = False
    source.value = {"queued": 200}
    streams.changed()
    await wait_for(lambda: stream.writing_since is not None, timeout=5)
    streams.stall_seconds = 0.0
    streams._tick()
    assert stream.done.done() and not streams.streams


# ---------------------------------------------------------------------------------------------------- live
class Events:
    """A stream read by a thread: its events in a queue, every byte it carried in ``raw``."""

    def __init__(self, api, query: str):
        self.response = api("GET", f"/views/stream?{query}", stream=True, timeout=(10, 60))
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.events: queue.Queue = queue.Queue()
        self.raw = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event = None
        try:
            for line in self.response.iter_lines(chunk_size=1, decode_unicode=False):
                self.raw += line + b"\n"
                if line.startswith(b"event: "):
                    event = line[7:].decode()
                elif line.startswith(b"data: ") and event:
                    self.events.put((event, json.loads(line[6:])))
                    event = None
        except Exception:  # noqa: BLE001 - closed by the test
            pass

    def next(self, event: str, where=lambda _: True, timeout: float = 30) -> dict:
        """The next ``event`` whose data satisfies ``where`` (others are skipped)."""
        def found():
            while True:
                try:
                    name, data = self.events.get_nowait()
                except queue.Empty:
                    return None
                if name == event and where(data):
                    return data

        return wait_for_sync(found, timeout=timeout, message=f"a {event} event")

    def close(self) -> None:
        self.response.close()


def queue_ids(page: dict) -> list[int]:
    return [r["id"] for r in page["runs"]]


@pytest.mark.hub
def test_the_stream_sends_the_queue_when_a_run_is_submitted_and_nothing_while_quiet(hub, make_user):
    _, alice = make_user("sa")
    wait_all_gpus_free(alice)
    stream = Events(alice, "views=summary,queue&my_active=0&limit=20&offset=0")
    run = None
    try:
        assert "my_active" not in stream.next("summary")  # the views' current answers at once, in order
        first = stream.next("queue")
        assert first["offset"] == 0 and first["limit"] == 20
        run = alice.submit({"hold.py": GATED}, entry_point="hold.py", name="streamed", gpus=1).json()["id"]
        shown = stream.next("queue", lambda page: run in queue_ids(page))
        assert {r["id"]: r for r in shown["runs"]}[run]["name"] == "streamed"
        stream.next("queue", lambda page: any(r["id"] == run and r["state"] == "RUNNING" for r in page["runs"]))
        # The run keeps running and nothing else changes: the stream carries no event (comments only),
        # for several times the longest it waits between two updates.
        while not stream.events.empty():
            stream.events.get_nowait()
        with pytest.raises(TimeoutError):
            stream.next("queue", timeout=4)
        assert stream.events.empty()
        release(hub, run)
        stream.next("queue", lambda page: run not in queue_ids(page))
    finally:
        stream.close()
        if run is not None:
            alice("POST", f"/runs/{run}/cancel")


@pytest.mark.hub
def test_a_second_users_stream_never_carries_the_first_users_private_view_data(hub, make_user):
    alice_name, alice = make_user("sp")
    _, bob = make_user("sq")
    wait_all_gpus_free(alice)
    bobs = Events(bob, "views=summary,queue&my_active=1")
    alices = Events(alice, "views=summary,queue&my_active=1")
    run = None
    try:
        run = alice.submit({"hold.py": GATED}, entry_point="hold.py", name="secret-name", gpus=1,
                           experiment="secret-experiment").json()["id"]
        # Bob sees that the run exists, whose it is (``others_visibility = "owner"``) and its state, ...
        seen = bobs.next("queue", lambda page: any(r["id"] == run and r["state"] == "RUNNING" for r in page["runs"]))
        entry = {r["id"]: r for r in seen["runs"]}[run]
        assert entry["owner"] == alice_name and entry["mine"] is False
        assert entry["name"] is None and entry["experiment"] is None
        # ... as the polled view shows it to him; Alice's own stream has her names and her active run.
        polled = {r["id"]: r for r in bob("GET", "/queue").json()["runs"]}[run]
        assert {k: polled[k] for k in ("owner", "name", "experiment", "mine", "reason", "state")} == \
            {k: entry[k] for k in ("owner", "name", "experiment", "mine", "reason", "state")}
        own = alices.next("queue", lambda page: run in queue_ids(page))
        assert {r["id"]: r for r in own["runs"]}[run]["name"] == "secret-name"
        assert run in [r["id"] for r in alices.next("summary", lambda s: bool(s["my_active"]))["my_active"]]
        release(hub, run)
        bobs.next("queue", lambda page: run not in queue_ids(page))
        # Nothing Bob's stream carried names Alice's run or experiment, or lists her run as his.
        assert b"secret-" not in bobs.raw
        assert all(not s["my_active"] for s in _all(bobs.raw, "summary"))
    finally:
        bobs.close()
        alices.close()
        if run is not None:
            alice("POST", f"/runs/{run}/cancel")


def _all(raw: bytes, event: str) -> list[dict]:
    out, name = [], None
    for line in bytes(raw).split(b"\n"):
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: ") and name == event:
            out.append(json.loads(line[6:]))
    return out


@pytest.mark.hub
def test_a_stream_is_refused_without_a_token_and_for_an_unknown_view(hub, make_user):
    import requests

    assert requests.get(f"{hub.api_url}/views/stream", timeout=10).status_code == 403
    _, alice = make_user("sr")
    refused = alice("GET", "/views/stream?views=runs")
    assert refused.status_code == 400 and "summary, queue" in refused.json()["message"]
