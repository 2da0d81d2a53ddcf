"""The life cycle of a run, as an explicit state machine.

The names are the training states of the EasyMaker seed, plus QUEUED, which that
console hides but a shared GPU pool cannot.  Every transition carries a reason, and
only the transitions listed in ``TRANSITIONS`` are allowed: the scheduler calls
``check_transition`` before it writes any state, so an impossible history (a
COMPLETE run that starts again, a STOPPED run that completes) can never be stored.

::

    CREATE REQUESTED ──> QUEUED ──> CREATE IN PROGRESS ──> RUNNING ──> COMPLETE
          │                │  ^             │                │  │
          │                │  │             │                │  └──> FAIL TRAIN
          v                v  │(preempted)  v                v
    CREATE FAILED       STOPPED <── STOP IN PROGRESS <───────┘
                                     (cancel, max time, preemption)
"""

from __future__ import annotations

import enum


class RunState(str, enum.Enum):
    CREATE_REQUESTED = "CREATE REQUESTED"
    QUEUED = "QUEUED"
    CREATE_IN_PROGRESS = "CREATE IN PROGRESS"
    RUNNING = "RUNNING"
    STOP_IN_PROGRESS = "STOP IN PROGRESS"
    COMPLETE = "COMPLETE"
    STOPPED = "STOPPED"
    FAIL_TRAIN = "FAIL TRAIN"
    CREATE_FAILED = "CREATE FAILED"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def holds_gpus(self) -> bool:
        """True while the run's GPUs are allocated to it."""
        return self in HOLDING


S = RunState
TERMINAL = frozenset({S.COMPLETE, S.STOPPED, S.FAIL_TRAIN, S.CREATE_FAILED})
ACTIVE = frozenset(set(S) - TERMINAL)
HOLDING = frozenset({S.CREATE_IN_PROGRESS, S.RUNNING, S.STOP_IN_PROGRESS})

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    S.CREATE_REQUESTED: frozenset({S.QUEUED, S.CREATE_FAILED, S.STOPPED}),
    S.QUEUED: frozenset({S.CREATE_IN_PROGRESS, S.STOPPED}),
    # A start interrupted by the platform (the scheduler or its launcher killed
    # before the process was known) goes back to the queue, never CREATE FAILED.
    S.CREATE_IN_PROGRESS: frozenset({S.RUNNING, S.CREATE_FAILED, S.STOP_IN_PROGRESS, S.QUEUED}),
    # A preemptible run whose node failed goes back to the queue.
    S.RUNNING: frozenset({S.COMPLETE, S.FAIL_TRAIN, S.STOP_IN_PROGRESS, S.QUEUED}),
    # A run being stopped may still finish on its own before the signal lands,
    # and a preempted run goes back to the queue.
    S.STOP_IN_PROGRESS: frozenset({S.STOPPED, S.FAIL_TRAIN, S.COMPLETE, S.QUEUED}),
    S.COMPLETE: frozenset(),
    S.STOPPED: frozenset(),
    S.FAIL_TRAIN: frozenset(),
    S.CREATE_FAILED: frozenset(),
}


class InvalidTransition(ValueError):
    """A transition the state machine does not allow."""


def check_transition(current: RunState, target: RunState) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"a run cannot go from {current} to {target}")


class StopCause(str, enum.Enum):
    """Why a run was sent to STOP IN PROGRESS; decides where it ends."""

    CANCEL = "cancel"
    MAX_TIME = "max_time"
    PREEMPT = "preempt"
    ZOMBIE = "zombie"
    STORAGE = "storage_quota"

    def final_state(self) -> RunState:
        return {
            StopCause.CANCEL: S.STOPPED,
            StopCause.MAX_TIME: S.FAIL_TRAIN,
            StopCause.PREEMPT: S.QUEUED,
            StopCause.ZOMBIE: S.STOPPED,
            StopCause.STORAGE: S.STOPPED,
        }[self]
