"""Full garbage collections that stay short however many runs are active.

CPython's cyclic collector walks every tracked object of the heap in a full
(generation 2) collection, holding the GIL.  With 10,000 queued runs the service
holds several hundred thousand such objects, and a full collection took 100-250 ms on a
2-core machine, every 15-20 s while runs were being submitted: every request
waiting meanwhile (a submission, a sidebar's stream) waited that long.

What survives a collection of the middle generation (it has lived through two
young collections) is nearly always the service's long-lived state (active runs
and their policy views, a pass's queue entries until the next pass, modules, ORM
metadata), so after each such collection ``HeapCollector`` moves everything
alive to the permanent generation (``gc.freeze``, which only joins lists): full
collections walk only what was made since, a few ms.  Measured before: freezing
only after full collections still left 30-50 ms ones, walking the queue entries
of the passes made since.  The price is that reference cycles among frozen objects are not
collected while they stay frozen (reference counting still frees everything
else, which is nearly all of a run's objects): every ``thaw_seconds`` they are
thawed (``gc.unfreeze``), and the next full collection walks the whole heap once.

The collector's callbacks may run in any thread (a collection starts wherever an
allocation sets it off), so they only note what is due; freezing is done on the
event loop.
"""

from __future__ import annotations

import asyncio
import gc
import time

from traitlets import Bool, Float
from traitlets.config import LoggingConfigurable


class HeapCollector(LoggingConfigurable):
    """Freeze what survives the older generations' collections; thaw it now and then (see the module's
    docstring)."""

    freeze = Bool(
        True,
        help="""Move what survives Python's older garbage collections to its permanent generation, so full
        collections stay short with many active runs.  False: Python's collector as it comes.
        Example: ``c.HeapCollector.freeze = False``
        """,
    ).tag(config=True)

    thaw_seconds = Float(
        3600.0,
        help="""How often frozen objects are thawed, so that the next full collection frees reference cycles
        among them (that collection walks the whole heap: about 0.1-0.3 s at 10,000 queued runs).
        Example: ``c.HeapCollector.thaw_seconds = 600``
        """,
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.freezes = 0  # for tests
        self.thaws = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._freeze_due = False
        self._thawed_at = 0.0

    def start(self) -> None:
        if not self.freeze or self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thawed_at = time.monotonic()
        gc.callbacks.append(self._collected)

    def stop(self) -> None:
        if self._loop is None:
            return
        gc.callbacks.remove(self._collected)
        self._loop = None
        gc.unfreeze()

    def _collected(self, phase: str, info: dict) -> None:
        """A collection ended (in any thread): after one of an older generation, freeze soon, on the loop."""
        if phase != "stop" or info.get("generation", 0) < 1 or self._freeze_due or self._loop is None:
            return
        self._freeze_due = True
        try:
            self._loop.call_soon_threadsafe(self._freeze)
        except RuntimeError:  # the loop is closed: the service is stopping
            self._freeze_due = False

    def _freeze(self) -> None:
        self._freeze_due = False
        if self._loop is None:
            return
        if time.monotonic() - self._thawed_at >= self.thaw_seconds:
            # Everything is walked at the next full collection, which is followed by a freeze again.
            self._thawed_at = time.monotonic()
            gc.unfreeze()
            self.thaws += 1
            return
        gc.freeze()
        self.freezes += 1
