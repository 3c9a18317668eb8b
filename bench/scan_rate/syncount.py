"""Count the SYNs sent to the `many` block on the lab link, without reading a packet.

A packet socket on the link with a classic BPF filter (compiled by `tcpdump -ddd`) that keeps
only SYNs without ACK from our address to the block. It never reads: its receive buffer is
as small as the kernel allows, so after the first few every match counts as a drop, and
PACKET_STATISTICS (matches queued + dropped, reset at each read) gives the SYNs sent since
the last read. The kernel checks the buffer before it copies anything, so what this costs
each SYN is the filter and one clone for the tap, alike for every tool. It sees anyone's
SYNs to the block (other users of the lab too), so the bench also reports how many it saw
beside how many the tool was asked to send.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess

from prober.lab.commands import command_env, find_tool

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26


def syn_filter(source_v4: str, block_v4: ipaddress.IPv4Network,
               block_v6: ipaddress.IPv6Network) -> str:
    # IPv6: the TCP header right after the fixed header (no extension headers in a SYN).
    return (f"(src host {source_v4} and dst net {block_v4} and "
            "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn) or "
            f"(ip6 and dst net {block_v6} and ip6[6] == 6 and ip6[53] & 0x12 == 0x02)")


def compile_filter(device: str, expression: str) -> bytes:
    """`tcpdump -ddd` (one instruction a line, decimal) as struct sock_fprog's array."""
    argv = [find_tool("tcpdump") or "tcpdump", "-ddd", "-i", device, expression]
    lines = subprocess.run(argv, capture_output=True, text=True, check=True,
                           env=command_env()).stdout.split("\n")
    count = int(lines[0])
    program = b"".join(struct.pack("HBBI", *(int(n) for n in line.split()))
                       for line in lines[1:1 + count])
    return program


class SynCounter:
    """SYNs to the block on `device` since the previous read."""

    def __init__(self, device: str, expression: str) -> None:
        program = compile_filter(device, expression)
        self.buffer = program  # kept alive while the kernel copies it
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            fprog = struct.pack("HL", len(program) // 8,
                                _address_of(program))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
            self.sock.bind((device, ETH_P_ALL))
            self.read()  # what matched before the bind completed
        except BaseException:
            self.sock.close()
            raise

    def read(self) -> int:
        packets, _drops = struct.unpack(
            "II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return int(packets)  # the kernel adds the drops into tp_packets

    def close(self) -> None:
        self.sock.close()


def _address_of(data: bytes) -> int:
    import ctypes

    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
