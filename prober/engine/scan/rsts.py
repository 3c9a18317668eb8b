"""Leave no half-open connection behind: every SYN/ACK a scan gets is answered by a RST.

The local kernel knows none of the scan's connections, so it answers each SYN/ACK on the
scan's (bound, never listening) source ports with a RST, and the peer frees its request
socket at once instead of retransmitting the SYN/ACK for a minute (RFC 9293 3.10.7.1). A
host firewall that drops conntrack-invalid packets silences those RSTs (the raw SYN went
out beside conntrack, so the SYN/ACK looks invalid), and the peer is left retransmitting
and, under a scan's load, sending SYN cookies. So each SYN/ACK is owed a RST: the kernel's,
seen leaving on a packet socket (sockets.open_outgoing_rst_socket), or prober's own, sent
when the kernel's has not left within ``GRACE_S``. prober's own RSTs leave past the same
socket: they are told from the kernel's by their keys (sent in the last ``SEEN_S``), and
recorded in the pcap there, once, with the kernel's time as every RST. Memory: the SYN/ACKs
of the last GRACE_S, and the RSTs sent or seen in the last ``SEEN_S``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from typing import BinaryIO, Final

from prober.core.handshake_conversation import bare_rst_template
from prober.core.pcap_format import record
from prober.engine.scan.replies import Answer
from prober.engine.sockets import (
    disable_tx_timestamps,
    open_outgoing_rst_socket,
    open_send_socket,
    read_frames,
)

GRACE_S: Final = 0.02
SEEN_S: Final = 1.0
_V4_PORTS: Final = struct.Struct("!HH")
_FAMILY: Final = {4: socket.AF_INET, 6: socket.AF_INET6}

# (target address, target port, our port)
RstKey = tuple[bytes, int, int]


class RstDuty:
    def __init__(self, ports: Sequence[int]) -> None:
        self._ports = frozenset(ports)
        self._socket = open_outgoing_rst_socket()
        self._senders: dict[int, socket.socket] = {}
        # Owed: key -> (deadline, version, our address, seq); in deadline order in _order.
        self._owed: dict[RstKey, tuple[float, int, bytes, int]] = {}
        self._order: deque[tuple[float, RstKey]] = deque()
        # key -> expiry: kernel RSTs not (yet) matched to a SYN/ACK, and prober's own RSTs
        # not (yet) seen leaving
        self._seen: dict[RstKey, float] = {}
        self._seen_order: deque[tuple[float, RstKey]] = deque()
        self._own: dict[RstKey, float] = {}
        self._own_order: deque[tuple[float, RstKey]] = deque()
        self.kernel_rsts = 0
        self.own_rsts = 0
        self.own_failed = 0
        self.pcap: BinaryIO | None = None

    def fileno(self) -> int:
        return self._socket.fileno()

    def owe(self, answer: Answer, now: float) -> None:
        """A SYN/ACK arrived: a RST is owed to its sender."""
        key = (answer.target, answer.port, answer.source_port)
        if key in self._seen:
            del self._seen[key]
            self.kernel_rsts += 1
            return
        if key in self._owed:
            return  # a retransmitted SYN/ACK: one RST answers both
        assert answer.synack_seq_ack is not None
        deadline = now + GRACE_S
        self._owed[key] = (deadline, answer.packet.version, answer.source, answer.synack_seq_ack)
        self._order.append((deadline, key))

    def read_kernel_rsts(self) -> None:
        now = time.monotonic()
        for data, kernel_ns in read_frames(self._socket, 1 << 16):
            key = _rst_key(data)
            if key is None or key[2] not in self._ports:
                continue
            if self.pcap is not None:
                self.pcap.write(record(kernel_ns or time.time_ns(), data))
            if self._own.pop(key, None) is not None:
                continue  # prober's own, seen leaving
            if key in self._owed:
                del self._owed[key]
                self.kernel_rsts += 1
            elif key not in self._seen:
                self._seen[key] = now + SEEN_S
                self._seen_order.append((now + SEEN_S, key))

    def settle(self, now: float, *, everything: bool = False) -> None:
        """Send prober's own RST for every SYN/ACK whose grace is over (all, at the end)."""
        self.read_kernel_rsts()
        order = self._order
        while order and (everything or order[0][0] <= now):
            _deadline, key = order.popleft()
            owed = self._owed.pop(key, None)
            if owed is not None:
                self._send_rst(key, *owed[1:])
        for order, keys in ((self._seen_order, self._seen), (self._own_order, self._own)):
            while order and order[0][0] <= now:
                _expiry, key = order.popleft()
                if keys.get(key, now) <= now:  # not refreshed by a later one
                    keys.pop(key, None)

    def _send_rst(self, key: RstKey, version: int, source: bytes, seq: int) -> None:
        target, port, our_port = key
        sock = self._senders.get(version)
        if sock is None:
            sock = self._senders[version] = open_send_socket(version)
            with contextlib.suppress(OSError):
                disable_tx_timestamps(sock)
        packet = bare_rst_template(version).build(source, target, our_port, port, seq)
        try:
            sock.sendto(packet, (socket.inet_ntop(_FAMILY[version], target), 0))
        except OSError:
            self.own_failed += 1
            return
        self.own_rsts += 1
        expiry = time.monotonic() + SEEN_S
        self._own[key] = expiry
        self._own_order.append((expiry, key))

    def close(self) -> None:
        self._socket.close()
        for sock in self._senders.values():
            sock.close()


def _rst_key(data: bytes) -> RstKey | None:
    """(destination, destination port, source port) of an outgoing RST's IP packet."""
    if len(data) < 20:
        return None
    if data[0] >> 4 == 4:
        ihl = (data[0] & 0x0F) * 4
        if len(data) < ihl + 4:
            return None
        sport, dport = _V4_PORTS.unpack_from(data, ihl)
        return bytes(data[16:20]), dport, sport
    if len(data) < 44:
        return None
    sport, dport = _V4_PORTS.unpack_from(data, 40)
    return bytes(data[24:40]), dport, sport
