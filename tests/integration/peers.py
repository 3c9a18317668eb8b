"""Peers for the conversation tests: one namespace per peer behind the root namespace, each a
real Linux TCP stack with its own sysctls, servers and (optionally) nftables ruleset."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prober.lab import Topology, route_check

# name: (sysctls, {port: server behaviour (prober.lab.server)})
PeerSpec = tuple[Mapping[str, int], Mapping[int, str]]


@dataclass(frozen=True)
class Peer:
    namespace: str
    v4: str
    v6: str

    def address(self, version: int) -> str:
        return self.v4 if version == 4 else self.v6

    def endpoint(self, version: int, port: int = 80) -> str:
        return f"{self.v4}:{port}" if version == 4 else f"[{self.v6}]:{port}"


@contextlib.contextmanager
def peer_topology(
    specs: Mapping[str, PeerSpec], rulesets: Mapping[str, str] | None = None
) -> Iterator[dict[str, Peer]]:
    """Build every peer (one link each, a server per behaviour on its ports), check the
    routes, and tear it all down afterwards, also on failure."""
    rulesets = rulesets or {}
    with Topology.create() as topology:
        built: dict[str, Peer] = {}
        for number, (name, (sysctls, servers)) in enumerate(specs.items()):
            namespace = topology.add_namespace(name, dict(sysctls))
            link = topology.add_link(
                None, namespace, number=number, left_label=f"{name}a", right_label=f"{name}b"
            )
            if name in rulesets:
                topology.apply_nftables(namespace, rulesets[name])
            by_behaviour: dict[str, list[int]] = {}
            for port, behaviour in servers.items():
                by_behaviour.setdefault(behaviour, []).append(port)
            for behaviour, ports in by_behaviour.items():
                topology.start_server(
                    namespace, ports, family="both", behaviour=behaviour, max_seconds=600
                )
            peer = Peer(namespace, str(link.right.v4.ip), str(link.right.v6.ip))
            route_check(peer.v4)
            route_check(peer.v6)
            built[name] = peer
        yield built


def in_peer(namespace: str, *argv: str) -> str:
    """A command's stdout, run in a peer's namespace."""
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *argv],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
