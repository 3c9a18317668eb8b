"""A packet socket's receive ring (PACKET_RX_RING, TPACKET_V3): many frames per read, no
syscall per frame.

The kernel writes each frame the filter passes into a block of a ring shared with us by mmap,
with its receive time; a block is handed to user space when full or after
``RETIRE_BLOCK_MS``. Reading is a walk over the blocks user space owns, giving each back by
writing its status (Documentation/networking/packet_mmap.rst, TPACKET_V3). At a scan's
rates this replaces one recvmsg per answer (about 3 µs, most of it the syscall and the
ancillary-data parsing) by a few struct reads. Frames start at the network header (the
socket is SOCK_DGRAM), as with recvmsg.
"""

from __future__ import annotations

import mmap
import socket
import struct
from collections.abc import Iterator
from typing import Final

SOL_PACKET: Final = 263
PACKET_RX_RING: Final = 5
PACKET_VERSION: Final = 10
TPACKET_V3: Final = 2
TP_STATUS_KERNEL: Final = 0
TP_STATUS_USER: Final = 1

# A block is handed over when full or RETIRE_BLOCK_MS after its first frame, whichever is
# first, so at a low rate most of a block is wasted: the ring holds at least BLOCK_COUNT x
# RETIRE_BLOCK_MS of frames (2 s), and at a high rate 32 MiB of them (about 300,000 answers).
# With 32 blocks of 1 MiB and 2 ms, a 23,000/s scan had 64 ms of room and lost answers.
BLOCK_SIZE: Final = 1 << 17
BLOCK_COUNT: Final = 256  # 32 MiB, as the plain capture buffer (sockets.CAPTURE_BUFFER_BYTES)
FRAME_SIZE: Final = 2048  # only sizes tp_frame_nr: V3 packs frames by their real length
RETIRE_BLOCK_MS: Final = 8

_REQ3: Final = struct.Struct("IIIIIII")  # struct tpacket_req3
_BLOCK: Final = struct.Struct("III")  # block_status, num_pkts, offset_to_first_pkt (at 8)
_FRAME: Final = struct.Struct("IIIIIIHH")  # tpacket3_hdr: next, sec, nsec, snaplen, len,
# status, mac, net
_U32: Final = struct.Struct("I")


class RxRing:
    """The ring of ``sock`` (a packet socket with its filter attached)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        request = _REQ3.pack(
            BLOCK_SIZE, BLOCK_COUNT, FRAME_SIZE, BLOCK_SIZE * BLOCK_COUNT // FRAME_SIZE,
            RETIRE_BLOCK_MS, 0, 0,
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
        self._map = mmap.mmap(sock.fileno(), BLOCK_SIZE * BLOCK_COUNT, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self._map)
        self._block = 0

    def frames(self, limit: int) -> Iterator[tuple[bytes, int]]:
        """Frames (IP packet, kernel receive time in ns) from the blocks user space owns,
        block by block, until a block is still the kernel's or ``limit`` blocks were read."""
        view = self._view
        block_unpack = _BLOCK.unpack_from
        frame_unpack = _FRAME.unpack_from
        for _ in range(limit):
            base = self._block * BLOCK_SIZE
            status, count, offset = block_unpack(view, base + 8)
            if not status & TP_STATUS_USER:
                return
            at = base + offset
            for _ in range(count):
                next_offset, sec, nsec, snaplen, _length, _status, _mac, net = frame_unpack(
                    view, at
                )
                start = at + net
                yield bytes(view[start : start + snaplen]), sec * 1_000_000_000 + nsec
                at += next_offset
            _U32.pack_into(view, base + 8, TP_STATUS_KERNEL)  # the block is the kernel's again
            self._block = (self._block + 1) % BLOCK_COUNT

    def close(self) -> None:
        self._view.release()
        self._map.close()
