"""Turning the scheduler's configuration (traitlets, plain dicts) into policy objects.

Kept apart from the pure policy so that ``fairshare`` and ``quotas`` stay free of
configuration concerns; a mistake in the quota config is reported at start, with
the offending key named.
"""

from __future__ import annotations

from typing import Any

from .fairshare import FairShareConfig, FairSharePolicy
from .policy import Policy, PriorityFifoPolicy
from .quotas import Quota, Quotas
from .servicefair import ServiceFairConfig, ServiceFairPolicy

QUOTA_KEYS = {"guaranteed_gpus", "max_gpus", "gpu_hours_per_period", "fairshare", "storage_bytes"}
TOP_KEYS = {"groups", "users", "default_group", "default_user", "period_days"}


def _quota(where: str, raw: Any) -> Quota:
    if not isinstance(raw, dict):
        raise ValueError(f"quota {where} must be a dict like {{'guaranteed_gpus': 4}}, not {raw!r}")
    unknown = set(raw) - QUOTA_KEYS
    if unknown:
        raise ValueError(f"quota {where} has unknown key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(sorted(QUOTA_KEYS))}")
    for key, value in raw.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"quota {where}.{key} must be a non-negative number, not {value!r}")
    return Quota(**raw)


def parse_quotas(raw: dict) -> Quotas:
    """``{"groups": {"vision": {"guaranteed_gpus": 4, "max_gpus": 8}}, "users": {...},
    "default_group": {...}, "default_user": {...}, "period_days": 30}`` → ``Quotas``."""
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ValueError(f"quotas have unknown key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(sorted(TOP_KEYS))}")
    return Quotas(
        groups={name: _quota(f"groups.{name}", q) for name, q in (raw.get("groups") or {}).items()},
        users={name: _quota(f"users.{name}", q) for name, q in (raw.get("users") or {}).items()},
        default_group=_quota("default_group", raw.get("default_group") or {}),
        default_user=_quota("default_user", raw.get("default_user") or {}),
        period_seconds=float(raw.get("period_days", 30)) * 86400,
    )


POLICIES = ("fair-share", "fair-share-classic", "priority-fifo")


def make_policy(name: str, quotas: Quotas, half_life_seconds: float, aging_seconds: float) -> Policy:
    """The policy called ``name``.  ``fair-share`` (the default) is
    ``servicefair.ServiceFairPolicy``: least attained service first, fair share,
    quotas, gangs and held reservations; ``fair-share-classic`` is the earlier
    ``fairshare.FairSharePolicy`` (fair share with aging and EASY backfill, no
    preemption for service); ``priority-fifo`` is strict order."""
    if name == "priority-fifo":
        return PriorityFifoPolicy()
    if name == "fair-share":
        return ServiceFairPolicy(ServiceFairConfig(half_life_seconds=half_life_seconds, aging_seconds=aging_seconds,
                                                   quotas=quotas), name="fair-share")
    if name == "fair-share-classic":
        return FairSharePolicy(FairShareConfig(half_life_seconds=half_life_seconds, aging_seconds=aging_seconds,
                                               quotas=quotas))
    raise ValueError(f"unknown policy {name!r}; use {', '.join(POLICIES)}")
