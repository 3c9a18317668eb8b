"""`prober halfopen` and `prober close` against real Linux TCP stacks whose sysctls and servers
give the expected answer (ground truth in the peer namespace), over IPv4 and IPv6."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from prober import Prober
from prober.core.close import CloseKind, Handshake
from prober.core.halfopen import CookieAnswer, EndedBy
from prober.engine.firewall import Conversation

from .peers import Peer, PeerSpec, peer_topology

pytestmark = pytest.mark.integration

PROBER = [sys.executable, "-m", "prober"]

# name: (sysctls, {port: server behaviour})
PEERS: dict[str, PeerSpec] = {
    "r1": ({"net.ipv4.tcp_synack_retries": 1}, {80: "close"}),
    "r2": ({"net.ipv4.tcp_synack_retries": 2}, {80: "close"}),
    "r3": ({"net.ipv4.tcp_synack_retries": 3}, {80: "close"}),
    "ck1": ({"net.ipv4.tcp_syncookies": 2, "net.ipv4.tcp_timestamps": 1}, {80: "close"}),
    "ck2": ({"net.ipv4.tcp_syncookies": 2, "net.ipv4.tcp_timestamps": 2}, {80: "close"}),
    "srv": (
        {},
        {80: "eof", 81: "close", 82: "rst", 83: "half-close", 84: "http"},
    ),
    "imp": ({"net.ipv4.tcp_orphan_retries": 1}, {80: "http"}),
    # Conntrack counts our packets, so the rule below can drop exactly our fourth (the ACK of
    # the peer's FIN): the peer then retransmits its FIN into our TIME-WAIT.
    "tw": ({"net.netfilter.nf_conntrack_acct": 1}, {80: "eof"}),
}
RULESETS = {
    "tw": """table inet prober_test {
    chain input {
        type filter hook input priority filter; policy accept;
        tcp dport 80 tcp flags == ack ct original packets 4 drop
    }
}
""",
}


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Peer]]:
    with peer_topology(PEERS, RULESETS) as built:
        yield built


def run_json(*args: str, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [*PROBER, *args, "--json"], capture_output=True, text=True, timeout=timeout
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def nft_tables() -> str:
    return subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout


# -- half-open ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "retries", "version"), [("r1", 1, 4), ("r2", 2, 4), ("r2", 2, 6)])
def test_synack_retries_gives_exactly_that_many_doubling_retransmissions(
    peers: dict[str, Peer], name: str, retries: int, version: int
) -> None:
    code, result = run_json(
        "halfopen", peers[name].endpoint(version, 80), "--max-wait", "30", "--no-cookie-check"
    )
    assert code == 0
    assert result["retransmissions"] == retries
    assert result["ended_by"] == "silence"
    intervals = [a["interval_us"] / 1e6 for a in result["syn_acks"][1:]]
    for k, interval in enumerate(intervals):
        assert abs(interval - 2**k) <= 0.1 * 2**k, intervals
    assert result["rst_sent"] and result["cookies"]["verdict"] == "no"


def test_max_wait_bounds_the_watch(peers: dict[str, Peer]) -> None:
    started = time.monotonic()
    code, result = run_json(
        "halfopen", peers["r3"].endpoint(4, 80), "--max-wait", "4", "--no-cookie-check"
    )
    assert code == 0 and time.monotonic() - started < 15
    assert result["ended_by"] == "max-wait" and result["retransmissions"] == 2


@pytest.mark.parametrize(("name", "version"), [("ck1", 4), ("ck2", 4), ("ck1", 6), ("ck2", 6)])
def test_syn_cookies_are_recognised_with_either_timestamp_mode(
    peers: dict[str, Peer], name: str, version: int
) -> None:
    code, result = run_json("halfopen", peers[name].endpoint(version, 80), "--max-wait", "10")
    assert code == 0
    assert result["retransmissions"] == 0
    assert result["cookie_check"]["verdict"] == "cookies"
    assert result["cookies"]["verdict"] == "yes"


def test_kernel_rst_ends_the_half_open_connection(peers: dict[str, Peer]) -> None:
    # Without suppression the local kernel resets the peer's request at its first SYN/ACK.
    code, result = run_json(
        "halfopen",
        peers["r2"].endpoint(4, 80),
        "--max-wait",
        "6",
        "--kernel-rst",
        "--no-cookie-check",
    )
    assert code == 0 and result["retransmissions"] == 0
    assert result["cookies"]["verdict"] == "unknown"  # no evidence survives the kernel RST


# -- close -------------------------------------------------------------------------------------
def segments(result: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    return [s for s in result["segments"] if s["direction"] == direction]


@pytest.mark.parametrize("version", [4, 6])
def test_server_that_closes_on_eof(peers: dict[str, Peer], version: int) -> None:
    code, result = run_json("close", peers["srv"].endpoint(version, 80), "--msl", "0.5")
    assert code == 0
    assert result["close_kind"] in ("four-way", "three-way")
    received = segments(result, "received")
    fins = [s for s in received if "F" in s["flags"]]
    assert len(fins) == 1
    separate_ack = any(
        s["flags"] == "." and s["relative_ack"] == 2 for s in received if s is not fins[0]
    )
    assert (result["close_kind"] == "four-way") == separate_ack
    assert result["time_wait_due"] == "us"
    assert result["time_wait_held_us"] >= 0.9e6  # 2 x MSL
    assert result["our_final_state"] == "CLOSED"
    assert result["segments"][-1]["our_state"] in ("TIME-WAIT", "CLOSED")


@pytest.mark.parametrize("version", [4, 6])
def test_server_that_closes_after_accept_closes_first(peers: dict[str, Peer], version: int) -> None:
    code, result = run_json("close", peers["srv"].endpoint(version, 81), "--peer-closes")
    assert code == 0
    assert result["close_kind"] == "peer-first"
    assert result["time_wait_due"] == "peer"
    states = [s["our_state"] for s in result["segments"]]
    assert "CLOSE-WAIT" in states and "LAST-ACK" in states and states[-1] == "CLOSED"


@pytest.mark.parametrize("version", [4, 6])
def test_linger_zero_server_resets(peers: dict[str, Peer], version: int) -> None:
    code, result = run_json(
        "close",
        peers["srv"].endpoint(version, 82),
        "--peer-closes",
        "--send",
        r"GET / HTTP/1.0\r\n\r\n",
    )
    assert code == 0
    assert result["close_kind"] == "reset"
    assert any("R" in s["flags"] for s in segments(result, "received"))
    assert result["bytes_received"] > 0


@pytest.mark.parametrize("version", [4, 6])
def test_half_close_server_keeps_sending_after_our_fin(
    peers: dict[str, Peer], version: int
) -> None:
    code, result = run_json("close", peers["srv"].endpoint(version, 83), "--no-wait")
    assert code == 0
    assert result["half_close"] is True and result["bytes_after_our_fin"] > 0
    # Every byte after our FIN was acknowledged in order.
    acks = [s["relative_ack"] for s in segments(result, "sent")]
    assert acks == sorted(acks)


def test_drop_final_ack_records_the_peers_fin_retransmissions(peers: dict[str, Peer]) -> None:
    code, result = run_json(
        "close",
        peers["imp"].endpoint(4, 84 - 4),
        "--drop-final-ack",
        "--send",
        r"GET / HTTP/1.0\r\n\r\n",
        "--max-wait",
        "40",
        "--no-wait",
        timeout=120,
    )
    assert code == 0
    retransmissions = result["peer_fin_retransmissions"]
    assert len(retransmissions) >= 1
    intervals = [r["interval_us"] for r in retransmissions]
    assert all(i > 0 for i in intervals)
    assert result["peer_fin_retransmissions_end"] in ("silence", "reset")


def test_time_wait_re_acks_a_retransmitted_fin(peers: dict[str, Peer]) -> None:
    code, result = run_json("close", peers["tw"].endpoint(4, 80), "--msl", "1")
    assert code == 0
    assert result["time_wait_due"] == "us"
    assert len(result["peer_fin_retransmissions"]) == 1
    notes = [s["note"] for s in result["segments"]]
    assert "FIN retransmission, re-ACKed in TIME-WAIT" in notes
    last = result["segments"][-1]
    assert (last["direction"], last["flags"], last["our_state"]) == ("sent", ".", "TIME-WAIT")
    # The retransmitted FIN restarted the 2 MSL timer (RFC 9293 3.6.1).
    assert result["time_wait_held_us"] > 2.0e6


def test_close_pcap_is_read_by_tshark(peers: dict[str, Peer], tmp_path: Path) -> None:
    pcap = tmp_path / "close.pcap"
    code, result = run_json(
        "close",
        peers["srv"].endpoint(4, 84),
        "--send",
        r"GET / HTTP/1.0\r\n\r\n",
        "--no-wait",
        "--pcap",
        str(pcap),
    )
    assert code == 0
    done = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "tcp.flags.str"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(done.stdout.splitlines()) == len(result["segments"])


# -- the nftables table is gone however prober ends ---------------------------------------------
@pytest.mark.parametrize("how", ["exit", "SIGINT", "SIGTERM", "SIGKILL"])
def test_rst_suppression_table_is_removed(peers: dict[str, Peer], how: str) -> None:
    args = ["close", peers["srv"].endpoint(4, 80), "--msl", "0.3" if how == "exit" else "30"]
    process = subprocess.Popen(
        [*PROBER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    table = f"prober_{process.pid}"
    try:
        deadline = time.monotonic() + 10
        while table not in nft_tables() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert table in nft_tables()
        if how != "exit":
            time.sleep(0.3)
            process.send_signal(getattr(signal, how))
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert table not in nft_tables()


def test_rst_suppression_table_is_removed_after_an_error(peers: dict[str, Peer]) -> None:
    table = f"prober_{os.getpid()}"

    async def fail_inside() -> None:
        async with Prober() as prober:
            prober.engine.suppress_rsts(
                Conversation(40000, ipaddress.ip_address(peers["srv"].v4), 80)
            )
            assert table in nft_tables()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        uvloop.run(fail_inside())
    assert table not in nft_tables()


def test_library_close_returns_typed_results(peers: dict[str, Peer]) -> None:
    async def run() -> None:
        async with Prober() as prober:
            result = await prober.close(peers["srv"].v6, 80, no_wait=True)
        assert result.handshake is Handshake.OPEN
        assert result.close_kind in (CloseKind.FOUR_WAY, CloseKind.THREE_WAY)
        halfopen_stop = asyncio.Event()
        async with Prober() as prober:
            asyncio.get_running_loop().call_later(1.5, halfopen_stop.set)
            half = await prober.halfopen(peers["r3"].v4, 80, stop=halfopen_stop, cookie_check=False)
        assert half.ended_by is EndedBy.INTERRUPTED and half.rst_sent
        assert half.cookies.verdict in (CookieAnswer.NO, CookieAnswer.UNKNOWN)

    uvloop.run(run())
