"""Opening what users may have planted links in: folders and files opened without following a link.

A run's folder, a model's files and a batch job's results are written by user code; the service, which may run
as root, walks them only through descriptors opened with ``O_NOFOLLOW``, one component at a time, so a link
never takes it anywhere else.
"""

from __future__ import annotations

import os

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted where a file should be does not hang the reader
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_below(top: int, parts: tuple[str, ...]) -> int | None:
    """A descriptor of the folder ``top/parts...``, or None if a component is not a folder (a link is not)."""
    fd = os.dup(top)
    for part in parts:
        try:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError:
            child = None
        os.close(fd)
        if child is None:
            return None
        fd = child
    return fd
