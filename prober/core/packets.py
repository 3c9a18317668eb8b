"""Build-once, patch-per-probe TCP segment templates (zmap's prepare_packet/make_packet idea).

Scapy is the specification: a template's bytes, with every per-probe field zeroed, are what
Scapy builds for the same fields. They are packed here with ``struct``, since importing Scapy
costs a one-probe command several times more CPU than all the rest it does; the tests prove
them equal to Scapy's, byte for byte, across flags, options, IP versions and payloads. The
constant stretches of those bytes become fixed-width ``s`` fields of one precompiled
``struct.Struct``, so a probe costs a single ``pack`` call (measured faster than
``pack_into`` patches on a ``bytearray`` copy plus the final ``bytes()`` copy). Checksums are
incremental (RFC 1071/1624): the one's-complement sum of the constant words is computed once
and each probe only adds its own fields.

One's-complement sums are taken modulo 0xFFFF: since 2**16 == 1 (mod 0xFFFF), the sum of the
16-bit words of a big-endian string equals ``int.from_bytes(string) % 0xFFFF``, and a 32-bit
field can be added as one integer. That replaces word loops with a few integer additions.
"""

from __future__ import annotations

import functools
import struct
from typing import Final

from prober.core.wire import IPPROTO_TCP, TcpFlags

LINUX_SYN_OPTIONS: Final = "linux"
"""``options`` value asking for the layout Linux (checked on 6.x) puts in its segments.

With SYN: ``MSTNW`` (all on), ``MNNSNW`` without timestamps, ``MNNTNW`` without SACK,
``MNW`` without both, ``MST`` without window scaling (see ``linux_option_order``).
Without SYN: ``NNT`` when timestamps are on, else nothing.
"""

DEFAULT_MSS: Final = {4: 1460, 6: 1440}  # Ethernet MTU 1500 minus IP and TCP headers

_OPTION_SIZE: Final = {"M": 4, "S": 2, "T": 10, "N": 1, "W": 3, "E": 1}
_MAX_OPTIONS: Final = 40  # data offset is 4 bits: 60-byte header at most
_LENGTH_MAX: Final = 0xFFFF  # 16-bit IPv4 total length, IPv6 payload length


def linux_option_order(
    flags: TcpFlags, *, window_scale: bool, sack_permitted: bool, timestamps: bool
) -> str:
    """The TCP options Linux writes, as a ``TcpOptions.order`` string.

    Mirrors ``tcp_options_write``: MSS; SACK-permitted shares the timestamp's word when both
    are on, else each is preceded by two NOPs; window scale is preceded by one NOP.
    Only SYNs carry MSS, SACK-permitted and window scale.
    """
    if not flags & TcpFlags.SYN:
        return "NNT" if timestamps else ""
    order = "M"
    if timestamps:
        order += "ST" if sack_permitted else "NNT"
    elif sack_permitted:
        order += "NNS"
    if window_scale:
        order += "NW"
    return order


# Fixed headers with every per-packet field zero: lengths and checksums are added per packet.
_IPV4_HEADER: Final = struct.Struct("!BBHHHBBH4s4s")  # ver/ihl, tos, len, id, frag, ttl, proto
_IPV6_HEADER: Final = struct.Struct("!IHBB16s16s")  # ver/class/flow, payload length, next, hops
_TCP_HEADER: Final = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, offset, flags, win, sum, urg
_IPV4_VERSION_IHL: Final = 0x45  # version 4, five 32-bit words of header
_IPV4_DONT_FRAGMENT: Final = 0x4000
_IPV6_VERSION: Final = 6 << 28  # traffic class and flow label 0, as Scapy's default
_OPTION_MSS: Final = struct.Struct("!BBH")
_OPTION_WSCALE: Final = struct.Struct("!BBB")


def _option_bytes(order: str, mss: int, window_scale: int) -> bytes:
    """The options of ``order`` (RFC 9293 kinds, timestamps zero), EOL-padded as Scapy pads."""
    encoded = {
        "M": _OPTION_MSS.pack(2, 4, mss),
        "S": b"\x04\x02",
        "T": b"\x08\x0a" + bytes(8),
        "N": b"\x01",
        "W": _OPTION_WSCALE.pack(3, 3, window_scale),
        "E": b"\x00",
    }
    options = b"".join(encoded[letter] for letter in order)
    return options + bytes(-len(options) % 4)


