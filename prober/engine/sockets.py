"""Raw send sockets, the capture socket, and the kernel interfaces around them.

Sending: one raw socket per IP version (IPPROTO_RAW, so we write the IP header ourselves),
with software TX timestamps whose ids pair each stamp with its send (see txstamps.py for the
two ways a kernel numbers them, and which kernels have which).

Receiving: one AF_PACKET/SOCK_DGRAM socket on every interface, so frames arrive starting at
the IP header, each with the kernel's receive timestamp (SO_TIMESTAMPNS). A classic BPF
program in the kernel keeps only what prober may care about; on loopback a packet socket
sees every packet twice (outgoing and incoming), so outgoing copies are dropped there too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
from collections.abc import Iterator, Sequence

from prober.engine.firewall import PROBER_MARK
from prober.errors import RawSocketsNotPermitted

SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
SO_MARK = 36
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
SCM_TS_OPT_ID = 81
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4

SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
TX_TIMESTAMP_FLAGS = (
    SOF_TIMESTAMPING_TX_SOFTWARE
    | SOF_TIMESTAMPING_SOFTWARE
    | SOF_TIMESTAMPING_OPT_ID
    | SOF_TIMESTAMPING_OPT_TSONLY
)

# Answers queue here while Python is busy: at 20,000 answers/s a frame costs ~1 KiB of skb
# truesize, so 32 MiB rides out a stall of over a second before the kernel drops (and counts,
# PACKET_STATISTICS) anything. Memory is only used while frames wait.
CAPTURE_BUFFER_BYTES = 32 * 1024 * 1024
# The send sockets' error queues hold TX stamps until they are drained; each is charged to
# SO_RCVBUF (timestamping.rst, OPT_TSONLY), and one that does not fit is dropped.
TX_STAMP_BUFFER_BYTES = 4 * 1024 * 1024
SNAPLEN = 65535

_TIMESPEC = struct.Struct("qq")
_SCM_TIMESTAMPING = struct.Struct("qqqqqq")  # three timespecs: software, (deprecated), raw hardware
_EXTENDED_ERR = struct.Struct("IBBBBII")  # struct sock_extended_err
_TS_ID = struct.Struct("I")
_PACKET_STATS = struct.Struct("II")  # struct tpacket_stats
SO_EE_ORIGIN_TIMESTAMPING = 4


def _raise_permission(exc: OSError) -> None:
    if exc.errno in (errno.EPERM, errno.EACCES):
        raise RawSocketsNotPermitted(
            "raw sockets are not allowed: run as root (sudo) or grant CAP_NET_RAW "
            "(setcap cap_net_raw+ep on the Python interpreter)"
        ) from exc
    raise exc


def open_send_socket(version: int) -> socket.socket:
    """A non-blocking raw socket that sends whole IP packets, with software TX timestamps."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except OSError as exc:
        _raise_permission(exc)
        raise
    sock.setblocking(False)
    # prober's own packets carry its mark, so its RST-suppression rule lets its RSTs out.
    # Setting a mark needs CAP_NET_ADMIN, as does the suppression itself.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, PROBER_MARK)
    # Without TX timestamps, RTTs fall back to user-space time on both ends.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TX_TIMESTAMP_FLAGS)
    _set_receive_buffer(sock, TX_STAMP_BUFFER_BYTES)
    return sock


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    """SO_RCVBUFFORCE (CAP_NET_ADMIN: past net.core.rmem_max), else as much as allowed."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _open_packet_socket() -> socket.socket:
    """A non-blocking packet socket on all interfaces, cooked (frames start at the IP
    header), whose filter passes nothing yet: no stray frame queued between socket() and
    the first real filter is ever read."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    except OSError as exc:
        _raise_permission(exc)
        raise
    sock.setblocking(False)
    attach_filter(sock, capture_filter(()))
    _drain_unfiltered(sock)
    return sock


def open_capture_socket() -> socket.socket:
    """A non-blocking packet socket on all interfaces, cooked (frames start at the IP header)."""
    sock = _open_packet_socket()
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    # Not a tap on outgoing packets at all (Linux 4.20+): every send skips this socket instead
    # of running its filter, so prober does not delay its own SYNs before their TX timestamp.
    # The filter also drops outgoing frames, for kernels without this option.
    with contextlib.suppress(OSError):
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    _set_receive_buffer(sock, CAPTURE_BUFFER_BYTES)
    return sock


def _drain_unfiltered(sock: socket.socket) -> None:
    for _ in range(100_000):
        try:
            sock.recv(1)
        except BlockingIOError:
            return


