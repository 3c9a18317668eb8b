"""`Prober.challenge` against real Linux TCP stacks in namespaces of the test pool, over IPv4
and IPv6: a default peer (RFC 5961 on, tcp_invalid_ratelimit 500 ms) and one with
net.ipv4.tcp_invalid_ratelimit=1000. Ground truth: the peers' sysctls, and their kernels'
counters (`nstat` TcpExtTCPChallengeACK) and sockets (`ss`).

Every run of the module goes at once in one Prober (about 5 s in all): each role is a
connection of its own, and the peers' servers (`eof`: wait for our FIN, at most 5 s) keep
the connections established while the roles ask."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from prober import Prober
from prober.core.challenge import ChallengeAnswer, ChallengeResult, ChallengeRole
from prober.core.close import Handshake
from prober.core.trace import Direction

from .peers import Peer, PeerSpec, in_peer, peer_topology

pytestmark = pytest.mark.integration

PORT = 80
PEERS: dict[str, PeerSpec] = {
    "chdf": ({}, {PORT: "eof"}),
    "chsl": ({"net.ipv4.tcp_invalid_ratelimit": 1000}, {PORT: "eof"}),
    "chfw": ({}, {PORT: "eof"}),  # a firewall in front of the stack drops every RST
}
RULESETS = {
    "chfw": """table inet prober_test {
    chain input {
        type filter hook input priority filter; policy accept;
        tcp dport 80 tcp flags & rst == rst drop
    }
}
""",
}
R = ChallengeRole
A = ChallengeAnswer
STOP_AFTER_S = 1.0  # the stopped run: in the middle of its SYNs


def challenge_acks(peer: Peer) -> int:
    """The peer's kernel's count of challenge ACKs sent (LINUX_MIB_TCPCHALLENGEACK)."""
    out = in_peer(peer.namespace, "nstat", "-az", "TcpExtTCPChallengeACK")
    for line in out.splitlines():
        if line.startswith("TcpExtTCPChallengeACK"):
            return int(line.split()[1])
    raise AssertionError(out)


Runs = dict[tuple[str, int], ChallengeResult]


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Peer]]:
    with peer_topology(PEERS, RULESETS) as built:
        yield built


@pytest.fixture(scope="module")
def runs(peers: dict[str, Peer]) -> tuple[Runs, dict[str, int]]:
    """Every run at once: all roles against the default peer, RATE against the slow one,
    over both families; and each peer's challenge ACKs counted by its kernel meanwhile."""
    before = {name: challenge_acks(peer) for name, peer in peers.items()}
    # (key, peer, family, roles, stop after this many seconds or None)
    plan = [
        ("chdf", "chdf", 4, tuple(R), None), ("chdf", "chdf", 6, tuple(R), None),
        ("chsl", "chsl", 4, (R.RATE,), None), ("chsl", "chsl", 6, (R.RATE,), None),
        ("chfw", "chfw", 4, (R.RST_IN_WINDOW,), None),
        ("chdf-stopped", "chdf", 4, (R.RATE,), STOP_AFTER_S),
    ]

    async def one(name: str, version: int, roles: tuple[R, ...], stop_after: float | None,
                  prober: Prober) -> ChallengeResult:
        stop = asyncio.Event()
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, stop.set)
        return await prober.challenge(peers[name].address(version), PORT, roles=roles,
                                      stop=stop)

    async def run() -> list[ChallengeResult]:
        async with Prober() as prober:
            return await asyncio.wait_for(
                asyncio.gather(*(
                    one(name, version, roles, stop_after, prober)
                    for _, name, version, roles, stop_after in plan
                )),
                timeout=30,
            )

    results = uvloop.run(run())
    counted = {name: challenge_acks(peer) - before[name] for name, peer in peers.items()}
    by_run = {(key, version): r for (key, _, version, _, _), r in zip(plan, results, strict=True)}
    return by_run, counted


