"""The values a person types for a run, parsed one way for the client and the service.

Memory (``8G``), a duration (``2h``, ``1h30m``) and a hyperparameter's name: the
client (``nothing.magics``) checks them before it uploads anything, so a mistake
shows at once; the service (``nothing.scheduler.spec``) checks every submission
again and stays the authority.  Both call these functions, so they accept the same
values and say the same sentence.  Standard library only: the client ships without
the server and the server without the client.
"""

from __future__ import annotations

import math
import re
from typing import Any

HP_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")  # use with fullmatch
_MEMORY = re.compile(r"\s*([0-9]{1,20}(?:\.[0-9]{1,20})?)\s*([KMGT]i?B?|B)?\s*", re.IGNORECASE)
_DURATION = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,20})?)\s*([dhms])", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

MAX_MEMORY_BYTES = 2**50  # 1 PiB: more than any node, far below the 64-bit column
MAX_SECONDS = 365 * 86400


class ValueProblem(ValueError):
    """A value the service would refuse; the message is one sentence for a person."""


def short(value: Any, limit: int = 60) -> str:
    """``repr`` of what the caller sent, cut so an error message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_memory(value: Any) -> int:
    """``8G``, ``512Mi``, ``1.5GB`` or a number of bytes → bytes."""
    if isinstance(value, bool):
        raise ValueProblem(f"memory must be a size like 8G, not {value!r}")
    if isinstance(value, (int, float)):
        size = value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueProblem(f"memory must be a finite number of bytes, not {value}")
    else:
        m = _MEMORY.fullmatch(value) if isinstance(value, str) else None
        if not m:
            raise ValueProblem(f"memory must be a size like 8G or 512M, not {short(value)}")
        unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
        size = float(m.group(1)) * _UNITS[unit]
    if size < 0:
        raise ValueProblem("memory cannot be negative")
    if size > MAX_MEMORY_BYTES:
        raise ValueProblem(f"memory must be at most {MAX_MEMORY_BYTES} bytes (1 PiB), not {short(value)}")
    return int(size)


def parse_duration(value: Any) -> int:
    """``2h``, ``1h30m``, ``90m``, ``45s`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueProblem(f"max time must be a duration like 2h, not {value!r}")
    if isinstance(value, (int, float)):
        seconds = value
    elif isinstance(value, str) and len(value) <= 100:
        text = value.strip()
        if text.isascii() and text.isdigit():
            seconds = int(text)
        else:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise ValueProblem(f"max time must be a duration like 2h, 90m or 1h30m, not {value!r}")
            scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
            seconds = sum(float(n) * scale[u.lower()] for n, u in parts)
    else:
        raise ValueProblem(f"max time must be a duration like 2h, 90m or 1h30m, not {short(value)}")
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueProblem(f"max time must be a finite number of seconds, not {seconds}")
    if seconds < 1:
        raise ValueProblem("max time must be positive")
    if seconds > MAX_SECONDS:
        raise ValueProblem(f"max time must be at most 365 days ({MAX_SECONDS} seconds), not {short(value)}")
    return int(seconds)
