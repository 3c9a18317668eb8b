"""The half-open and cookie-check probes on virtual time against a scripted Linux-like peer.

No root, no sockets, no clock: ``Sim`` keeps integer nanoseconds, delivers segments after a
one-way delay, fires the peer's SYN/ACK timers and the probes' deadlines in time order, and
hands the probes stamps as the engine would (kernel RX stamp = arrival, TX stamp 1 µs after).
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.packet import Raw

from prober.core.cookies import IsnKey
from prober.core.halfopen import (
    DEFAULT_FIRST_SYN,
    DEFAULT_MAX_WAIT,
    DEFAULT_SECOND_SYN,
    CookieAnswer,
    CookieCheckProbe,
    CookieEvidence,
    CookieOptions,
    CookieVerdict,
    EndedBy,
    HalfOpenProbe,
    HalfOpenResult,
    combine_cookie_evidence,
    cookie_option_encoding,
    cookie_timestamp,
    judge_timestamps,
    mod64_distance,
    tsval_at,
)
from prober.core.handshake_conversation import MAX_LOGGED_STRAYS
from prober.core.packets import TcpTemplate
from prober.core.parse import parse_packet
from prober.core.states import TcpState
from prober.core.syn import PortState, Reason
from prober.core.timing import Clock, Stamp
from prober.core.wire import Packet, TcpFlags
from prober.engine.engine import DrivenProbe
from prober.output import conversation

SRC4, DST4, ROUTER4 = "198.19.0.1", "198.19.1.2", "198.19.0.2"
SRC6, DST6 = "2001:2:0:100::1", "2001:2:0:101::2"
SPORT, COOKIE_SPORT, DPORT = 40000, 40001, 80
KEY = IsnKey(b"0123456789abcdef")
MS, S = 1_000_000, 1_000_000_000
START = 1000 * S  # virtual monotonic time of the first SYN
MASK = 0xFFFFFFFF
PEER_ISN = 0x0BADCAFE
USER_LAG = 20_000  # user-space receive stamps lag the kernel's by 20 µs

SYN_ACK = TcpFlags.SYN | TcpFlags.ACK

Probe = HalfOpenProbe | CookieCheckProbe
P = TypeVar("P", HalfOpenProbe, CookieCheckProbe)


def addresses(version: int) -> tuple[bytes, bytes]:
    src, dst = (SRC4, DST4) if version == 4 else (SRC6, DST6)
    return ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed


def isn_for(version: int, sport: int) -> int:
    src, dst = addresses(version)
    return KEY.isn(src, dst, sport, DPORT, 1)


@functools.cache
def syn_template(version: int) -> TcpTemplate:
    return TcpTemplate(version, TcpFlags.SYN)


@functools.cache
def peer_template(version: int, flags: TcpFlags, wscale: bool, sack: bool, ts: bool) -> TcpTemplate:
    return TcpTemplate(
        version,
        flags,
        window=65160,
        window_scale=7 if wscale else None,
        sack_permitted=sack,
        timestamps=ts,
    )


def halfopen(version: int = 4, **kwargs: Any) -> HalfOpenProbe:
    src, dst = addresses(version)
    return HalfOpenProbe(
        template=syn_template(version),
        src=src,
        dst=dst,
        sport=SPORT,
        dport=DPORT,
        isn=isn_for(version, SPORT),
        **kwargs,
    )


def cookie_check(version: int = 4, **kwargs: Any) -> CookieCheckProbe:
    src, dst = addresses(version)
    return CookieCheckProbe(
        src=src,
        dst=dst,
        sport=COOKIE_SPORT,
        dport=DPORT,
        isn=isn_for(version, COOKIE_SPORT),
        **kwargs,
    )


# -- a scripted Linux peer ----------------------------------------------------------------


@dataclass
class Request:
    """A Linux request sock: what the listener keeps between SYN/ACK and the final ACK."""

    their_isn: int  # our ISN, as the peer saw it
    ts_recent: int  # our SYN's TSval, echoed in every SYN/ACK of the request
    sack: bool
    wscale: bool
    next_timer: int
    num_timeout: int = 0


@dataclass
class Peer:
    """A Linux-like listener (tcp_check_req, reqsk_timer_handler, syncookies.c).

    ``synack_retries`` retransmissions at 1, 2, 4 ... s intervals, then the request is
    dropped silently; a repeated SYN with the request's ISN gets the SYN/ACK again (same
    options, same TSecr); a RST with seq = ISN+1 drops the request; with ``cookies`` nothing
    is kept and the TSval carries the SYN's options (``cookie_init_timestamp``).
    """

    version: int = 4
    owd: int = 5 * MS  # one-way delay, each way
    listening: bool = True
    synack_retries: int = 5
    cookies: bool = False
    timestamps: bool = True
    sack: bool = True
    ts_base: int = 7_000_000  # the peer's ms clock at virtual time 0
    ts_offset: int = 0x1234_5678  # per address pair (tcp_timestamps=1)
    icmp: bool = False
    silent: bool = False
    reset_after: int | None = None  # send a RST instead of retransmission number n+1
    first_rto: int = S  # Linux's TCP_TIMEOUT_INIT; 4.4BSD-derived stacks: about 6 s
    rto_cap: int = 120 * S  # Linux's TCP_RTO_MAX; BSDs: 64 s
    lost_retransmissions: int = 0  # the path drops the first n retransmissions
    icmp_type: int = 3  # with ``icmp``: 3 (unreachable, code 13); 5 is a redirect
    answer_syns: int | None = None  # answer only this many SYNs
    requests: dict[int, Request] = field(default_factory=dict)
    freed: list[int] = field(default_factory=list)  # ports whose request our RST dropped
    received: list[tuple[int, Packet]] = field(default_factory=list)
    syns_seen: int = 0

    def addresses(self) -> tuple[bytes, bytes]:
        ours, theirs = addresses(self.version)
        return theirs, ours  # the peer sends from dst to src

    def ts_now(self, t: int) -> int:
        return self.ts_base + t // MS

    def next_timer(self) -> int | None:
        return min((r.next_timer for r in self.requests.values()), default=None)

    def on_packet(self, t: int, raw: bytes) -> list[tuple[int, bytes]]:
        packet = parse_packet(raw)
        self.received.append((t, packet))
        tcp = packet.tcp
        assert tcp is not None
        me, you = self.addresses()
        if self.icmp:
            quoted = Raw(raw[:28])
            error = ICMP(type=self.icmp_type, code=13 if self.icmp_type == 3 else 1)
            return [(t, bytes(IP(src=ROUTER4, dst=SRC4) / error / quoted))]
        if tcp.flags & TcpFlags.RST:
            request = self.requests.get(tcp.sport)
            if request is not None and tcp.seq == (request.their_isn + 1) & MASK:
                del self.requests[tcp.sport]
                self.freed.append(tcp.sport)
            return []
        if tcp.flags != TcpFlags.SYN:
            return []
        if not self.listening:
            rst = peer_template(self.version, TcpFlags.RST | TcpFlags.ACK, False, False, False)
            return [(t, rst.build(me, you, DPORT, tcp.sport, 0, (tcp.seq + 1) & MASK))]
        self.syns_seen += 1
        if self.silent or (self.answer_syns is not None and self.syns_seen > self.answer_syns):
            return []
        request = self.requests.get(tcp.sport)
        if request is not None and request.their_isn == tcp.seq:
            return [(t, self.syn_ack(tcp.sport, request, t))]  # a retransmitted SYN
        ts = tcp.options.timestamp
        wscale = tcp.options.window_scale is not None
        sack = tcp.options.sack_permitted and self.sack
        if self.cookies:
            tsval = 0
            if ts is not None and self.timestamps:
                encoding = cookie_option_encoding(tcp.options.window_scale, sack)
                tsval = (cookie_timestamp(self.ts_now(t), encoding) + self.ts_offset) & MASK
            cookie_isn = (tcp.sport * 2654435761 + tcp.seq * 40503 + 0x5EED) & MASK
            with_ts = ts is not None and self.timestamps
            template = peer_template(self.version, SYN_ACK, wscale, sack, with_ts)
            ack = (tcp.seq + 1) & MASK
            tsecr = 0 if ts is None else ts[0]
            return [(t, template.build(me, you, DPORT, tcp.sport, cookie_isn, ack, tsval, tsecr))]
        request = Request(tcp.seq, 0 if ts is None else ts[0], sack, wscale, t + self.first_rto)
        self.requests[tcp.sport] = request
        return [(t, self.syn_ack(tcp.sport, request, t))]

    def syn_ack(self, port: int, request: Request, t: int) -> bytes:
        me, you = self.addresses()
        template = peer_template(
            self.version, SYN_ACK, request.wscale, request.sack, self.timestamps
        )
        tsval = (self.ts_now(t) + self.ts_offset) & MASK
        ack = (request.their_isn + 1) & MASK
        return template.build(me, you, DPORT, port, PEER_ISN, ack, tsval, request.ts_recent)

    def on_timer(self, t: int) -> list[tuple[int, bytes]]:
        out = []
        for port, request in list(self.requests.items()):
            if request.next_timer > t:
                continue
            if self.reset_after is not None and request.num_timeout == self.reset_after:
                me, you = self.addresses()
                rst = peer_template(self.version, TcpFlags.RST, False, False, False)
                out.append((t, rst.build(me, you, DPORT, port, (PEER_ISN + 1) & MASK, 0)))
                del self.requests[port]
            elif request.num_timeout >= self.synack_retries:
                del self.requests[port]  # dropped silently
            else:
                if request.num_timeout >= self.lost_retransmissions:
                    out.append((t, self.syn_ack(port, request, t)))
                request.num_timeout += 1
                request.next_timer = t + min(self.first_rto << request.num_timeout, self.rto_cap)
        return out


# -- the engine, on virtual time ----------------------------------------------------------


@dataclass
class Sim:
    peer: Peer
    kernel_rx: bool = True
    kernel_tx: bool = True
    now: int = START
    probes: dict[int, Probe] = field(default_factory=dict)
    sent: list[tuple[int, int, Packet]] = field(default_factory=list)  # (time, sport, packet)
    accepted: list[tuple[int, bool]] = field(default_factory=list)
    _heap: list[tuple[int, int, str, bytes]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _indices: dict[int, int] = field(default_factory=dict)

    def launch(self, *probes: Probe) -> Sim:
        for probe in probes:
            self.probes[probe.sport] = probe
            self._indices[probe.sport] = 0
            probe.start(self.now / S)
            self._flush(probe)
        return self

    def run(self, until: float | None = None, interrupt_at: float | None = None) -> Sim:
        limit = None if until is None else round(until * S)
        interrupt = None if interrupt_at is None else round(interrupt_at * S)
        for _ in range(100_000):
            events: list[tuple[int, int, int, float]] = []
            if self._heap:
                events.append((self._heap[0][0], 0, 0, 0.0))
            timer = self.peer.next_timer()
            if timer is not None:
                events.append((timer, 1, 0, 0.0))
            for port, probe in self.probes.items():
                deadline = probe.next_deadline()
                if deadline is not None:
                    events.append((math.ceil(deadline * S), 2, port, deadline))
            if interrupt is not None:
                events.append((interrupt, 3, 0, 0.0))
            if not events:
                return self
            t, kind, port, deadline = min(events)
            if limit is not None and t > limit:
                return self
            self.now = max(self.now, t)
            if kind == 0:
                self._deliver()
            elif kind == 1:
                self._send_from_peer(self.peer.on_timer(self.now))
            elif kind == 2:
                probe = self.probes[port]
                probe.handle_timer(max(self.now / S, deadline))
                self._flush(probe)
            else:
                interrupt = None
                for probe in self.probes.values():
                    probe.interrupt(self.now / S)
                    self._flush(probe)
        raise AssertionError("the simulation did not settle")

    def _deliver(self) -> None:
        t, _, to, raw = heapq.heappop(self._heap)
        if to == "peer":
            self._send_from_peer(self.peer.on_packet(t, raw))
            return
        packet = parse_packet(raw)
        if packet.tcp is not None:
            port = packet.tcp.dport
        else:
            assert packet.icmp is not None and packet.icmp.quoted.sport is not None
            port = packet.icmp.quoted.sport
        probe = self.probes[port]
        stamp = Stamp(t + USER_LAG, t if self.kernel_rx else None)
        self.accepted.append((port, probe.receive(packet, t / S, stamp)))
        self._flush(probe)

    def _send_from_peer(self, segments: list[tuple[int, bytes]]) -> None:
        for t, raw in segments:
            heapq.heappush(self._heap, (t + self.peer.owd, next(self._order), "probe", raw))

    def _flush(self, probe: Probe) -> None:
        for raw in probe.segments_to_send():
            index = self._indices[probe.sport]
            self._indices[probe.sport] += 1
            probe.sent(index, Stamp(self.now))
            if self.kernel_tx:
                probe.send_kernel_stamp(index, self.now + 1_000)
            self.sent.append((self.now, probe.sport, parse_packet(raw)))
            heapq.heappush(self._heap, (self.now + self.peer.owd, next(self._order), "peer", raw))

    def sent_by(self, port: int) -> list[tuple[int, Packet]]:
        return [(t, p) for t, sport, p in self.sent if sport == port]


def flags_of(packet: Packet) -> str:
    assert packet.tcp is not None
    return packet.tcp.flags.compact()


def assert_frees_request(sim: Sim, port: int, isn: int, version: int = 4) -> None:
    """Our last segment is the RST that frees the request: R only, seq ISN+1, no options."""
    _, rst = sim.sent_by(port)[-1]
    tcp = rst.tcp
    assert tcp is not None and rst.version == version
    src, dst = addresses(version)
    assert (rst.src, rst.dst, tcp.sport, tcp.dport) == (src, dst, port, DPORT)
    assert tcp.flags == TcpFlags.RST
    assert (tcp.seq, tcp.ack) == ((isn + 1) & MASK, 0)
    assert tcp.options.order == "" and tcp.payload == b""


# -- the half-open probe ------------------------------------------------------------------


def test_syn_has_linux_options_our_isn_and_a_tsval_from_now() -> None:
    probe = halfopen(syn_timeout=2.0)
    probe.start(12.3456)
    [raw] = probe.segments_to_send()
    tcp = parse_packet(raw).tcp
    assert tcp is not None
    assert tcp.flags == TcpFlags.SYN and tcp.seq == probe.isn
    assert tcp.options.order == "MSTNW" and tcp.options.window_scale == 7
    assert tcp.options.timestamp == (tsval_at(12.3456), 0) == (12345, 0)
    assert probe.next_deadline() == pytest.approx(14.3456)
    assert not probe.done and probe.ended_by is None


def silence_after(retries: int) -> float:
    """Seconds from the first SYN/ACK until the probe declares silence, for Linux's schedule."""
    if retries == 0:
        return 1.5 * 6.0 + 0.5  # the largest known first timeout (4.4BSD's 6 s) must pass
    last = float((1 << retries) - 1)  # retransmissions at 1, 3, 7, ... s
    # twice the last interval plus a timer tick, at most the largest known cap (RFC 1122's)
    expected = float(min((1 << retries) + 1, 240))
    return last + 1.5 * expected + 0.5


