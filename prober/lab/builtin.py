"""The built-in lab: `prober lab up`, `down` and `status`.

One topology (the persistent pool's only one, ``pl00``) of namespaces behind a lab router, each
peer a real Linux TCP stack tuned to show one behaviour, over IPv4 and IPv6::

    root ns ──link 0── router ──link 1── open         HTTP/1.0 on 80 (closes first), 81 closed
                         │     ──link 2── filtered     80 dropped; 81 rejected by the router
                         │     ──link 3── syncookies   tcp_syncookies=2
                         │     ──link 4── impatient    tcp_synack_retries=2, orphan_retries=1
                         │     ──link 5── rst-close    answers, then closes with a RST
                         │     ──link 6── half-close   sends on after the client's FIN
                         │     ──link 7── no-timewait  tcp_max_tw_buckets=0
                         │     ──link 8── [delay] ── far          behind the delay element
                         │     ──link 9── [loss]  ── lossy        a whole block, behind loss
                         │     ──link 10── many         a whole /16 (v6 /112), for scans
                         └─────link 11── tuned        no TS, SACK, WS or ECN; RFC 1337 on

The root namespace routes the lab's prefixes (never a default route) via the router, so
`sudo prober syn <peer>:80` works from the host. Everything is recorded in a state file before
it is made (see topology.py), so `lab_down` works even after `lab_up` was killed half-way.

The same code builds the whole lab in the test pool, under a state directory of the tests'
own, so the integration tests never meet a lab a user left up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import math
import os
import random
import shlex
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import netns
from .addresses import PERSISTENT_POOL, AddressPool, IPNetwork, LabBlocks, pool_named
from .commands import ip_command, run
from .element import add_element_link
from .errors import LabError, LabNotPermitted, LabRefused
from .options import LabOptions, format_duration, format_loss
from .state import (
    LabState,
    Namespace,
    Process,
    default_state_dir,
    file_lock,
    make_state_dir,
    process_start_time,
    state_paths,
)
from .topology import Link, Topology, teardown

LAB_KIND = "prober-lab"
# Which address pool `lab up|down|status` use when not told: "persistent" (the default), or
# "test", so tests can run the real commands without meeting a lab a user left up.
POOL_ENV = "PROBER_LAB_POOL"
_LAB_LOCK_WAIT_S = 5.0

HTTP_PORT = 80
CLOSED_PORT = 81  # on `open`: nothing listens, the kernel answers RST
DROPPED_PORT = 80  # on `filtered`: dropped by the peer's nftables
PROHIBITED_PORT = 81  # on `filtered`: rejected by the router (ICMP admin-prohibited)

# Beyond these, ICMP errors are rate limited per destination (1/s for v4 unreachables) and
# globally (1000/s): probes sent in bursts must see every reject the router sends.
_NO_ICMP_RATE_LIMITS = {
    "net.ipv4.icmp_ratelimit": 0,
    "net.ipv6.icmp.ratelimit": 0,
    "net.ipv4.icmp_msgs_per_sec": 1_000_000,
    "net.ipv4.icmp_msgs_burst": 1_000_000,
}

# `many` must answer about 150,000 SYNs/s (the scan target rate). A SYN it answers occupies
# a request socket in the listener's SYN queue until the final ACK, a RST, or the SYN/ACK
# timer gives up; the queue holds min(listen backlog, somaxconn) of them. prober suppresses
# its own kernel's RSTs, so a scan's SYN/ACKs are never answered: with tcp_synack_retries=0
# each request socket lives one initial RTO (1 s) and each SYN is answered exactly once (no
# retransmitted SYN/ACKs to count twice), i.e. about 150,000 entries at full rate, which a
# 262,144-entry queue holds. tcp_syncookies stays 1 (the default): should a burst still fill
# the queue, the kernel answers with cookies instead of dropping. 0 would drop SYNs on
# overflow (open hosts would look filtered); 2 would make every answer a cookie, which is the
# `syncookies` peer's behaviour, not an ordinary server's. tcp_max_syn_backlog only limits
# the queue when cookies are off; it is raised all the same, in case someone turns them off.
MANY_BACKLOG = 262_144
_MANY_SYSCTLS = {
    "net.core.somaxconn": MANY_BACKLOG,
    "net.ipv4.tcp_max_syn_backlog": MANY_BACKLOG,
    "net.ipv4.tcp_syncookies": 1,
    "net.ipv4.tcp_synack_retries": 0,
}


# --- the peers, as data --------------------------------------------------------------------


@dataclass(frozen=True)
class PortPlan:
    """One row of `prober lab status` (per address family). Texts are templates: {endpoint}
    (address:port, IPv6 bracketed and quoted), {targets} (the whole block:port, the same
    way), {address}, {namespace}, {block} (the peer's address or block), {impairment} (its
    element's settings)."""

    port: int
    behaviour: str
    command: str  # runs as printed against the lab (tests/unit/test_cli.py parses each one)


@dataclass(frozen=True)
class PeerPlan:
    name: str  # also the namespace role: <prefix>-<name>
    # Names its link's interfaces: <prefix>-<label> on the router, <prefix>-<label>-gw on the
    # peer; through an element <prefix>-<label>-a (router), -l, -r (element), -b (peer).
    label: str
    link: int
    ports: tuple[PortPlan, ...]
    server: str | None = "http"  # a prober.lab.server behaviour, listening on server_ports
    server_ports: tuple[int, ...] = (HTTP_PORT,)
    sysctls: Mapping[str, int] = field(default_factory=dict)
    ruleset: str | None = None  # nftables, inside the peer
    element: str | None = None  # "delay" or "loss": an impairment element in front of it
    block: str | None = None  # "lossy" or "many": answers for a whole block (local route)


_SYN = "sudo prober syn {endpoint}"
_CLOSE = "sudo prober close {endpoint}"
_GET = r" --send 'GET / HTTP/1.0\r\n\r\n'"
_TIMEWAIT = "sudo prober timewait {endpoint}" + _GET
# Every server that closes only after a request (http, rst) gets one, so the profile's close
# and TIME-WAIT probes see the peer close; half-close closes on our FIN and needs none.
_PROFILE = "sudo prober profile {endpoint}"
_PROFILE_GET = _PROFILE + _GET

# `tuned`: what `prober profile` reads off a SYN/ACK and a connection, each set away from the
# Linux default (in brackets) so a profile that reports the default is caught. All are
# per-namespace (net->ipv4, since 4.15 at the latest) and, despite the name, govern TCP over
# IPv6 as well. tcp_invalid_ratelimit is the per-connection limit on challenge ACKs (and other
# out-of-window ACKs), in ms; the global tcp_challenge_ack_limit is unlimited since 6.0.
TUNED_SYSCTLS = {
    "net.ipv4.tcp_timestamps": 0,  # (1)
    "net.ipv4.tcp_sack": 0,  # (1)
    "net.ipv4.tcp_window_scaling": 0,  # (1)
    "net.ipv4.tcp_ecn": 0,  # (2: accept ECN when asked; 0 never sets ECE on a SYN/ACK)
    "net.ipv4.tcp_rfc1337": 1,  # (0: a RST at RCV.NXT ends TIME-WAIT)
    "net.ipv4.tcp_invalid_ratelimit": 1000,  # (500): at most one challenge ACK a second
}

PEERS: tuple[PeerPlan, ...] = (
    PeerPlan("open", "open", 1, (
        PortPlan(HTTP_PORT, "HTTP/1.0 server: answers, closes first (FIN)", _SYN),
        PortPlan(HTTP_PORT, "the same server, its close sequence",
                 _CLOSE + " --peer-closes" + _GET),
        PortPlan(HTTP_PORT, "holds TIME-WAIT 60 s; reopens on a newer SYN; RST ends it",
                 _TIMEWAIT + " --assassinate"),
        PortPlan(CLOSED_PORT, "closed: the kernel answers RST", _SYN),
        PortPlan(HTTP_PORT, "profile: Linux defaults, the baseline for the others",
                 _PROFILE_GET),
    )),
    PeerPlan("filtered", "filt", 2, (
        PortPlan(DROPPED_PORT, "dropped by the peer's nftables: silence",
                 _SYN + " -c 1 -W 0.5"),
        PortPlan(PROHIBITED_PORT, "the router rejects: ICMP admin-prohibited",
                 _SYN + " -c 1"),
    ), server_ports=(DROPPED_PORT, PROHIBITED_PORT),
        ruleset=f"""\
table inet prober_lab {{
    chain input {{
        type filter hook input priority filter; policy accept;
        tcp dport {DROPPED_PORT} drop
    }}
}}
"""),
    PeerPlan("syncookies", "cookie", 3, (
        PortPlan(HTTP_PORT, "SYN cookies always (tcp_syncookies=2)",
                 "sudo prober halfopen {endpoint} --max-wait 10"),
        PortPlan(HTTP_PORT, "profile: SYN cookies always, flood or not", _PROFILE_GET),
    ), sysctls={"net.ipv4.tcp_syncookies": 2}),
    PeerPlan("impatient", "impat", 4, (
        PortPlan(HTTP_PORT, "tcp_synack_retries=2, tcp_orphan_retries=1",
                 "sudo prober halfopen {endpoint}"),
        PortPlan(HTTP_PORT, "gives up an unacknowledged FIN within seconds",
                 _CLOSE + " --drop-final-ack --no-wait"),
        PortPlan(HTTP_PORT, "profile: 2 SYN/ACK retries; gives up an unacked FIN within seconds",
                 _PROFILE_GET),
    ), sysctls={"net.ipv4.tcp_synack_retries": 2, "net.ipv4.tcp_orphan_retries": 1}),
    PeerPlan("rst-close", "rst", 5, (
        PortPlan(HTTP_PORT, "answers, then closes with RST (SO_LINGER 0)",
                 _CLOSE + " --peer-closes" + _GET),
        PortPlan(HTTP_PORT, "profile: closes with a RST, so no TIME-WAIT", _PROFILE_GET),
    ), server="rst"),
    PeerPlan("half-close", "half", 6, (
        PortPlan(HTTP_PORT, "sends 3 chunks after your FIN, then FIN",
                 _CLOSE + " --no-wait"),
        PortPlan(HTTP_PORT, "profile: data after your FIN; never closes first", _PROFILE),
    ), server="half-close"),
    PeerPlan("no-timewait", "notw", 7, (
        PortPlan(HTTP_PORT, "closes first, but keeps no TIME-WAIT (tcp_max_tw_buckets=0)",
                 _CLOSE + " --peer-closes" + _GET),
        PortPlan(HTTP_PORT, "the same, as timewait sees it: no TIME-WAIT to time",
                 _TIMEWAIT + " --no-duration"),
        PortPlan(HTTP_PORT, "each TIME-WAIT it did not keep, counted by its kernel",
                 "sudo ip netns exec {namespace} nstat -az TcpExtTCPTimeWaitOverflow"),
        PortPlan(HTTP_PORT, "profile: closes first, holds no TIME-WAIT", _PROFILE_GET),
    ), sysctls={"net.ipv4.tcp_max_tw_buckets": 0}),
    PeerPlan("far", "far", 8, (
        PortPlan(HTTP_PORT, "behind the delay element: {impairment}",
                 _SYN + " -c 3 -i 0.2"),
        # The handshake's RTT is its point; the full run's timers would only be slower.
        PortPlan(HTTP_PORT, "profile: handshake RTT {impairment}",
                 _PROFILE + " --quick" + _GET),
    ), element="delay"),
    PeerPlan("lossy", "lossy", 9, (
        PortPlan(HTTP_PORT, "every address, behind the loss element: {impairment}",
                 _SYN + " -c 200 -i 0.01 -W 0.5"),
    ), element="loss", block="lossy"),
    PeerPlan("many", "many", 10, (
        PortPlan(HTTP_PORT, "every address, for scans: SYN queue 262,144",
                 _SYN),
        PortPlan(HTTP_PORT, "the whole block, one SYN per address",
                 "sudo prober scan {targets} --rate 20000 --open-only -o open.jsonl"),
    ), server_ports=(HTTP_PORT,), sysctls=_MANY_SYSCTLS, block="many"),
    PeerPlan("tuned", "tuned", 11, (
        PortPlan(HTTP_PORT, "profile: no TS, SACK, WS or ECN; RFC 1337 on; challenge ACKs 1/s",
                 _PROFILE_GET),
        PortPlan(HTTP_PORT, "its SYN/ACK offers MSS only (no TS, SACK or WS option)",
                 _SYN + " -c 1"),
        PortPlan(HTTP_PORT, "closes first; a RST does not end its TIME-WAIT (RFC 1337)",
                 _TIMEWAIT + " --no-duration --assassinate"),
        PortPlan(HTTP_PORT, "challenge ACKs it sent, and those its 1/s limit held back",
                 "sudo ip netns exec {namespace} nstat -az TcpExtTCPChallengeACK "
                 "TcpExtTCPACKSkippedChallenge"),
    ), sysctls=TUNED_SYSCTLS),
)
PEER_NAMES = tuple(peer.name for peer in PEERS)


def _router_ruleset(filtered_v4: ipaddress.IPv4Address, filtered_v6: ipaddress.IPv6Address
                    ) -> str:
    # In the forward chain: the ICMP comes from the router, not from the target behind it.
    return f"""\
table inet prober_lab {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        ip daddr {filtered_v4} tcp dport {PROHIBITED_PORT} reject with icmp type admin-prohibited
        ip6 daddr {filtered_v6} tcp dport {PROHIBITED_PORT} reject with icmpv6 type admin-prohibited
    }}
}}
"""


# --- what status shows ---------------------------------------------------------------------


@dataclass(frozen=True)
class LabEntry:
    """One address and port of the lab, what it does, and how to see it."""

    peer: str
    namespace: str
    family: int
    address: str  # a host, or a block ("198.18.1.0/24") for lossy and many
    port: int
    behaviour: str
    command: str  # a command that shows it, runnable as printed

    def to_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "namespace": self.namespace, "family": self.family,
                "address": self.address, "port": self.port, "behaviour": self.behaviour,
                "command": self.command}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabEntry:
        # State files of labs built by earlier versions may also hold "coming" (a command
        # prober did not have yet): ignored, as status lists only commands that exist.
        return cls(peer=str(data["peer"]), namespace=str(data["namespace"]),
                   family=int(data["family"]), address=str(data["address"]),
                   port=int(data["port"]), behaviour=str(data["behaviour"]),
                   command=str(data["command"]))


