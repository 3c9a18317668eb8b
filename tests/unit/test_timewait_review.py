"""Review findings on ``prober timewait``, each shown on virtual time against a scripted peer
(the harness of test_close_probe.py: offsets relative to each side's ISN + 1)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from typer.testing import CliRunner

from prober.cli import app
from prober.core.timewait import TimeWaitProbe, script_for
from prober.core.timewait_result import (
    DurationEnd,
    PeerClose,
    ReuseAnswer,
    ReuseKind,
    ReuseProbe,
    Role,
    TimeWaitConnection,
    TimeWaitResult,
    summarize,
)
from prober.output.timewait import _omitted, timewait_verdicts
from tests.unit.test_close_probe import DPORT, DST4, ISN, SPORT, SRC4, Run


def make(role: Role = Role.DURATION, **options: object) -> Run:
    probe = TimeWaitProbe(
        role=role,
        version=4,
        src=ipaddress.ip_address(SRC4).packed,
        dst=ipaddress.ip_address(DST4).packed,
        sport=SPORT,
        dport=DPORT,
        isn=ISN,
        **options,  # type: ignore[arg-type]
    )
    return TwRun(probe)  # type: ignore[arg-type]


class TwRun(Run):
    @property
    def version(self) -> int:
        return 4


def closed_by_peer(r: Run, *, ack_at: float | None = 0.03) -> None:
    """Handshake at 0.01, the peer's FIN at 0.02 (we ACK it and send ours), its ACK of our
    FIN at ``ack_at`` (None: never)."""
    r.open(at=0.01)
    sent = r.feed("FA", 0, 0, at=0.02)
    assert [s.flags.compact() for s in sent] == [".", "F."]
    if ack_at is not None:
        r.feed("A", 1, 1, at=ack_at)


def tw_probe(r: Run) -> TimeWaitProbe:
    probe = r.probe
    assert isinstance(probe, TimeWaitProbe)
    return probe


# -- 1. a close whose FIN was never acknowledged is not a peer in TIME-WAIT ----------------
def test_close_timeout_after_our_fin_is_incomplete_not_a_time_wait_to_probe() -> None:
    # Seen on the lab's `far` peer with --close-timeout 0.03: the FIN came in time, the ACK
    # of ours did not; the close probe's max_wait RST (seq = our SND.NXT, exactly the peer's
    # RCV.NXT) went out, and the run then probed a TIME-WAIT that RST had just killed:
    # "The peer keeps no TIME-WAIT", exit 0. Our FIN was never acknowledged: incomplete.
    r = make(close_timeout=0.5, measure_duration=False)
    closed_by_peer(r, ack_at=None)
    [rst] = r.tick(0.51)
    assert rst.flags.compact() == "R"
    probe = tw_probe(r)
    assert probe.done
    result = probe.result()
    assert result.peer_close is PeerClose.INCOMPLETE
    assert result.probes == ()
    assert result.holds_time_wait()[0] is None


def test_a_completed_close_is_probed_and_a_time_wait_ack_shows_it() -> None:
    # The harness's baseline: the peer ACKs our FIN, the SYN below at +0.5 s draws its ACK.
    r = make(close_timeout=0.5, measure_duration=False)
    closed_by_peer(r, ack_at=0.03)
    [syn] = r.tick(0.53)
    assert syn.flags.compact() == "S"
    r.feed("A", 1, 1, at=0.531)
    r.tick(0.53 + 1.0)
    result = tw_probe(r).result()
    assert result.peer_close is PeerClose.FIN
    assert [p.answer for p in result.probes] == [ReuseAnswer.TIME_WAIT_ACK]
    assert result.holds_time_wait()[0] is True


# -- 2. --no-duration --refin near +0.5 s: the SYN and the FIN shared one answer window -----
def test_no_duration_refin_at_the_first_syn_keeps_both_answers() -> None:
    # Seen on `open` with --no-duration --refin 0.5: SYN and FIN both left at +0.5 s, the
    # SYN's window was empty (it ends at the next step's send, the FIN's), its ACK went to
    # the FIN and the FIN's ACK to no probe: "Whether the peer holds TIME-WAIT is unknown"
    # and the FIN's answer unknown, though the peer answered everything.
    r = make(close_timeout=0.5, measure_duration=False, refin_at=0.5)
    closed_by_peer(r, ack_at=0.03)
    sent = r.tick(0.53)
    assert [s.flags.compact() for s in sent] == ["F."]  # the SYN at +0.5 s is not sent
    r.feed("A", 1, 1, at=0.531)
    [syn] = r.tick(0.53 + 0.5 + 0.6)
    assert syn.flags.compact() == "S"
    r.feed("A", 1, 1, at=1.631)
    r.tick(1.63 + 1.0)
    connection = tw_probe(r).result()
    assert [(p.kind, p.answer) for p in connection.probes] == [
        (ReuseKind.FIN_AGAIN, ReuseAnswer.TIME_WAIT_ACK),
        (ReuseKind.SYN_BELOW, ReuseAnswer.TIME_WAIT_ACK),
    ]
    result = summarize(
        target=DST4, port=DPORT, source=SRC4, connections=[connection], step=1.0,
        max_time=250.0, measure_duration=False, refin_at=0.5,
    )
    assert result.holds_time_wait is True and result.refin_acked is True


# -- 3. a reopening SYN's RST or ICMP is not a refusal ---------------------------------------
def completed_connection() -> TimeWaitConnection:
    """A real connection record (its close driven above), for summarize's tests."""
    r = make(close_timeout=0.5, measure_duration=False)
    closed_by_peer(r, ack_at=0.03)
    r.tick(0.53)
    r.feed("A", 1, 1, at=0.531)
    r.tick(1.53)
    return tw_probe(r).result()


