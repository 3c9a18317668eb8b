"""The close probe's send space: what of our data and FIN is out, acknowledged or due, the
peer's window, and the retransmission timer's backoff.

Offsets count from our ISN + 1, so there is no wrap-around to think about: the SYN is offset
-1, our data occupies 0 .. len(data) - 1 and our FIN len(data). The probe converts to and from
sequence numbers and builds the segments; this space decides which are due (RFC 9293 §3.8.6
for the window, RFC 6298 for the timer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DataSegment:
    """One data segment due: ``last`` carries PSH (the end of our data)."""

    offset: int
    payload: bytes
    last: bool
    retransmission: bool


class SendSpace:
    """SND.UNA, SND.NXT, the highest offset sent, SND.WND; our FIN; the RTO's backoff.

    Args:
        data: the bytes to send once the connection is open.
        rto: the initial retransmission timeout, seconds (doubled on each expiry).
        mss: payload bytes per segment until the SYN/ACK says otherwise.
    """

    def __init__(self, data: bytes, rto: float, mss: int) -> None:
        self.data = data
        self.una = -1  # the SYN is offset -1
        self.nxt = -1
        self.max_sent = -1  # highest offset sent + 1 (go-back-N rewinds nxt only)
        self.wnd = 0  # the peer's window, in bytes
        self.mss = mss
        self.fin_wanted = False  # our close is decided: the FIN follows the data
        self.fin_sent = False
        self.fin_acked = False
        self.fin_retransmissions = 0
        self.initial_rto = rto
        self.rto = rto
        self.retries = 0

    @property
    def fin_offset(self) -> int:
        return len(self.data)

    @property
    def all_data_acked(self) -> bool:
        return self.una == self.fin_offset

    @property
    def acked_bytes(self) -> int:
        """How many of our data bytes the peer acknowledged."""
        return max(0, min(self.una, len(self.data)))

    @property
    def outstanding(self) -> bool:
        """Something is unacknowledged, or held back by a shut window."""
        return self.una < self.max_sent or self.nxt < len(self.data)

    def syn_out(self) -> None:
        self.nxt = self.max_sent = 0

    def opened(self, window: int, mss: int) -> None:
        """The SYN/ACK acknowledged our SYN; ``window`` is its (unscaled) window."""
        self.wnd = window
        self.mss = mss
        self.una = self.nxt = self.max_sent = 0
        self.rto = self.initial_rto
        self.retries = 0

    def data_due(self, *, force: bool = False) -> Iterator[DataSegment]:
        """New (or go-back-N) data segments the peer's window admits, each counted as sent
        when yielded. ``force`` sends one byte into a shut window (a window probe)."""
        size_total = len(self.data)
        while self.nxt < size_total:
            room = self.una + self.wnd - self.nxt
            if force:
                room = max(room, 1)
                force = False
            size = min(self.mss, size_total - self.nxt, room)
            if size <= 0:
                return
            start = self.nxt
            segment = DataSegment(
                start,
                self.data[start : start + size],
                last=start + size == size_total,
                retransmission=start < self.max_sent,
            )
            self.nxt = start + size
            self.max_sent = max(self.max_sent, self.nxt)
            yield segment

    @property
    def fin_due(self) -> bool:
        return self.fin_wanted and self.nxt == self.fin_offset

    def fin_out(self) -> bool:
        """Our FIN goes out; returns True if it is a retransmission."""
        again = self.fin_sent
        if again:
            self.fin_retransmissions += 1
        self.fin_sent = True
        self.nxt = self.fin_offset + 1
        self.max_sent = max(self.max_sent, self.nxt)
        return again

    def acknowledged(self, acked: int) -> bool:
        """The peer acknowledged up to offset ``acked`` (not beyond ``max_sent``); returns
        True if this acknowledges our FIN for the first time. RFC 6298 5.3: the backoff
        ends with new data acknowledged."""
        if acked <= self.una:
            return False
        self.una = acked
        self.nxt = max(self.nxt, acked)
        self.retries = 0
        self.rto = self.initial_rto
        if self.fin_sent and acked > self.fin_offset and not self.fin_acked:
            self.fin_acked = True
            return True
        return False

    def back_off(self, max_retries: int) -> bool:
        """The RTO expired: double it (RFC 6298 5.5) and go back to SND.UNA (go-back-N:
        5.4 asks for the first segment at least; resending the whole flight keeps ladders
        simple and deterministic). False once ``max_retries`` are spent."""
        self.retries += 1
        if self.retries > max_retries:
            return False
        self.rto *= 2
        self.nxt = self.una
        return True