@dataclass(frozen=True)
class LabStatus:
    """A lab as its state file records it, and what is missing of it now."""

    pool: str
    prefix: str
    state_path: Path
    created_at: float
    options: LabOptions
    complete: bool  # False: `lab up` has not finished (or was killed half-way)
    entries: tuple[LabEntry, ...]
    problems: tuple[str, ...]  # recorded namespaces or processes that are gone

    @property
    def healthy(self) -> bool:
        return self.complete and not self.problems

    def address_of(self, peer: str, family: int) -> str:
        """A peer's address (a block's network for lossy and many)."""
        for entry in self.entries:
            if entry.peer == peer and entry.family == family:
                return entry.address
        raise KeyError(f"no {peer!r} peer over IPv{family}")

    def namespace_of(self, peer: str) -> str:
        for entry in self.entries:
            if entry.peer == peer:
                return entry.namespace
        raise KeyError(f"no {peer!r} peer")

    def to_dict(self) -> dict[str, Any]:
        return {
            "up": True,
            "pool": self.pool,
            "prefix": self.prefix,
            "state_path": str(self.state_path),
            "created_at": self.created_at,
            "options": self.options.to_dict(),
            "complete": self.complete,
            "problems": list(self.problems),
            "entries": [entry.to_dict() for entry in self.entries],
        }


