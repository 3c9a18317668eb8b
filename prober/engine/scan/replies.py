"""The receiver's reply check: which captured packet answers which send, with no state per
target beyond the shared ring and bitmaps (see core/scan_cookie.py and shared.py).

``ReplyChecker.check`` takes one captured packet and returns an ``Answer`` (a valid first
answer for its target, or a duplicate/late one that still matters for RSTs) or None, counting
everything it refuses by kind, as the other commands count strays.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from prober.core.scan_cookie import MASK32, ScanKey
from prober.core.strays import Stray
from prober.core.syn import PortState, Reason
from prober.core.wire import IPPROTO_TCP, IcmpKind, Packet, TcpFlags
from prober.engine.scan.shared import (
    ATTEMPT_MASK,
    EMPTY_SLOT,
    KERNEL_TIME,
    NAMED,
    RING_MASK,
    Counter,
    ScanShared,
)

_SYN_ACK = int(TcpFlags.SYN | TcpFlags.ACK)
_RST = int(TcpFlags.RST)
_ACK = int(TcpFlags.ACK)
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass(slots=True)
class Answer:
    """A validated answer to one send."""

    position: int
    k: int  # the send index it answers
    slot: int
    attempt: int  # 0-based
    state: PortState
    reason: Reason
    packet: Packet
    received_ns: int
    received_user_ns: int
    first: bool  # the target's first answer: it gets the record
    named: bool  # the target was given by name: its record waits for the name
    target: bytes  # the target's address and port, and ours
    port: int
    source: bytes
    source_port: int
    synack_seq_ack: int | None = None  # a SYN/ACK's ack: the seq of the RST it is owed


class ReplyChecker:
    def __init__(self, key: ScanKey, shared: ScanShared) -> None:
        self.key = key
        self.shared = shared
        self.ports = frozenset(key.ports)
        self.invalid: dict[Stray, int] = {}
        self.notices = 0
        self.duplicates = 0
        self.late = 0

    def _stray(self, kind: Stray) -> None:
        self.invalid[kind] = self.invalid.get(kind, 0) + 1

    def check(self, packet: Packet, received_ns: int, received_user_ns: int) -> Answer | None:
        tcp = packet.tcp
        if tcp is not None:
            if tcp.dport not in self.ports:
                return None  # not the scan's (the capture filter passes only its ports)
            flags = int(tcp.flags)
            if flags & _SYN_ACK == _SYN_ACK:
                state, reason = PortState.OPEN, Reason.SYN_ACK
            elif flags & _RST and flags & _ACK:
                state, reason = PortState.CLOSED, Reason.RST
            else:
                # A RST without ACK cannot be tied to a send; anything else answers no SYN.
                self._stray(Stray.STRAY_RST if flags & _RST else Stray.OTHER_SEGMENT)
                return None
            cookie = self.key.cookie(packet.dst, packet.src, tcp.sport)
            k32 = (tcp.ack - 1 - cookie) & MASK32
            if reason is Reason.RST and self._lookup(k32, cookie, tcp.dport, count=False) is None:
                # Some stacks' RST acknowledges the ISN itself, not ISN + 1 (zmap accepts both).
                alternative = (tcp.ack - cookie) & MASK32
                if self._lookup(alternative, cookie, tcp.dport, count=False) is not None:
                    k32 = alternative
            return self._match(
                k32, cookie, packet, state, reason, received_ns, received_user_ns,
                target=packet.src, port=tcp.sport, source=packet.dst, source_port=tcp.dport,
                synack_ack=tcp.ack if reason is Reason.SYN_ACK else None,
            )
        icmp = packet.icmp
        if icmp is None:
            return None
        quoted = icmp.quoted
        if (
            quoted.protocol != IPPROTO_TCP
            or quoted.sport not in self.ports
            or quoted.dport is None
            or quoted.seq is None
        ):
            self._stray(Stray.ICMP_NOT_OURS)
            return None
        cookie = self.key.cookie(quoted.src, quoted.dst, quoted.dport)
        k32 = (quoted.seq - cookie) & MASK32
        if icmp.kind is IcmpKind.UNREACHABLE:
            state, reason = PortState.FILTERED, Reason.ICMP_UNREACHABLE
        elif icmp.kind is IcmpKind.TIME_EXCEEDED:
            state, reason = PortState.UNKNOWN, Reason.ICMP_TIME_EXCEEDED
        else:
            if self._lookup(k32, cookie, quoted.sport, count=False) is not None:
                self.notices += 1  # about a probe of ours, but not about reachability
            else:
                self._stray(Stray.ICMP_NOT_OURS)
            return None
        return self._match(
            k32, cookie, packet, state, reason, received_ns, received_user_ns,
            target=quoted.dst, port=quoted.dport, source=quoted.src,
            source_port=quoted.sport, synack_ack=None,
        )

    def _lookup(self, k32: int, cookie: int, local_port: int, *, count: bool = True
                ) -> tuple[int, int, int] | None:
        """(k, slot, meta) of the send that k32 names, if the ring still holds it."""
        shared = self.shared
        slot = k32 & RING_MASK
        k = shared.ring_k[slot]
        # k32 names a send; the tag, that it went to this target (an ack off by one names
        # the send before or after, to another target).
        if k == EMPTY_SLOT or k & MASK32 != k32 or shared.ring_tag[slot] != cookie & MASK32:
            if count:
                sent = shared.counters[Counter.SENT] + shared.counters[Counter.SEND_FAILED]
                if k != EMPTY_SLOT and k & MASK32 != k32 and k32 < (sent & MASK32):
                    self.late += 1  # an index we sent, whose ring entry was reused since
                else:
                    self._stray(Stray.WRONG_ACK)
            return None
        meta = shared.ring_meta[slot]
        if self.key.source_port(cookie, meta & ATTEMPT_MASK) != local_port:
            if count:
                self._stray(Stray.WRONG_PORTS)
            return None
        return k, slot, meta

    def _match(
        self,
        k32: int,
        cookie: int,
        packet: Packet,
        state: PortState,
        reason: Reason,
        received_ns: int,
        received_user_ns: int,
        *,
        target: bytes,
        port: int,
        source: bytes,
        source_port: int,
        synack_ack: int | None,
    ) -> Answer | None:
        found = self._lookup(k32, cookie, source_port)
        if found is None:
            return None
        k, slot, meta = found
        shared = self.shared
        position = shared.ring_position[slot]
        if shared.ring_k[slot] != k:  # rewritten while we read it
            self.late += 1
            return None
        first = not shared.is_concluded(position)
        if first:
            shared.conclude(position)
        elif shared.is_silent(position):
            self.late += 1
        else:
            self.duplicates += 1
        return Answer(
            position, k, slot, meta & ATTEMPT_MASK, state, reason, packet, received_ns,
            received_user_ns, first, bool(meta & NAMED), target, port, source, source_port,
            synack_ack,
        )

    def send_time(self, answer: Answer) -> tuple[int, bool] | None:
        """The answered send's time and whether it is the kernel's TX stamp (None if the
        ring entry was reused since)."""
        shared = self.shared
        meta = shared.ring_meta[answer.slot]
        sent_ns = shared.ring_time[answer.slot]
        if shared.ring_k[answer.slot] != answer.k:
            return None
        return sent_ns, bool(meta & KERNEL_TIME)


def address_text(version: int, packed: bytes) -> str:
    return socket.inet_ntop(_FAMILY[version], packed)
