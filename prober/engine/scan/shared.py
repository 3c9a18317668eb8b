"""The memory the scan's sender process and its receiver (the parent) share.

One memfd (``os.memfd_create``: anonymous shared memory with no name to clean up, passed to
the sender by descriptor and freed when both processes have closed it), laid out as fixed
arrays:

- ``counters``: a few int64 the sender publishes (SYNs sent, sends failed, kernel TX stamps
  paired, targets planned so far) for the progress line and the summary.
- the send ring: for each of the last ``RING_SIZE`` sends (slot = send index k mod
  RING_SIZE), k itself, the target's position, the send time (ns, CLOCK_REALTIME), a tag
  of the target (the low 32 bits of its cookie: k alone names a send, not whose) and a
  byte holding the attempt (low 6 bits), whether the target was named (bit 6) and whether
  the time is the kernel's TX stamp (bit 7). The sender clears the slot's k first and
  writes the new k last, so a reader that finds the k it computed from a reply before and
  after reading the other fields has read a whole entry (a slot is rewritten only
  RING_SIZE sends later).
- ``concluded``: one bit per position, set by the receiver alone when the target's record
  is out (``silent``, beside it: the record was silence, so a later answer is late). The
  sender reads it to skip retries of answered targets; a stale read only costs a retry
  whose answer is counted as a duplicate.

RING_SIZE sends last 7 s at 150,000 SYN/s and 17 min at the default 1,000/s: an answer
later than that cannot be paired with its send and is counted as late, not reported. The
segment is 2**20 * 29 bytes (29 MiB) plus one bit per target; the bitmap's pages are only
backed by memory where bits were written.
"""

from __future__ import annotations

import mmap
import os
from enum import IntEnum
from typing import Final

RING_BITS: Final = 20
RING_SIZE: Final = 1 << RING_BITS
RING_MASK: Final = RING_SIZE - 1
EMPTY_SLOT: Final = (1 << 64) - 1
KERNEL_TIME: Final = 0x80  # in ring_meta: the send time is the kernel's TX stamp
NAMED: Final = 0x40  # in ring_meta: the target was given by name (a "name" note follows)
ATTEMPT_MASK: Final = 0x3F
STDIN_BITMAP_BITS: Final = 1 << 31  # positions a stdin scan may reach (256 MiB, sparse)


class Counter(IntEnum):
    SENT = 0
    SEND_FAILED = 1
    TX_STAMPS = 2
    PLANNED = 3  # targets the sender has taken from the plan so far
    PLAN_DONE = 4  # 1 once the sender has read the whole plan
    FIRST_SEND_NS = 5  # CLOCK_MONOTONIC of the first and the latest send (the sending rate)
    LAST_SEND_NS = 6
    PAUSED = 7  # 1 while the receiver's records wait for a slow consumer: send nothing


_COUNTERS: Final = 16


class ScanShared:
    """Views over the shared segment (see the module docstring)."""

    def __init__(self, fd: int, bitmap_bits: int) -> None:
        self.fd = fd
        self.bitmap_bits = bitmap_bits
        self._map = mmap.mmap(fd, self.size(bitmap_bits), mmap.MAP_SHARED)
        buf = memoryview(self._map)
        offset = 0
        self._views: list[memoryview] = [buf]  # every view, released before the map closes

        def take(size: int) -> memoryview:
            nonlocal offset
            view = buf[offset : offset + size]
            offset += size
            self._views.append(view)
            return view

        self.counters = take(8 * _COUNTERS).cast("q")
        self.ring_k = take(8 * RING_SIZE).cast("Q")
        self.ring_position = take(8 * RING_SIZE).cast("Q")
        self.ring_time = take(8 * RING_SIZE).cast("q")
        self.ring_tag = take(4 * RING_SIZE).cast("I")
        self.ring_meta = take(RING_SIZE).cast("B")
        self.concluded = take((bitmap_bits + 7) // 8).cast("B")
        self.silent = take((bitmap_bits + 7) // 8).cast("B")

    @staticmethod
    def size(bitmap_bits: int) -> int:
        return 8 * _COUNTERS + 29 * RING_SIZE + 2 * ((bitmap_bits + 7) // 8)

    @classmethod
    def create(cls, bitmap_bits: int) -> ScanShared:
        """A new segment; its descriptor (``fd``) is not inheritable: it is passed to the
        sender alone (``pass_fds``)."""
        fd = os.memfd_create("prober-scan", os.MFD_CLOEXEC)
        os.ftruncate(fd, cls.size(bitmap_bits))
        shared = cls(fd, bitmap_bits)
        shared.ring_k[0:RING_SIZE] = memoryview(b"\xff" * (8 * RING_SIZE)).cast("Q")
        return shared

    @classmethod
    def attach(cls, fd: int, bitmap_bits: int) -> ScanShared:
        return cls(fd, bitmap_bits)

    def is_concluded(self, position: int) -> bool:
        return bool(self.concluded[position >> 3] & (1 << (position & 7)))

    def conclude(self, position: int) -> None:
        self.concluded[position >> 3] |= 1 << (position & 7)

    def is_silent(self, position: int) -> bool:
        return bool(self.silent[position >> 3] & (1 << (position & 7)))

    def mark_silent(self, position: int) -> None:
        self.silent[position >> 3] |= 1 << (position & 7)

    def close(self) -> None:
        for cast in (
            self.counters, self.ring_k, self.ring_position, self.ring_time, self.ring_tag,
            self.ring_meta, self.concluded, self.silent,
        ):
            cast.release()
        for view in reversed(self._views):
            view.release()
        self._map.close()
        os.close(self.fd)
