"""The table of known SYN/ACK schedules and the silence rule built on it (pure, no I/O)."""

from __future__ import annotations

import pytest

from prober.core.synack_schedules import (
    DEFAULT_MAX_WAIT,
    KNOWN_STACKS,
    LARGEST_FIRST_S,
    SynAckSchedule,
    silence_needed,
    stacks_not_due,
    unsafe_caveat,
)

# Retry counts for stacks whose default the sources leave open (a generous guess).
RETRIES_WHEN_UNKNOWN = 6
TICK_S = 0.5  # BSD and lwIP timers tick every 500 ms: a copy may come this much late


def schedule_times(stack: SynAckSchedule) -> list[float]:
    if stack.retries is not None:
        return list(stack.retransmission_times())
    return list(
        SynAckSchedule(
            stack.name, stack.first_s, stack.factor, stack.cap_s, RETRIES_WHEN_UNKNOWN,
            stack.drop_s, stack.source,
        ).retransmission_times()
    )


def test_every_stack_has_a_source_and_a_plausible_schedule() -> None:
    assert {s.first_s for s in KNOWN_STACKS} == {1.0, 3.0, 6.0}
    for stack in KNOWN_STACKS:
        assert stack.source and stack.factor <= 2.0
    assert LARGEST_FIRST_S == 6.0


def test_linux_default_schedule() -> None:
    linux = KNOWN_STACKS[0]
    assert linux.retransmission_times() == (1.0, 3.0, 7.0, 15.0, 31.0)


@pytest.mark.parametrize("stack", KNOWN_STACKS, ids=lambda s: s.name)
def test_the_rule_never_calls_a_known_schedule_silent_too_early(stack: SynAckSchedule) -> None:
    # Worst case per copy: the interval just seen one timer tick short, the next gap one
    # tick long. The rule must still wait for the next copy, after every copy.
    seen = [0.0, *schedule_times(stack)]
    for k in range(1, len(seen)):
        interval = None if k == 1 else seen[k - 1] - seen[k - 2] - TICK_S
        gap = seen[k] - seen[k - 1] + TICK_S
        assert gap < silence_needed(interval), (stack.name, seen)


@pytest.mark.parametrize("lost", [0, 1, 2])
def test_lost_copies_of_a_one_second_schedule_are_waited_for(lost: int) -> None:
    # Linux's defaults with the first `lost` retransmissions dropped on the path: the first
    # copy seen comes at 1, 3 or 7 s, within the 9.5 s the rule waits before any (more loss,
    # or loss on a 3 s or 6 s schedule, can look like silence: docs/halfopen.md).
    times = list(KNOWN_STACKS[0].retransmission_times())
    seen = [0.0, *times[lost:]]
    for k in range(1, len(seen)):
        interval = None if k == 1 else seen[k - 1] - seen[k - 2]
        assert seen[k] - seen[k - 1] < silence_needed(interval)


def test_the_default_max_wait_lets_linux_defaults_conclude() -> None:
    times = KNOWN_STACKS[0].retransmission_times()
    assert times[-1] + silence_needed(times[-1] - times[-2]) == 81.0 < DEFAULT_MAX_WAIT


def test_stacks_not_yet_due_and_the_caveat() -> None:
    assert {s.first_s for s in stacks_not_due(2.0)} == {3.0, 6.0}
    assert {s.first_s for s in stacks_not_due(5.0)} == {6.0}
    assert stacks_not_due(7.0) == ()
    assert unsafe_caveat(2.0, 0, None, 9.5) == (
        "no retransmission within 2.0 s of the SYN/ACK; stacks with a 3 s or 6 s first "
        "timeout would not have retransmitted yet (9.5 s of silence are needed to conclude)"
    )
    assert "a copy lost on the path" in unsafe_caveat(8.0, 0, None, 9.5)
    assert unsafe_caveat(3.0, 2, 2.0, 6.5).startswith(
        "the last SYN/ACK came 3.0 s before the watch ended; after an interval of 2.0 s a "
        "doubling schedule may send the next up to 5.0 s later"
    )
