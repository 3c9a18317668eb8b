"""A realistic, deterministic ``ProfileResult`` for renderer tests: a Linux-like peer at
198.18.0.18:80 seen from 198.18.0.1, every probe run (not --quick).

Its ladders are hand-made from SegmentRecords as the probes log them: the SYN probe's
handshake (SYN, SYN/ACK, our RST), an ECN SYN, the half-open probe's six SYN/ACK
retransmissions 1, 2, 4, 8, 16, 32 s apart, the cookie check, a four-way close with both
sides' states, the peer's FIN retransmissions, a TIME-WAIT probe series (a SYN below the old
ISN every second for 60 s, each answered by an ACK of the old connection; our FIN again at
+20 s), a RST into TIME-WAIT that could not be sent (a failed send), and the RFC 5961 probe
with its rate test. Every PropertyName is present, some UNKNOWN and NOT_MEASURED.

Use: ``from tests.unit.profile_sample import sample_profile``.
"""

from __future__ import annotations

from prober.core.profile import (
    Basis,
    CookieMode,
    FinGiveUp,
    Ladder,
    ProbeKind,
    ProfileResult,
    Property,
    PropertyName,
    SegmentRef,
    StackMatch,
)
from prober.core.states import TcpState
from prober.core.timing import Clock
from prober.core.trace import Direction, SegmentRecord

STARTED_NS = 1_764_662_400_000_000_000  # 2025-12-02 08:00:00 UTC
SOURCE = "198.18.0.1"
TARGET = "198.18.0.18"
PORT = 80
RTT_NS = 48_000  # loopback-ish: a veth pair into a namespace

S = TcpState  # the table below reads better short


class _Builder:
    """Records of one connection, times in seconds from the ladder's start."""

    def __init__(self, start_ns: int, our_isn: int, peer_isn: int) -> None:
        self.start_ns = start_ns
        self.our_isn = our_isn
        self.peer_isn = peer_isn
        self.records: list[SegmentRecord] = []

    def _add(
        self, direction: Direction, at_s: float, flags: str, rseq: int, rack: int,
        our: TcpState, peer: TcpState, *, length: int = 0, window: int = 64240,
        options: str = "", ts: tuple[int, int] | None = None, note: str = "",
        error: str | None = None, answers: int | None = None,
    ) -> int:
        ours = direction is Direction.SENT
        sender, receiver = (
            (self.our_isn, self.peer_isn) if ours else (self.peer_isn, self.our_isn)
        )
        time_ns = self.start_ns + round(at_s * 1e9)
        if error is not None and self.records:
            time_ns = self.records[-1].time_ns  # a failed send: the time of the one before
        reaction = (
            None if answers is None or error is not None
            else time_ns - self.records[answers].time_ns
        )
        self.records.append(
            SegmentRecord(
                direction=direction,
                flags=flags,
                seq=(sender + rseq) & 0xFFFFFFFF,
                ack=(receiver + rack) & 0xFFFFFFFF if "." in flags else 0,
                relative_seq=rseq & 0xFFFFFFFF,
                relative_ack=rack & 0xFFFFFFFF if "." in flags else 0,
                length=length,
                window=window,
                options=options,
                tsval=None if ts is None else ts[0],
                tsecr=None if ts is None else ts[1],
                time_ns=time_ns,
                clock=Clock.KERNEL,
                our_state=our,
                peer_state=peer,
                note=note,
                raw=b"" if error else b"\x45" + bytes(39),
                send_error=error,
                answers=answers,
                reaction_ns=reaction,
            )
        )
        return len(self.records) - 1

    def sent(self, at_s: float, flags: str, rseq: int, rack: int, our: TcpState,
             peer: TcpState, **kw: object) -> int:
        return self._add(Direction.SENT, at_s, flags, rseq, rack, our, peer, **kw)  # type: ignore[arg-type]

    def received(self, at_s: float, flags: str, rseq: int, rack: int, our: TcpState,
                 peer: TcpState, **kw: object) -> int:
        return self._add(Direction.RECEIVED, at_s, flags, rseq, rack, our, peer, **kw)  # type: ignore[arg-type]

    def handshake(self, at_s: float = 0.0, *, ts: bool = True) -> float:
        """SYN, SYN/ACK, ACK; returns the time of the ACK."""
        rtt = RTT_NS / 1e9
        self.sent(at_s, "S", 0, 0, S.SYN_SENT, S.SYN_RECEIVED, options="MSTNW",
                  ts=(1000, 0) if ts else None)
        synack = self.received(at_s + rtt, "S.", 0, 1, S.ESTABLISHED, S.SYN_RECEIVED,
                               window=65160, options="MSTNW", ts=(3_000_000, 1000))
        self.sent(at_s + rtt + 20e-6, ".", 1, 1, S.ESTABLISHED,
                  S.ESTABLISHED, window=502, ts=(1000, 3_000_000), answers=synack)
        return at_s + rtt + 20e-6


