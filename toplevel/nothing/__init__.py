"""NothingAI: train deep-learning models on a shared pool of GPU servers without leaving Jupyter.

The distribution's packages are ``nothing.scheduler`` (the service), ``nothing.magics`` (the client),
``nothing.hub_extension``, ``nothing.spawner`` and ``nothing.common``.  Inside a run, ``from nothing import
report, save`` reports metrics and saves outputs; both live in ``nothing.common.tracking`` and are imported
only when first used, so ``import nothing.scheduler`` (or the client) does not load them.

This file is the wheel's ``nothing/__init__.py`` (hatch ``force-include``) and, in an editable install, the
package itself (``dev-mode-dirs``); see CONTRIBUTING.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["report", "save", "flush"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .common import tracking

        return getattr(tracking, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
