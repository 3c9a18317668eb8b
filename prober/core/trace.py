"""The record of a conversation: every segment sent and received, with its kernel timestamp
and the state each side is in after it. Ladder diagrams, JSON and pcap are drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prober.core.states import TcpState
from prober.core.timing import Clock, Stamp
from prober.core.wire import Packet, TcpSegment


class Direction(StrEnum):
    SENT = "sent"
    RECEIVED = "received"


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One segment of a conversation, as the ladder shows it."""

    direction: Direction
    flags: str  # tcpdump letters: S. F. R P. ...
    seq: int
    ack: int
    relative_seq: int  # seq minus the sender's ISN
    relative_ack: int  # ack minus the receiver's ISN (0 when ACK is not set)
    length: int  # payload bytes
    window: int
    options: str
    tsval: int | None
    tsecr: int | None
    time_ns: int  # CLOCK_REALTIME, on ``clock``
    clock: Clock
    our_state: TcpState  # after this segment
    peer_state: TcpState  # inferred from what the peer sent and received
    note: str = ""  # e.g. "retransmission", "out of order", "data after our FIN"
    raw: bytes = field(default=b"", repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction.value,
            "flags": self.flags,
            "seq": self.seq,
            "ack": self.ack,
            "relative_seq": self.relative_seq,
            "relative_ack": self.relative_ack,
            "length": self.length,
            "window": self.window,
            "options": self.options,
            "tsval": self.tsval,
            "tsecr": self.tsecr,
            "time_ns": self.time_ns,
            "clock": self.clock.value,
            "our_state": self.our_state.value,
            "peer_state": self.peer_state.value,
            "note": self.note,
        }


@dataclass(slots=True)
class _Entry:
    direction: Direction
    segment: TcpSegment
    stamp: Stamp
    our_state: TcpState
    peer_state: TcpState
    note: str
    raw: bytes


class SegmentLog:
    """Mutable while the probe runs (TX timestamps arrive after the send); frozen records out.

    Relative numbers need both ISNs: ``our_isn`` is known from the start, ``peer_isn`` from
    the SYN/ACK.
    """

    def __init__(self, our_isn: int) -> None:
        self.our_isn = our_isn
        self.peer_isn: int | None = None
        self._entries: list[_Entry] = []
        self._sent_index: dict[int, int] = {}  # engine's segment index -> entry

    def sent(
        self,
        index: int,
        packet: Packet,
        our_state: TcpState,
        peer_state: TcpState,
        note: str = "",
    ) -> None:
        """Log a segment we are about to send; ``index`` is its number in the probe's output.

        Its stamp is filled in by ``stamp_sent`` when the engine reports the send.
        """
        assert packet.tcp is not None
        self._sent_index[index] = len(self._entries)
        self._entries.append(
            _Entry(Direction.SENT, packet.tcp, Stamp(0), our_state, peer_state, note, packet.raw)
        )

    def stamp_sent(self, index: int, stamp: Stamp) -> None:
        position = self._sent_index.get(index)
        if position is not None:
            self._entries[position].stamp = stamp

    def kernel_stamp_sent(self, index: int, kernel_ns: int) -> None:
        position = self._sent_index.get(index)
        if position is not None:
            entry = self._entries[position]
            entry.stamp = entry.stamp.with_kernel(kernel_ns)

    def received(
        self,
        packet: Packet,
        stamp: Stamp,
        our_state: TcpState,
        peer_state: TcpState,
        note: str = "",
    ) -> None:
        assert packet.tcp is not None
        self._entries.append(
            _Entry(Direction.RECEIVED, packet.tcp, stamp, our_state, peer_state, note, packet.raw)
        )

    def records(self) -> tuple[SegmentRecord, ...]:
        """Frozen records; all on the kernel clock when every segment has a kernel stamp."""
        kernel = all(e.stamp.kernel_ns is not None for e in self._entries)
        clock = Clock.KERNEL if kernel else Clock.USER
        out = []
        for entry in self._entries:
            segment = entry.segment
            ours = entry.direction is Direction.SENT
            sender_isn = self.our_isn if ours else self.peer_isn
            receiver_isn = self.peer_isn if ours else self.our_isn
            timestamp = segment.options.timestamp
            time_ns = entry.stamp.kernel_ns if kernel else entry.stamp.user_ns
            out.append(
                SegmentRecord(
                    direction=entry.direction,
                    flags=segment.flags.compact(),
                    seq=segment.seq,
                    ack=segment.ack,
                    relative_seq=(segment.seq - (sender_isn or 0)) & 0xFFFFFFFF,
                    relative_ack=(
                        (segment.ack - (receiver_isn or 0)) & 0xFFFFFFFF
                        if segment.flags & 0x10
                        else 0
                    ),
                    length=len(segment.payload),
                    window=segment.window,
                    options=segment.options.order,
                    tsval=None if timestamp is None else timestamp[0],
                    tsecr=None if timestamp is None else timestamp[1],
                    time_ns=int(time_ns or 0),
                    clock=clock,
                    our_state=entry.our_state,
                    peer_state=entry.peer_state,
                    note=entry.note,
                    raw=entry.raw,
                )
            )
        return tuple(out)
