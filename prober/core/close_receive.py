"""The close probe's receive space: RCV.NXT, the window we advertise, and the reassembly of
the peer's byte stream, with a cap a peer cannot push past.

Sequence numbers here are offsets from the peer's ISN + 1 (the probe converts), so there is no
wrap-around to think about.

What bounds the memory a peer can make us use:

- Out-of-order bytes are held only inside the receive window (RFC 9293 §3.10.7.4: a receiver
  keeps only what its window admits), in non-overlapping pieces: however the peer overlaps
  or repeats its segments, the buffer never holds more than the advertised window, and never
  more than ``MAX_PIECES`` pieces (each piece costs an object; a peer sending one byte in
  every other position would otherwise make thousands). A segment that would need more
  pieces is dropped and counted; TCP's retransmission recovers it, as after any loss.
- Bytes delivered in order are counted; the first ``keep`` of them are kept for the result,
  the rest are consumed at once, as an application reading its socket would. So a peer that
  sends without end costs a counter, not memory.
- Data outside the window (left of RCV.NXT: retransmissions; right of RCV.NXT + RCV.WND: the
  peer overran the window we advertised) is dropped and counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any

# Out-of-order pieces held at once. Linux's out-of-order queue is bounded by the socket's
# receive memory (truesize), which has the same effect: many tiny pieces fill it early.
MAX_PIECES = 64
# In-order bytes kept for the result (``CloseResult.received``); the rest are only counted.
DEFAULT_KEEP_BYTES = 1 << 20


class Placement(Enum):
    """What became of the bytes of one segment that lay inside the window."""

    IN_ORDER = "in-order"  # at RCV.NXT: delivered (and any buffered bytes they reached)
    BUFFERED = "buffered"  # beyond RCV.NXT: held until the hole before them fills
    DUPLICATE = "duplicate"  # every byte already buffered
    DROPPED = "dropped"  # the reassembly had no room for another piece


def acceptable(start: int, length: int, rcv_nxt: int, rcv_wnd: int) -> bool:
    """RFC 9293 §3.10.7.4, the first check: does a segment of ``length`` (payload + FIN)
    starting at offset ``start`` fall in the window [rcv_nxt, rcv_nxt + rcv_wnd)?

    A zero-window receiver accepts only an empty segment at exactly RCV.NXT.
    """
    window_end = rcv_nxt + rcv_wnd
    if length == 0:
        if rcv_wnd == 0:
            return start == rcv_nxt
        return rcv_nxt <= start < window_end
    if rcv_wnd == 0:
        return False
    end = start + length
    return (rcv_nxt <= start < window_end) or (rcv_nxt <= end - 1 < window_end)


@dataclass(frozen=True, slots=True)
class ReceiveStats:
    """What the receive space saw, for the result and its JSON."""

    window_bytes: int  # the window we advertised: the cap on buffered bytes
    buffered_high_water_bytes: int  # the most out-of-order bytes held at once
    buffered_high_water_pieces: int
    out_of_order_segments: int  # segments held beyond RCV.NXT
    dropped_no_room_segments: int  # out-of-order segments dropped: MAX_PIECES were held
    dropped_no_room_bytes: int
    out_of_window_segments: int  # segments entirely right of the window: dropped
    out_of_window_bytes: int  # bytes right of the window (whole segments and trimmed tails)
    delivered_bytes: int  # in order, in all
    kept_bytes: int  # of those, kept in ``received``

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # flat ints, keys as the fields are named


class Reassembly:
    """The peer's stream from RCV.NXT on: delivered bytes, and pieces waiting beyond a hole.

    Args:
        window: the receive window we advertise, in bytes (the buffer's cap).
        keep: in-order bytes to keep for the result; later ones are counted only.
    """

    def __init__(self, window: int, keep: int = DEFAULT_KEEP_BYTES) -> None:
        if window < 0 or keep < 0:
            raise ValueError("window and keep must be >= 0")
        self.window = window
        self.keep = keep
        self.rcv_nxt = 0  # offset of the next byte expected (the FIN, once consumed, counts)
        self.delivered = 0  # bytes delivered in order
        self._kept = bytearray()
        self._pieces: dict[int, bytes] = {}  # start offset -> bytes, disjoint, all > rcv_nxt
        self.buffered = 0  # bytes in _pieces
        self.high_water = 0
        self.high_water_pieces = 0
        self.out_of_order_segments = 0
        self.dropped_no_room_segments = 0
        self.dropped_no_room_bytes = 0
        self.out_of_window_segments = 0
        self.out_of_window_bytes = 0

    @property
    def window_end(self) -> int:
        """The first offset beyond the window: RCV.NXT + RCV.WND."""
        return self.rcv_nxt + self.window

    @property
    def kept(self) -> bytes:
        return bytes(self._kept)

    @property
    def pieces(self) -> int:
        return len(self._pieces)

    def reset_window(self, window: int) -> None:
        """The window the SYN/ACK settled (scaling on or off); nothing is buffered yet."""
        self.window = window

    def consume_fin(self) -> None:
        """RCV.NXT passes the peer's FIN (one sequence number, no data)."""
        self.rcv_nxt += 1

    def beyond_window(self, length: int, *, whole_segment: bool) -> None:
        """Count bytes that lay right of the window and were dropped."""
        self.out_of_window_bytes += length
        if whole_segment:
            self.out_of_window_segments += 1

    def add(self, at: int, data: bytes) -> Placement:
        """Place ``data`` starting at offset ``at``; the caller has trimmed it to
        [rcv_nxt, window_end)."""
        assert self.rcv_nxt <= at and at + len(data) <= self.window_end, (at, len(data))
        if not data:
            return Placement.DUPLICATE
        if at == self.rcv_nxt:
            self._deliver(data)
            self._drain()
            return Placement.IN_ORDER
        gaps = self._gaps(at, data)
        if not gaps:
            return Placement.DUPLICATE
        if len(self._pieces) + len(gaps) > MAX_PIECES:
            self.dropped_no_room_segments += 1
            self.dropped_no_room_bytes += sum(len(piece) for _, piece in gaps)
            return Placement.DROPPED
        for start, piece in gaps:
            self._pieces[start] = piece
            self.buffered += len(piece)
        self.out_of_order_segments += 1
        self.high_water = max(self.high_water, self.buffered)
        self.high_water_pieces = max(self.high_water_pieces, len(self._pieces))
        return Placement.BUFFERED

    def stats(self) -> ReceiveStats:
        return ReceiveStats(
            window_bytes=self.window,
            buffered_high_water_bytes=self.high_water,
            buffered_high_water_pieces=self.high_water_pieces,
            out_of_order_segments=self.out_of_order_segments,
            dropped_no_room_segments=self.dropped_no_room_segments,
            dropped_no_room_bytes=self.dropped_no_room_bytes,
            out_of_window_segments=self.out_of_window_segments,
            out_of_window_bytes=self.out_of_window_bytes,
            delivered_bytes=self.delivered,
            kept_bytes=len(self._kept),
        )

    # -- internals ----------------------------------------------------------------------------
    def _gaps(self, at: int, data: bytes) -> list[tuple[int, bytes]]:
        """The parts of [at, at + len(data)) that no held piece covers yet."""
        end = at + len(data)
        gaps: list[tuple[int, bytes]] = []
        position = at
        for start in sorted(self._pieces):
            stop = start + len(self._pieces[start])
            if stop <= position:
                continue
            if start >= end:
                break
            if start > position:
                gaps.append((position, data[position - at : start - at]))
            position = max(position, stop)
            if position >= end:
                break
        if position < end:
            gaps.append((position, data[position - at :]))
        return gaps

    def _deliver(self, data: bytes) -> None:
        room = self.keep - len(self._kept)
        if room > 0:
            self._kept += data[:room]
        self.delivered += len(data)
        self.rcv_nxt += len(data)

    def _drain(self) -> None:
        """Deliver the held pieces RCV.NXT has reached."""
        for start in sorted(self._pieces):
            if start > self.rcv_nxt:
                return
            piece = self._pieces.pop(start)
            self.buffered -= len(piece)
            stop = start + len(piece)
            if stop > self.rcv_nxt:
                self._deliver(piece[self.rcv_nxt - start :])