@pytest.mark.parametrize("retries", [0, 1, 2, 5, 7])
def test_linux_retransmissions_are_recorded_until_silence(retries: int) -> None:
    peer = Peer(synack_retries=retries, owd=5 * MS)
    probe = halfopen(max_wait=1000.0)
    sim = Sim(peer).launch(probe).run()
    result = probe.result()
    assert (result.state, result.reason) == (PortState.OPEN, Reason.SYN_ACK)
    assert result.rtt is not None and result.rtt.clock is Clock.KERNEL
    assert result.rtt.ns == 2 * peer.owd - 1_000  # from the TX stamp (1 µs after the send)
    assert result.clock is Clock.KERNEL
    arrivals = result.syn_acks
    assert len(arrivals) == retries + 1 and result.retransmissions == retries
    assert [a.number for a in arrivals] == list(range(retries + 1))
    assert [a.retransmission for a in arrivals] == [False] + [True] * retries
    assert {a.seq for a in arrivals} == {PEER_ISN}
    assert arrivals[0].interval_us is None and arrivals[0].since_first_us == 0
    for k, arrival in enumerate(arrivals[1:], start=1):
        assert arrival.interval_us == 2 ** (k - 1) * 1e6
        assert arrival.since_first_us == (2**k - 1) * 1e6
        assert arrival.tsval is not None and arrivals[0].tsval is not None
        assert arrival.tsval - arrivals[0].tsval == (2**k - 1) * 1000  # the peer's ms clock
    assert result.last_syn_ack_after_us == (2**retries - 1) * 1e6
    assert result.ended_by is EndedBy.SILENCE
    first_arrival = 2 * peer.owd / S
    assert result.ended_after_s == pytest.approx(first_arrival + silence_after(retries))
    rst_time, _ = sim.sent_by(SPORT)[-1]
    assert rst_time == pytest.approx(START + (first_arrival + silence_after(retries)) * S, abs=1)
    assert_frees_request(sim, SPORT, probe.isn)
    assert result.rst_sent and result.peer_state is TcpState.CLOSED
    assert result.peer_gave_up is CookieAnswer.YES and result.caveat is None
    last_s = result.last_syn_ack_after_us / 1e6
    assert result.silence_needed_s == pytest.approx(silence_after(retries) - last_s)
    # No retransmission alone is weak evidence (tcp_synack_retries=0 looks the same).
    assert result.cookies.verdict is (CookieAnswer.UNKNOWN if retries == 0 else CookieAnswer.NO)


