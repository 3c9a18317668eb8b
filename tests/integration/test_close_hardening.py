"""`prober close` off the happy path, against real Linux peers in namespaces of the test pool:
a peer that keeps no TIME-WAIT, a peer that sends 1 GiB, and a conversation cancelled midway.
Ground truth comes from the peer's side (its counters, its sockets, a capture there)."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from prober import Prober
from prober.core.close_receive import DEFAULT_KEEP_BYTES
from prober.lab import Topology, route_check
from prober.lab.capture import tcpdump
from prober.lab.server import FLOOD_CHUNK

pytestmark = pytest.mark.integration

PROBER = [sys.executable, "-m", "prober"]

# name: (sysctls, port, server behaviour)
PEERS: dict[str, tuple[dict[str, int], int, str]] = {
    # Keeps no TIME-WAIT socket at all: every one it should hold overflows the bucket limit.
    "notw": ({"net.ipv4.tcp_max_tw_buckets": 0}, 81, "close"),
    "flood": ({}, 80, "flood"),
    "hold": ({}, 80, "eof"),  # waits for our FIN (5 s at most): the connection stays open
    # Retransmits its SYN/ACK for 1 + 2 + 4 s: a half-open request that outlives the test.
    "half": ({"net.ipv4.tcp_synack_retries": 3}, 80, "close"),
}


@dataclass(frozen=True)
class Peer:
    namespace: str
    device: str
    v4: str
    port: int


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Peer]]:
    with Topology.create() as topology:
        built: dict[str, Peer] = {}
        for number, (name, (sysctls, port, behaviour)) in enumerate(PEERS.items()):
            namespace = topology.add_namespace(name, sysctls)
            link = topology.add_link(
                None, namespace, number=number, left_label=f"{name}a", right_label=f"{name}b"
            )
            topology.start_server(
                namespace, [port], family="both", behaviour=behaviour, max_seconds=600
            )
            peer = Peer(namespace, link.right.device, str(link.right.v4.ip), port)
            route_check(peer.v4)
            built[name] = peer
        yield built


def in_peer(peer: Peer, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", peer.namespace, *argv],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout


def time_wait_overflows(peer: Peer) -> int:
    out = in_peer(peer, "nstat", "-az", "TcpExtTCPTimeWaitOverflow")
    for line in out.splitlines():
        if line.startswith("TcpExtTCPTimeWaitOverflow"):
            return int(line.split()[1])
    raise AssertionError(out)


def run_prober(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROBER, *args], capture_output=True, text=True, timeout=timeout)


def run_json(*args: str, timeout: float = 120) -> dict[str, Any]:
    done = run_prober(*args, "--json", timeout=timeout)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_peer_that_keeps_no_time_wait_is_not_said_to_hold_one(peers: dict[str, Peer]) -> None:
    peer = peers["notw"]
    before = time_wait_overflows(peer)
    result = run_json("close", f"{peer.v4}:{peer.port}", "--peer-closes")
    assert result["close_kind"] == "peer-first"
    assert result["time_wait_due"] == "peer"  # its to hold, by who closed first
    # Ground truth: the peer kept none, it counted an overflow instead.
    assert time_wait_overflows(peer) == before + 1
    assert f":{peer.port} " not in in_peer(peer, "ss", "-Htan", "state", "time-wait")

    human = run_prober("close", f"{peer.v4}:{peer.port}", "--peer-closes")
    assert human.returncode == 0, human.stderr
    assert "holds TIME-WAIT" not in human.stdout
    assert "the peer closed first, so TIME-WAIT is its to hold" in human.stdout
    assert "ss -tan state time-wait" in human.stdout
    assert "nstat -az TcpExtTCPTimeWaitOverflow" in human.stdout


def test_a_peer_sending_a_gigabyte_cannot_grow_probers_memory(peers: dict[str, Peer]) -> None:
    peer = peers["flood"]
    result = run_json(
        "close", f"{peer.v4}:{peer.port}", "--peer-closes", "--max-wait", "15", timeout=90
    )
    # The largest child this test process has waited for is that prober run (ru_maxrss, KiB).
    max_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    receive = result["receive"]
    assert result["handshake"] == "open"
    assert receive["delivered_bytes"] > 8 * DEFAULT_KEEP_BYTES  # the flood went on
    assert result["bytes_received"] == receive["delivered_bytes"]
    assert receive["buffered_high_water_bytes"] <= receive["window_bytes"]
    assert receive["kept_bytes"] == DEFAULT_KEEP_BYTES  # the rest counted, not kept
    assert receive["out_of_window_bytes"] == 0  # Linux respects the window we advertise
    # The log stays bounded too: bulk segments beyond its budget are counted only.
    assert result["unrecorded_segments"] > 0
    assert len(result["segments"]) < 600
    assert max_rss_mib < 400, max_rss_mib


def test_the_gigabyte_is_received_in_order_and_intact(peers: dict[str, Peer]) -> None:
    peer = peers["flood"]

    async def run() -> bytes:
        async with Prober() as prober:
            result = await prober.close(peer.v4, peer.port, peer_closes=True, max_wait=3)
        assert result.receive is not None
        assert result.receive.buffered_high_water_bytes <= result.receive.window_bytes
        return result.received

    kept = uvloop.run(run())
    pattern = FLOOD_CHUNK * (len(kept) // len(FLOOD_CHUNK) + 1)
    assert kept == pattern[: len(kept)] and len(kept) == DEFAULT_KEEP_BYTES


def our_flags(capture: Path, peer: Peer) -> list[str]:
    """tcpdump-style flags of every segment in ``capture`` that the peer did not send."""
    lines = subprocess.run(
        ["tshark", "-r", str(capture), "-T", "fields", "-e", "ip.src", "-e", "tcp.flags.str"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()
    return [line.split("\t")[1] for line in lines if line.split("\t")[0] != peer.v4]


def test_cancelling_close_still_sends_the_rst_that_frees_the_peer(
    peers: dict[str, Peer], tmp_path: Path
) -> None:
    peer = peers["hold"]
    capture = tmp_path / "peer.pcap"

    async def run() -> None:
        async with Prober() as prober:
            task = asyncio.create_task(
                prober.close(peer.v4, peer.port, peer_closes=True, max_wait=30)
            )
            await asyncio.sleep(1.0)  # the handshake is long done; both sides wait
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with tcpdump(peer.device, capture, f"tcp port {peer.port}", namespace=peer.namespace):
        uvloop.run(run())
        established = in_peer(peer, "ss", "-Htn", "state", "established")
    flags = our_flags(capture, peer)
    assert any("R" in f for f in flags), flags
    assert f"{peer.v4}:{peer.port} " not in established


def test_cancelling_halfopen_still_sends_the_rst_that_frees_the_request(
    peers: dict[str, Peer], tmp_path: Path
) -> None:
    peer = peers["half"]
    capture = tmp_path / "peer.pcap"

    async def run() -> None:
        async with Prober() as prober:
            task = asyncio.create_task(
                prober.halfopen(peer.v4, peer.port, max_wait=30, cookie_check=False)
            )
            await asyncio.sleep(1.5)  # the first SYN/ACK retransmission has come
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with tcpdump(peer.device, capture, f"tcp port {peer.port}", namespace=peer.namespace):
        uvloop.run(run())
        requests = in_peer(peer, "ss", "-Htn", "state", "syn-recv")
    flags = our_flags(capture, peer)
    assert any("R" in f for f in flags), flags
    assert f"{peer.v4}:{peer.port} " not in requests
