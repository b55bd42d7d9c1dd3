import pytest

from orderengine.lifecycle import (ACTIVE, TERMINAL, TRANSITIONS, IllegalTransition, Status,
                                   check_transition, is_terminal)

HAPPY_PATH = [None, Status.PENDING, Status.ROUTING, Status.BUILDING, Status.SUBMITTED, Status.CONFIRMED]


def test_the_happy_path_is_allowed_step_by_step():
    for current, target in zip(HAPPY_PATH, HAPPY_PATH[1:]):
        assert check_transition(current, target) is target


@pytest.mark.parametrize("failing_step", [Status.ROUTING, Status.BUILDING, Status.SUBMITTED])
def test_a_failed_attempt_can_retry_or_fail_from_every_working_step(failing_step):
    assert check_transition(failing_step, Status.RETRYING) is Status.RETRYING
    assert check_transition(failing_step, Status.FAILED) is Status.FAILED


def test_a_retry_starts_again_at_routing():
    assert check_transition(Status.RETRYING, Status.ROUTING) is Status.ROUTING


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("target", list(Status))
def test_terminal_statuses_never_change(terminal, target):
    with pytest.raises(IllegalTransition):
        check_transition(terminal, target)


@pytest.mark.parametrize("current,target", [
    (Status.PENDING, Status.SUBMITTED), (Status.PENDING, Status.CONFIRMED),
    (Status.ROUTING, Status.SUBMITTED), (Status.BUILDING, Status.CONFIRMED),
    (Status.SUBMITTED, Status.ROUTING), (Status.RETRYING, Status.BUILDING),
    (None, Status.ROUTING), (Status.BUILDING, Status.CANCELLED), (Status.SUBMITTED, Status.CANCELLED),
])
def test_skipping_a_step_is_refused(current, target):
    with pytest.raises(IllegalTransition, match="cannot become"):
        check_transition(current, target)


def test_confirmed_failed_and_cancelled_are_the_only_terminal_statuses():
    assert TERMINAL == {Status.CONFIRMED, Status.FAILED, Status.CANCELLED}
    assert ACTIVE == set(Status) - TERMINAL
    assert is_terminal("confirmed") and not is_terminal("submitted")


def test_every_status_has_a_row_in_the_table():
    assert set(TRANSITIONS) == set(Status) | {None}


@pytest.mark.parametrize("current", [Status.PENDING, Status.ROUTING, Status.RETRYING])
def test_an_order_not_yet_handed_to_a_venue_can_be_cancelled(current):
    assert check_transition(current, Status.CANCELLED) is Status.CANCELLED


def test_an_order_that_expired_before_it_started_can_fail_from_pending():
    assert check_transition(Status.PENDING, Status.FAILED) is Status.FAILED


@pytest.mark.parametrize("current,target", [
    (cur, tgt) for cur in [None, *Status] for tgt in Status if tgt not in TRANSITIONS[cur]])
def test_every_pair_not_in_the_table_is_refused(current, target):
    with pytest.raises(IllegalTransition):
        check_transition(current, target)