def _syn_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 5_000_000, 0x1A2B3C4D, 0x9E8D7C6B)
    b.sent(0.0, "S", 0, 0, S.SYN_SENT, S.SYN_RECEIVED, options="MSTNW", ts=(1000, 0))
    b.received(0.000048, "S.", 0, 1, S.SYN_SENT, S.SYN_RECEIVED, window=65160,
               options="MSTNW", ts=(3_000_000, 1000))
    b.sent(0.000061, "R", 1, 0, S.CLOSED, S.CLOSED, window=0, answers=1)
    return Ladder(ProbeKind.SYN, "Handshake: SYN, SYN/ACK, our RST", 40001,
                  tuple(b.records))


def _ecn_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 25_000_000, 0x22334455, 0x66778899)
    b.sent(0.0, "SEW", 0, 0, S.SYN_SENT, S.SYN_RECEIVED, options="MSTNW", ts=(1100, 0))
    b.received(0.000051, "SE.", 0, 1, S.SYN_SENT, S.SYN_RECEIVED, window=65160,
               options="MSTNW", ts=(3_000_020, 1100))
    b.sent(0.000066, "R", 1, 0, S.CLOSED, S.CLOSED, window=0, answers=1)
    return Ladder(ProbeKind.ECN, "ECN: a SYN with ECE and CWR", 40002, tuple(b.records))


def _halfopen_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 50_000_000, 0x0BADCAFE, 0x5EEDF00D)
    b.sent(0.0, "S", 0, 0, S.SYN_SENT, S.SYN_RECEIVED, options="MSTNW", ts=(1200, 0))
    b.received(0.000047, "S.", 0, 1, S.SYN_SENT, S.SYN_RECEIVED, window=65160,
               options="MSTNW", ts=(3_000_050, 1200))
    at = 0.000047
    for number, interval in enumerate((1.0, 2.0, 4.0, 8.0, 16.0, 32.0), start=1):
        at += interval + 0.0003 * number  # the kernel's timer is a little late each time
        b.received(at, "S.", 0, 1, S.SYN_SENT, S.SYN_RECEIVED, window=65160,
                   options="MSTNW", ts=(3_000_050 + round(at * 1000), 1200),
                   note="retransmission")
    # No seventh: the peer gave up (tcp_synack_retries); we free the port after --watch.
    b.sent(at + 40.0, "R", 1, 0, S.CLOSED, S.CLOSED, window=0,
           note="end of the watch: frees the peer's request")
    return Ladder(ProbeKind.HALFOPEN, "Half-open: SYN, no final ACK", 40003,
                  tuple(b.records),
                  notes=("SYN/ACK retransmissions 1, 2, 4, 8, 16, 32 s apart; none in the "
                         "40 s after the sixth",))