def test_ladder_states_follow_the_conversation() -> None:
    probe = halfopen()
    Sim(Peer(synack_retries=1)).launch(probe).run()
    ladder = [
        (r.direction.value, r.flags, r.our_state, r.peer_state, r.note)
        for r in probe.result().segments
    ]
    assert ladder == [
        ("sent", "S", TcpState.SYN_SENT, TcpState.LISTEN, ""),
        ("received", "S.", TcpState.SYN_SENT, TcpState.SYN_RECEIVED, ""),
        ("received", "S.", TcpState.SYN_SENT, TcpState.SYN_RECEIVED, "retransmission"),
        ("sent", "R", TcpState.CLOSED, TcpState.CLOSED, "frees the peer's request"),
    ]
    records = probe.result().segments
    assert records[1].relative_seq == 0 and records[1].relative_ack == 1
    assert records[3].relative_seq == 1


def test_a_peer_rst_ends_the_watch_and_we_send_none() -> None:
    peer = Peer(synack_retries=5, reset_after=2)
    probe = halfopen()
    sim = Sim(peer).launch(probe).run()
    result = probe.result()
    assert result.ended_by is EndedBy.RST and result.retransmissions == 2
    assert not result.rst_sent
    assert [flags_of(p) for _, p in sim.sent_by(SPORT)] == ["S"]
    last = result.segments[-1]
    assert (last.direction.value, last.flags) == ("received", "R")
    assert (last.our_state, last.peer_state) == (TcpState.CLOSED, TcpState.CLOSED)
    assert result.peer_state is TcpState.CLOSED
    # the RST came 4 s after the first SYN/ACK (where retransmission 3 was due)
    assert result.ended_after_s == pytest.approx(2 * peer.owd / S + 7.0)


def peer_segment(probe: Probe, flags: TcpFlags, seq: int, ack: int, tsval: int = 0) -> Packet:
    version = 4 if len(probe.src) == 4 else 6
    syn = bool(flags & TcpFlags.SYN)  # SYN/ACKs with all options, RSTs with none
    template = peer_template(version, flags, syn, syn, syn)
    return parse_packet(template.build(probe.dst, probe.src, DPORT, probe.sport, seq, ack, tsval))


def started(probe: P, now: float = 100.0) -> P:
    probe.start(now)
    for index, _ in enumerate(probe.segments_to_send()):
        probe.sent(index, Stamp(int(now * S)))
    return probe


