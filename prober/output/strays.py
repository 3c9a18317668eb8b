"""Human lines for what decided nothing, the same in every command: packets that proved
nothing (strays, by kind) and ICMP notices (``prober.core.strays``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prober.core.strays import STRAY_DESCRIPTIONS, IcmpReply, Stray


def icmp_text(icmp: IcmpReply) -> str:
    """One ICMP message: family, name, type and code, and who sent it."""
    kind = "ICMPv6" if icmp.version == 6 else "ICMP"
    return f"{kind} {icmp.name} type={icmp.type} code={icmp.code} from={icmp.source}"


def kinds_text(by_kind: Mapping[Stray, int]) -> str:
    """Strays on one line, e.g. ``4 wrong-ack, 1 icmp-not-ours`` (a probe line)."""
    return ", ".join(f"{count} {kind.value}" for kind, count in by_kind.items())


def invalid_lines(by_kind: Mapping[Stray, int], where: str = "") -> list[str]:
    """A heading and a line per kind; nothing when there were none. ``where`` names the
    conversation when a command has more than one (e.g. " on the cookie check's port")."""
    total = sum(by_kind.values())
    if not total:
        return []
    lines = [f"Ignored {total} packet(s){where} that prove nothing:"]
    lines += [
        f"  - {count} {kind.value}: {STRAY_DESCRIPTIONS[kind]}" for kind, count in by_kind.items()
    ]
    return lines


def notice_lines(count: int, kept: Sequence[IcmpReply], where: str = "") -> list[str]:
    """One line: how many ICMP notices came, and the first; nothing when none came."""
    if not count:
        return []
    first = f" (first: {icmp_text(kept[0])})" if kept else ""
    return [
        f"ICMP notices{where}: {count} quoted a SYN or other segment of ours but are not errors"
        f" of reachability, so they decided nothing{first}"
    ]