# -- classic BPF -----------------------------------------------------------------------------
# Opcodes from linux/filter.h.
_BPF_LD_W_ABS = 0x20
_BPF_LD_H_ABS = 0x28
_BPF_LD_B_ABS = 0x30
_BPF_LDX_B_MSH = 0xB1
_BPF_LD_H_IND = 0x48
_BPF_LD_B_IND = 0x50
_BPF_ALU_AND_K = 0x54
_BPF_ALU_LSH_K = 0x64
_BPF_ALU_ADD_K = 0x04
_BPF_ALU_ADD_X = 0x0C
_BPF_TAX = 0x07
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JGT_K = 0x25
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_SKF_AD_OFF = -0x1000
_SKF_AD_PROTOCOL = 0
_SKF_AD_PKTTYPE = 4
_INSN = struct.Struct("HBBI")

_IPV6_EXTENSION_HEADERS = (0, 43, 44, 51, 60)


_BPF_JA = 0x05
_Insn = tuple[
    int, str | None, str | None, int
]  # opcode, jump-if-true label, jump-if-false label, k


PortRange = tuple[int, int]  # inclusive
MAX_FILTER_RANGES = 64  # two instructions each; every jump stays within BPF's 255


def capture_filter(ranges: Sequence[PortRange]) -> list[tuple[int, int, int, int]]:
    """The kernel filter: incoming IPv4/IPv6 TCP to local ports in ``ranges``, and ICMP and
    ICMPv6 messages that quote a TCP header whose source port is in ``ranges``.

    ``ranges`` are inclusive (low, high) pairs, sorted and disjoint (prober's reserved source
    ports, see ports.py), at most MAX_FILTER_RANGES of them. Frames start at the IP header
    (SOCK_DGRAM). IPv4 non-first fragments are dropped (no TCP header). IPv6 packets with
    extension headers (outer or quoted) are passed to user space, which walks them; they are
    rare. A load past the end of a frame ends the program with 0 (drop), so truncated
    messages are dropped. No ranges: no TCP and no ICMP at all.
    """
    if len(ranges) > MAX_FILTER_RANGES:
        raise ValueError(f"{len(ranges)} port ranges: at most {MAX_FILTER_RANGES}")
    # A = the destination port. Ranges ascend: above this range's high end, try the next
    # range; else at or above its low end, accept; else it lies in a gap below: drop.
    port_checks: list[str | _Insn] = []
    for number, (low, high) in enumerate(ranges):
        following = f"range_{number + 1}" if number + 1 < len(ranges) else "drop"
        port_checks += [
            f"range_{number}",
            (_BPF_JGT_K, following, None, high),
            (_BPF_JGE_K, "accept", "drop", low),
        ]
    if not ranges:
        port_checks.append((_BPF_JA, "drop", None, 0))
    ad = _SKF_AD_OFF & 0xFFFFFFFF
    quoted_v6_extensions = [
        (_BPF_JEQ_K, "accept", None, header) for header in _IPV6_EXTENSION_HEADERS
    ]
    # Labels are plain strings; instructions are (opcode, jt, jf, k) with jumps by label.
    # Every path ends at port_check with A = our port: a TCP segment's destination port, or
    # the source port of the TCP header an ICMP error quotes (ours, if it is about a probe).
    program: list[str | _Insn] = [
        (_BPF_LD_W_ABS, None, None, ad + _SKF_AD_PKTTYPE),
        (_BPF_JEQ_K, "drop", None, PACKET_OUTGOING),
        (_BPF_LD_W_ABS, None, None, ad + _SKF_AD_PROTOCOL),
        (_BPF_JEQ_K, None, "not_v4", ETH_P_IP),
        (_BPF_LD_H_ABS, None, None, 6),  # flags and fragment offset
        (_BPF_JSET_K, "drop", None, 0x1FFF),  # a later fragment: no transport header
        (_BPF_LDX_B_MSH, None, None, 0),  # X = IPv4 header length
        (_BPF_LD_B_ABS, None, None, 9),  # IPv4 protocol
        (_BPF_JEQ_K, "icmp4", None, socket.IPPROTO_ICMP),
        (_BPF_JEQ_K, None, "drop", socket.IPPROTO_TCP),
        (_BPF_LD_H_IND, None, None, 2),  # TCP destination port
        (_BPF_JA, "port_check", None, 0),
        "icmp4",  # 8 bytes of ICMP header, then the quoted IPv4 header and TCP ports
        (_BPF_LD_B_IND, None, None, 8 + 9),  # the quoted protocol
        (_BPF_JEQ_K, None, "drop", socket.IPPROTO_TCP),
        (_BPF_LD_B_IND, None, None, 8),  # the quoted version and header length
        (_BPF_ALU_AND_K, None, None, 0x0F),
        (_BPF_ALU_LSH_K, None, None, 2),
        (_BPF_ALU_ADD_X, None, None, 0),
        (_BPF_ALU_ADD_K, None, None, 8),
        (_BPF_TAX, None, None, 0),  # X = where the quoted TCP header starts
        (_BPF_LD_H_IND, None, None, 0),  # the quoted TCP source port
        (_BPF_JA, "port_check", None, 0),
        "not_v4",
        (_BPF_JEQ_K, None, "drop", ETH_P_IPV6),
        (_BPF_LD_B_ABS, None, None, 6),  # IPv6 next header
        (_BPF_JEQ_K, "icmp6", None, socket.IPPROTO_ICMPV6),
        *[(_BPF_JEQ_K, "accept", None, header) for header in _IPV6_EXTENSION_HEADERS],
        (_BPF_JEQ_K, None, "drop", socket.IPPROTO_TCP),
        (_BPF_LD_H_ABS, None, None, 42),  # TCP destination port after a bare IPv6 header
        (_BPF_JA, "port_check", None, 0),
        "icmp6",  # 40 + 8 bytes, then the quoted IPv6 header (next header at +6), then TCP
        (_BPF_LD_B_ABS, None, None, 40 + 8 + 6),
        *quoted_v6_extensions,  # rare: user space walks them
        (_BPF_JEQ_K, None, "drop", socket.IPPROTO_TCP),
        (_BPF_LD_H_ABS, None, None, 40 + 8 + 40),  # the quoted TCP source port
        "port_check",
        *port_checks,
        "accept",
        (_BPF_RET_K, None, None, SNAPLEN),
        "drop",
        (_BPF_RET_K, None, None, 0),
    ]
    labels: dict[str, int] = {}
    index = 0
    for item in program:
        if isinstance(item, str):
            labels[item] = index
        else:
            index += 1
    compiled: list[tuple[int, int, int, int]] = []
    for item in program:
        if isinstance(item, str):
            continue
        opcode, true_label, false_label, k = item
        here = len(compiled)

        def relative(label: str | None, here: int = here) -> int:
            if label is None:
                return 0
            jump = labels[label] - here - 1
            if not 0 <= jump <= 255:
                raise AssertionError(f"BPF jump to {label} out of range")
            return jump

        if opcode == _BPF_JA:  # an unconditional jump keeps its offset in k
            compiled.append((opcode, 0, 0, relative(true_label)))
        else:
            compiled.append((opcode, relative(true_label), relative(false_label), k))
    return compiled


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """Attach (or atomically replace) a classic BPF program on ``sock``."""
    code = b"".join(_INSN.pack(*insn) for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# -- reading ----------------------------------------------------------------------------------
def read_frames(sock: socket.socket, limit: int) -> Iterator[tuple[bytes, int | None]]:
    """Yield up to ``limit`` captured frames with their kernel receive time (ns), until EAGAIN."""
    recvmsg = sock.recvmsg
    unpack = _TIMESPEC.unpack_from
    for _ in range(limit):
        try:
            data, ancillary, _flags, _addr = recvmsg(SNAPLEN, 64)
        except (BlockingIOError, InterruptedError):
            return
        kernel_ns = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = unpack(payload)
                kernel_ns = seconds * 1_000_000_000 + nanoseconds
        yield data, kernel_ns


def read_tx_stamps(sock: socket.socket) -> Iterator[tuple[int, int]]:
    """Drain the send socket's error queue: yield (send id, kernel TX time in ns)."""
    recvmsg = sock.recvmsg
    for _ in range(100_000):
        try:
            _data, ancillary, _flags, _addr = recvmsg(0, 512, socket.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return
        stamp_ns = None
        send_id = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
                seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                stamp_ns = seconds * 1_000_000_000 + nanoseconds
            elif len(payload) >= _EXTENDED_ERR.size:
                fields = _EXTENDED_ERR.unpack_from(payload)
                if fields[1] == SO_EE_ORIGIN_TIMESTAMPING:
                    send_id = fields[6]
        if stamp_ns is not None and send_id is not None:
            yield send_id, stamp_ns


def send_with_id(
    sock: socket.socket, packet: bytes, address: tuple[str, int], send_id: int | None
) -> None:
    """Send one packet; tag its TX timestamp with ``send_id`` when the kernel supports it."""
    if send_id is None:
        sock.sendto(packet, address)
    else:
        sock.sendmsg(
            [packet], [(socket.SOL_SOCKET, SCM_TS_OPT_ID, _TS_ID.pack(send_id))], 0, address
        )


MSG_PROBE = 0x10  # linux/socket.h: "do not send, only probe the path"
_LOOPBACK = {4: "127.0.0.1", 6: "::1"}


def per_send_ids_supported(sock: socket.socket, version: int) -> bool:
    """Whether this kernel takes a TX timestamp id per send (SCM_TS_OPT_ID, Linux 6.13+).

    Asked without sending anything: a sendmsg with MSG_PROBE returns before any packet is
    built (raw_send_hdrinc, rawv6_send_hdrinc: ``if (flags & MSG_PROBE) goto out``) but only
    after the control messages were parsed (raw_sendmsg, rawv6_sendmsg), and a kernel without
    SCM_TS_OPT_ID rejects the unknown SOL_SOCKET message there with EINVAL
    (__sock_cmsg_send in net/core/sock.c). Any other outcome (success, or a routing error
    after the parse) means the message was understood. MSG_PROBE builds no skb, so it takes
    no key from the socket's counter either.
    """
    header = bytes(20 if version == 4 else 40)  # the length checks come before MSG_PROBE
    try:
        sock.sendmsg(
            [header],
            [(socket.SOL_SOCKET, SCM_TS_OPT_ID, _TS_ID.pack(0))],
            MSG_PROBE,
            (_LOOPBACK[version], 0),
        )
    except OSError as exc:
        return exc.errno != errno.EINVAL
    return True


def disable_tx_timestamps(sock: socket.socket) -> None:
    """Ask for no TX timestamps on ``sock`` (as a device without software stamps gives)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)


def kernel_drops(sock: socket.socket) -> int:
    """Frames dropped from the capture queue since the last call (the kernel resets the count)."""
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _PACKET_STATS.size)
    _packets, drops = _PACKET_STATS.unpack(raw)
    return int(drops)


# -- the local kernel's own RSTs (scan) ---------------------------------------------------------
def outgoing_rst_filter() -> list[tuple[int, int, int, int]]:
    """The kernel filter for outgoing IPv4/IPv6 TCP segments with RST set (first fragments
    and bare IPv6 headers only): a scan counts the RSTs its kernel sends for SYN/ACKs, and
    sends its own where they are missing. Ports are checked in user space (RSTs are few)."""
    ad = _SKF_AD_OFF & 0xFFFFFFFF
    rst = 0x04
    return [
        (_BPF_LD_W_ABS, 0, 0, ad + _SKF_AD_PKTTYPE),  # 0
        (_BPF_JEQ_K, 0, 14, PACKET_OUTGOING),  # 1: not outgoing -> drop
        (_BPF_LD_W_ABS, 0, 0, ad + _SKF_AD_PROTOCOL),  # 2
        (_BPF_JEQ_K, 0, 7, ETH_P_IP),  # 3: not IPv4 -> 11
        (_BPF_LD_H_ABS, 0, 0, 6),  # 4: flags and fragment offset
        (_BPF_JSET_K, 10, 0, 0x1FFF),  # 5: a later fragment -> drop
        (_BPF_LD_B_ABS, 0, 0, 9),  # 6: protocol
        (_BPF_JEQ_K, 0, 8, socket.IPPROTO_TCP),  # 7: not TCP -> drop
        (_BPF_LDX_B_MSH, 0, 0, 0),  # 8: X = IPv4 header length
        (_BPF_LD_B_IND, 0, 0, 13),  # 9: TCP flags
        (_BPF_JA, 0, 0, 4),  # 10: -> 15
        (_BPF_JEQ_K, 0, 4, ETH_P_IPV6),  # 11: neither -> drop
        (_BPF_LD_B_ABS, 0, 0, 6),  # 12: next header
        (_BPF_JEQ_K, 0, 2, socket.IPPROTO_TCP),  # 13: not bare TCP -> drop
        (_BPF_LD_B_ABS, 0, 0, 40 + 13),  # 14: TCP flags
        (_BPF_JSET_K, 1, 0, rst),  # 15: RST set -> accept
        (_BPF_RET_K, 0, 0, 0),  # 16: drop
        (_BPF_RET_K, 0, 0, 128),  # 17: accept (headers are enough)
    ]


def open_outgoing_rst_socket() -> socket.socket:
    """A non-blocking packet socket that sees the RSTs this host sends (outgoing_rst_filter)."""
    sock = _open_packet_socket()
    attach_filter(sock, outgoing_rst_filter())
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # the pcap's times, as the capture's
    _set_receive_buffer(sock, CAPTURE_BUFFER_BYTES // 4)
    return sock