def test_rst_validation_after_the_syn_ack() -> None:
    probe = started(halfopen())
    syn_ack = peer_segment(probe, SYN_ACK, PEER_ISN, probe.isn + 1, 5)
    assert probe.receive(syn_ack, 100.01, Stamp(1))
    # A bare RST outside our window (64240 from the peer's ISN+1) proves nothing ...
    far = peer_segment(probe, TcpFlags.RST, PEER_ISN + 1 + 64240, 0)
    assert not probe.receive(far, 100.02, Stamp(2)) and not probe.done
    # ... nor a RST/ACK acking something we never sent, nor one from another port.
    bad_ack = peer_segment(probe, TcpFlags.RST | TcpFlags.ACK, PEER_ISN + 1, probe.isn + 7)
    assert not probe.receive(bad_ack, 100.03, Stamp(3)) and not probe.done
    # In the window but not at RCV.NXT: a blind guess (RFC 5961 §3), counted, no verdict.
    inside = peer_segment(probe, TcpFlags.RST, PEER_ISN + 1 + 64239, 0)
    assert not probe.receive(inside, 100.04, Stamp(4)) and not probe.done
    # Exactly the peer's ISN + 1 resets.
    exact = peer_segment(probe, TcpFlags.RST, PEER_ISN + 1, 0)
    assert probe.receive(exact, 100.05, Stamp(5))
    result = probe.result()
    assert result.ended_by is EndedBy.RST and result.peer_gave_up is CookieAnswer.YES
    assert result.invalid_by_kind == {"stray-rst": 2, "wrong-ack": 1}
    assert result.invalid == 3


def test_a_syn_ack_with_a_wrong_ack_is_refused() -> None:
    probe = started(halfopen())
    syn_ack = peer_segment(probe, SYN_ACK, PEER_ISN, probe.isn + 2)
    assert not probe.receive(syn_ack, 100.01, Stamp(1))
    assert not probe.done and probe.arrivals() == ()


def test_max_wait_cuts_the_watch_and_our_rst_frees_the_request() -> None:
    peer = Peer(synack_retries=5)
    probe = halfopen(max_wait=5.0)
    sim = Sim(peer).launch(probe).run()
    result = probe.result()
    assert result.ended_by is EndedBy.MAX_WAIT
    assert result.ended_after_s == pytest.approx(5.0)
    assert result.retransmissions == 2  # at 1 and 3 s; the next was due at 7 s
    assert_frees_request(sim, SPORT, probe.isn)
    assert peer.freed == [SPORT] and not peer.requests
    assert result.rst_sent and result.peer_state is TcpState.CLOSED
    assert result.cookies.verdict is CookieAnswer.NO


def test_interrupt_frees_the_request() -> None:
    peer = Peer(synack_retries=5)
    probe = halfopen()
    sim = Sim(peer).launch(probe).run(interrupt_at=START / S + 2.5)
    result = probe.result()
    assert result.ended_by is EndedBy.INTERRUPTED and result.retransmissions == 1
    assert result.ended_after_s == pytest.approx(2.5)
    assert_frees_request(sim, SPORT, probe.isn)
    assert peer.freed == [SPORT]


def test_interrupt_before_any_answer_sends_no_rst() -> None:
    probe = halfopen(syn_timeout=5.0)
    sim = Sim(Peer(silent=True)).launch(probe).run(interrupt_at=START / S + 1.0)
    result = probe.result()
    assert (result.ended_by, result.reason) == (EndedBy.INTERRUPTED, Reason.INTERRUPTED)
    assert [flags_of(p) for _, p in sim.sent_by(SPORT)] == ["S"]


def test_leave_open_sends_no_rst_and_the_peer_keeps_retransmitting() -> None:
    peer = Peer(synack_retries=5)
    probe = halfopen(max_wait=5.0, leave_open=True)
    sim = Sim(peer).launch(probe).run()
    result = probe.result()
    assert result.ended_by is EndedBy.MAX_WAIT and not result.rst_sent and result.leave_open
    assert [flags_of(p) for _, p in sim.sent_by(SPORT)] == ["S"]
    assert peer.freed == []
    # Its later retransmissions (7, 15, 31 s) come after the end: late, and still no RST.
    assert result.late == 3
    assert result.peer_state is TcpState.SYN_RECEIVED


def test_closed_port_ends_at_the_rst() -> None:
    probe = halfopen()
    sim = Sim(Peer(listening=False)).launch(probe).run()
    result = probe.result()
    assert (result.state, result.reason) == (PortState.CLOSED, Reason.RST)
    assert result.ended_by is EndedBy.NO_SYN_ACK and result.syn_acks == ()
    assert result.rtt is not None and result.tcp is not None and result.tcp.flags == "R."
    assert not result.rst_sent and [flags_of(p) for _, p in sim.sent_by(SPORT)] == ["S"]
    assert [(r.flags, r.our_state, r.peer_state) for r in result.segments] == [
        ("S", TcpState.SYN_SENT, TcpState.LISTEN),
        ("R.", TcpState.CLOSED, TcpState.CLOSED),
    ]
    assert result.cookies.verdict is CookieAnswer.UNKNOWN
    assert result.last_syn_ack_after_us is None


def test_icmp_unreachable_quoting_our_syn_means_filtered() -> None:
    probe = halfopen()
    Sim(Peer(icmp=True)).launch(probe).run()
    result = probe.result()
    assert (result.state, result.reason) == (PortState.FILTERED, Reason.ICMP_UNREACHABLE)
    assert result.icmp is not None and (result.icmp.source, result.icmp.code) == (ROUTER4, 13)
    assert result.ended_by is EndedBy.NO_SYN_ACK and not result.rst_sent
    assert [r.flags for r in result.segments] == ["S"]


def test_silence_before_any_syn_ack_means_filtered_at_syn_timeout() -> None:
    probe = halfopen(syn_timeout=2.0)
    Sim(Peer(silent=True)).launch(probe).run()
    result = probe.result()
    assert (result.state, result.reason) == (PortState.FILTERED, Reason.NO_RESPONSE)
    assert result.ended_by is EndedBy.NO_SYN_ACK and result.ended_after_s == pytest.approx(2.0)
    assert result.rtt is None and not result.rst_sent


@pytest.mark.parametrize("leave_open", [False, True])
def test_a_late_syn_ack_gets_its_request_freed(leave_open: bool) -> None:
    peer = Peer(owd=600 * MS, synack_retries=1)  # an RTT of 1.2 s, beyond syn_timeout
    probe = halfopen(syn_timeout=1.0, leave_open=leave_open)
    sim = Sim(peer).launch(probe).run()
    result = probe.result()
    assert (result.state, result.reason) == (PortState.FILTERED, Reason.NO_RESPONSE)
    assert result.late >= 1 and result.syn_acks == ()
    flags = [flags_of(p) for _, p in sim.sent_by(SPORT)]
    if leave_open:
        assert flags == ["S"] and peer.freed == []
    else:
        assert flags == ["S", "R"] and peer.freed == [SPORT] and result.rst_sent
        assert_frees_request(sim, SPORT, probe.isn)