def probe(role: Role, kind: ReuseKind, at: float, answer: ReuseAnswer,
          linux_isn: bool | None = None) -> ReuseProbe:
    return ReuseProbe(role=role, kind=kind, at_s=at, seq=0, answer=answer,
                      answer_after_ms=0.1, answer_seq=None, linux_isn=linux_isn)


def as_role(base: TimeWaitConnection, role: Role, *probes: ReuseProbe) -> TimeWaitConnection:
    return replace(base, role=role, probes=probes)


def verdicts(*connections: TimeWaitConnection, measure: bool = True) -> TimeWaitResult:
    return summarize(
        target=DST4, port=DPORT, source=SRC4, connections=list(connections), step=1.0,
        max_time=250.0, measure_duration=measure, refin_at=None,
    )


def test_a_reopening_syn_answered_by_rst_or_icmp_is_not_refused() -> None:
    # "refused" means the TIME-WAIT answered with its ACK. A RST (acking the SYN) says no
    # TIME-WAIT and no listener: Linux's TIME-WAIT never answers a SYN so (with no listener
    # it sends its ACK); an ICMP error says nothing of the peer's TCP. It read "refused".
    base = completed_connection()
    below = probe(Role.ABOVE_ISN, ReuseKind.SYN_BELOW, 0.5, ReuseAnswer.TIME_WAIT_ACK)
    for answer in (ReuseAnswer.RST, ReuseAnswer.ICMP):
        above = as_role(base, Role.ABOVE_ISN, below,
                        probe(Role.ABOVE_ISN, ReuseKind.SYN_ABOVE, 1.1, answer))
        result = verdicts(base, above, measure=False)
        assert result.above_isn_accepted is None, answer
    refused = as_role(base, Role.ABOVE_ISN, below, probe(
        Role.ABOVE_ISN, ReuseKind.SYN_ABOVE, 1.1, ReuseAnswer.TIME_WAIT_ACK))
    assert verdicts(base, refused, measure=False).above_isn_accepted is False


# -- 4. a TIME-WAIT that ran out by itself is no assassination, no reopening ------------------
def short_duration(base: TimeWaitConnection) -> TimeWaitConnection:
    """A 1.5 s TIME-WAIT (an embedded stack): an ACK at +1 s, a SYN/ACK at +2 s."""
    return as_role(
        base, Role.DURATION,
        probe(Role.DURATION, ReuseKind.SYN_BELOW, 1.0, ReuseAnswer.TIME_WAIT_ACK),
        probe(Role.DURATION, ReuseKind.SYN_BELOW, 2.0, ReuseAnswer.SYN_ACK, False),
    )


