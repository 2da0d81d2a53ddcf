"""The client's own checks of a submission's values, so that a mistake shows before any upload.

Dependency-free on purpose: the client ships without the server, so nothing here
imports ``nothing.scheduler``.  The service checks every submission again
(``scheduler/spec.py``) and stays the authority; these only follow the same rules
for the values a person types (``--hp``, ``--memory``, ``--max-time``).
"""

from __future__ import annotations

import re

HP_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")  # use with fullmatch; as the service's
_MEMORY = re.compile(r"\s*([0-9]{1,20}(?:\.[0-9]{1,20})?)\s*([KMGT]i?B?|B)?\s*", re.IGNORECASE)
_DURATION = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,20})?)\s*([dhms])", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MAX_MEMORY_BYTES = 2**50
MAX_SECONDS = 365 * 86400


class CheckError(ValueError):
    """A value the service would refuse; the message says why."""


def parse_memory(value: str) -> int:
    """``8G``, ``512Mi``, ``1.5GB`` or a number of bytes → bytes."""
    m = _MEMORY.fullmatch(value)
    if not m:
        raise CheckError(f"memory must be a size like 8G or 512M, not {value[:60]!r}")
    size = float(m.group(1)) * _UNITS[(m.group(2) or "").upper().rstrip("B").rstrip("I")]
    if size > MAX_MEMORY_BYTES:
        raise CheckError(f"memory must be at most {MAX_MEMORY_BYTES} bytes (1 PiB), not {value[:60]!r}")
    return int(size)


def parse_duration(value: str) -> int:
    """``2h``, ``1h30m``, ``90m``, ``45s`` or a number of seconds → seconds."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = float(text)
    else:
        parts = _DURATION.findall(text) if len(text) <= 100 else []
        if not parts or _DURATION.sub("", text).strip():
            raise CheckError(f"max time must be a duration like 2h, 90m or 1h30m, not {value[:60]!r}")
        scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
        seconds = sum(float(n) * scale[u.lower()] for n, u in parts)
    if seconds < 1:
        raise CheckError("max time must be positive")
    if seconds > MAX_SECONDS:
        raise CheckError(f"max time must be at most 365 days ({MAX_SECONDS} seconds), not {value[:60]!r}")
    return int(seconds)