def test_other_seqs_and_duplicates_are_told_apart_from_retransmissions() -> None:
    probe = started(halfopen())
    ack = probe.isn + 1
    other = PEER_ISN + 99
    for now, seq, tsval, accepted in [
        (100.010, PEER_ISN, 5000, True),
        (100.011, PEER_ISN, 5000, True),  # the same segment again: a copy made on the path
        (101.010, PEER_ISN, 6000, True),
        (102.000, other, 7000, False),  # another seq: a flood or a spoofed copy, not ours
        (103.000, other, 8000, False),
    ]:
        syn_ack = peer_segment(probe, SYN_ACK, seq, ack, tsval)
        assert probe.receive(syn_ack, now, Stamp(int(now * S))) is accepted
    arrivals = probe.arrivals()
    assert [(a.retransmission, a.duplicate) for a in arrivals] == [
        (False, False),
        (False, True),
        (True, False),
    ]
    # The other seqs did not move the schedule: silence is due 1.5 * twice (the 1 s interval
    # + 0.5 s) + 0.5 s after the retransmission.
    assert probe.next_deadline() == pytest.approx(101.010 + 1.5 * 3.0 + 0.5)
    probe.interrupt(103.5)
    result = probe.result()
    assert result.retransmissions == 1 and result.invalid_by_kind == {"other-seq": 2}
    notes = ["", "duplicate", "retransmission", "ignored: other-seq", "ignored: other-seq"]
    assert [r.note for r in result.segments[1:6]] == notes


def test_user_clock_when_a_tx_stamp_is_missing() -> None:
    probe = halfopen()
    Sim(Peer(synack_retries=1), kernel_tx=False).launch(probe).run()
    result = probe.result()
    assert result.clock is Clock.USER
    assert result.rtt is not None and result.rtt.clock is Clock.USER
    assert result.syn_acks[0].time_ns == START + 2 * 5 * MS + USER_LAG
    assert result.syn_acks[1].interval_us == 1e6
    assert {r.clock for r in result.segments} == {Clock.USER}


def test_ipv6_half_open() -> None:
    probe = halfopen(6)
    sim = Sim(Peer(version=6, synack_retries=1)).launch(probe).run()
    result = probe.result()
    assert result.target == DST6 and result.retransmissions == 1
    assert result.ended_by is EndedBy.SILENCE
    assert_frees_request(sim, SPORT, probe.isn, version=6)


def test_send_failure_of_the_syn_ends_the_probe() -> None:
    probe = halfopen()
    probe.start(1.0)
    probe.segments_to_send()
    probe.send_failed(0, "Operation not permitted")
    result = probe.result()
    assert (result.reason, result.ended_by) == (Reason.SEND_FAILED, EndedBy.NO_SYN_ACK)
    assert result.error == "Operation not permitted" and probe.next_deadline() is None
    assert result.segments == ()


def test_result_is_refused_until_the_end_and_start_only_once() -> None:
    probe = started(halfopen())
    with pytest.raises(RuntimeError):
        probe.result()
    with pytest.raises(RuntimeError):
        probe.start(101.0)
    with pytest.raises(ValueError):
        halfopen(max_wait=0)


HALFOPEN_KEYS = {
    "type", "probe", "target", "port", "source", "source_port", "state", "reason", "rtt_us",
    "rtt_clock", "sent_ns", "tcp", "icmp", "syn_acks", "clock", "retransmissions",
    "ended_by", "ended_after_s", "last_syn_ack_after_us", "peer_gave_up", "caveat",
    "silence_needed_s", "invalid", "invalid_by_kind", "notices", "icmp_notices", "rst_sent",
    "leave_open",
    "peer_state", "late", "cookies", "cookie_check", "segments", "error",
}
ARRIVAL_KEYS = {
    "number", "time_ns", "since_first_us", "interval_us", "seq", "tsval", "window", "options",
    "retransmission", "duplicate",
}
EVIDENCE_KEYS = {
    "type", "verdict", "explanation", "tsval1", "tsval2", "encoding1", "encoding2",
    "expected_mod64", "observed_mod64", "elapsed_ms", "elapsed_mod64", "tolerance",
    "syn_ack2_answers", "seq1", "seq2", "reason", "source_port", "rst_sent", "late", "segments",
    "invalid", "invalid_by_kind", "notices", "icmp_notices",
}


def test_to_dict_schemas_are_stable_and_json() -> None:
    peer = Peer(synack_retries=1)
    probe, check = halfopen(), cookie_check()
    Sim(peer).launch(probe, check).run()
    result = probe.result().with_cookie_check(check.result())
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == HALFOPEN_KEYS
    assert set(data["syn_acks"][0]) == ARRIVAL_KEYS
    assert set(data["cookie_check"]) == EVIDENCE_KEYS
    assert set(data["cookies"]) == {"verdict", "reasons", "clues"}
    assert data["type"] == "halfopen" and data["ended_by"] == "silence"
    assert data["state"] == "open" and data["peer_state"] == "CLOSED"
    assert data["syn_acks"][1]["retransmission"] is True
    assert data["cookies"]["verdict"] == "no"


def test_probes_satisfy_the_engine_protocol() -> None:
    probes: list[DrivenProbe] = [halfopen(), cookie_check()]
    for probe in probes:
        assert not probe.done and probe.next_deadline() is None


# -- the cookie check ---------------------------------------------------------------------


def test_kernel_cookie_timestamp_formula() -> None:
    assert cookie_option_encoding(7, True) == 23 == DEFAULT_FIRST_SYN.encoding
    assert cookie_option_encoding(2, False) == 2 == DEFAULT_SECOND_SYN.encoding
    assert cookie_option_encoding(None, True) == 0x1F and cookie_option_encoding(None, False) == 15
    assert cookie_option_encoding(2, False, ecn=True) == 34
    assert cookie_timestamp(1000, 23) == 983  # 960 | 23 = 983 <= 1000
    assert cookie_timestamp(970, 23) == 919  # 960 | 23 = 983 > 970: one step of 64 back
    with pytest.raises(ValueError):
        CookieOptions(15, False)


@given(ts_now=st.integers(64, 2**40), encoding=st.integers(0, 63))
def test_cookie_timestamp_ends_in_the_encoding_and_never_runs_ahead(
    ts_now: int, encoding: int
) -> None:
    ts = cookie_timestamp(ts_now, encoding)
    assert ts % 64 == encoding
    assert 0 <= (ts_now - ts) % 2**32 < 64