def test_a_time_wait_gone_by_itself_before_the_deciding_syn_decides_nothing() -> None:
    base = completed_connection()
    kill = Role.ASSASSINATE
    assassinate = as_role(
        base, kill,
        probe(kill, ReuseKind.SYN_BELOW, 0.5, ReuseAnswer.TIME_WAIT_ACK),
        probe(kill, ReuseKind.RST_OFFSET, 1.1, ReuseAnswer.NONE),
        probe(kill, ReuseKind.SYN_BELOW, 1.7, ReuseAnswer.TIME_WAIT_ACK),
        probe(kill, ReuseKind.RST_EXACT, 2.3, ReuseAnswer.NONE),
        probe(kill, ReuseKind.SYN_BELOW, 2.9, ReuseAnswer.SYN_ACK, False),
    )
    above = as_role(
        base, Role.ABOVE_ISN,
        probe(Role.ABOVE_ISN, ReuseKind.SYN_BELOW, 0.5, ReuseAnswer.TIME_WAIT_ACK),
        probe(Role.ABOVE_ISN, ReuseKind.SYN_ABOVE, 2.1, ReuseAnswer.SYN_ACK, False),
    )
    result = verdicts(short_duration(base), above, assassinate)
    assert result.duration_s == 1.5
    # Before: "one at exactly RCV.NXT ended the TIME-WAIT: the peer does not protect it",
    # and "a SYN above the old sequence space was accepted", both on a TIME-WAIT the duration
    # had seen end by itself at +2 s.
    assert result.offset_rst_ignored is True and result.assassinated is None
    assert result.above_isn_accepted is None
    # Linux's reopening ISN is the peer's own word: accepted whatever the timing.
    linux = as_role(
        base, Role.ABOVE_ISN, above.probes[0],
        probe(Role.ABOVE_ISN, ReuseKind.SYN_ABOVE, 2.1, ReuseAnswer.SYN_ACK, True),
    )
    assert verdicts(short_duration(base), linux).above_isn_accepted is True
    # A long TIME-WAIT: the same answers are the RST's doing.
    long = as_role(
        base, Role.DURATION,
        probe(Role.DURATION, ReuseKind.SYN_BELOW, 60.0, ReuseAnswer.TIME_WAIT_ACK),
        probe(Role.DURATION, ReuseKind.SYN_BELOW, 61.0, ReuseAnswer.SYN_ACK, False),
    )
    assert verdicts(long, above, assassinate).assassinated is True


# -- 5. a reopening test asked for but undecided is said, not dropped --------------------------
def test_an_undecided_reopening_test_is_reported() -> None:
    # The report skipped a None verdict: with a RST, an ICMP error or silence for the above-ISN
    # SYN the user saw no line about the test at all.
    base = completed_connection()
    above = as_role(
        base, Role.ABOVE_ISN,
        probe(Role.ABOVE_ISN, ReuseKind.SYN_BELOW, 0.5, ReuseAnswer.TIME_WAIT_ACK),
        probe(Role.ABOVE_ISN, ReuseKind.SYN_ABOVE, 1.1, ReuseAnswer.NONE),
    )
    lines = timewait_verdicts(verdicts(base, above, measure=False))
    assert any("a SYN above the old sequence space drew no clear answer" in line
               for line in lines)


# -- 6. --max beyond what the below-ISN SYNs can number: cut short without a word ------------
def test_more_probes_than_the_script_holds_is_a_usage_error() -> None:
    # script_for stops at MAX_BELOW_PROBES (16384): --step 0.01 --max 250 probed 163.84 s,
    # then said "still TIME-WAIT when --max 250 s ran out".
    steps = script_for(Role.DURATION, step=0.01, max_time=250.0, measure_duration=True,
                       refin_at=None)
    assert steps[-1].at < 250.0 - 1  # what the CLI used to run
    result = CliRunner().invoke(app, ["timewait", "198.18.0.18:80", "--step", "0.01"])
    assert result.exit_code == 2
    assert "16384 probes" in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- 7. a duration 4-tuple never held is not a TIME-WAIT that ended --------------------------
def test_a_duration_connection_without_time_wait_times_nothing_when_another_outlives_it() -> None:
    # Near tcp_max_tw_buckets a peer keeps one 4-tuple's TIME-WAIT and not the next. The
    # duration's SYN at +1 s drew a SYN/ACK, the above-isn connection's TIME-WAIT answered at
    # +0.5 s and reopened with Linux's ISN at +1.1 s, so it was alive after +1 s. This read
    # "Duration: 0.8 s ± 0.2 s" (measured between the two connections).
    base = completed_connection()
    duration = as_role(
        base, Role.DURATION,
        probe(Role.DURATION, ReuseKind.SYN_BELOW, 1.0, ReuseAnswer.SYN_ACK, False),
    )
    above = as_role(
        base, Role.ABOVE_ISN,
        probe(Role.ABOVE_ISN, ReuseKind.SYN_BELOW, 0.5, ReuseAnswer.TIME_WAIT_ACK),
        probe(Role.ABOVE_ISN, ReuseKind.SYN_ABOVE, 1.1, ReuseAnswer.SYN_ACK, True),
    )
    result = verdicts(duration, above)
    assert result.holds_time_wait is True
    assert result.duration_end is DurationEnd.UNKNOWN and result.duration_s is None
    assert any("for some 4-tuples only" in note for note in result.notes)
    # Without that evidence the earlier TIME-WAIT ACK still bounds a short TIME-WAIT.
    short = as_role(base, Role.ABOVE_ISN, above.probes[0], probe(
        Role.ABOVE_ISN, ReuseKind.SYN_ABOVE, 1.1, ReuseAnswer.SYN_ACK, False))
    assert verdicts(duration, short).duration_s == 0.75