@pytest.mark.parametrize("version", [4, 6])
def test_linux_challenges_a_rst_in_window_and_a_syn_and_ignores_one_outside(
    runs: tuple[Runs, dict[str, int]], version: int
) -> None:
    result = runs[0][("chdf", version)]
    answers = {c.role: c.answer for c in result.connections}
    assert answers == {
        R.RST_IN_WINDOW: A.CHALLENGE_ACK,
        R.RST_OUT_OF_WINDOW: A.IGNORED,
        R.SYN: A.CHALLENGE_ACK,
        R.RATE: A.CHALLENGE_ACK,
    }, [c.evidence for c in result.connections]
    for connection in result.connections:
        assert connection.handshake is Handshake.OPEN
        assert "lives on" in connection.evidence, connection.evidence
        # The last segment we sent frees the peer: a RST at exactly its RCV.NXT.
        ours = [s for s in connection.segments if s.direction is Direction.SENT]
        probe = connection.segments[connection.probe_indices[0]].seq
        offset = {R.RST_IN_WINDOW: 1, R.RST_OUT_OF_WINDOW: 1 << 30}.get(connection.role, 0)
        assert ours[-1].flags == "R" and ours[-1].seq == (probe - offset) % 2**32


@pytest.mark.parametrize("version", [4, 6])
def test_the_rate_is_linux_s_invalid_ratelimit(
    runs: tuple[Runs, dict[str, int]], version: int
) -> None:
    default, slow = runs[0][("chdf", version)], runs[0][("chsl", version)]
    assert default.min_interval_s is not None and 0.4 <= default.min_interval_s <= 0.65, (
        default.connection(R.RATE)
    )
    assert slow.min_interval_s is not None and 0.9 <= slow.min_interval_s <= 1.15
    assert default.rate_sent == slow.rate_sent == 40
    # 2 s of SYNs: about four answers at 500 ms, two at 1 s.
    assert 3 <= default.rate_answered <= 5 and slow.rate_answered == 2


def test_the_peers_kernels_count_the_challenge_acks_prober_saw(
    runs: tuple[Runs, dict[str, int]], peers: dict[str, Peer]
) -> None:
    results, counted = runs
    for name in ("chdf", "chsl"):
        seen = 0
        for (key, _), result in results.items():
            if key.split("-")[0] != name:
                continue
            for connection in result.connections:
                if connection.role is R.RATE:
                    seen += len(connection.ack_times_s)
                elif connection.answer is A.CHALLENGE_ACK:
                    seen += 1
        assert counted[name] == seen, (name, counted)
    # Every connection was freed by its RST: none of ours is left established.
    for peer in (peers["chdf"], peers["chsl"]):
        established = in_peer(peer.namespace, "ss", "-Htn", "state", "established")
        assert not established.strip(), established



def test_a_firewall_that_drops_the_rst_makes_it_look_ignored(
    runs: tuple[Runs, dict[str, int]]
) -> None:
    """What the probe cannot tell: the stack never saw the RST, yet the answer is a verdict
    about "the peer" (docs/challenge.md, "What it can and cannot tell")."""
    connection = runs[0][("chfw", 4)].connection(R.RST_IN_WINDOW)
    assert connection is not None
    assert connection.answer is A.IGNORED, connection.evidence
    assert "drew no answer" in connection.evidence and "lives on" in connection.evidence
    assert runs[1]["chfw"] == 0  # its kernel sent no challenge ACK


def test_a_stopped_run_frees_the_peer_at_once(runs: tuple[Runs, dict[str, int]]) -> None:
    result = runs[0][("chdf-stopped", 4)]
    assert result.interrupted
    rate = result.connection(R.RATE)
    assert rate is not None and rate.answer is A.CHALLENGE_ACK  # what came before stands
    ours = [s for s in rate.segments if s.direction is Direction.SENT]
    assert ours[-1].flags == "R" and "interrupted" in ours[-1].note
    assert 10 <= result.rate_sent < 40  # stopped in the middle of the SYNs
    # Freed: the module's check that nothing of ours stays established covers it.