def test_judge_timestamps_signs_and_cases() -> None:
    # A kept request: TSval2 = TSval1 + 10 ms, so TSval1 - TSval2 = -10 = 54 (mod 64).
    verdict, text = judge_timestamps(1000, 1010, 23, 2, 10.2)
    assert verdict is CookieVerdict.NO_COOKIES and "54" in text
    # The wrap of the 32-bit TSval does not matter.
    assert judge_timestamps(MASK - 3, 6, 23, 2, 10.0)[0] is CookieVerdict.NO_COOKIES
    # Cookies: the low bits differ by 23 - 2 = 21, whatever the time.
    assert judge_timestamps(64 * 100 + 23, 64 * 100 + 2, 23, 2, 10.0)[0] is CookieVerdict.COOKIES
    # 43 ms: the clock predicts -43 = 21 (mod 64) too.
    assert judge_timestamps(64 * 100 + 23, 64 * 100 + 2, 23, 2, 43.0)[0] is (
        CookieVerdict.INCONCLUSIVE
    )
    assert judge_timestamps(64 * 100 + 23, 64 * 100 + 2, 23, 2, 42.4)[0] is (
        CookieVerdict.INCONCLUSIVE
    )
    assert judge_timestamps(64 * 100 + 23, 64 * 100 + 2, 23, 2, 41.4)[0] is CookieVerdict.COOKIES
    assert judge_timestamps(1000, 1030, 23, 2, 10.0)[0] is CookieVerdict.UNEXPLAINED
    assert mod64_distance(63, 1) == 2 and mod64_distance(0, 32) == 32


def test_second_syn_repeats_the_isn_with_other_options() -> None:
    probe = started(cookie_check(), now=100.0)
    syn_ack = peer_segment(probe, SYN_ACK, PEER_ISN, probe.isn + 1, 777)
    assert probe.receive(syn_ack, 100.0004, Stamp(1))
    [raw] = probe.segments_to_send()
    syn2 = parse_packet(raw).tcp
    assert syn2 is not None
    assert (syn2.flags, syn2.seq) == (TcpFlags.SYN, probe.isn)
    assert (syn2.sport, syn2.dport) == (COOKIE_SPORT, DPORT)
    assert syn2.options.window_scale == 2 and not syn2.options.sack_permitted
    assert syn2.options.order == "MNNTNW"
    assert syn2.options.timestamp is not None
    assert syn2.options.timestamp[0] == tsval_at(100.0) + 1  # same ms as SYN1: bumped by one
    assert probe.next_deadline() == pytest.approx(100.0004 + 3.0)


def run_cookie_check(peer: Peer, **kwargs: Any) -> tuple[Sim, CookieEvidence]:
    probe = cookie_check(**kwargs)
    sim = Sim(peer).launch(probe).run()
    return sim, probe.result()


delays = st.integers(50_000, 150 * MS)  # one-way delay in ns
clocks = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(owd=delays, ts_base=clocks, ts_offset=clocks)
def test_a_cookie_peer_is_recognised(owd: int, ts_base: int, ts_offset: int) -> None:
    peer = Peer(cookies=True, owd=owd, ts_base=ts_base, ts_offset=ts_offset)
    sim, evidence = run_cookie_check(peer)
    assert evidence.observed_mod64 == evidence.expected_mod64 == 21
    assert evidence.elapsed_ms == 2 * owd / MS
    clock = (-round(2 * owd / MS)) % 64
    assert evidence.elapsed_mod64 == clock
    if mod64_distance(clock, 21) > 1:
        assert evidence.verdict is CookieVerdict.COOKIES
    else:
        assert evidence.verdict is CookieVerdict.INCONCLUSIVE
    assert evidence.syn_ack2_answers == "syn2"
    assert evidence.seq1 == evidence.seq2  # a cookie of the same 4-tuple and ISN
    assert evidence.rst_sent
    assert [flags_of(p) for _, p in sim.sent_by(COOKIE_SPORT)] == ["S", "S", "R"]


@settings(max_examples=60, deadline=None)
@given(owd=delays, ts_base=clocks, ts_offset=clocks)
def test_a_peer_that_keeps_its_request_is_recognised(
    owd: int, ts_base: int, ts_offset: int
) -> None:
    peer = Peer(cookies=False, owd=owd, ts_base=ts_base, ts_offset=ts_offset)
    sim, evidence = run_cookie_check(peer)
    assert evidence.observed_mod64 is not None and evidence.elapsed_mod64 is not None
    assert mod64_distance(evidence.observed_mod64, evidence.elapsed_mod64) <= 1
    if evidence.observed_mod64 == evidence.expected_mod64:
        assert evidence.verdict is CookieVerdict.INCONCLUSIVE
    else:
        assert evidence.verdict is CookieVerdict.NO_COOKIES
    assert evidence.syn_ack2_answers == "syn1"
    assert evidence.seq1 == evidence.seq2 == PEER_ISN
    assert_frees_request(sim, COOKIE_SPORT, isn_for(4, COOKIE_SPORT))
    assert peer.freed == [COOKIE_SPORT]


encodings = st.builds(CookieOptions, st.one_of(st.none(), st.integers(0, 14)), st.booleans())


@settings(max_examples=40, deadline=None)
@given(first=encodings, second=encodings, owd=delays, ts_base=clocks)
def test_any_two_encodings_show_through_cookies(
    first: CookieOptions, second: CookieOptions, owd: int, ts_base: int
) -> None:
    if first.encoding == second.encoding:
        with pytest.raises(ValueError):
            cookie_check(first=first, second=second)
        return
    peer = Peer(cookies=True, owd=owd, ts_base=ts_base)
    _, evidence = run_cookie_check(peer, first=first, second=second)
    assert evidence.observed_mod64 == (first.encoding - second.encoding) % 64
    assert evidence.verdict in (CookieVerdict.COOKIES, CookieVerdict.INCONCLUSIVE)


def test_43_ms_is_inconclusive_and_other_encodings_settle_it() -> None:
    owd = 43 * MS // 2  # SYN/ACK2 comes one RTT (43 ms) after SYN/ACK1: -43 = 21 (mod 64)
    for cookies in (True, False):
        _, evidence = run_cookie_check(Peer(cookies=cookies, owd=owd))
        assert (evidence.observed_mod64, evidence.elapsed_mod64) == (21, 21)
        assert evidence.verdict is CookieVerdict.INCONCLUSIVE
        assert "retry with other encodings" in evidence.explanation
    retry = CookieOptions(5, False)  # expected 23 - 5 = 18
    _, evidence = run_cookie_check(Peer(cookies=True, owd=owd), second=retry)
    assert evidence.verdict is CookieVerdict.COOKIES and evidence.observed_mod64 == 18
    _, evidence = run_cookie_check(Peer(cookies=False, owd=owd), second=retry)
    assert evidence.verdict is CookieVerdict.NO_COOKIES and evidence.observed_mod64 == 21


