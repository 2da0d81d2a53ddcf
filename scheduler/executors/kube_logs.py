"""Pod logs copied into a run's ``output.log`` as they are written, one pod (one rank) at a time.

The pod log API is followed (``follow=true&timestamps=true``); a stream that breaks is asked again
with ``sinceTime`` (second resolution), and the lines already copied are skipped by their timestamps.
How far the copy got is kept next to the run's control files, so a restarted scheduler neither loses
nor repeats lines.  Writes go through ``asyncio.to_thread``, one per chunk the API sent, never through
a link the run's account may have planted in its folder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from ...common.backoff import Backoff
from .kube_api import KubeApiError
from .kube_objects import CONTAINER

log = logging.getLogger(__name__)


async def follow_pod_log(api: Any, log_url: str, log_path: Path, position_file: Path, prefix: str,
                         ended: Callable[[], bool]) -> None:
    """Copy the training container's log at ``log_url`` to ``log_path``, each line after ``prefix``,
    until the pod is gone (404) or ``ended()`` says its container has terminated and the stream ended."""
    last = await asyncio.to_thread(_read_position, position_file)
    delays = Backoff(initial=0.5, maximum=10.0).delays()
    while True:
        params = {"container": CONTAINER, "follow": "true", "timestamps": "true"}
        if last:
            params["sinceTime"] = last.partition(".")[0].removesuffix("Z") + "Z"
        try:
            async for lines in api.line_batches(log_url, params):
                batch = []
                for line in lines:
                    stamp, _, text = line.partition(" ")
                    if last and _stamp_key(stamp) <= _stamp_key(last):
                        continue  # already copied (sinceTime has second resolution)
                    batch.append(prefix + text)
                    last = stamp
                if batch:  # one write per chunk the API sent
                    await asyncio.to_thread(_append_log, log_path, batch, position_file, last)
        except KubeApiError as e:
            if e.status == 404:
                return
            log.debug("Following %s: %s", log_url, e)
        if ended():
            return
        await asyncio.sleep(next(delays))


def _stamp_key(stamp: str) -> tuple[str, int]:
    """``2026-12-01T12:00:01.5Z`` as a sortable key (the API trims trailing zeros of the nanoseconds)."""
    seconds, _, fraction = stamp.removesuffix("Z").partition(".")
    return seconds, int((fraction + "000000000")[:9] or 0)


def _read_position(path: Path) -> str:
    try:
        return json.loads(path.read_text()).get("last", "")
    except (OSError, ValueError, AttributeError):
        return ""


def _append_log(log_path: Path, lines: list[str], position_file: Path, last: str) -> None:
    """Append to the run's log (never through a link the run's account planted), then record how far."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        if os.fstat(fd).st_nlink > 1:
            raise OSError(f"{log_path} has other names (a hard link): not written")
        os.write(fd, "".join(line + "\n" for line in lines).encode("utf-8", "replace"))
    finally:
        os.close(fd)
    temporary = position_file.with_suffix(".tmp")
    temporary.write_text(json.dumps({"last": last}))
    temporary.replace(position_file)
