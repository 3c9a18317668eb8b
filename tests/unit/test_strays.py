"""syn, halfopen (and its cookie check) and close see the same hostile and stray packets
during the handshake and report them alike: the same kinds (prober.core.strays), the same
JSON fields, the same human lines; ICMP that decides nothing is a notice in every one."""

from __future__ import annotations

from typing import Any

import pytest

from prober.core.close import CloseProbe
from prober.core.halfopen import CookieCheckProbe, HalfOpenProbe
from prober.core.strays import Stray
from prober.core.syn import SynProbe, summarize
from prober.core.timing import Stamp
from prober.core.wire import (
    IPPROTO_TCP,
    IcmpError,
    Packet,
    QuotedHeader,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    icmp_kind,
)
from prober.output import conversation, human
from prober.output.strays import invalid_lines, notice_lines
from tests.unit.fuzzing import DPORT, DST, ISN, OTHER, PEER_ISN, SPORT, SRC, ProbeKind, make_probe

ACK = (ISN + 1) & 0xFFFFFFFF
ROUTER = OTHER[4]


def tcp(flags: TcpFlags, ack: int, *, src: bytes = DST[4], sport: int = DPORT) -> Packet:
    segment = TcpSegment(sport, SPORT, PEER_ISN, ack, flags, 64240, TcpOptions(), b"")
    return Packet(4, src, SRC[4], 63, 0, 40, tcp=segment, raw=b"\x00" * 20)


def icmp(icmp_type: int, code: int, *, seq: int = ISN, dport: int = DPORT) -> Packet:
    quoted = QuotedHeader(SRC[4], DST[4], IPPROTO_TCP, SPORT, dport, seq)
    error = IcmpError(icmp_type, code, quoted, icmp_kind(4, icmp_type))
    return Packet(4, ROUTER, SRC[4], 64, 0, 96, icmp=error, raw=b"\x00" * 20)


# What each probe is sent before any answer, and what every one must make of it.
HOSTILE = [
    tcp(TcpFlags.SYN | TcpFlags.ACK, ACK + 7),  # a guessed ack
    tcp(TcpFlags.RST | TcpFlags.ACK, ACK + 9),
    tcp(TcpFlags.RST, 0),  # a blind RST: no ACK, so it proves nothing about our ISN
    tcp(TcpFlags.ACK, ACK),  # answers no SYN
    tcp(TcpFlags.SYN | TcpFlags.ACK, ACK, src=OTHER[4]),  # another address
    tcp(TcpFlags.SYN | TcpFlags.ACK, ACK, sport=DPORT + 1),  # another remote port
    icmp(3, 1, seq=(ISN + 5) & 0xFFFFFFFF),  # unreachable, quoting another segment
    icmp(3, 1, dport=DPORT + 1),  # unreachable, quoting another 4-tuple
    icmp(5, 1),  # redirect quoting our SYN: a notice
    icmp(4, 0),  # source quench quoting our SYN: a notice
]
STRAYS = {
    Stray.WRONG_SOURCE: 1,
    Stray.WRONG_PORTS: 1,
    Stray.WRONG_ACK: 3,
    Stray.OTHER_SEGMENT: 1,
    Stray.ICMP_NOT_OURS: 2,
}
KINDS = [ProbeKind.SYN, ProbeKind.HALFOPEN, ProbeKind.COOKIE_CHECK, ProbeKind.CLOSE_WE_CLOSE]


def hostile_run(kind: ProbeKind) -> Any:
    """Start a probe, offer each packet as the engine does (``count_invalid`` for those no
    probe takes), then end it: the result."""
    probe = make_probe(kind, 4)
    probe.start(100.0)
    for index, _ in enumerate(probe.segments_to_send()):
        probe.sent(index, Stamp(100_000_000_000))
    for number, packet in enumerate(HOSTILE, start=1):
        now = 100.0 + number * 1e-4
        if not probe.receive(packet, now, Stamp(int(now * 1e9))):
            probe.count_invalid(packet)
    assert not probe.done  # nothing of it decided anything
    if isinstance(probe, SynProbe):
        probe.handle_timer(200.0)
    elif isinstance(probe, CloseProbe):
        probe.interrupt(100.01)
    else:
        assert isinstance(probe, HalfOpenProbe | CookieCheckProbe)
        probe.interrupt(100.01)
    return probe.result()


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
def test_every_probe_counts_the_same_strays_and_notices(kind: ProbeKind) -> None:
    result = hostile_run(kind)
    assert result.invalid_by_kind == STRAYS and result.invalid == 8
    assert result.notices == 2
    assert [(n.name, n.type, n.code, n.source) for n in result.icmp_notices] == [
        ("redirect", 5, 1, "198.18.0.2"), ("source-quench", 4, 0, "198.18.0.2"),
    ]


def test_the_three_commands_show_them_alike() -> None:
    results = {kind: hostile_run(kind) for kind in KINDS}
    fields = ("invalid", "invalid_by_kind", "notices", "icmp_notices")
    json = {kind: {f: r.to_dict()[f] for f in fields} for kind, r in results.items()}
    assert all(shown == json[ProbeKind.SYN] for shown in json.values())
    assert json[ProbeKind.SYN]["invalid_by_kind"] == {
        "wrong-source": 1, "wrong-ports": 1, "wrong-ack": 3, "other-segment": 1,
        "icmp-not-ours": 2,
    }
    syn = results[ProbeKind.SYN]
    block = invalid_lines(syn.invalid_by_kind) + notice_lines(syn.notices, syn.icmp_notices)
    assert block[0] == "Ignored 8 packet(s) that prove nothing:"
    assert block[-1].startswith("ICMP notices: 2 quoted a SYN or other segment of ours")
    halfopen = results[ProbeKind.HALFOPEN].with_cookie_check(results[ProbeKind.COOKIE_CHECK])
    texts = {
        "syn": human.syn_summary(summarize("t", "198.18.0.18", DPORT, [syn], invalid=8)),
        "halfopen": "\n".join(conversation.halfopen_report(halfopen)),
        "close": "\n".join(conversation.close_report(results[ProbeKind.CLOSE_WE_CLOSE])),
    }
    for text in texts.values():
        assert "\n".join(block) in text
    # The cookie check's conversation is shown too, named as such.
    assert "Ignored 8 packet(s) on the cookie check's port that prove nothing:" in texts["halfopen"]
