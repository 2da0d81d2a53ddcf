"""The run state machine allows exactly the documented transitions."""

import pytest

from nothing.scheduler.states import TERMINAL, TRANSITIONS, InvalidTransition, RunState, StopCause, check_transition

S = RunState


def test_terminal_states_allow_no_transition():
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()
        for target in S:
            with pytest.raises(InvalidTransition, match=f"cannot go from {state}"):
                check_transition(state, target)


@pytest.mark.parametrize("current,target", [
    (S.QUEUED, S.RUNNING), (S.QUEUED, S.COMPLETE), (S.CREATE_REQUESTED, S.RUNNING), (S.RUNNING, S.STOPPED),
    (S.QUEUED, S.STOP_IN_PROGRESS), (S.CREATE_REQUESTED, S.COMPLETE),
])
def test_shortcuts_are_refused(current, target):
    with pytest.raises(InvalidTransition):
        check_transition(current, target)


def test_back_to_the_queue_only_from_a_lost_start_a_failed_node_or_a_preemption():
    """Besides a new submission, a run returns to QUEUED only when the platform lost its start, when the node
    of a preemptible run failed, or when it was preempted (through STOP IN PROGRESS); never once it ended."""
    assert {s for s in S if S.QUEUED in TRANSITIONS[s]} == {
        S.CREATE_REQUESTED, S.CREATE_IN_PROGRESS, S.RUNNING, S.STOP_IN_PROGRESS}


def test_every_state_is_reachable_from_create_requested():
    seen, frontier = {S.CREATE_REQUESTED}, [S.CREATE_REQUESTED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(S)


def test_stop_causes_end_where_documented():
    assert StopCause.CANCEL.final_state() == S.STOPPED
    assert StopCause.MAX_TIME.final_state() == S.FAIL_TRAIN
    assert StopCause.PREEMPT.final_state() == S.QUEUED
    assert S.STOP_IN_PROGRESS.holds_gpus and not S.QUEUED.holds_gpus
