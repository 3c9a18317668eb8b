"""What the half-open watch and the cookie check share: one handshake we never finish.

Both probes embed a ``SynProbe`` (zmap's rules: a SYN/ACK acks ISN+1, a RST/ACK acks ISN or
ISN+1, an ICMP error quotes our 4-tuple and ISN), so the first answer is classified exactly
as ``prober syn`` classifies it; both keep a segment log for the ladder and the pcap, and
both end with a RST (seq = ISN+1, in the request's window: ``tcp_check_req`` drops it).

Hostile or stray input never becomes a verdict (``prober.core.strays``: the kinds, notices
and JSON every probe kind shares). Every packet on the conversation's 4-tuple that proves
nothing is counted by its ``Stray`` kind (and the first ``MAX_LOGGED_STRAYS`` TCP ones are
drawn in the ladder with a note): an ack that does not acknowledge our SYN, a RST that is not
exactly at the peer's ISN + 1 (RFC 5961 §3: only that one resets), a segment that is neither
SYN/ACK nor RST, an ICMP error quoting another segment, a reachability error after the peer
answered; packets from another address or port are counted through ``count_invalid``. ICMP
messages that quote ours but decide nothing (``IcmpError.decides_verdict``: only destination
unreachable and time exceeded may end a probe) are notices, kept apart from the strays.
"""

from __future__ import annotations

from typing import Final

from prober.core.packets import TcpTemplate, template
from prober.core.parse import parse_packet
from prober.core.states import TcpEvent, TcpState, mirrored, transition
from prober.core.strays import IcmpNotices, Stray, StrayCounts, off_tuple_kind
from prober.core.syn import SynProbe
from prober.core.timing import Stamp
from prober.core.trace import SegmentLog, SegmentRecord
from prober.core.wire import Packet, QuotedHeader, TcpFlags, TcpSegment

MASK: Final = 0xFFFFFFFF
MAX_LOGGED_STRAYS: Final = 16  # stray TCP segments drawn in the ladder; the rest only counted


def tsval_at(now: float) -> int:
    """Our TSval at monotonic time ``now``: a millisecond clock, as Linux's."""
    return int(now * 1000) & MASK


def bare_rst_template(version: int, ttl: int = 64) -> TcpTemplate:
    """A bare RST (no options, as Linux resets carry), built once per family and TTL."""
    return template(version, TcpFlags.RST, ttl=ttl)