def test_no_timestamps_leaves_the_retransmission_evidence() -> None:
    peer = Peer(cookies=True, timestamps=False)
    probe, check = halfopen(), cookie_check()
    sim = Sim(peer).launch(probe, check).run()
    evidence = check.result()
    assert evidence.verdict is CookieVerdict.NO_TIMESTAMPS and evidence.tsval1 is None
    assert [flags_of(p) for _, p in sim.sent_by(COOKIE_SPORT)] == ["S", "R"]
    result = probe.result().with_cookie_check(evidence)
    assert result.retransmissions == 0 and result.ended_by is EndedBy.SILENCE
    # Only the weak clue is left: not enough for "yes".
    assert result.cookies.verdict is CookieAnswer.UNKNOWN
    assert [c.strong for c in result.cookies.clues] == [False]
    assert "decides nothing alone" in result.cookies.reasons[-1]


def test_no_answer_and_no_second_answer() -> None:
    _, evidence = run_cookie_check(Peer(listening=False))
    assert (evidence.verdict, evidence.reason) == (CookieVerdict.NO_ANSWER, Reason.RST)
    assert not evidence.rst_sent
    _, evidence = run_cookie_check(Peer(silent=True))
    assert (evidence.verdict, evidence.reason) == (CookieVerdict.NO_ANSWER, Reason.NO_RESPONSE)
    # A cookie peer that drops the second SYN stays silent: no retransmission either.
    sim, evidence = run_cookie_check(Peer(cookies=True, answer_syns=1), answer_timeout=2.0)
    assert evidence.verdict is CookieVerdict.NO_SECOND_ANSWER and evidence.rst_sent
    rst_time, _ = sim.sent_by(COOKIE_SPORT)[-1]
    assert rst_time == START + 2 * 5 * MS + 2 * S
    # A kept request answers a lost SYN2 anyway, with its own retransmission after 1 s.
    _, evidence = run_cookie_check(Peer(cookies=False, answer_syns=1))
    assert evidence.verdict is CookieVerdict.NO_COOKIES and evidence.syn_ack2_answers == "syn1"
    assert evidence.elapsed_ms == pytest.approx(1000.0)


def test_cookie_check_interrupted_while_waiting_for_the_second_answer() -> None:
    peer = Peer(cookies=True, answer_syns=1)
    probe = cookie_check()
    sim = Sim(peer).launch(probe).run(interrupt_at=START / S + 1.0)
    evidence = probe.result()
    assert evidence.verdict is CookieVerdict.INTERRUPTED and evidence.rst_sent
    assert [flags_of(p) for _, p in sim.sent_by(COOKIE_SPORT)] == ["S", "S", "R"]


# -- combining the evidence ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("cookies", "retries", "verdict"),
    [(True, 5, CookieAnswer.YES), (False, 5, CookieAnswer.NO), (False, 0, CookieAnswer.NO)],
)
def test_both_probes_side_by_side(cookies: bool, retries: int, verdict: CookieAnswer) -> None:
    peer = Peer(cookies=cookies, synack_retries=retries, owd=10 * MS)
    probe, check = halfopen(), cookie_check()
    Sim(peer).launch(probe, check).run()
    result = probe.result().with_cookie_check(check.result())
    assert result.cookies.verdict is verdict
    assert result.cookie_check is not None
    # The same verdict from the JSON forms, as the API layer may hold them.
    from_dicts = combine_cookie_evidence(result.to_dict(), check.result().to_dict())
    assert from_dicts == result.cookies


def fields(retransmissions: int, ended_by: str, syn_acks: int = 1) -> dict[str, object]:
    return {
        "syn_acks": [{}] * syn_acks,
        "retransmissions": retransmissions,
        "ended_by": ended_by,
        "state": "open" if syn_acks else "filtered",
    }


def evidence(verdict: CookieVerdict, answers: str | None = None) -> CookieEvidence:
    return CookieEvidence(verdict, f"{verdict.value}.", 23, 2, 21, syn_ack2_answers=answers)


@pytest.mark.parametrize(
    ("halfopen_fields", "cookie", "expected"),
    [
        # no retransmission alone: weak, so unknown (tcp_synack_retries=0 looks the same)
        (fields(0, "silence"), None, CookieAnswer.UNKNOWN),
        (fields(3, "silence"), None, CookieAnswer.NO),
        (fields(0, "max-wait"), None, CookieAnswer.UNKNOWN),
        (fields(0, "no-syn-ack", 0), None, CookieAnswer.UNKNOWN),
        (fields(0, "silence"), evidence(CookieVerdict.COOKIES, "syn2"), CookieAnswer.YES),
        (fields(0, "interrupted"), evidence(CookieVerdict.COOKIES), CookieAnswer.YES),
        (fields(5, "silence"), evidence(CookieVerdict.NO_COOKIES, "syn1"), CookieAnswer.NO),
        # tcp_synack_retries=0 without cookies: the strong clue wins over the weak one
        (fields(0, "silence"), evidence(CookieVerdict.NO_COOKIES, "syn1"), CookieAnswer.NO),
        # a cookie implementation that does not encode options in TSval (not Linux)
        (fields(0, "silence"), evidence(CookieVerdict.NO_COOKIES, "syn2"), CookieAnswer.YES),
        (fields(0, "silence"), evidence(CookieVerdict.NO_COOKIES), CookieAnswer.UNKNOWN),
        (fields(0, "silence"), evidence(CookieVerdict.INCONCLUSIVE, "syn2"), CookieAnswer.YES),
        (fields(0, "silence"), evidence(CookieVerdict.INCONCLUSIVE), CookieAnswer.UNKNOWN),
        (fields(2, "rst"), evidence(CookieVerdict.COOKIES, "syn2"), CookieAnswer.UNKNOWN),
        (fields(0, "max-wait"), evidence(CookieVerdict.NO_TIMESTAMPS), CookieAnswer.UNKNOWN),
    ],
)
def test_combine_cookie_evidence(
    halfopen_fields: dict[str, object], cookie: CookieEvidence | None, expected: CookieAnswer
) -> None:
    combined = combine_cookie_evidence(halfopen_fields, cookie)
    assert combined.verdict is expected
    assert combined.reasons and all(isinstance(r, str) and r for r in combined.reasons)
    if expected is CookieAnswer.UNKNOWN and len({c.points_to for c in combined.clues}) > 1:
        assert combined.reasons[-1] == "the evidence disagrees"


def test_halfopen_result_alone_carries_the_retransmission_verdict() -> None:
    probe = halfopen()
    Sim(Peer(cookies=True)).launch(probe).run()
    result = probe.result()
    assert isinstance(result, HalfOpenResult) and result.cookie_check is None
    assert result.retransmissions == 0 and result.cookies.verdict is CookieAnswer.UNKNOWN
    assert result.cookies.reasons[-2] == "no cookie check ran"
    assert result.cookies == combine_cookie_evidence(result, None)


# -- other stacks' schedules, and a watch that ends too early ------------------------------