# -- 8. silence after our FIN again is no "not ACKed" ----------------------------------------
def test_a_repeated_fin_without_answer_is_unknown_not_refused() -> None:
    # One lost segment (the lab's lossy peer loses 1%) read "Our FIN again: not ACKed".
    base = completed_connection()
    d = Role.DURATION
    duration = as_role(
        base, d,
        probe(d, ReuseKind.SYN_BELOW, 1.0, ReuseAnswer.TIME_WAIT_ACK),
        probe(d, ReuseKind.FIN_AGAIN, 2.0, ReuseAnswer.NONE),
        probe(d, ReuseKind.SYN_BELOW, 3.0, ReuseAnswer.TIME_WAIT_ACK),
    )
    result = summarize(
        target=DST4, port=DPORT, source=SRC4, connections=[duration], step=1.0,
        max_time=3.5, measure_duration=True, refin_at=2.0,
    )
    assert result.refin_acked is None
    assert any("drew no answer" in note for note in result.notes)
    gone = as_role(base, d, duration.probes[0],
                   probe(d, ReuseKind.FIN_AGAIN, 2.0, ReuseAnswer.RST))
    assert summarize(
        target=DST4, port=DPORT, source=SRC4, connections=[gone], step=1.0,
        max_time=3.5, measure_duration=True, refin_at=2.0,
    ).refin_acked is False


# -- 9. the collapsed line names the probes it stands for ------------------------------------
def test_an_arrival_before_the_first_probe_does_not_shift_the_collapsed_rounds() -> None:
    # A segment before the first probe (here a repeated ACK of our FIN; on `far` with a short
    # --close-timeout the late ACK itself) made round n probe n - 1: the line for the rows of
    # the probes at +2..+4 s said "+3.0 s … +5.0 s".
    r = make(close_timeout=0.5, step=1.0, max_time=6.0)
    closed_by_peer(r, ack_at=0.03)
    r.feed("A", 1, 1, at=0.1)  # before the duration's early probe (+0.25 s)
    for k in range(1, 7):
        r.tick(0.03 + k)
        r.feed("A", 1, 1, at=0.03 + k + 0.001)
    r.tick(0.03 + 8)
    connection = tw_probe(r).result()
    assert len(connection.probes) == 7  # the early probe (unanswered), then +1..+6 s
    omitted = _omitted(connection, 0)
    assert set(omitted.values()) == {
        "4 more the same: SYN below the old ISN → an ACK of the old connection (TIME-WAIT), "
        "+2.0 s … +5.0 s"
    }
    # The rows left out are those of the probes at +2..+5 s (two records each), after the
    # stray ACK, the early probe and the +1 s round.
    assert sorted(omitted) == list(range(4, 12))


def test_an_undecided_assassination_is_reported() -> None:
    # --assassinate on a TIME-WAIT whose SYN after the offset RST drew nothing (a loss):
    # both verdicts None, and the report had no assassination line at all.
    base = completed_connection()
    kill = Role.ASSASSINATE
    assassinate = as_role(
        base, kill,
        probe(kill, ReuseKind.SYN_BELOW, 0.5, ReuseAnswer.TIME_WAIT_ACK),
        probe(kill, ReuseKind.RST_OFFSET, 1.1, ReuseAnswer.NONE),
        probe(kill, ReuseKind.SYN_BELOW, 1.7, ReuseAnswer.NONE),
    )
    lines = timewait_verdicts(verdicts(base, assassinate, measure=False))
    assert any(line.startswith("Assassination: a RST at RCV.NXT + 1 drew no clear answer")
               for line in lines)