class HandshakeConversation:
    """What both probes share: the embedded SynProbe, the outbox, the segment log, our RST."""

    __slots__ = (
        "_entries",
        "_error",
        "_last_now",
        "_late",
        "_log",
        "_next_index",
        "_notices",
        "_our_state",
        "_our_window",
        "_outbox",
        "_peer_isns",
        "_peer_state",
        "_queued",
        "_rst_index",
        "_rst_sent",
        "_rst_template",
        "_strays",
        "_strays_logged",
        "_syn",
        "dport",
        "dst",
        "isn",
        "leave_open",
        "sport",
        "src",
    )

    def __init__(
        self,
        syn: SynProbe,
        rst_template: TcpTemplate | None,
        leave_open: bool,
    ) -> None:
        self._syn = syn
        self.src, self.dst = syn.src, syn.dst
        self.sport, self.dport, self.isn = syn.sport, syn.dport, syn.isn
        self.leave_open = leave_open
        self._rst_template = rst_template or bare_rst_template(4 if len(syn.src) == 4 else 6)
        self._log = SegmentLog(syn.isn)
        self._outbox: list[bytes] = []
        self._queued: dict[int, tuple[Packet, TcpState, TcpState, str]] = {}
        self._next_index = 0  # the engine numbers a probe's segments 0, 1, 2, ...
        self._entries = 0  # records in the log so far
        self._rst_index: int | None = None
        self._rst_sent = False
        self._error: str | None = None
        self._our_state = TcpState.CLOSED
        self._peer_state = TcpState.LISTEN  # assumed until it answers
        self._peer_isns: set[int] = set()
        self._our_window = 0
        self._late = 0
        self._last_now: float | None = None
        self._strays = StrayCounts()
        self._notices = IcmpNotices()
        self._strays_logged = 0

    # -- engine callbacks shared by both probes ---------------------------------------------
    def segments_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def sent(self, index: int, stamp: Stamp) -> None:
        """The engine sent segment ``index`` at ``stamp``: log it (failed sends are not)."""
        queued = self._queued.pop(index, None)
        if queued is None:
            return
        packet, our, peer, note = queued
        self._log.sent(index, packet, our, peer, note)
        self._log.stamp_sent(index, stamp)
        self._entries += 1
        if index == 0:
            self._syn.sent(0, stamp)
        if index == self._rst_index:
            self._rst_sent = True

    def send_kernel_stamp(self, index: int, kernel_ns: int) -> None:
        self._log.kernel_stamp_sent(index, kernel_ns)
        if index == 0:
            self._syn.send_kernel_stamp(0, kernel_ns)

    def send_failed(self, index: int, error: str) -> None:
        self._queued.pop(index, None)
        if self._error is None:
            self._error = error
        if index == 0:
            self._syn.send_failed(0, error)
        self._send_failure(index, error)

    # -- helpers ------------------------------------------------------------------------------
    def _send_failure(self, index: int, error: str) -> None:
        """What a probe does when segment ``index`` could not be sent (override)."""

    def _queue(self, raw: bytes, note: str = "") -> int:
        index = self._next_index
        self._next_index += 1
        self._outbox.append(raw)
        self._queued[index] = (parse_packet(raw), self._our_state, self._peer_state, note)
        return index

    def _queue_syn(self, now: float) -> None:
        self._last_now = now
        self._syn.tsval = tsval_at(now)
        self._syn.start(now)
        self._our_state = transition(self._our_state, TcpEvent.SEND_SYN)
        for raw in self._syn.segments_to_send():
            syn = parse_packet(raw).tcp
            assert syn is not None
            self._our_window = syn.window
            self._queue(raw)

    def _queue_rst(self, note: str) -> None:
        """Our RST, seq = ISN+1: in the request's window, so the peer drops the request."""
        raw = self._rst_template.build(
            self.src, self.dst, self.sport, self.dport, (self.isn + 1) & MASK, 0
        )
        self._our_state = transition(self._our_state, TcpEvent.SEND_RST)
        self._peer_state = transition(self._peer_state, mirrored(TcpEvent.SEND_RST))
        self._rst_index = self._queue(raw, note)

    def _log_received(self, packet: Packet, stamp: Stamp, note: str = "") -> int:
        self._log.received(packet, stamp, self._our_state, self._peer_state, note)
        self._entries += 1
        return self._entries - 1

    def count_invalid(self, packet: Packet) -> None:
        """Count a packet the engine found no taker for. One on this conversation's 4-tuple
        was offered to ``receive``, which counted it; one from another address or port (or
        ICMP quoting another 4-tuple) is counted here."""
        kind = off_tuple_kind(packet, self.src, self.dst, self.sport, self.dport)
        if kind is not None:
            self._strays.count(kind)

    def _take_notice(self, packet: Packet) -> bool:
        """Keep an ICMP notice (a message quoting our SYN or RST that decides nothing)."""
        icmp = packet.icmp
        if icmp is None or icmp.decides_verdict or not self._quotes_us(icmp.quoted):
            return False
        self._notices.add(packet)
        return True

    def _validate(self, packet: Packet, now: float, stamp: Stamp) -> bool:
        """Does ``packet`` belong to this conversation? SynProbe's rules (zmap's) for the
        answer to our SYN; after it, a RST only exactly at the peer's ISN + 1. Anything else
        on the 4-tuple is counted as a ``Stray``, and False returned (the engine counts it
        too, and leaves it to ``count_invalid``, which counts only what is off the 4-tuple).
        Notices are taken before (``_take_notice``)."""
        if off_tuple_kind(packet, self.src, self.dst, self.sport, self.dport) is not None:
            return False  # counted by count_invalid
        icmp = packet.icmp
        if icmp is not None:
            if not self._quotes_us(icmp.quoted):
                return self._stray(Stray.ICMP_NOT_OURS, packet, stamp)
            if self._log.peer_isn is not None:
                return self._stray(Stray.ICMP_AFTER_ANSWER, packet, stamp)
            return self._syn.receive(packet, now, stamp)
        tcp = packet.tcp
        if tcp is None:
            return False
        flags = tcp.flags
        if flags & TcpFlags.RST:
            if flags & TcpFlags.ACK and tcp.ack not in (self.isn, (self.isn + 1) & MASK):
                return self._stray(Stray.WRONG_ACK, packet, stamp)
            if self._log.peer_isn is None:
                # The answer to our SYN (RST/ACK: closed), as SynProbe judges it; a RST
                # that SynProbe refuses (no ACK) proves no knowledge of our ISN, as in syn.
                if self._syn.receive(packet, now, stamp):
                    return True
                return self._stray(Stray.WRONG_ACK, packet, stamp)
            # After a SYN/ACK: the peer's request is at SND.NXT = its ISN + 1, and a RST
            # resets only with exactly that sequence number (RFC 5961 §3; RFC 9293 §3.10.7.4
            # would take the whole window, which lets a blind attacker end the watch).
            if tcp.seq == (self._log.peer_isn + 1) & MASK:
                self._syn.receive(packet, now, stamp)  # SynProbe counts it; no new verdict
                return True
            return self._stray(Stray.STRAY_RST, packet, stamp)
        if flags & (TcpFlags.SYN | TcpFlags.ACK) == TcpFlags.SYN | TcpFlags.ACK:
            if tcp.ack != (self.isn + 1) & MASK:
                return self._stray(Stray.WRONG_ACK, packet, stamp)
            if not self._accepts_syn_ack(tcp):
                return self._stray(Stray.OTHER_SEQ, packet, stamp)
            return self._syn.receive(packet, now, stamp)
        return self._stray(Stray.OTHER_SEGMENT, packet, stamp)

    def _accepts_syn_ack(self, tcp: TcpSegment) -> bool:
        """Whether a SYN/ACK that acks our SYN belongs here (override to pin its seq)."""
        return True

    def _quotes_us(self, quoted: QuotedHeader) -> bool:
        """An ICMP error quotes one of our segments: our SYN (seq ISN) or our RST (ISN+1)."""
        return (
            quoted.src == self.src
            and quoted.dst == self.dst
            and quoted.sport == self.sport
            and quoted.dport == self.dport
            and quoted.seq in (self.isn, (self.isn + 1) & MASK)
        )

    def _stray(self, kind: Stray, packet: Packet, stamp: Stamp) -> bool:
        """Count a packet that proves nothing; draw the first few in the ladder. False."""
        self._strays.count(kind)
        if packet.tcp is not None and self._strays_logged < MAX_LOGGED_STRAYS:
            self._strays_logged += 1
            self._log_received(packet, stamp, f"ignored: {kind.value}")
        return False

    def strays(self) -> dict[Stray, int]:
        """Packets that proved nothing so far, by ``Stray`` kind (only kinds seen)."""
        return self._strays.by_kind()

    def _late_answer(self, packet: Packet, stamp: Stamp) -> None:
        """A valid answer after the probe ended: count and log it; free a late request."""
        self._late += 1
        tcp = packet.tcp
        if tcp is None:
            return
        if self._late > MAX_LOGGED_STRAYS and self._rst_index is not None:
            return  # counted; a peer (or a replay) that keeps sending cannot grow the log
        if tcp.flags & TcpFlags.RST:
            self._peer_state = transition(self._peer_state, TcpEvent.SEND_RST)
            self._log_received(packet, stamp, "late")
            return
        if self._log.peer_isn is None:
            self._log.peer_isn = tcp.seq
            self._peer_isns.add(tcp.seq)
        if self._rst_index is None:
            self._peer_state = TcpState.SYN_RECEIVED
        self._log_received(packet, stamp, "late")
        if not self.leave_open and self._rst_index is None:
            self._queue_rst("frees the request of a late SYN/ACK")

    def _records(self) -> tuple[SegmentRecord, ...]:
        return self._log.records()

