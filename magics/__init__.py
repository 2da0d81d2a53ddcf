"""Notebook magics and a Python client for the NothingAI scheduler.

Loaded automatically in the platform's kernels; elsewhere ``%load_ext nothing.magics``.
"""

from .client import NothingClient, NothingError
from .run import RunHandle


def load_ipython_extension(ipython) -> None:
    from .train import NothingMagics

    ipython.register_magics(NothingMagics)


__all__ = ["NothingClient", "NothingError", "RunHandle", "load_ipython_extension"]
