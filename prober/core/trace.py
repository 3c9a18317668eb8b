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


# A logged segment, named as the probe knows it: (SENT, the engine's index of the segment) or
# (RECEIVED, the number of the arrival, counted by the log from 0).
Ref = tuple[Direction, int]


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One segment of a conversation, as the ladder shows it.

    Records come in the order prober handled the segments, which is not always the order of
    their timestamps: a segment that arrived while prober was still answering the one before
    has an earlier stamp than that answer (renderers sort by ``time_ns``). ``answers`` says
    which received segment a segment of ours answered, and ``reaction_ns`` how long after it
    arrived our answer left.
    """

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
    time_ns: int  # CLOCK_REALTIME, on ``clock`` (a failed send: the record before it)
    clock: Clock
    our_state: TcpState  # after this segment, as prober knew it when it handled the segment
    peer_state: TcpState  # inferred from what the peer sent and received
    note: str = ""  # e.g. "retransmission", "out of order", "data after our FIN"
    raw: bytes = field(default=b"", repr=False, compare=False)  # empty for a failed send
    send_error: str | None = None  # why this segment of ours could not be sent
    answers: int | None = None  # index (in the same records) of the segment this answered
    reaction_ns: int | None = None  # from that segment's arrival to this one's departure

    @property
    def sent_ok(self) -> bool:
        """A segment we sent, or one we received; False for a send that failed."""
        return self.send_error is None

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
            "send_error": self.send_error,
            "answers": self.answers,
            "reaction_us": None if self.reaction_ns is None else self.reaction_ns / 1000.0,
        }


@dataclass(slots=True)
class _Entry:
    direction: Direction
    segment: TcpSegment
    stamp: Stamp | None  # None for a send that failed
    our_state: TcpState
    peer_state: TcpState
    note: str
    raw: bytes
    answers: int | None = None  # arrival number of the received segment this answers
    send_error: str | None = None


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
        self._received_index: dict[int, int] = {}  # arrival number -> entry
        self._arrivals = 0

    def sent(
        self,
        index: int,
        packet: Packet,
        our_state: TcpState,
        peer_state: TcpState,
        note: str = "",
        *,
        answers: int | None = None,
    ) -> None:
        """Log a segment the engine sent; ``index`` is its number in the probe's output.

        Its stamp is filled in by ``stamp_sent``; ``answers`` is the arrival number (from
        ``received``) of the segment it answers.
        """
        assert packet.tcp is not None
        self._sent_index[index] = len(self._entries)
        self._entries.append(
            _Entry(
                Direction.SENT, packet.tcp, Stamp(0), our_state, peer_state, note, packet.raw,
                answers,
            )
        )

    def send_failed(
        self,
        index: int,
        packet: Packet,
        our_state: TcpState,
        peer_state: TcpState,
        note: str,
        error: str,
        *,
        answers: int | None = None,
    ) -> None:
        """Log a segment the engine could not send: shown as failed, never as sent."""
        assert packet.tcp is not None
        self._sent_index[index] = len(self._entries)
        self._entries.append(
            _Entry(
                Direction.SENT, packet.tcp, None, our_state, peer_state, note, b"", answers,
                error,
            )
        )

    def stamp_sent(self, index: int, stamp: Stamp) -> None:
        position = self._sent_index.get(index)
        if position is not None and self._entries[position].send_error is None:
            self._entries[position].stamp = stamp

    def kernel_stamp_sent(self, index: int, kernel_ns: int) -> None:
        position = self._sent_index.get(index)
        if position is not None:
            entry = self._entries[position]
            if entry.stamp is not None:
                entry.stamp = entry.stamp.with_kernel(kernel_ns)

    def received(
        self,
        packet: Packet,
        stamp: Stamp,
        our_state: TcpState,
        peer_state: TcpState,
        note: str = "",
    ) -> int:
        """Log a received segment; returns its arrival number (for ``answers`` and refs)."""
        assert packet.tcp is not None
        number = self.arrival()
        self._received_index[number] = len(self._entries)
        self._entries.append(
            _Entry(Direction.RECEIVED, packet.tcp, stamp, our_state, peer_state, note, packet.raw)
        )
        return number

    def arrival(self) -> int:
        """Number an arrival; ``received`` does so, a probe that does not log one calls this."""
        number = self._arrivals
        self._arrivals += 1
        return number

    @property
    def next_arrival(self) -> int:
        """The number the next arrival will get."""
        return self._arrivals

    def __len__(self) -> int:
        return len(self._entries)

    def _clock(self) -> Clock:
        stamps = [e.stamp for e in self._entries if e.stamp is not None]
        return Clock.KERNEL if all(s.kernel_ns is not None for s in stamps) else Clock.USER

    def _times(self, clock: Clock) -> list[int]:
        """Each entry's time on ``clock``; a failed send takes the time of the entry before."""
        times: list[int] = []
        previous = 0
        for entry in self._entries:
            stamp = entry.stamp
            if stamp is not None:
                value = stamp.kernel_ns if clock is Clock.KERNEL else stamp.user_ns
                previous = int(value or 0)
            times.append(previous)
        return times

    def _position(self, ref: Ref) -> int | None:
        direction, number = ref
        table = self._sent_index if direction is Direction.SENT else self._received_index
        position = table.get(number)
        if position is None or self._entries[position].stamp is None:
            return None
        return position

    def elapsed_us(self, first: Ref | None, second: Ref | None) -> float | None:
        """Microseconds from ``first`` to ``second`` on the records' clock; None if either
        is missing (not logged, or a send that failed)."""
        if first is None or second is None:
            return None
        a, b = self._position(first), self._position(second)
        if a is None or b is None:
            return None
        times = self._times(self._clock())
        return (times[b] - times[a]) / 1000.0

    def records(self) -> tuple[SegmentRecord, ...]:
        """Frozen records in the order prober handled them; all on the kernel clock when
        every segment sent or received has a kernel stamp."""
        clock = self._clock()
        times = self._times(clock)
        out = []
        for position, entry in enumerate(self._entries):
            segment = entry.segment
            ours = entry.direction is Direction.SENT
            sender_isn = self.our_isn if ours else self.peer_isn
            receiver_isn = self.peer_isn if ours else self.our_isn
            timestamp = segment.options.timestamp
            answered = (
                None if entry.answers is None else self._received_index.get(entry.answers)
            )
            reaction = (
                None
                if answered is None or entry.stamp is None
                else times[position] - times[answered]
            )
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
                    time_ns=times[position],
                    clock=clock,
                    our_state=entry.our_state,
                    peer_state=entry.peer_state,
                    note=entry.note,
                    raw=entry.raw,
                    send_error=entry.send_error,
                    answers=answered,
                    reaction_ns=reaction,
                )
            )
        return tuple(out)