def _cookie_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 160_000_000_000, 0x31415926, 0x27182818)
    b.sent(0.0, "S", 0, 0, S.SYN_SENT, S.SYN_RECEIVED, options="MSTNW", ts=(1300, 0))
    b.received(0.000050, "S.", 0, 1, S.SYN_SENT, S.SYN_RECEIVED, window=65160,
               options="MSTNW", ts=(3_160_000, 1300))
    b.sent(0.010, "S", 0, 0, S.SYN_SENT, S.SYN_RECEIVED, options="MSTNW", ts=(1310, 0),
           note="the same SYN again")
    b.received(0.010049, "S.", 0, 1, S.SYN_SENT, S.SYN_RECEIVED, window=65160,
               options="MSTNW", ts=(3_160_010, 1310),
               note="same ISN: the request was kept (no cookie)")
    b.sent(0.010062, "R", 1, 0, S.CLOSED, S.CLOSED, window=0, answers=3)
    return Ladder(ProbeKind.COOKIE_CHECK, "SYN-cookie check: the same SYN twice", 40004,
                  tuple(b.records))


def _close_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 161_000_000_000, 0x44556677, 0x8899AABB)
    t = b.handshake()
    b.sent(t + 0.001, "F.", 1, 1, S.FIN_WAIT_1, S.CLOSE_WAIT, window=502,
           ts=(1011, 3_000_000))
    b.received(t + 0.001052, ".", 1, 2, S.FIN_WAIT_2, S.CLOSE_WAIT, window=509,
               ts=(3_000_011, 1011))
    fin = b.received(t + 0.001110, "F.", 1, 2, S.TIME_WAIT, S.LAST_ACK, window=509,
                     ts=(3_000_011, 1011))
    b.sent(t + 0.001128, ".", 2, 2, S.TIME_WAIT, S.CLOSED, window=502,
           ts=(1011, 3_000_011), answers=fin)
    return Ladder(ProbeKind.CLOSE, "Close: we close first (four-way)", 40005,
                  tuple(b.records))


def _fin_retransmit_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 162_000_000_000, 0x10203040, 0x50607080)
    t = b.handshake()
    b.sent(t + 0.001, "F.", 1, 1, S.FIN_WAIT_1, S.CLOSE_WAIT, window=502)
    b.received(t + 0.001050, ".", 1, 2, S.FIN_WAIT_2, S.CLOSE_WAIT, window=509)
    at = t + 0.001100
    b.received(at, "F.", 1, 2, S.TIME_WAIT, S.LAST_ACK, window=509,
               note="not acknowledged, on purpose")
    interval = 0.204
    for _ in range(6):
        at += interval
        b.received(at, "F.", 1, 2, S.TIME_WAIT, S.LAST_ACK, window=509,
                   note="retransmission")
        interval *= 2
    return Ladder(ProbeKind.FIN_RETRANSMIT, "FIN retransmission: the peer's FIN never ACKed",
                  40006, tuple(b.records),
                  notes=("the watch ended (15 s) while the peer still retransmitted",))


