"""Packets that decide nothing, in one place: strays (invalid packets) and ICMP notices.

Every probe kind (syn; halfopen and its cookie check; close) sorts what arrives on its port
into answers, which may decide a verdict, and two kinds of packet that never decide or
change one. Both are counted and shown, with one vocabulary and one JSON shape in every
command:

- A *stray* proves nothing: a forgery (a guessed ack, a blind RST), a packet of another
  connection or another probe, a copy beyond any retransmission schedule. ``Stray`` says
  why; ``StrayCounts`` counts them. JSON: ``invalid`` (int) and ``invalid_by_kind``
  (``{kind: count}``, only kinds seen, in ``Stray``'s order).
- A *notice* is an ICMP message that quotes one of our segments exactly but is not an error
  of reachability (redirect, source quench, parameter problem, ICMPv6 packet too big:
  ``IcmpError.decides_verdict`` is false). It is news about the path, not a forgery, and it
  decides nothing: only destination unreachable and time exceeded may end a probe.
  ``IcmpNotices`` counts them and keeps the first ``KEPT_NOTICES``. JSON: ``notices`` (int)
  and ``icmp_notices`` (a list of ``IcmpReply.to_dict()``).

Who counts: a probe counts the packets on its 4-tuple that it refuses or ignores; packets to
its local port from another address or port (or ICMP quoting another 4-tuple) never reach
``receive`` (the engine routes by 4-tuple) and are counted through ``count_invalid`` with
``off_tuple_kind``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from prober.core.wire import IcmpKind, Packet, icmp_kind, icmp_name

# Notices kept per conversation (each one's type, code and source); the rest only counted.
KEPT_NOTICES: Final = 16


class Stray(StrEnum):
    """Why a packet on a probe's port proved nothing (counted and shown, never a verdict).

    One enum for every probe kind; each kind says which probes see it."""

    WRONG_SOURCE = "wrong-source"  # all: TCP from an address that is not the target
    WRONG_PORTS = "wrong-ports"  # all: TCP from another remote port
    # all: a SYN/ACK or RST not acking our SYN; close also: an ACK of data never sent
    WRONG_ACK = "wrong-ack"
    CONFLICTING = "conflicting"  # syn: a proven answer of another kind than the first one
    OTHER_SEQ = "other-seq"  # halfopen: a SYN/ACK with another seq than the first
    STRAY_RST = "stray-rst"  # halfopen: a RST not exactly at the peer's ISN + 1
    TOO_MANY = "too-many"  # halfopen: SYN/ACKs beyond what any schedule sends (a replay)
    OTHER_SEGMENT = "other-segment"  # syn, halfopen: neither SYN/ACK nor RST (ACK, FIN, data, SYN)
    RST_OUT_OF_WINDOW = "rst-out-of-window"  # close: ignored (RFC 5961 §3)
    RST_NOT_EXACT = "rst-not-exact"  # close: in the window, not RCV.NXT: a challenge ACK
    SYN_ON_OPEN = "syn-on-open"  # close: a SYN on the open connection: a challenge ACK
    NO_ACK_FLAG = "no-ack-flag"  # close: a segment without ACK after the handshake
    OUT_OF_WINDOW = "out-of-window"  # close: data right of the receive window
    ICMP_NOT_OURS = "icmp-not-ours"  # all: an ICMP error quoting another 4-tuple or segment
    # halfopen, close: a reachability error after the peer answered (RFC 5927: soft errors)
    ICMP_AFTER_ANSWER = "icmp-after-answer"


STRAY_DESCRIPTIONS: Final[Mapping[Stray, str]] = {
    Stray.WRONG_SOURCE: "from an address that is not the target",
    Stray.WRONG_PORTS: "with wrong ports",
    Stray.WRONG_ACK: "acknowledging something we never sent",
    Stray.CONFLICTING: "answers contradicting the first answer (the first stands)",
    Stray.OTHER_SEQ: "SYN/ACKs with another sequence number than the first (not retransmissions)",
    Stray.STRAY_RST: "RSTs not at the peer's ISN + 1",
    Stray.TOO_MANY: "SYN/ACK copies beyond any retransmission schedule",
    Stray.OTHER_SEGMENT: "neither SYN/ACK nor RST",
    Stray.RST_OUT_OF_WINDOW: "RSTs outside the receive window (ignored)",
    Stray.RST_NOT_EXACT: "RSTs in the window but not at RCV.NXT (challenge ACK, RFC 5961)",
    Stray.SYN_ON_OPEN: "SYNs on the open connection (challenge ACK, RFC 5961)",
    Stray.NO_ACK_FLAG: "segments without ACK after the handshake",
    Stray.OUT_OF_WINDOW: "data segments beyond the receive window (dropped)",
    Stray.ICMP_NOT_OURS: "ICMP errors quoting another segment",
    Stray.ICMP_AFTER_ANSWER: "ICMP errors after the peer had answered",
}


class StrayCounts:
    """The one counter of strays every probe keeps."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        # A plain dict, empty for nearly every probe: a run makes one per probe, and asks
        # each for its counts (by_kind) once per result.
        self._counts: dict[Stray, int] = {}

    def count(self, kind: Stray) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def by_kind(self) -> dict[Stray, int]:
        """The non-zero counts in ``Stray``'s order: what results carry and JSON shows."""
        counts = self._counts
        if not counts:
            return {}
        return {kind: counts[kind] for kind in Stray if kind in counts}