@dataclass(frozen=True)
class LabUpResult:
    status: LabStatus
    created: bool  # False: it was up already, with these options
    message: str


@dataclass(frozen=True)
class LabDownResult:
    removed: tuple[str, ...]  # prefixes of the labs removed; empty: the lab was down
    message: str


# --- public API ----------------------------------------------------------------------------


def lab_up(
    options: LabOptions,
    *,
    pool: AddressPool | None = None,
    state_dir: Path | None = None,
    persistent: bool = True,
    server_max_seconds: float | None = None,
    index: int | None = None,
) -> LabUpResult:
    """Build the lab, or confirm it is up already with these options.

    Args:
        options: the impairments (far's delay and jitter, lossy's loss) and their seed; a
            seed of None picks one, recorded so `status` shows it.
        pool: where to build: the persistent pool (the user's lab; the default, unless
            $PROBER_LAB_POOL names another), or the test pool.
        state_dir: where its state file goes (default: /run/prober/lab, or
            $PROBER_LAB_STATE_DIR). A lab is the one lab-kind topology of `pool` there.
        persistent: False records this process as the owner, so `sweep_stale` removes the
            lab once the process is dead (test labs).
        server_max_seconds: bound on the lifetime of servers and elements; None: until
            `lab_down`.
        index: build exactly this topology of `pool` (default: the first free one).

    Returns:
        The lab's status; `created` tells a new lab from one that was up already.

    Raises:
        LabNotPermitted: not root.
        LabRefused: something else routes the lab's addresses, the lab is up with other
            options, or another `lab up`/`lab down` is running. Nothing was changed.
        LabError: a command failed; everything built so far has been removed again.
    """
    _require_root("prober lab up")
    pool = pool or default_pool()
    directory = state_dir or default_state_dir()
    make_state_dir(directory)
    _readable_by_all(directory)
    with _lab_lock(directory, pool):
        notes: list[str] = []
        for path in _lab_state_paths(directory, pool):
            existing = _read_status(path)
            if existing is not None and existing.healthy:
                return _already_up(existing, options)
            if existing is not None and existing.complete:
                raise LabRefused(
                    f"the lab is up but broken ({'; '.join(existing.problems)}): run "
                    "`sudo prober lab down`, then `sudo prober lab up` again"
                )
            # A `lab up` killed half-way (we hold the lock: none is running): its state file
            # lists everything it may have made; remove that and start afresh.
            teardown(path)
            notes.append(f"removed what an interrupted `prober lab up` left ({path.stem})")
        seed = options.seed if options.seed is not None else random.SystemRandom().randrange(
            2**32)
        chosen = LabOptions(delay_s=options.delay_s, jitter_s=options.jitter_s,
                            loss=options.loss, seed=seed)
        topology = Topology.create(
            pool=pool, index=index, state_dir=directory, persistent=persistent,
            description={"kind": LAB_KIND, "complete": False, "options": chosen.to_dict()},
        )
        try:
            refuse_if_routed(lab_prefixes(pool, topology.index))
            build_lab(topology, chosen, server_max_seconds=server_max_seconds)
        except BaseException:
            topology.teardown()
            raise
        status = _read_status(topology.state_path)
        assert status is not None
        notes.append(f"built the lab: {len(PEERS)} peers in {len(topology.namespaces)} "
                     f"namespaces ({topology.prefix})")
        return LabUpResult(status=status, created=True, message="; ".join(notes))


