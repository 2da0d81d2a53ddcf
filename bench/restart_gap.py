"""How long the API is gone after the scheduler is SIGKILLed: its supervisor starts it again (issue 9's "back
within 5 s"; tests/test_restart.py checks that it comes back, this measures how fast).

``--kills`` times: start a scheduler under its supervisor as the hub does (``python -m nothing.scheduler``, no
hub behind it), SIGKILL the scheduler, and poll ``GET /services/nothing/`` every 10 ms until a new one answers.
A fresh supervisor each time, because one restarts a scheduler that crashed again within a minute with back-off.

    .venv/bin/python bench/restart_gap.py [--kills 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import wait_for_sync  # noqa: E402
from tests.hub import free_port  # noqa: E402
from tests.test_single_scheduler import children, serving, start_scheduler  # noqa: E402


def one_gap(root: Path) -> float:
    """A fresh supervisor each time: it restarts a first crash at once, later ones within a minute with back-off."""
    port = free_port()
    supervisor = start_scheduler(root / "data", port, root / "scheduler.log")
    try:
        wait_for_sync(lambda: serving(port), timeout=60, message="the scheduler to serve")
        [scheduler] = wait_for_sync(lambda: children(supervisor.pid) or None, message="the scheduler")
        os.kill(scheduler, signal.SIGKILL)
        killed = time.monotonic()
        wait_for_sync(lambda: children(supervisor.pid) not in ([], [scheduler]) and serving(port),
                      timeout=60, interval=0.01, message="a new scheduler to answer")
        return time.monotonic() - killed
    finally:
        supervisor.terminate()
        supervisor.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nothing-restart-bench-"))
    gaps = sorted(one_gap(root) for _ in range(args.kills))
    print(f"SIGKILL -> API answers again, {len(gaps)} kills: p50 {statistics.median(gaps) * 1000:.0f} ms, "
          f"p95 {gaps[min(len(gaps) - 1, round(0.95 * (len(gaps) - 1)))] * 1000:.0f} ms, max {gaps[-1] * 1000:.0f} ms")

if __name__ == "__main__":
    main()
