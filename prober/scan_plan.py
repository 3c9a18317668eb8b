"""What a scan probes, in which order: targets, exclusions, the blocklist, the permutation,
shards (issue 8).

INTERFACE STUB: the shape below is fixed; the implementation is being written.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import NamedTuple

from prober.targets import PortRanges, parse_ports, parse_target_spec


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """Everything that decides the probe sequence; JSON-serializable, so the sender process
    rebuilds exactly the sequence the receiver expects."""

    targets: tuple[str, ...] = ()  # command-line targets (each parse_target_spec syntax)
    file: str | None = None  # a targets file, or "-" for stdin
    ports: str | None = None  # -p: ports for targets written without any
    exclude: tuple[str, ...] = ()  # --exclude files (same syntax; a bare host/block = all ports)
    blocklist: bool = True  # skip special-purpose addresses inside CIDR blocks
    exempt: tuple[str, ...] = ()  # networks the blocklist spares (the lab's, while it is up)
    seed: int = 0  # keys the permutation
    shard: int = 0  # this machine's shard, 0-based
    shards: int = 1
    version: int | None = None  # 4 or 6: the family names resolve to (None: the first)
    skip_bad: bool = False  # report bad lines (on_bad) and go on, instead of UsageError

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ScanPlan:
        fields = json.loads(text)
        for name in ("targets", "exclude", "exempt"):
            fields[name] = tuple(fields[name])
        return cls(**fields)


class PlannedProbe(NamedTuple):
    """One probe of the sequence. ``position`` is dense (0, 1, 2, ...) in this shard's send
    order; ``address`` is packed (4 or 16 bytes), or None when ``name`` did not resolve
    (then ``error`` says why)."""

    position: int
    version: int
    address: bytes | None
    port: int
    name: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PlanCounts:
    targets: int  # probes this shard will send (after exclusions and the blocklist)
    excluded: int
    blocklisted: int
    bad_lines: int


Resolver = Callable[[str, "int | None"], tuple[int, bytes]]  # (name, version) -> (version, packed)


def check_plan(plan: ScanPlan, on_bad: Callable[[str], None] | None = None) -> PlanCounts | None:
    """The first pass: parse every target (arguments, the file, the exclude files) without
    sending or storing anything, and count. Raises UsageError("SOURCE:LINE: ...") for a bad
    line unless ``plan.skip_bad`` (then ``on_bad`` gets each message). Returns None when the
    targets come from stdin (it cannot be read twice: its lines are checked as they are sent).
    """
    if plan.file == "-":
        return None
    total = sum(parse_target_spec(t, _ports(plan)).size for t in plan.targets)
    return PlanCounts(total, 0, 0, 0)


def _ports(plan: ScanPlan) -> PortRanges | None:
    return None if plan.ports is None else parse_ports(plan.ports)


def iter_probes(
    plan: ScanPlan,
    resolve: Resolver,
    on_bad: Callable[[str], None] | None = None,
) -> Iterator[PlannedProbe]:
    """The probe sequence. Streams: memory does not grow with the number of targets."""
    # TEMPORARY (engine development): arguments only, in order, no shards or exclusions.
    position = 0
    for text in plan.targets:
        spec = parse_target_spec(text, _ports(plan))
        for i in range(spec.size):
            host, port = spec.address_and_port(i)
            address = ipaddress.ip_address(host)
            yield PlannedProbe(position, address.version, address.packed, port)
            position += 1