def lab_down(
    *, pool: AddressPool | None = None, state_dir: Path | None = None
) -> LabDownResult:
    """Remove everything `lab_up` made (also a half-built lab), from the state file alone.

    Raises:
        LabNotPermitted: not root.
        LabRefused: a `lab up` is running right now.
        LabError: something recorded could not be removed (the state file is kept for a retry).
    """
    _require_root("prober lab down")
    pool = pool or default_pool()
    directory = state_dir or default_state_dir()
    if not directory.is_dir():
        return LabDownResult(removed=(), message="lab is down (nothing to remove)")
    with _lab_lock(directory, pool):
        removed = []
        for path in _lab_state_paths(directory, pool):
            teardown(path)
            removed.append(path.stem)
    if not removed:
        return LabDownResult(removed=(), message="lab is down (nothing to remove)")
    return LabDownResult(removed=tuple(removed),
                         message=f"lab is down: removed {', '.join(removed)}")


def lab_status(
    *, pool: AddressPool | None = None, state_dir: Path | None = None
) -> LabStatus | None:
    """The lab as recorded, or None when it is down. Needs no root: it reads the state file
    and looks at /run/netns and /proc.

    Raises:
        LabNotPermitted: the state directory cannot be read.
        LabError: the state file is damaged.
    """
    pool = pool or default_pool()
    directory = state_dir or default_state_dir()
    try:
        paths = _lab_state_paths(directory, pool)
        for path in paths:
            status = _read_status(path)
            if status is not None:
                return status
    except PermissionError as exc:
        raise LabNotPermitted(
            f"cannot read the lab state in {directory}: permission denied (run it with sudo)"
        ) from exc
    return None