def _timewait_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 180_000_000_000, 0x600DF00D, 0x7EA7C0DE)
    t = b.handshake()
    b.sent(t + 0.0001, "P.", 1, 1, S.ESTABLISHED, S.ESTABLISHED, length=18, window=502,
           ts=(1001, 3_000_000), note="request: HEAD / HTTP/1.0")
    b.received(t + 0.00015, ".", 1, 19, S.ESTABLISHED, S.ESTABLISHED, window=509,
               ts=(3_000_001, 1001))
    b.received(t + 0.0009, "P.", 1, 19, S.ESTABLISHED, S.ESTABLISHED, length=181,
               window=509, ts=(3_000_001, 1001))
    fin = b.received(t + 0.00091, "F.", 182, 19, S.CLOSE_WAIT, S.FIN_WAIT_1, window=509,
                     ts=(3_000_001, 1001), note="the peer closes first")
    b.sent(t + 0.00095, "F.", 19, 183, S.LAST_ACK, S.TIME_WAIT, window=501,
           ts=(1002, 3_000_001), answers=fin)
    b.received(t + 0.001, ".", 183, 20, S.CLOSED, S.TIME_WAIT, window=509,
               ts=(3_000_002, 1002))
    # Probes on the same 4-tuple: a SYN below the old ISN every second; TIME-WAIT answers
    # each with an ACK of the old connection. At +20 s our FIN again (the re-FIN check),
    # which restarts TIME-WAIT: the old-connection ACKs last until +80 s.
    for second in range(1, 81):
        at = t + second + 0.00002 * (second % 3)
        if second == 20:
            b.sent(at, "F.", 19, 183, S.CLOSED, S.TIME_WAIT, window=501,
                           ts=(1002 + second * 1000, 3_000_002), note="our FIN again")
            b.received(at + RTT_NS / 1e9, ".", 183, 20, S.CLOSED, S.TIME_WAIT, window=509,
                       ts=(3_000_002 + second * 1000, 1002 + second * 1000),
                       note="re-ACKed: TIME-WAIT restarts")
            continue
        b.sent(at, "S", -100_000, 0, S.SYN_SENT, S.TIME_WAIT, options="MSTNW",
                     ts=(1002 + second * 1000, 0), note="SYN below the old ISN")
        b.received(at + RTT_NS / 1e9, ".", 183, 20, S.SYN_SENT, S.TIME_WAIT, window=509,
                   ts=(3_000_002 + second * 1000, 1002),
                   note="ACK of the old connection")
    at = t + 81.0
    b.sent(at, "S", -100_000, 0, S.SYN_SENT, S.TIME_WAIT, options="MSTNW",
           ts=(82_000, 0), note="SYN below the old ISN")
    synack = b.received(at + RTT_NS / 1e9, "S.", 0, -99_999, S.SYN_SENT, S.SYN_RECEIVED,
                        window=65160, options="MSTNW", ts=(3_081_000, 82_000),
                        note="a new connection: TIME-WAIT is over")
    b.sent(at + RTT_NS / 1e9 + 15e-6, "R", -99_999, 0, S.CLOSED, S.CLOSED, window=0,
           answers=synack, note="frees it")
    return Ladder(ProbeKind.TIMEWAIT, "TIME-WAIT: the peer closes first, then SYNs every 1 s",
                  40007, tuple(b.records))


def _timewait_above_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 270_000_000_000, 0x01010101, 0x02020202)
    t = b.handshake()
    fin = b.received(t + 0.0008, "F.", 1, 1, S.CLOSE_WAIT, S.FIN_WAIT_1, window=509,
                     note="the peer closes first")
    b.sent(t + 0.00083, "F.", 1, 2, S.LAST_ACK, S.TIME_WAIT, window=501, answers=fin)
    b.received(t + 0.0009, ".", 2, 2, S.CLOSED, S.TIME_WAIT, window=509)
    b.sent(t + 1.0, "S", 1_000_000, 0, S.SYN_SENT, S.TIME_WAIT, options="MSTNW",
                 note="SYN above the old sequence space")
    synack = b.received(t + 1.000048, "S.", 0, 1_000_001, S.SYN_SENT, S.SYN_RECEIVED,
                        window=65160, options="MSTNW", note="accepted: a new connection")
    b.sent(t + 1.00006, "R", 1_000_001, 0, S.CLOSED, S.CLOSED, window=0, answers=synack)
    return Ladder(ProbeKind.TIMEWAIT_ABOVE_ISN, "TIME-WAIT reuse: a SYN above the old space",
                  40008, tuple(b.records))


def _timewait_rst_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 275_000_000_000, 0x0F0F0F0F, 0x0E0E0E0E)
    t = b.handshake()
    fin = b.received(t + 0.0008, "F.", 1, 1, S.CLOSE_WAIT, S.FIN_WAIT_1, window=509,
                     note="the peer closes first")
    b.sent(t + 0.00083, "F.", 1, 2, S.LAST_ACK, S.TIME_WAIT, window=501, answers=fin)
    b.received(t + 0.0009, ".", 2, 2, S.CLOSED, S.TIME_WAIT, window=509)
    b.sent(t + 1.0, "R", 2, 0, S.CLOSED, S.TIME_WAIT, window=0,
           note="RST at exactly RCV.NXT",
           error="sendto: [Errno 1] Operation not permitted (a local firewall rule?)")
    return Ladder(ProbeKind.TIMEWAIT_RST, "RFC 1337: a RST into TIME-WAIT", 40009,
                  tuple(b.records),
                  notes=("our RST could not be sent: RFC 1337 behaviour is unknown",))


