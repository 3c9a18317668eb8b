"""What a user-space TCP connection's segment log records, within budgets a peer cannot push
past (``TcpConnection`` keeps one).

The ladder shows the conversation's control segments always; bulk data (and our pure ACKs of
it) up to ``BULK_RECORDS`` segments, strays and late segments up to ``STRAY_RECORDS`` each.
Beyond those, segments are counted only (``unrecorded``). A segment we send is logged once
the engine reports it sent (or failed), with the states and note it was built with and the
arrival number of the segment it answers: the one being handled when it was built.
"""

from __future__ import annotations

from prober.core.parse import parse_packet
from prober.core.states import TcpState
from prober.core.timing import Stamp
from prober.core.trace import SegmentLog
from prober.core.wire import Packet

BULK_RECORDS = 256
STRAY_RECORDS = 32


class BudgetedLog:
    """A ``SegmentLog`` (``log``) fed within the budgets above.

    Args:
        isn: our initial sequence number (the log's numbering).
    """

    def __init__(self, isn: int) -> None:
        self.log = SegmentLog(isn)
        self.unrecorded = 0  # segments counted, not recorded
        # Segments handed out, logged once the engine reports them sent (or failed): the
        # packet, both states and the note as they were when built, and the arrival number
        # of the segment they answer. None: not to be recorded (bulk beyond the limit).
        self._queued: dict[int, tuple[Packet, TcpState, TcpState, str, int | None] | None] = {}
        self._answering: int | None = None  # arrival number of the segment being handled
        self._answering_recorded = False
        self._bulk_recorded = 0
        self._strays_recorded = 0

    def queue(
        self, index: int, raw: bytes, our: TcpState, peer: TcpState, note: str, *, bulk: bool
    ) -> None:
        """Our segment ``index`` (``raw``), to be logged once sent. ``bulk`` (data, a pure
        ACK): recorded only within the bulk budget, never when it answers an unrecorded one."""
        answering = self._answering if self._answering_recorded else None
        answers_unrecorded = self._answering is not None and not self._answering_recorded
        if bulk and (self._bulk_recorded >= BULK_RECORDS or answers_unrecorded):
            self._queued[index] = None
            self.unrecorded += 1
        else:
            self._bulk_recorded += bulk
            self._queued[index] = (parse_packet(raw), our, peer, note, answering)

    def sent(self, index: int, stamp: Stamp) -> None:
        queued = self._queued.pop(index, None)
        if queued is not None:
            packet, our, peer, note, answers = queued
            self.log.sent(index, packet, our, peer, note, answers=answers)
            self.log.stamp_sent(index, stamp)

    def send_failed(self, index: int, error: str) -> None:
        queued = self._queued.pop(index, None)
        if queued is not None:
            packet, our, peer, note, answers = queued
            self.log.send_failed(index, packet, our, peer, note, error, answers=answers)

    def received(
        self, packet: Packet, stamp: Stamp, our: TcpState, peer: TcpState, note: str, *,
        bulk: bool, stray: bool,
    ) -> int:
        """Log a received segment (within the budgets); returns its arrival number. What is
        queued until ``handled`` answers it."""
        recorded = True
        if bulk:
            recorded = self._bulk_recorded < BULK_RECORDS
            self._bulk_recorded += recorded
        elif stray:
            recorded = self._strays_recorded < STRAY_RECORDS
            self._strays_recorded += recorded
        if recorded:
            number = self.log.received(packet, stamp, our, peer, note)
        else:
            number = self.log.arrival()
            self.unrecorded += 1
        self._answering, self._answering_recorded = number, recorded
        return number

    def handled(self) -> None:
        """The received segment is dealt with: what is queued next answers nothing."""
        self._answering = None