def default_pool() -> AddressPool:
    """The persistent pool, or the one $PROBER_LAB_POOL names."""
    name = os.environ.get(POOL_ENV) or PERSISTENT_POOL.name
    try:
        return pool_named(name)
    except ValueError as exc:
        raise LabError(f"${POOL_ENV}={name!r} names no address pool") from exc


def lab_prefixes(pool: AddressPool, index: int) -> tuple[IPNetwork, ...]:
    """Every prefix the lab at `index` of `pool` routes from the root namespace."""
    topology = pool.topology(index)
    blocks = pool.lab_blocks(index)
    # Blocks inside the topology's own /24 or /64 (a lab in the test pool) need no route.
    v4 = [b for b in (blocks.lossy_v4, blocks.many_v4) if not b.subnet_of(topology.v4)]
    v6 = [b for b in (blocks.lossy_v6, blocks.many_v6) if not b.subnet_of(topology.v6)]
    return (topology.v4, *v4, topology.v6, *v6)


def refuse_if_routed(prefixes: Sequence[IPNetwork]) -> None:
    """Refuse (LabRefused) if the root namespace has any route, address or routing rule that
    covers, equals or lies inside one of `prefixes` (default routes aside): those addresses
    belong to something else on this host, and the lab must not shadow or steal them."""
    found: list[str] = []
    for version in (4, 6):
        wanted = [p for p in prefixes if p.version == version]
        if not wanted:
            continue
        routes = json.loads(run(ip_command(None, f"-{version}", "-j", "route", "show", "table",
                                           "all")) or "[]")
        for route in routes:
            network = _network(route.get("dst"), version)
            if network is not None and _overlaps(network, wanted):
                found.append(f"route {_describe_route(route)}")
        rules = json.loads(run(ip_command(None, f"-{version}", "-j", "rule", "show")) or "[]")
        for rule in rules:
            dst = rule.get("dst")
            if dst in (None, "all"):
                continue
            network = _network(f"{dst}/{rule['dstlen']}" if "dstlen" in rule else dst, version)
            if network is not None and _overlaps(network, wanted):
                found.append(f"rule to {network} (priority {rule.get('priority')})")
        links = json.loads(run(ip_command(None, f"-{version}", "-j", "address", "show")) or "[]")
        for link in links:
            for info in link.get("addr_info", []):
                network = _network(f"{info.get('local')}/{info.get('prefixlen')}", version)
                if network is not None and _overlaps(network, wanted):
                    found.append(f"address {info.get('local')}/{info.get('prefixlen')} on "
                                 f"{link.get('ifname')}")
    if found:
        shown = ", ".join(dict.fromkeys(found))
        raise LabRefused(
            f"refusing to build the lab: this host already routes its addresses "
            f"({', '.join(str(p) for p in prefixes)}): {shown}"
        )