def _zero_packet(
    version: int,
    flags: TcpFlags,
    order: str,
    *,
    ttl: int,
    window: int,
    mss: int,
    window_scale: int,
    ip_id: int,
    dont_fragment: bool,
) -> bytes:
    """The template's packet with addresses, ports, numbers, timestamps and checksums zero.

    Field for field what Scapy's ``IP(...)/TCP(...)`` (or ``IPv6``) builds for the same
    arguments, less the checksums; tests/unit/test_packets.py proves it against Scapy.
    """
    options = _option_bytes(order, mss, window_scale)
    offset = (20 + len(options)) // 4 << 4  # data offset in 32-bit words, high nibble
    tcp = _TCP_HEADER.pack(0, 0, 0, 0, offset, int(flags), window, 0, 0) + options
    if version == 4:
        frag = _IPV4_DONT_FRAGMENT if dont_fragment else 0
        zero = bytes(4)
        ip = _IPV4_HEADER.pack(
            _IPV4_VERSION_IHL, 0, 20 + len(tcp), ip_id, frag, ttl, IPPROTO_TCP, 0, zero, zero
        )
    else:
        zero = bytes(16)
        ip = _IPV6_HEADER.pack(_IPV6_VERSION, len(tcp), IPPROTO_TCP, ttl, zero, zero)
    return ip + tcp


