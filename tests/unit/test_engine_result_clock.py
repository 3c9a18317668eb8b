"""Every probe result says which clock its times are on, also when nothing answered (its
`sent_ns` is then a kernel TX stamp if one came, else the user-space clock)."""

from __future__ import annotations

from prober.core.timing import Clock, Stamp
from tests.unit.test_syn_probe import make_probe


def test_an_unanswered_probe_says_which_clock_its_send_time_is_on() -> None:
    stamped, unstamped = make_probe(), make_probe()
    for probe in (stamped, unstamped):
        probe.start(0.0)
        probe.segments_to_send()
    stamped.sent(0, Stamp(user_ns=5_000))
    stamped.send_kernel_stamp(0, 5_200)
    unstamped.sent(0, Stamp(user_ns=6_000))
    for probe in (stamped, unstamped):
        probe.handle_timer(10.0)
    with_stamp, without = stamped.result().to_dict(), unstamped.result().to_dict()
    assert (with_stamp["rtt_us"], with_stamp["sent_ns"], with_stamp["clock"]) == (
        None, 5_200, "kernel"
    )
    assert (without["sent_ns"], without["clock"]) == (6_000, "user")
    assert stamped.result().clock is Clock.KERNEL


def test_an_unsent_probe_has_no_clock() -> None:
    probe = make_probe()
    probe.start(0.0)
    probe.segments_to_send()
    probe.send_failed(0, "Network is unreachable")
    assert probe.result().to_dict()["clock"] is None