# --- building ------------------------------------------------------------------------------


def build_lab(
    topology: Topology, options: LabOptions, *, server_max_seconds: float | None = None
) -> None:
    """Build every peer into an empty `topology` and record the status table in its state."""
    addresses = topology.addresses
    blocks = topology.pool.lab_blocks(topology.index)
    router = topology.add_namespace(
        "router",
        {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, **_NO_ICMP_RATE_LIMITS},
    )
    uplink = topology.add_link(None, router, number=0, left_label="rtr", right_label="root",
                               left_host=1, right_host=2)
    root_end, router_up = uplink.left, uplink.right
    # Root reaches the lab through the router: its /24 and /64, and blocks outside them.
    for prefix in lab_prefixes(topology.pool, topology.index):
        gateway = router_up.v4.ip if prefix.version == 4 else router_up.v6.ip
        topology.add_route(None, prefix, via=gateway, device=root_end.device)

    entries: list[LabEntry] = []
    links: dict[str, Link] = {}
    for peer in PEERS:
        namespace = topology.add_namespace(peer.name, peer.sysctls)
        if peer.element is not None:
            link = impaired_link(topology, router, namespace, peer, options,
                                 max_seconds=server_max_seconds)
        else:
            link = topology.add_link(router, namespace, number=peer.link,
                                     left_label=peer.label, right_label=f"{peer.label}-gw")
        links[peer.name] = link
        # The peer answers root (and everything else in the lab) through the router.
        topology.add_route(namespace, addresses.v4, via=link.left.v4.ip,
                           device=link.right.device)
        topology.add_route(namespace, addresses.v6, via=link.left.v6.ip,
                           device=link.right.device)
        answered: tuple[IPNetwork, IPNetwork] = (link.right.v4.network, link.right.v6.network)
        if peer.block is not None:
            answered = _block(blocks, peer.block)
            for network in answered:
                topology.add_local_route(namespace, network)
                gateway = link.right.v4.ip if network.version == 4 else link.right.v6.ip
                topology.add_route(router, network, via=gateway, device=link.left.device)
        if peer.ruleset is not None:
            topology.apply_nftables(namespace, peer.ruleset)
        if peer.server is not None:
            topology.start_server(
                namespace, peer.server_ports, behaviour=peer.server,
                backlog=MANY_BACKLOG if peer.block == "many" else 128,
                max_seconds=server_max_seconds,
            )
        entries += _entries(peer, namespace, link, answered, _impairment(peer, options))
    filtered = links["filtered"].right
    topology.apply_nftables(router, _router_ruleset(filtered.v4.ip, filtered.v6.ip))
    description = dict(topology.description or {})
    description.update({
        "kind": LAB_KIND,
        "complete": True,
        "options": options.to_dict(),
        "entries": [entry.to_dict() for entry in entries],
    })
    topology.describe(description)


