"""The one back-off rule for every retry: exponential delays with jitter, within a total budget.

Pure arithmetic, no I/O and no sleeping, in ``nothing.common`` so that the client
(which ships without the server) and the service share one rule: the caller sleeps the way its context
allows (``time.sleep`` in the synchronous client, ``asyncio.sleep`` or an event
wait in the service), so one rule serves both.  Used by the client's retries of
idempotent calls and by the scheduler's supervisor between restarts.

Example::

    backoff = Backoff(initial=0.5, maximum=10.0)
    for delay in backoff.delays():
        ...try...; time.sleep(delay)
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class Backoff:
    """Delays ``initial``, ``initial * factor``, ... up to ``maximum`` seconds.

    ``jitter`` is the fraction of each delay drawn at random (0.5: between half and
    all of it), so that many clients that failed together do not retry together.
    ``budget``, if given, bounds the total time from the first delay on: the last
    delay is cut to fit and then the iteration ends.
    """

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.0
    budget: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delays(self) -> Iterator[float]:
        """An endless (or, with ``budget``, bounded) sequence of delays in seconds."""
        deadline = None if self.budget is None else self.clock() + self.budget
        step = self.initial
        while True:
            delay = step * (1 - self.jitter * self.rng.random())
            if deadline is not None:
                left = deadline - self.clock()
                if left <= 0:
                    return
                delay = min(delay, left)
            yield delay
            step = min(step * self.factor, self.maximum)
