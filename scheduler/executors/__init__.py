"""Executors start a run's process somewhere and report how it ended.

``base.Executor`` owns the life cycle (launch, watch, signal, re-attach); each
engine (``local``; Kubernetes and Slurm to come) supplies only its own primitives.
"""

from .base import ExitStatus, Executor, ProcessRef

__all__ = ["ExitStatus", "Executor", "ProcessRef"]
