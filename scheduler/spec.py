"""What a run submission may contain, checked the same way by the service and the client.

``parse_submission`` turns a JSON-like dict into the values of a new run, or
raises ``SpecError`` with one sentence naming the problem.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from .runenv import HP_KEY

FIELDS = {
    "name", "experiment", "entry_point", "args", "hyperparameters",
    "gpus", "cpus", "memory", "priority", "max_time", "group", "preemptible",
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,99}$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class SpecError(ValueError):
    """A submission that cannot be accepted; the message says why."""


def parse_memory(value: Any) -> int:
    """``8G``, ``512Mi``, ``1.5GB`` or a number of bytes → bytes."""
    if isinstance(value, bool):
        raise SpecError(f"memory must be a size like 8G, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise SpecError("memory cannot be negative")
        return value
    m = _MEMORY.match(str(value))
    if not m:
        raise SpecError(f"memory must be a size like 8G or 512M, not {value!r}")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * _UNITS[unit])


def parse_duration(value: Any) -> int:
    """``2h``, ``1h30m``, ``90m``, ``45s`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise SpecError(f"max time must be a duration like 2h, not {value!r}")
    if isinstance(value, (int, float)):
        seconds = int(value)
    else:
        text = str(value).strip()
        if text.isdigit():
            seconds = int(text)
        else:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise SpecError(f"max time must be a duration like 2h, 90m or 1h30m, not {value!r}")
            scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
            seconds = int(sum(float(n) * scale[u.lower()] for n, u in parts))
    if seconds <= 0:
        raise SpecError("max time must be positive")
    return seconds


def _int(body: dict, key: str, default: int, low: int, high: int | None = None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise SpecError(f"{key} must be a whole number, not {value!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SpecError(f"{key} must be {bounds}, not {value}")
    return value


def parse_hyperparameters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("hyperparameters must be an object of key: value pairs")
    out = {}
    for key, value in raw.items():
        if not HP_KEY.match(str(key)):
            raise SpecError(f"hyperparameter name {key!r} must start with a letter or _ and use only letters, "
                            "digits, _, . and -")
        if isinstance(value, (dict, list)) or value is None:
            raise SpecError(f"hyperparameter {key!r} must have a plain value, not {value!r}")
        out[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def parse_entry_point(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError("entry_point is required: the file in the snapshot to run, e.g. train.py")
    norm = posixpath.normpath(value.strip())
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise SpecError(f"entry_point {value!r} must be a path inside the snapshot")
    return norm


def parse_group(value: Any, user_groups: list[str]) -> str:
    """The group a run is charged to: one of the user's JupyterHub groups (default: the first by name)."""
    if value in (None, ""):
        return sorted(user_groups)[0] if user_groups else ""
    if value not in user_groups:
        mine = ", ".join(sorted(user_groups)) or "none"
        raise SpecError(f"you are not a member of group {value!r} (your groups: {mine})")
    return value


def parse_submission(body: dict, max_gpus_per_node: int, max_cpus_per_node: int, is_admin: bool,
                     user_groups: list[str] | None = None) -> dict[str, Any]:
    unknown = sorted(set(body) - FIELDS - {"archive"})
    if unknown:
        raise SpecError(f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
                        f"allowed: {', '.join(sorted(FIELDS))}")
    name = body.get("name") or ""
    experiment = body.get("experiment") or "default"
    for label, value in (("name", name), ("experiment", experiment)):
        if value and (not isinstance(value, str) or not NAME.match(value)):
            raise SpecError(f"{label} {value!r} must be 1-100 letters, digits, spaces, _, . or -")
    args = body.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise SpecError("args must be a list of strings")
    gpus = _int(body, "gpus", 0, 0)
    if gpus > max_gpus_per_node:
        raise SpecError(f"asks for {gpus} GPUs, but the largest node has {max_gpus_per_node}; "
                        "multi-node runs are not available on this cluster")
    cpus = _int(body, "cpus", 1, 0)
    if cpus > max_cpus_per_node:
        raise SpecError(f"asks for {cpus} CPUs, but the largest node has {max_cpus_per_node}")
    priority = _int(body, "priority", 0, -1000, 1000)
    if priority > 0 and not is_admin:
        raise SpecError("only admins may raise a run's priority above 0; you may lower it")
    max_time = body.get("max_time")
    preemptible = body.get("preemptible", False)
    if not isinstance(preemptible, bool):
        raise SpecError(f"preemptible must be true or false, not {preemptible!r}")
    return {
        "group": parse_group(body.get("group"), user_groups or []),
        "preemptible": preemptible,
        "name": name,
        "experiment": experiment,
        "entry_point": parse_entry_point(body.get("entry_point")),
        "args": args,
        "hyperparameters": parse_hyperparameters(body.get("hyperparameters")),
        "gpus": gpus,
        "cpus": cpus,
        "memory_bytes": parse_memory(body.get("memory") or 0),
        "priority": priority,
        "max_seconds": parse_duration(max_time) if max_time not in (None, "", 0) else None,
    }