def added_up(by_kinds: Iterable[Mapping[Stray, int]]) -> dict[Stray, int]:
    """Several results' strays as one ``by_kind`` (a run of probes)."""
    total: Counter[Stray] = Counter()
    for by_kind in by_kinds:
        total.update(by_kind)
    return {kind: total[kind] for kind in Stray if total[kind]}


def kinds_json(by_kind: Mapping[Stray, int]) -> dict[str, int]:
    """``invalid_by_kind`` as JSON shows it."""
    return {kind.value: count for kind, count in by_kind.items()}


def stray_json(by_kind: Mapping[Stray, int]) -> dict[str, Any]:
    """The JSON of a result's strays: ``invalid`` and ``invalid_by_kind``."""
    return {"invalid": sum(by_kind.values()), "invalid_by_kind": kinds_json(by_kind)}


def off_tuple_kind(
    packet: Packet, src: bytes, dst: bytes, sport: int, dport: int
) -> Stray | None:
    """Why a packet to our local port is not on our 4-tuple, or None if it is.

    ``src``/``sport`` are ours, ``dst``/``dport`` the target's; an ICMP error is judged by
    the header it quotes."""
    tcp = packet.tcp
    if tcp is not None:
        if packet.src != dst:
            return Stray.WRONG_SOURCE
        if tcp.sport != dport or tcp.dport != sport:
            return Stray.WRONG_PORTS
        return None
    icmp = packet.icmp
    if icmp is None:
        return None
    quoted = icmp.quoted
    if quoted.src != src or quoted.dst != dst or quoted.sport != sport or quoted.dport != dport:
        return Stray.ICMP_NOT_OURS
    return None


@dataclass(frozen=True, slots=True)
class IcmpReply:
    """An ICMP message about one of our segments; ``source`` is whoever sent it (a router,
    or the target). The ``icmp`` object of every command's JSON."""

    version: int
    type: int
    code: int
    source: str
    ttl: int

    @classmethod
    def of(cls, packet: Packet) -> IcmpReply:
        icmp = packet.icmp
        assert icmp is not None
        source = str(ipaddress.ip_address(packet.src))
        return cls(packet.version, icmp.type, icmp.code, source, packet.ttl)

    @property
    def kind(self) -> IcmpKind:
        return icmp_kind(self.version, self.type)

    @property
    def name(self) -> str:
        return icmp_name(self.version, self.type)

    def to_dict(self) -> dict[str, Any]:
        return {
            "icmp_version": self.version,
            "type": self.type,
            "code": self.code,
            "name": self.name,
            "kind": self.kind.value,
            "source": self.source,
            "ttl": self.ttl,
        }


class IcmpNotices:
    """The one record of ICMP notices every probe keeps: a count and the first few."""

    __slots__ = ("_kept", "count")

    def __init__(self) -> None:
        self.count = 0
        self._kept: list[IcmpReply] = []

    def add(self, packet: Packet) -> None:
        self.count += 1
        if len(self._kept) < KEPT_NOTICES:
            self._kept.append(IcmpReply.of(packet))

    def kept(self) -> tuple[IcmpReply, ...]:
        return tuple(self._kept)


def notice_json(count: int, kept: Sequence[IcmpReply]) -> dict[str, Any]:
    """The JSON of a result's notices: ``notices`` and ``icmp_notices``."""
    return {"notices": count, "icmp_notices": [notice.to_dict() for notice in kept]}
