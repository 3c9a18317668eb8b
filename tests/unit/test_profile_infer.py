"""The profile's inference rules, on hand-made results (no root): what each property reads
off its probe, and when the evidence is too weak to give a value."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from prober.core.profile import Basis, ProbeKind, PropertyName, SegmentRef
from prober.core.profile_infer import (
    COMMON_INITIAL_TTLS,
    ProbeResults,
    _ecn_property,
    _schedule,
    infer,
    initial_ttl,
)
from prober.core.syn import PortState, Reason, SynProbeResult, TcpReply, summarize
from prober.core.timing import Clock, Rtt
from prober.output.profile import numbers

P = PropertyName


def _reply(flags: str = "S.", *, ttl: int = 63, options: str = "MSTNW", mss: int | None = 1460,
           wscale: int | None = 7, sack: bool = True, ts: bool = True) -> TcpReply:
    return TcpReply(flags=flags, seq=1, ack=2, ttl=ttl, window=65160, ip_id=0, length=60,
                    mss=mss, window_scale=wscale, sack_permitted=sack,
                    tsval=1 if ts else None, tsecr=2 if ts else None, options=options)


def _run(*replies: TcpReply | None, rtt_ms: float = 0.05):
    probes = []
    for number, reply in enumerate(replies, start=1):
        answered = reply is not None
        probes.append(SynProbeResult(
            probe=number, target="198.18.0.18", port=80, source="198.18.0.1",
            source_port=40000 + number,
            state=PortState.OPEN if answered else PortState.FILTERED,
            reason=Reason.SYN_ACK if answered else Reason.NO_RESPONSE,
            rtt=Rtt(int(rtt_ms * 1e6 * number), Clock.KERNEL) if answered else None,
            sent_ns=1, received_ns=2 if answered else None, tcp=reply))
    return summarize("h", "198.18.0.18", 80, probes)


@given(st.integers(min_value=1, max_value=255))
def test_initial_ttl_is_the_common_value_at_or_above(observed: int) -> None:
    start, hops = initial_ttl(observed)
    assert start in COMMON_INITIAL_TTLS and start >= observed and hops == start - observed
    below = [v for v in COMMON_INITIAL_TTLS if v < start]
    assert not below or below[-1] < observed  # no smaller common value would do


def test_numbers_joins_runs_one_based() -> None:
    assert numbers([0, 1, 2, 5]) == "1-3,6"
    assert numbers([3]) == "4"
    assert numbers([]) == ""


def test_options_and_ttl_from_the_first_syn_ack() -> None:
    results = ProbeResults(syn=_run(_reply(ttl=63), _reply(ttl=63), None))
    props = dict((p.name, p) for p in infer(results, quick=True)[0])
    assert props[P.MSS].value == 1460
    assert props[P.WINDOW_SCALE].value == 7
    assert props[P.SACK].value is True and props[P.TIMESTAMPS].value is True
    assert props[P.OPTION_ORDER].value == "MSTNW"
    assert props[P.HANDSHAKE_RTT_MS].value == 0.05  # the shortest of the two answered
    ttl = props[P.INITIAL_TTL]
    assert ttl.value == 64 and ttl.basis is Basis.INFERRED and ttl.rests_on
    assert "1 hop below 64" in ttl.evidence


def test_options_left_out_are_not_offered() -> None:
    results = ProbeResults(syn=_run(_reply(options="M", wscale=None, sack=False, ts=False)))
    props = dict((p.name, p) for p in infer(results, quick=True)[0])
    assert props[P.WINDOW_SCALE].value is False
    assert props[P.SACK].value is False and props[P.TIMESTAMPS].value is False


def test_no_syn_ack_leaves_everything_unknown_or_not_measured() -> None:
    results = ProbeResults(syn=_run(None), skipped={k: "the port did not answer SYN/ACK"
                                                    for k in ProbeKind})
    props, _ladders = infer(results, quick=False)
    assert [p.name for p in props] == list(PropertyName)
    assert all(p.value is None for p in props)
    assert all(p.basis in (Basis.UNKNOWN, Basis.NOT_MEASURED) for p in props)
    assert props[-1].evidence == "the port did not answer SYN/ACK"


def test_ecn_answers() -> None:
    assert _ecn_property(_run(_reply("S.E")), None)[0].value is True
    assert _ecn_property(_run(_reply("S.")), None)[0].value is False
    both = _ecn_property(_run(_reply("S.EW")), None)[0]
    assert both.value is None and both.basis is Basis.UNKNOWN and "CWR" in both.evidence


NAMES = (P.INITIAL_RTO_S, P.SYNACK_BACKOFF, P.SYNACK_RETRIES)
REFS = [SegmentRef(ProbeKind.HALFOPEN, (1, 2))]


def test_schedule_of_a_peer_that_gave_up() -> None:
    rto, backoff, retries = _schedule(NAMES, [1.0, 2.0, 4.0, 8.0, 16.0], "SYN/ACK", True,
                                      "silence", REFS)
    assert (rto.value, backoff.value, retries.value) == (1.0, 2.0, 5)
    assert all(p.basis is Basis.MEASURED for p in (rto, backoff, retries))


def test_schedule_cut_short_is_at_least() -> None:
    _rto, _backoff, retries = _schedule(NAMES, [1.0, 2.0], "SYN/ACK", False,
                                        "the watch ended", REFS)
    assert retries.value is None and retries.basis is Basis.UNKNOWN
    assert retries.display == "≥ 2"


def test_schedule_with_one_gap_has_no_backoff() -> None:
    rto, backoff, retries = _schedule(NAMES, [3.0], "SYN/ACK", True, "a RST", REFS)
    assert rto.value == 3.0 and retries.value == 1
    assert backoff.value is None and backoff.basis is Basis.UNKNOWN


@given(st.lists(st.floats(min_value=0.01, max_value=100), min_size=2, max_size=12),
       st.booleans())
def test_schedule_never_claims_more_than_it_saw(gaps: list[float], gave_up: bool) -> None:
    rto, backoff, retries = _schedule(NAMES, gaps, "FIN", gave_up, "x", REFS)
    assert rto.value == round(gaps[0], 3)
    assert (retries.value == len(gaps)) if gave_up else retries.value is None
    assert backoff.value is not None


def test_durations_read_well() -> None:
    from prober.core.profile_infer import _seconds

    assert _seconds(0.9996) == "1 s"
    assert _seconds(0.499) == "499 ms"
    assert _seconds(61.5) == "61.5 s"
    assert _seconds(150.2) == "150 s"