# -- 10. one lost first probe does not hide the TIME-WAIT the next ones show -------------------
def test_a_lost_first_probe_does_not_make_holds_unknown() -> None:
    # On the lossy peer the first SYN (or its answer) is lost about once in 50 runs: the run
    # said "Whether the peer holds TIME-WAIT is unknown: the SYN after the close drew none"
    # and, two lines later, measured its duration from the probes that followed.
    base = completed_connection()
    d = Role.DURATION
    duration = as_role(
        base, d,
        probe(d, ReuseKind.SYN_BELOW, 1.0, ReuseAnswer.NONE),
        probe(d, ReuseKind.SYN_BELOW, 2.0, ReuseAnswer.TIME_WAIT_ACK),
        probe(d, ReuseKind.SYN_BELOW, 3.0, ReuseAnswer.SYN_ACK, False),
    )
    result = verdicts(duration)
    assert result.holds_time_wait is True and "2.00 s after" in result.holds_evidence
    assert result.duration_s == 2.5


# -- 11. a SYN/ACK repeated after a loss is not the path's RTT --------------------------------
def test_a_repeated_syn_ack_does_not_pass_for_a_one_second_rtt() -> None:
    # On the lossy peer over IPv6 the first SYN/ACK was lost and the peer's repeat, echoing
    # our first SYN's TSval, made the handshake RTT 1002 ms: the run warned "the RTT (1002
    # ms) exceeds half the --step ... the duration may be one step off" on a 0.1 ms path.
    r = make(close_timeout=5.0, step=1.0, max_time=2.0, handshake_timeout=3.0)
    r.start()
    r.tick(1.0)  # our SYN again
    r.our_last_tsval = 0  # the peer's repeated SYN/ACK echoes the first SYN
    r.feed("SA", -1, 0, at=1.0002)
    r.feed("FA", 0, 0, at=1.01)
    r.feed("A", 1, 1, at=1.0101)  # our FIN's ACK: 0.1 ms
    close = tw_probe(r).connection.result()
    assert close.handshake_rtt is not None and close.handshake_rtt.ns > 900_000_000
    for k in (1, 2):
        r.tick(1.0101 + k)
        r.feed("A", 1, 1, at=1.0101 + k + 0.0001)
    r.tick(1.0101 + 2 + 1.0)
    connection = tw_probe(r).result()
    result = summarize(
        target=DST4, port=DPORT, source=SRC4, connections=[connection], step=1.0,
        max_time=2.0, measure_duration=True, refin_at=None,
    )
    assert result.duration_end is DurationEnd.STILL_HELD
    assert not any("RTT" in note for note in result.notes), result.notes
    assert tw_probe(r).done  # the last probe's window was 1 s, not 4 handshake RTTs


# -- 12. silence until --max is not "still TIME-WAIT at --max" -------------------------------
def test_silence_after_the_last_time_wait_ack_is_unknown_not_still_held() -> None:
    # A TIME-WAIT ACK at +1 and +2 s, then nothing for the rest of --max: this read
    # "Duration: at least 2.0 s (still TIME-WAIT when --max 10 s ran out)". docs/timewait.md:
    # silence after the last TIME-WAIT ACK gives duration_end unknown.
    base = completed_connection()
    d = Role.DURATION
    answers = [ReuseAnswer.TIME_WAIT_ACK] * 2 + [ReuseAnswer.NONE] * 8
    duration = as_role(base, d, *(
        probe(d, ReuseKind.SYN_BELOW, float(k), a) for k, a in enumerate(answers, start=1)))
    result = summarize(target=DST4, port=DPORT, source=SRC4, connections=[duration],
                       step=1.0, max_time=10.0, measure_duration=True, refin_at=None)
    assert result.duration_end is DurationEnd.UNKNOWN and result.duration_low_s == 2.0
    assert any("drew no answer at all" in note for note in result.notes)
    # One lost answer at the very end is still "at least" the last ACK.
    answers = [ReuseAnswer.TIME_WAIT_ACK] * 9 + [ReuseAnswer.NONE]
    lossy = as_role(base, d, *(
        probe(d, ReuseKind.SYN_BELOW, float(k), a) for k, a in enumerate(answers, start=1)))
    result = summarize(target=DST4, port=DPORT, source=SRC4, connections=[lossy],
                       step=1.0, max_time=10.0, measure_duration=True, refin_at=None)
    assert result.duration_end is DurationEnd.STILL_HELD and result.duration_low_s == 9.0


# -- 13. a bad target is one line on stderr, not the banner and then the error ---------------
def test_an_unresolvable_target_prints_only_its_error() -> None:
    # The "probing the peer's TIME-WAIT every 1 s ..." line came before the resolution (or
    # permission) error: two lines for one bad input.
    result = CliRunner().invoke(app, ["timewait", "nosuch.invalid:80"])
    assert result.exit_code in (2, 3), result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "probing the peer's TIME-WAIT" not in result.output