# Far's and lossy's elements serve until `lab down`. add_element_link takes no "unbounded"
# (its default bound is an hour, for builders killed before teardown), so the persistent
# lab passes a bound no lab outlives: ten years.
ELEMENT_UNBOUNDED_S = 10 * 365 * 86400.0


def impaired_link(
    topology: Topology,
    router: str,
    peer_namespace: str,
    peer: PeerPlan,
    options: LabOptions,
    *,
    max_seconds: float | None,
) -> Link:
    """The link from the router to `far` (delay, jitter) or `lossy` (loss) through an L2
    element namespace (<prefix>-delay, <prefix>-loss): the two ends are on one subnet, so
    routes and neighbours are those of a plain link. Both elements get the lab's seed.

    The element acts on each direction separately; the lab's options are per round trip (what
    `prober syn` measures), so each direction gets half the delay and jitter, and the loss
    probability p with (1 - p)^2 = 1 - loss: a SYN or its answer is lost with p = `loss`.
    """
    assert options.seed is not None  # lab_up has picked one
    delaying = peer.element == "delay"
    element_link = add_element_link(
        topology, router, peer_namespace, number=peer.link, seed=options.seed,
        delay=options.delay_s / 2 if delaying else 0.0,
        jitter=options.jitter_s / 2 if delaying else 0.0,
        loss=0.0 if delaying else 1 - math.sqrt(1 - options.loss),
        element_role=str(peer.element), label=f"{peer.label}-",
        max_seconds=ELEMENT_UNBOUNDED_S if max_seconds is None else max_seconds,
    )
    return Link(number=element_link.number, left=element_link.left, right=element_link.right)


def _block(blocks: LabBlocks, name: str) -> tuple[IPNetwork, IPNetwork]:
    if name == "lossy":
        return blocks.lossy_v4, blocks.lossy_v6
    if name == "many":
        return blocks.many_v4, blocks.many_v6
    raise ValueError(f"no lab block named {name!r}")


def _impairment(peer: PeerPlan, options: LabOptions) -> str:
    if peer.element is None:
        return ""
    if peer.element == "delay":
        return f"{format_duration(options.delay_s)} ± {format_duration(options.jitter_s)}"
    return f"{format_loss(options.loss)} of round trips lost"


def _entries(
    peer: PeerPlan,
    namespace: str,
    link: Link,
    answered: tuple[IPNetwork, IPNetwork],
    impairment: str,
) -> list[LabEntry]:
    rows = []
    for port, (family, network) in itertools.product(
        peer.ports, zip((4, 6), answered, strict=True)
    ):
        if peer.block is None:
            shown = str(link.right.v4.ip if family == 4 else link.right.v6.ip)
            sample = shown
        else:
            shown = str(network)
            sample = str(_sample_host(network))
        endpoint = f"{sample}:{port.port}" if family == 4 else f"'[{sample}]:{port.port}'"
        whole = f"{shown}:{port.port}" if family == 4 else f"'[{shown}]:{port.port}'"
        fields = {"endpoint": endpoint, "address": sample, "namespace": namespace,
                  "block": shown, "impairment": impairment, "targets": whole}
        rows.append(LabEntry(
            peer=peer.name, namespace=namespace, family=family, address=shown,
            port=port.port, behaviour=port.behaviour.format(**fields),
            command=port.command.format(**fields),
        ))
    return rows


