"""The probes a run sends (a block times a port list) and a tally of what a tool found.

Port 80 is open on every address of the `many` block; every other port is closed (the
peer's kernel answers RST). A tally counts each (address, port) once, however often a tool
reports it, in a bitmap of one byte per probe (10^6 probes: 1 MiB, in the bench's process,
not the tool's).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

OPEN_PORT = 80
CLOSED_PORTS = tuple(range(81, 96))  # 15 ports nothing listens on: 16 ports with OPEN_PORT

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TargetSet:
    block: IPNetwork
    ports: tuple[int, ...]  # OPEN_PORT first when present

    @property
    def addresses(self) -> int:
        return self.block.num_addresses

    @property
    def probes(self) -> int:
        return self.addresses * len(self.ports)

    @property
    def open_expected(self) -> int:
        return self.addresses if OPEN_PORT in self.ports else 0

    @property
    def closed_expected(self) -> int:
        return self.addresses * sum(1 for port in self.ports if port != OPEN_PORT)

    def ports_text(self) -> str:
        """"80,81-95": runs of consecutive ports as ranges."""
        runs: list[list[int]] = []
        for port in self.ports:
            if runs and port == runs[-1][-1] + 1:
                runs[-1].append(port)
            else:
                runs.append([port])
        return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)

    def describe(self) -> str:
        return f"{self.block} x {len(self.ports)} port(s) {self.ports_text()} = {self.probes:,}"


def target_set(block: IPNetwork, ports: tuple[int, ...]) -> TargetSet:
    return TargetSet(block, ports)


class Tally:
    """What a tool reported, each (address, port) of the set counted once."""

    def __init__(self, targets: TargetSet) -> None:
        self.targets = targets
        self.family = socket.AF_INET if targets.block.version == 4 else socket.AF_INET6
        self.base = int(targets.block.network_address)
        self.port_index = {port: i for i, port in enumerate(targets.ports)}
        self.seen = bytearray(targets.probes)
        self.open = self.closed = self.other = 0  # unique (address, port) per state
        self.repeats = 0  # reports of a probe already counted
        self.outside = 0  # reports of an address or port not in the set

    def add(self, address: str, port: int, state: str) -> None:
        index = self.port_index.get(port)
        try:
            offset = int.from_bytes(socket.inet_pton(self.family, address), "big") - self.base
        except OSError:
            offset = -1
        if index is None or not 0 <= offset < self.targets.addresses:
            self.outside += 1
            return
        slot = offset * len(self.targets.ports) + index
        if self.seen[slot]:
            self.repeats += 1
            return
        self.seen[slot] = 1
        if state == "open":
            self.open += 1
        elif state == "closed":
            self.closed += 1
        else:
            self.other += 1