def _challenge_ladder() -> Ladder:
    b = _Builder(STARTED_NS + 280_000_000_000, 0x0ACE0ACE, 0x0DE0DE0D)
    t = b.handshake()
    b.sent(t + 0.01, "R", 5001, 0, S.ESTABLISHED, S.ESTABLISHED, window=0,
           note="RST in window, not at RCV.NXT")
    b.received(t + 0.010049, ".", 1, 1, S.ESTABLISHED, S.ESTABLISHED, window=509,
               note="challenge ACK")
    b.sent(t + 0.6, "R", 0x40000000, 0, S.ESTABLISHED, S.ESTABLISHED, window=0,
           note="RST outside the window")
    b.sent(t + 1.2, "S", 7, 0, S.ESTABLISHED, S.ESTABLISHED, options="MSTNW",
           note="SYN into the connection")
    b.received(t + 1.200049, ".", 1, 1, S.ESTABLISHED, S.ESTABLISHED, window=509,
               note="challenge ACK")
    # Rate test: 30 RSTs in window 50 ms apart; challenge ACKs at most one per 500 ms.
    at = t + 2.0
    for number in range(30):
        b.sent(at, "R", 5001 + number, 0, S.ESTABLISHED, S.ESTABLISHED, window=0,
               note="rate test")
        if number % 10 == 0:
            b.received(at + 0.000049, ".", 1, 1, S.ESTABLISHED, S.ESTABLISHED, window=509,
                       note="challenge ACK")
        at += 0.05
    b.sent(at + 0.5, "R", 1, 0, S.CLOSED, S.CLOSED, window=0, note="at RCV.NXT: ends it")
    return Ladder(ProbeKind.CHALLENGE, "RFC 5961: RSTs and a SYN into an established "
                  "connection", 40010, tuple(b.records))


def _p(name: PropertyName, value: bool | int | float | str | None, display: str,
       basis: Basis, evidence: str, *refs: tuple[ProbeKind, tuple[int, ...]],
       unit: str | None = None, error: float | None = None, rests_on: str | None = None,
       meaning: str | None = None) -> Property:
    return Property(
        name=name, value=value, display=display, basis=basis, evidence=evidence,
        segments=tuple(SegmentRef(kind, indices) for kind, indices in refs), unit=unit,
        error=error, rests_on=rests_on, meaning=meaning,
    )