def _fold(total: int) -> int:
    """Checksum field value for a one's-complement sum ``total`` (> 0) of 16-bit words."""
    # The folded sum lies in 1..0xFFFF and is congruent to total modulo 0xFFFF.
    return 0xFFFE - (total - 1) % 0xFFFF


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum of ``data`` (odd lengths are padded with a zero byte).

    Equals ``scapy.utils.checksum``; one big-integer reduction instead of a word loop.
    """
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8
    if total == 0:
        return 0xFFFF  # all-zero words fold to 0, whose complement is 0xFFFF
    return _fold(total)


class TcpTemplate:
    """A TCP/IP packet prepared once; ``build`` fills in addresses, ports, numbers, payload.

    ``options`` is ``LINUX_SYN_OPTIONS`` (Linux's layout for ``flags``, shaped by ``mss``,
    ``window_scale``, ``sack_permitted`` and ``timestamps``) or an explicit order string in
    ``TcpOptions.order`` letters (``M``, ``S``, ``T``, ``N``, ``W``, ``E``), padded with EOL to
    a multiple of 4 bytes as Scapy does. ``timestamps=None`` means on except for RSTs (Linux
    resets for unknown connections carry no options). MSS and window scale only go into SYNs
    in the Linux layout; ``mss=None`` picks 1460 (IPv4) or 1440 (IPv6). For IPv6 ``ttl`` is
    the hop limit and ``ip_id``/``dont_fragment`` are ignored.

    Attributes: ``options_order`` (the layout as ``TcpOptions.order`` will read it, padding
    included), ``options_length`` (bytes), ``header_length`` (TCP header, options included).
    """

    __slots__ = (
        "_addr_len",
        "_c0",
        "_c1",
        "_c2",
        "_c3",
        "_c4",
        "_has_ts",
        "_ip_sum",
        "_length",
        "_pack",
        "_tcp_length",
        "_tcp_sum",
        "_ts_weight",
        "_v4",
        "flags",
        "header_length",
        "options_length",
        "options_order",
        "version",
    )

    def __init__(
        self,
        version: int,
        flags: TcpFlags,
        *,
        ttl: int = 64,
        window: int = 64240,
        options: str = LINUX_SYN_OPTIONS,
        mss: int | None = None,
        window_scale: int | None = 7,
        sack_permitted: bool = True,
        timestamps: bool | None = None,
        ip_id: int = 0,
        dont_fragment: bool = True,
    ) -> None:
        if version not in (4, 6):
            raise ValueError(f"IP version must be 4 or 6, not {version}")
        flags = TcpFlags(flags)
        if timestamps is None:
            timestamps = not flags & TcpFlags.RST
        if mss is None:
            mss = DEFAULT_MSS[version]
        if options == LINUX_SYN_OPTIONS:
            order = linux_option_order(
                flags,
                window_scale=window_scale is not None,
                sack_permitted=sack_permitted,
                timestamps=timestamps,
            )
        else:
            order = options
        unknown = set(order) - set(_OPTION_SIZE)
        if unknown:
            raise ValueError(f"unknown option letters {sorted(unknown)} in {order!r}")
        if "W" in order and window_scale is None:
            raise ValueError("option W needs a window_scale")
        if order.count("T") > 1:
            raise ValueError("at most one timestamp option")
        size = sum(_OPTION_SIZE[letter] for letter in order)
        options_length = (size + 3) & ~3  # padded with EOL bytes to whole words, as Scapy does
        if options_length > _MAX_OPTIONS:
            raise ValueError(f"{options_length} bytes of options, at most {_MAX_OPTIONS} fit")
        ts_at = order.find("T")
        if ts_at >= 0:
            ts_at = sum(_OPTION_SIZE[letter] for letter in order[:ts_at]) + 2  # TSval's offset
        try:
            raw = _zero_packet(
                version, flags, order, ttl=ttl, window=window, mss=mss,
                window_scale=window_scale or 0, ip_id=ip_id, dont_fragment=dont_fragment,
            )
        except struct.error as exc:
            raise ValueError(f"a template field is out of range: {exc}") from None
        if options_length > size and "E" not in order:
            order += "E"  # as the padding reads on the wire

        self.version = version
        self.flags = flags
        self.options_order = order
        self.options_length = options_length
        self.header_length = 20 + options_length
        self._v4 = version == 4
        self._has_ts = ts_at >= 0
        # Timestamps at an odd offset (only in explicit layouts) straddle checksum words:
        # their bytes weigh 256 times more in the sum (256**2 == 1 mod 0xFFFF).
        self._ts_weight = 256 if self._has_ts and ts_at & 1 else 1
        self._length = len(raw)
        self._tcp_length = self.header_length
        ip_len = 20 if self._v4 else 40
        self._addr_len = 8 if self._v4 else 32

        # Constant stretches between the per-probe fields, in packing order.
        t = ip_len  # start of TCP
        if self._v4:
            # 0:2 ver/ihl/tos | 2:4 total length | 4:10 id, frag, ttl, proto | 10:12 checksum
            self._c0 = raw[0:2]
            self._c1 = raw[4:10]
            head = "!2sH6sH4s4s"
            # Length, checksum and addresses are zero here: they are added per packet.
            ip_header = raw[0:2] + b"\0\0" + raw[4:10]
            self._ip_sum = (int.from_bytes(ip_header, "big") + self._length) % 0xFFFF
        else:
            # 0:4 ver/class/flow | 4:6 payload length | 6:8 next header, hop limit
            self._c0 = raw[0:4]
            self._c1 = raw[6:8]
            head = "!4sH2s16s16s"
            self._ip_sum = 0
        # TCP: ports, seq, ack | offset/flags/window (c2) | checksum | urgent + options (c3, c4)
        self._c2 = raw[t + 12 : t + 16]
        tcp_header = raw[t : t + 16] + b"\0\0" + raw[t + 18 :]
        # Pseudo-header: addresses (per packet), protocol, TCP length (a payload extends it).
        pseudo = IPPROTO_TCP + self._tcp_length
        self._tcp_sum = (int.from_bytes(tcp_header, "big") + pseudo) % 0xFFFF
        fmt = head + "HHII4sH"
        if self._has_ts:
            ts = t + 20 + ts_at
            self._c3 = raw[t + 18 : ts]
            self._c4 = raw[ts + 8 :]
            fmt += f"{len(self._c3)}sII{len(self._c4)}s"
        else:
            self._c3 = raw[t + 18 :]
            self._c4 = b""
            fmt += f"{len(self._c3)}s"
        self._pack = struct.Struct(fmt).pack

    def build(
        self,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        seq: int,
        ack: int = 0,
        tsval: int = 0,
        tsecr: int = 0,
        payload: bytes = b"",
    ) -> bytes:
        """The packet from ``src`` to ``dst`` (packed 4 or 16 bytes), IP header first.

        ``tsval``/``tsecr`` are ignored by templates without a timestamp option.
        """
        if len(src) + len(dst) != self._addr_len:
            raise ValueError(f"addresses must be IPv{self.version} bytes")
        if payload:
            return self._build_payload(src, dst, sport, dport, seq, ack, tsval, tsecr, payload)
        addrs = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
        if self._has_ts:
            ts = (tsval + tsecr) * self._ts_weight
            csum = _fold(self._tcp_sum + addrs + sport + dport + seq + ack + ts)
            if self._v4:
                return self._pack(
                    self._c0, self._length, self._c1, _fold(self._ip_sum + addrs),
                    src, dst, sport, dport, seq, ack, self._c2, csum, self._c3, tsval, tsecr,
                    self._c4,
                )
            return self._pack(
                self._c0, self._tcp_length, self._c1,
                src, dst, sport, dport, seq, ack, self._c2, csum, self._c3, tsval, tsecr, self._c4,
            )
        csum = _fold(self._tcp_sum + addrs + sport + dport + seq + ack)
        if self._v4:
            return self._pack(
                self._c0, self._length, self._c1, _fold(self._ip_sum + addrs),
                src, dst, sport, dport, seq, ack, self._c2, csum, self._c3,
            )
        return self._pack(
            self._c0, self._tcp_length, self._c1,
            src, dst, sport, dport, seq, ack, self._c2, csum, self._c3,
        )

    def _build_payload(
        self,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        tsval: int,
        tsecr: int,
        payload: bytes,
    ) -> bytes:
        """``build`` with data: lengths grow and the checksum covers the payload."""
        n = len(payload)
        length = self._length + n
        tcp_length = self._tcp_length + n
        if (length if self._v4 else tcp_length) > _LENGTH_MAX:
            raise ValueError(f"payload of {n} bytes does not fit in one IP packet")
        words = int.from_bytes(payload, "big")
        if n & 1:
            words <<= 8  # pad to a whole word
        addrs = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
        total = self._tcp_sum + n + addrs + sport + dport + seq + ack + words
        if self._has_ts:
            total += (tsval + tsecr) * self._ts_weight
            tail: tuple[bytes | int, ...] = (self._c3, tsval, tsecr, self._c4)
        else:
            tail = (self._c3,)
        if self._v4:
            ip: tuple[bytes | int, ...] = (
                self._c0, length, self._c1, _fold(self._ip_sum + n + addrs)
            )
        else:
            ip = (self._c0, tcp_length, self._c1)
        tcp = (src, dst, sport, dport, seq, ack, self._c2, _fold(total))
        return self._pack(*ip, *tcp, *tail) + payload


@functools.lru_cache(maxsize=1024)
def template(
    version: int,
    flags: TcpFlags,
    *,
    ttl: int = 64,
    window: int = 64240,
    options: str = LINUX_SYN_OPTIONS,
    mss: int | None = None,
    window_scale: int | None = 7,
    sack_permitted: bool = True,
    timestamps: bool | None = None,
    ip_id: int = 0,
    dont_fragment: bool = True,
) -> TcpTemplate:
    """The ``TcpTemplate`` for these arguments, built once per process and shared.

    Templates are immutable once built, and probes need the same handful again and again:
    sharing them means a probe costs no template build after the first of its kind. The
    arguments and their defaults are ``TcpTemplate``'s (all hashable).

    Returns:
        The shared template (do not mutate it).

    Raises:
        ValueError: as ``TcpTemplate`` does, for an argument out of range.
    """
    return TcpTemplate(
        version,
        flags,
        ttl=ttl,
        window=window,
        options=options,
        mss=mss,
        window_scale=window_scale,
        sack_permitted=sack_permitted,
        timestamps=timestamps,
        ip_id=ip_id,
        dont_fragment=dont_fragment,
    )