def test_a_bsd_schedule_is_waited_for_and_reported() -> None:
    # A 4.4BSD-derived peer: the first retransmission 6.4 s after the SYN/ACK, then doubling
    # (capped at 64 s). Linux's 1 s schedule taken as everyone's would call it silent at 2 s.
    peer = Peer(first_rto=6400 * MS, rto_cap=64 * S, synack_retries=3)
    probe = halfopen(max_wait=200.0)
    Sim(peer).launch(probe).run()
    result = probe.result()
    assert result.retransmissions == 3
    assert [round(a.since_first_us / 1e6, 1) for a in result.syn_acks] == [0, 6.4, 19.2, 44.8]
    assert result.ended_by is EndedBy.SILENCE and result.peer_gave_up is CookieAnswer.YES
    assert result.cookies.verdict is CookieAnswer.NO


def test_lost_first_retransmissions_are_waited_for() -> None:
    # Linux's defaults, the path drops the copies at 1 s and 3 s: the first seen comes at 7 s.
    peer = Peer(lost_retransmissions=2)
    probe = halfopen(max_wait=12.0)
    Sim(peer).launch(probe).run()
    result = probe.result()
    assert [round(a.since_first_us / 1e6, 3) for a in result.syn_acks] == [0, 7.0]
    assert result.retransmissions == 1 and result.syn_acks[1].retransmission
    assert result.ended_by is EndedBy.MAX_WAIT and result.peer_gave_up is CookieAnswer.UNKNOWN
    assert result.caveat is not None and "the last SYN/ACK came 5.0 s before" in result.caveat
    assert result.cookies.verdict is CookieAnswer.NO  # a retransmission: a kept request


def test_a_short_max_wait_says_no_conclusion_was_safe() -> None:
    probe = halfopen(max_wait=5.0)
    Sim(Peer(cookies=True)).launch(probe).run()
    result = probe.result()
    assert result.ended_by is EndedBy.MAX_WAIT and result.retransmissions == 0
    assert result.peer_gave_up is CookieAnswer.UNKNOWN
    assert result.caveat == (
        "no retransmission within 5.0 s of the SYN/ACK; stacks with a 6 s first timeout would "
        "not have retransmitted yet (9.5 s of silence are needed to conclude)"
    )
    assert result.cookies.verdict is CookieAnswer.UNKNOWN
    assert result.caveat in result.cookies.reasons[0]
    data = result.to_dict()
    assert data["caveat"] == result.caveat and data["peer_gave_up"] == "unknown"
    assert data["silence_needed_s"] == 9.5
    report = "\n".join(conversation.halfopen_report(result))
    assert "--max-wait ended the watch before a conclusion was safe: no retransmission" in report
    assert "whether the peer gave up is unknown" in report
    assert "SYN cookies: unknown" in report


def test_the_default_max_wait_lets_linux_defaults_conclude() -> None:
    probe = halfopen()  # DEFAULT_MAX_WAIT
    Sim(Peer(synack_retries=5)).launch(probe).run()
    result = probe.result()
    assert result.ended_by is EndedBy.SILENCE and result.retransmissions == 5
    assert result.ended_after_s is not None and result.ended_after_s < DEFAULT_MAX_WAIT


# -- hostile and stray input ----------------------------------------------------------------


def icmp_quoting(probe: Probe, icmp_type: int, code: int, seq: int | None = None) -> Packet:
    syn = syn_template(4).build(
        probe.src, probe.dst, probe.sport, probe.dport, probe.isn if seq is None else seq, 0, 0
    )
    return parse_packet(bytes(IP(src=ROUTER4, dst=SRC4) / ICMP(type=icmp_type, code=code)
                              / Raw(syn[:28])))


def test_icmp_that_decides_nothing_is_counted_and_does_not_end_the_probe() -> None:
    probe = started(halfopen())
    redirect = icmp_quoting(probe, 5, 1)
    assert redirect.icmp is not None and not redirect.icmp.decides_verdict
    assert probe.receive(redirect, 100.001, Stamp(1)) and not probe.done  # a notice
    not_ours = icmp_quoting(probe, 3, 1, seq=probe.isn + 5)
    assert not probe.receive(not_ours, 100.002, Stamp(2)) and not probe.done
    syn_ack = peer_segment(probe, SYN_ACK, PEER_ISN, probe.isn + 1, 5)
    assert probe.receive(syn_ack, 100.01, Stamp(3))
    # After the SYN/ACK even an unreachable quoting our SYN decides nothing.
    late_unreachable = icmp_quoting(probe, 3, 1)
    assert not probe.receive(late_unreachable, 100.02, Stamp(4)) and not probe.done
    probe.interrupt(100.5)
    result = probe.result()
    assert (result.state, result.reason) == (PortState.OPEN, Reason.SYN_ACK)
    assert result.invalid_by_kind == {"icmp-after-answer": 1, "icmp-not-ours": 1}
    assert result.notices == 1 and result.icmp_notices[0].name == "redirect"
    report = "\n".join(conversation.halfopen_report(result))
    assert "Ignored 2 packet(s) that prove nothing:" in report
    assert "ICMP notices: 1 quoted" in report


def test_a_redirect_alone_is_silence_not_filtered_by_icmp() -> None:
    probe = halfopen()
    Sim(Peer(icmp=True, icmp_type=5)).launch(probe).run()
    result = probe.result()
    assert (result.state, result.reason) == (PortState.FILTERED, Reason.NO_RESPONSE)
    assert result.notices == 1 and result.icmp is None and result.invalid_by_kind == {}


def test_a_syn_ack_flood_with_other_seqs_is_counted_not_kept() -> None:
    probe = started(halfopen())
    ack = probe.isn + 1
    assert probe.receive(peer_segment(probe, SYN_ACK, PEER_ISN, ack, 5), 100.01, Stamp(1))
    for k in range(1000):
        flood = peer_segment(probe, SYN_ACK, PEER_ISN + 1000 + k, ack, 9)
        assert not probe.receive(flood, 100.02 + k * 1e-4, Stamp(2 + k))
    wrong = peer_segment(probe, SYN_ACK, PEER_ISN, ack + 1, 5)
    assert not probe.receive(wrong, 100.2, Stamp(5000))
    assert not probe.done and probe.next_deadline() == pytest.approx(100.01 + 9.5)
    probe.interrupt(100.5)
    result = probe.result()
    assert result.invalid_by_kind == {"other-seq": 1000, "wrong-ack": 1}
    assert len(result.syn_acks) == 1 and result.retransmissions == 0
    # Only the first few are drawn in the ladder: the flood cannot grow the log.
    ignored = [r for r in result.segments if r.note.startswith("ignored")]
    assert len(ignored) == MAX_LOGGED_STRAYS
    assert result.to_dict()["invalid"] == 1001