def _properties() -> tuple[Property, ...]:
    P, B, K = PropertyName, Basis, ProbeKind
    m, i, u, n = B.MEASURED, B.INFERRED, B.UNKNOWN, B.NOT_MEASURED
    synack = (K.SYN, (1,))
    return (
        _p(P.HANDSHAKE_RTT_MS, 0.047, "0.047 ms", m,
           "the shortest SYN -> SYN/ACK of 4 handshakes (kernel timestamps)",
           (K.SYN, (0, 1)), (K.HALFOPEN, (0, 1)), unit="ms"),
        _p(P.MSS, 1460, "1460", m, "the SYN/ACK's MSS option", synack, unit="bytes",
           meaning="Ethernet MTU 1500 less 40"),
        _p(P.WINDOW, 65160, "65160", m, "the SYN/ACK's window field (unscaled)", synack,
           meaning="Linux: 45 x MSS rounded (tcp_rmem default)"),
        _p(P.WINDOW_SCALE, 7, "7 (x128)", m, "the SYN/ACK's window-scale option", synack,
           meaning="Linux default for a 6 MiB receive buffer"),
        _p(P.SACK, True, "offered", m, "SACK-permitted in the SYN/ACK", synack),
        _p(P.TIMESTAMPS, True, "offered", m, "timestamps in the SYN/ACK, TSecr echoes ours",
           synack),
        _p(P.OPTION_ORDER, "MSTNW", "MSS, SACK-perm, TS, NOP, WS", m,
           "the option kinds of the SYN/ACK in order", synack,
           meaning="Linux's order"),
        _p(P.ECN, True, "yes (ECE, no CWR)", m,
           "the SYN/ACK to our ECN-setup SYN had ECE set and CWR clear", (K.ECN, (0, 1)),
           meaning="Linux answers an ECN-setup SYN by default (tcp_ecn=2)"),
        _p(P.INITIAL_TTL, 64, "64", i, "the SYN/ACK arrived with TTL 64", synack,
           rests_on="fewer than 32 hops: 64 is the nearest common initial TTL at or above it",
           meaning="Linux, macOS, BSDs (Windows starts at 128)"),
        _p(P.INITIAL_RTO_S, 1.0, "1.000 s", m,
           "the first SYN/ACK to its first retransmission", (K.HALFOPEN, (1, 2)), unit="s",
           meaning="RFC 6298's 1 s"),
        _p(P.SYNACK_BACKOFF, 2.0, "x2.0", m,
           "ratio of successive retransmission intervals (1, 2, 4, 8, 16, 32 s)",
           (K.HALFOPEN, (1, 2, 3, 4, 5, 6, 7))),
        _p(P.SYNACK_RETRIES, 6, "6", m,
           "six retransmissions, then none in the 40 s watch", (K.HALFOPEN, (2, 3, 4, 5, 6, 7)),
           meaning="Linux tcp_synack_retries is 5 by default: raised here"),
        _p(P.SYNACK_GIVE_UP_S, 63.0, "63.0 s", m, "the first SYN/ACK to the last",
           (K.HALFOPEN, (1, 7)), unit="s"),
        _p(P.SYN_COOKIES, CookieMode.NOT_FOR_A_LONE_SYN.value, "not for a lone SYN", m,
           "the same SYN twice: the same ISN both times, so the request was kept",
           (K.COOKIE_CHECK, (1, 3)),
           meaning="cookies only when the SYN queue overflows, or never"),
        _p(P.CLOSE_KIND, "four-way", "four-way", m,
           "our FIN, its ACK, its FIN, our ACK", (K.CLOSE, (3, 4, 5, 6))),
        _p(P.CLOSE_FIN_DELAY_MS, 0.110, "0.110 ms", m, "our FIN to the peer's FIN",
           (K.CLOSE, (3, 5)), unit="ms", meaning="the application closed at once"),
        _p(P.FIN_RTO_S, 0.204, "204 ms", m, "the peer's FIN to its first retransmission",
           (K.FIN_RETRANSMIT, (5, 6)), unit="s", meaning="Linux: 200 ms + RTT variance"),
        _p(P.FIN_BACKOFF, 2.0, "x2.0", m, "ratio of successive FIN retransmission intervals",
           (K.FIN_RETRANSMIT, (5, 6, 7, 8, 9, 10, 11))),
        _p(P.FIN_RETRIES, None, "unknown", u,
           "the watch (15 s) ended while the peer still retransmitted: 6 seen so far",
           (K.FIN_RETRANSMIT, (6, 7, 8, 9, 10, 11))),
        _p(P.FIN_GIVE_UP, FinGiveUp.NEVER.value, "still retransmitting", m,
           "a retransmission 6.5 s after the first, none stopped before the watch ended",
           (K.FIN_RETRANSMIT, (11,))),
        _p(P.TIME_WAIT, True, "yes", m,
           "SYNs on the 4-tuple were answered by ACKs of the old connection",
           (K.TIMEWAIT, (9, 10))),
        _p(P.TIME_WAIT_S, 60.0, "60 s ± 1 s", m,
           "our FIN again at +20 s restarted it; the last old-connection ACK at +80 s, a "
           "SYN/ACK to the SYN at +81 s", (K.TIMEWAIT, (47, 168, 170)), unit="s", error=1.0,
           meaning="Linux's fixed TCP_TIMEWAIT_LEN"),
        _p(P.TIME_WAIT_REFIN, True, "re-ACKed, restarts", m,
           "our FIN again at +20 s was ACKed", (K.TIMEWAIT, (47, 48))),
        _p(P.TIME_WAIT_REOPEN_ABOVE_ISN, True, "accepted", m,
           "a SYN above the old sequence space got a SYN/ACK", (K.TIMEWAIT_ABOVE_ISN, (6, 7)),
           meaning="RFC 9293 §3.10.7.4 / RFC 6191"),
        _p(P.TIME_WAIT_REOPEN_NEWER_TSVAL, None, "not measured", n,
           "not run: the TIME-WAIT probes' --max-time (70 s) left no time for its connection"),
        _p(P.RFC1337, None, "unknown", u,
           "our RST into TIME-WAIT could not be sent (EPERM)", (K.TIMEWAIT_RST, (6,))),
        _p(P.CHALLENGE_RST, "challenge-ack", "challenge ACK", m,
           "a RST in window, not at RCV.NXT, got an ACK of RCV.NXT", (K.CHALLENGE, (3, 4)),
           meaning="RFC 5961 §3.2"),
        _p(P.RST_OUT_OF_WINDOW, "ignored", "ignored", m,
           "no answer to a RST outside the window, and the connection lived on",
           (K.CHALLENGE, (5,))),
        _p(P.CHALLENGE_SYN, "challenge-ack", "challenge ACK", m,
           "a SYN into the connection got an ACK of RCV.NXT", (K.CHALLENGE, (6, 7)),
           meaning="RFC 5961 §4.2"),
        _p(P.CHALLENGE_ACK_INTERVAL_S, 0.5, "500 ms", i,
           "30 RSTs 50 ms apart drew 3 challenge ACKs, 500 ms apart", (K.CHALLENGE, (9, 20, 31)),
           unit="s", rests_on="our RSTs were not lost (3 answers to 30 could be loss)",
           meaning="Linux's per-socket limit (tcp_invalid_ratelimit, 500 ms)"),
    )