def _sample_host(network: IPNetwork) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address inside a block for the example command: not the first, to show that any
    address answers (198.19.12.34 in the persistent lab's /16)."""
    offset = 0x0C22 if network.num_addresses > 0x0C22 + 1 else 7
    return network.network_address + offset


# --- reading the state ---------------------------------------------------------------------


def _lab_state_paths(directory: Path, pool: AddressPool) -> list[Path]:
    """State files of `pool` in `directory` that hold a lab (its description says so from
    the first save on, so a lab killed half-way is found too)."""
    found = []
    for path in state_paths(directory, pool):
        try:
            state = LabState.load(path)
        except FileNotFoundError:
            continue
        if state.description is not None and state.description.get("kind") == LAB_KIND:
            found.append(path)
    return found


def _read_status(path: Path) -> LabStatus | None:
    try:
        state = LabState.load(path)
    except FileNotFoundError:
        return None
    description = state.description or {}
    problems = []
    for resource in state.resources:
        if isinstance(resource, Namespace) and not netns.namespace_exists(resource.name):
            problems.append(f"namespace {resource.name} is gone")
        elif isinstance(resource, Process) and (
            resource.pid is None or process_start_time(resource.pid) != resource.start_time
        ):
            problems.append(f"process {resource.pid} ({shlex.join(resource.argv[-2:])}) is gone")
    try:
        options = LabOptions.from_dict(description["options"])
        entries = tuple(LabEntry.from_dict(item) for item in description.get("entries", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise LabError(f"lab state file {path} has a damaged description: {exc!r}") from exc
    return LabStatus(
        pool=state.pool.name,
        prefix=state.prefix,
        state_path=path,
        created_at=state.created_at,
        options=options,
        complete=bool(description.get("complete")),
        entries=entries,
        problems=tuple(problems),
    )


def _already_up(status: LabStatus, wanted: LabOptions) -> LabUpResult:
    if status.options.same_impairments(wanted):
        return LabUpResult(status=status, created=False,
                           message="lab is already up with these options; nothing changed")
    raise LabRefused(
        f"the lab is already up with other options ({status.options.summary()}): to change "
        f"them, run `sudo prober lab down`, then `sudo prober lab up {wanted.flags()}`"
    )


# --- safety and locking --------------------------------------------------------------------


def _require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise LabNotPermitted(
            f"`{command}` needs root: the lab is network namespaces and root-namespace routes "
            "(run it with sudo)"
        )


def _readable_by_all(directory: Path) -> None:
    # A state directory made by an older prober (mode 0700) would keep `lab status` root-only.
    mode = directory.stat().st_mode
    wanted = mode | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    if mode != wanted and directory.stat().st_uid == os.geteuid():
        directory.chmod(stat.S_IMODE(wanted))


@contextlib.contextmanager
def _lab_lock(directory: Path, pool: AddressPool) -> Iterator[None]:
    """One `lab up` or `lab down` at a time per pool and state directory. The kernel drops
    the lock when its holder dies, so a killed `up` never blocks the `down` after it."""
    with file_lock(
        directory / f".lab-{pool.code}.lock",
        _LAB_LOCK_WAIT_S,
        lambda: LabRefused(
            "another `prober lab up` or `prober lab down` is running; wait for it to finish"
        ),
    ):
        yield


def _network(text: object, version: int) -> IPNetwork | None:
    if not isinstance(text, str) or text == "default":
        return None
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return network if network.version == version and network.prefixlen > 0 else None


def _overlaps(network: IPNetwork, prefixes: Sequence[IPNetwork]) -> bool:
    """Either inside the other (for prefixes, overlapping means that)."""
    return any(
        network.version == prefix.version
        and (network.network_address in prefix or prefix.network_address in network)
        for prefix in prefixes
    )


def _describe_route(route: Mapping[str, Any]) -> str:
    text = str(route.get("dst"))
    if route.get("type") not in (None, "unicast"):
        text = f"{route['type']} {text}"
    if "gateway" in route:
        text += f" via {route['gateway']}"
    if "dev" in route:
        text += f" dev {route['dev']}"
    if route.get("table") not in (None, "main"):
        text += f" table {route['table']}"
    return text


__all__ = [
    "LAB_KIND",
    "PEERS",
    "PEER_NAMES",
    "POOL_ENV",
    "LabDownResult",
    "LabEntry",
    "LabStatus",
    "LabUpResult",
    "build_lab",
    "default_pool",
    "lab_down",
    "lab_prefixes",
    "lab_status",
    "lab_up",
    "refuse_if_routed",
]