def sample_profile() -> ProfileResult:
    """A full profile of a Linux-like peer; the same object (equal) on every call.

    Returns:
        The result, every property present, ladders for every probe but the newer-TSval one.
    """
    properties = _properties()
    assert [p.name for p in properties] == list(PropertyName)
    return ProfileResult(
        host="web.test",
        target=TARGET,
        port=PORT,
        source=SOURCE,
        quick=False,
        started_ns=STARTED_NS,
        elapsed_s=284.3,
        properties=properties,
        match=StackMatch(
            stack=None,
            closest="Linux 6.1",
            agree=(
                PropertyName.MSS, PropertyName.WINDOW, PropertyName.WINDOW_SCALE,
                PropertyName.SACK, PropertyName.TIMESTAMPS, PropertyName.OPTION_ORDER,
                PropertyName.INITIAL_TTL, PropertyName.INITIAL_RTO_S,
                PropertyName.SYNACK_BACKOFF, PropertyName.TIME_WAIT_S,
                PropertyName.CHALLENGE_RST, PropertyName.CHALLENGE_ACK_INTERVAL_S,
                PropertyName.ECN,
            ),
            disagree=(PropertyName.SYNACK_RETRIES,),
            explanation=(
                "No known stack agrees on every compared property. Closest: Linux 6.1, "
                "which agrees on 13 of 14; it retransmits a SYN/ACK 5 times by default, "
                "6 here (tcp_synack_retries raised?)."
            ),
            candidates=(),
        ),
        ladders=(
            _syn_ladder(), _ecn_ladder(), _halfopen_ladder(), _cookie_ladder(),
            _close_ladder(), _fin_retransmit_ladder(), _timewait_ladder(),
            _timewait_above_ladder(), _timewait_rst_ladder(), _challenge_ladder(),
        ),
        notes=(
            "the TIME-WAIT probes took 3 connections and 82 s; run with --quick to skip them",
            "kernel timestamps on every segment",
        ),
    )
