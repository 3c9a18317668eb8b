"""The built-in lab (`prober lab up|down|status`), built whole in the test pool under a state
directory of its own, so a lab a user left up is never touched: each peer shows its behaviour
(to `prober syn`, to a kernel TCP client, in its kernel's counters), the commands keep their
promises, and `down` leaves nothing behind, also after `up` was killed half-way."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from prober import Prober, SynRun
from prober.core.packets import template
from prober.core.parse import parse_packet
from prober.core.wire import Packet, TcpFlags, TcpSegment
from prober.lab import (
    PEER_NAMES,
    TEST_POOL,
    LabOptions,
    LabRefused,
    LabStatus,
    Topology,
    lab_down,
    lab_prefixes,
    lab_status,
    lab_up,
    route_check,
)
from prober.lab.builtin import POOL_ENV, refuse_if_routed
from prober.lab.state import STATE_DIR_ENV, process_start_time
from tests.integration.conftest import (
    new_lab_state_dir,
    remove_lab_state_dir,
    system_leftovers,
)

pytestmark = pytest.mark.integration

PROBER = [sys.executable, "-m", "prober"]
# 30 % loss, so a short run shows losses and answers both; the seed makes the drops repeatable.
OPTIONS = LabOptions(delay_s=0.020, jitter_s=0.001, loss=0.30, seed=20261126)
SERVER_MAX_SECONDS = 600.0  # the module's lab serves no longer, even if the session dies
CLIENT_TIMEOUT_S = 5.0


# --- the lab, and how to reach it ------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_dir() -> Iterator[Path]:
    directory = new_lab_state_dir("module")
    try:
        yield directory
    finally:
        remove_lab_state_dir(directory)


@pytest.fixture(scope="module")
def lab(lab_dir: Path) -> Iterator[LabStatus]:
    """The whole lab, built once for the module by the code behind `prober lab up`."""
    result = lab_up(OPTIONS, pool=TEST_POOL, state_dir=lab_dir, persistent=False,
                    server_max_seconds=SERVER_MAX_SECONDS)
    try:
        assert result.created and result.status.healthy, result.status.problems
        yield result.status
    finally:
        lab_down(pool=TEST_POOL, state_dir=lab_dir)


def lab_env(state_dir: Path) -> dict[str, str]:
    """`prober lab ...` pointed at a test lab instead of the user's."""
    return {**os.environ, POOL_ENV: TEST_POOL.name, STATE_DIR_ENV: str(state_dir)}


def prober_lab(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROBER, "lab", *args], capture_output=True, text=True, timeout=60,
                          env=lab_env(state_dir))


def address(lab: LabStatus, peer: str, family: int) -> str:
    """A peer's address; for a block (lossy, many) one address inside it."""
    shown = lab.address_of(peer, family)
    if "/" not in shown:
        return shown
    network = ipaddress.ip_network(shown)
    return str(network.network_address + network.num_addresses // 2 + 3)


def router_address(lab: LabStatus, family: int) -> str:
    uplink = TEST_POOL.topology(int(lab.prefix[2:], 16)).link(0)
    return str(uplink.host_v4(2).ip if family == 4 else uplink.host_v6(2).ip)


def endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def syn(
    host: str, port: int, *, count: int = 1, interval: float = 0.05, timeout: float = 0.5
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`Prober.syn` (what `prober syn` runs, in-process: a run costs no interpreter start):
    the probes' and the summary's --json fields."""
    route_check(host)  # never send beyond the lab

    async def main() -> SynRun:
        async with Prober() as prober:
            return await prober.syn(host, port, count=count, interval=interval, timeout=timeout)

    run = uvloop.run(main())
    return [probe.to_dict() for probe in run.probes], run.to_dict()


def run_printed(command: str) -> tuple[int, list[dict[str, Any]]]:
    """A command as `prober lab status` prints it (``sudo prober syn ...``), with --json and,
    for syn, one probe (the last -c wins)."""
    argv = shlex.split(command)
    assert argv[:2] == ["sudo", "prober"], command
    route_check(argv[3].rsplit(":", 1)[0].strip("[]"))
    one_probe = ["-c", "1"] if argv[2] == "syn" else []
    done = subprocess.run([*PROBER, *argv[2:], *one_probe, "--json"], capture_output=True,
                          text=True, timeout=60)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def netns_output(namespace: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True,
                          text=True, check=True, timeout=10).stdout


def tcp_counter(namespace: str, name: str) -> int:
    """A TcpExt counter of a namespace's kernel (/proc/net/netstat)."""
    lines = netns_output(namespace, "cat", "/proc/net/netstat").splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=True):
        if header.startswith("TcpExt:"):
            return dict(zip(header.split()[1:], map(int, values.split()[1:]), strict=True))[name]
    raise AssertionError("no TcpExt line in /proc/net/netstat")


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 2.0) -> None:
    """Wait for `check` (the last segment of a close may still be on its way)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.02)


def sysctl(namespace: str, key: str) -> str:
    return netns_output(namespace, "sysctl", "-n", key).strip()


@contextlib.contextmanager
def connection(host: str, port: int = 80) -> Iterator[socket.socket]:
    """A kernel TCP connection from the root namespace."""
    route_check(host)
    with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT_S) as sock:
        yield sock


def read_to_end(sock: socket.socket) -> tuple[bytes, str]:
    """Everything until the peer's FIN ("fin") or RST ("rst")."""
    received = b""
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, "rst"
        if not chunk:
            return received, "fin"
        received += chunk
    raise AssertionError(f"no end of stream after {CLIENT_TIMEOUT_S} s: {received!r}")


@pytest.fixture(params=[4, 6], ids=["v4", "v6"])
def family(request: pytest.FixtureRequest) -> int:
    version: int = request.param
    return version


# --- status and up, as commands ------------------------------------------------------------


def test_status_lists_every_peer(lab: LabStatus, lab_dir: Path) -> None:
    done = prober_lab(lab_dir, "status")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"lab is up: {lab.prefix} since ")
    assert OPTIONS.summary() in text.splitlines()[0]
    for entry in lab.entries:
        assert entry.peer in text and entry.address in text and entry.command in text
    as_json = json.loads(prober_lab(lab_dir, "status", "--json").stdout)
    rows = {(entry["peer"], entry["family"]) for entry in as_json["entries"]}
    assert rows == {(peer, family) for peer in PEER_NAMES for family in (4, 6)}
    assert as_json["up"] and as_json["complete"] and as_json["problems"] == []
    assert LabOptions.from_dict(as_json["options"]) == OPTIONS


def test_up_again_changes_nothing_or_refuses(lab: LabStatus, lab_dir: Path) -> None:
    same = prober_lab(lab_dir, "up", *OPTIONS.flags().split())
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("lab is already up with these options; nothing changed")
    unseeded = prober_lab(lab_dir, "up", *OPTIONS.flags().split()[:6])  # any seed will do
    assert unseeded.returncode == 0, unseeded.stderr
    other = prober_lab(lab_dir, "up", "--delay", "50ms")
    assert other.returncode == 8 and other.stdout == ""
    assert other.stderr.count("\n") == 1 and "`sudo prober lab down`, then" in other.stderr
    after = lab_status(pool=TEST_POOL, state_dir=lab_dir)
    assert after is not None and after.created_at == lab.created_at and after.healthy


# --- each peer, as prober syn sees it ----------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "port", "state", "reason"),
    [
        ("open", 80, "open", "syn-ack"),
        ("open", 81, "closed", "rst"),
        ("filtered", 80, "filtered", "no-response"),
        ("syncookies", 80, "open", "syn-ack"),
        ("impatient", 80, "open", "syn-ack"),
        ("rst-close", 80, "open", "syn-ack"),
        ("half-close", 80, "open", "syn-ack"),
        ("no-timewait", 80, "open", "syn-ack"),
        ("many", 80, "open", "syn-ack"),
        ("tuned", 80, "open", "syn-ack"),
    ],
)
def test_syn_sees_each_port(lab: LabStatus, family: int, peer: str, port: int, state: str,
                            reason: str) -> None:
    _, summary = syn(address(lab, peer, family), port)
    assert (summary["state"], summary["reason"]) == (state, reason)


@pytest.mark.parametrize(
    ("peer", "port", "family", "command", "exit_status"),
    [("open", 80, 4, "syn", 0), ("open", 80, 6, "syn", 0), ("open", 80, 4, "close", 0),
     ("open", 81, 6, "syn", 4), ("filtered", 81, 4, "syn", 5), ("many", 80, 6, "syn", 0),
     ("far", 80, 4, "syn", 0), ("syncookies", 80, 6, "halfopen", 0),
     ("impatient", 80, 4, "close", 0), ("rst-close", 80, 6, "close", 0),
     ("half-close", 80, 4, "close", 0), ("tuned", 80, 6, "syn", 0)],
)
def test_printed_commands_work(
    lab: LabStatus, peer: str, port: int, family: int, command: str, exit_status: int
) -> None:
    entry, = (e for e in lab.entries if (e.peer, e.port, e.family) == (peer, port, family)
              and shlex.split(e.command)[2] == command)
    code, records = run_printed(entry.command)
    assert code == exit_status, records


def test_router_rejects_in_front_of_filtered(lab: LabStatus, family: int) -> None:
    _, summary = syn(address(lab, "filtered", family), 81)
    assert (summary["state"], summary["reason"]) == ("filtered", "icmp-unreachable")
    assert summary["icmp"]["source"] == router_address(lab, family)  # not the target
    assert (summary["icmp"]["type"], summary["icmp"]["code"]) == ((3, 13) if family == 4
                                                                  else (1, 1))


def test_many_answers_anywhere_in_its_block(lab: LabStatus, family: int) -> None:
    block = ipaddress.ip_network(lab.address_of("many", family))
    for host in (block.network_address + 1, block.broadcast_address - 1):
        _, summary = syn(str(host), 80)
        assert summary["state"] == "open", host
    namespace = lab.namespace_of("many")
    assert sysctl(namespace, "net.core.somaxconn") == "262144"
    assert sysctl(namespace, "net.ipv4.tcp_max_syn_backlog") == "262144"
    assert sysctl(namespace, "net.ipv4.tcp_syncookies") == "1"


def test_lossy_loses_about_its_share(lab: LabStatus, family: int) -> None:
    probes, summary = syn(address(lab, "lossy", family), 80, count=60, interval=0.005)
    assert summary["state"] == "open" and summary["sent"] == 60
    # 30 % of round trips: 18 expected; far outside [4, 36] is not 30 %.
    assert 4 <= summary["lost"] <= 36, summary
    assert all(p["tcp"]["flags"] == "S." for p in probes if p["reason"] == "syn-ack")


def test_far_rtt_is_the_configured_delay(lab: LabStatus, family: int) -> None:
    _, summary = syn(address(lab, "far", family), 80, count=5)
    assert summary["state"] == "open" and summary["answered"] == 5
    delay_us, jitter_us = OPTIONS.delay_s * 1e6, OPTIONS.jitter_s * 1e6
    # Never early (the element sends at receive time + delay); late by scheduling at most.
    assert summary["rtt"]["min_us"] >= delay_us - jitter_us - 200
    assert summary["rtt"]["avg_us"] <= delay_us + jitter_us + 5_000


# --- each peer, as a kernel TCP client and its kernel's counters see it ----------------------


def test_open_answers_http_and_closes_first(lab: LabStatus, family: int) -> None:
    namespace = lab.namespace_of("open")
    with connection(address(lab, "open", family)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer, end = read_to_end(sock)
        client_port = sock.getsockname()[1]
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and end == "fin"
    # Who closes first holds TIME-WAIT: the server.
    eventually(lambda: f":{client_port}" in netns_output(namespace, "ss", "-Htan", "state",
                                                         "time-wait"),
               "the server holds TIME-WAIT")


def test_no_timewait_keeps_none(lab: LabStatus, family: int) -> None:
    namespace = lab.namespace_of("no-timewait")
    overflows = tcp_counter(namespace, "TCPTimeWaitOverflow")
    with connection(address(lab, "no-timewait", family)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer, end = read_to_end(sock)
        client_port = sock.getsockname()[1]
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and end == "fin"
    eventually(lambda: tcp_counter(namespace, "TCPTimeWaitOverflow") > overflows,
               "the server's close overflows the (empty) TIME-WAIT table")
    assert f":{client_port}" not in netns_output(namespace, "ss", "-Htan", "state", "time-wait")
    assert sysctl(namespace, "net.ipv4.tcp_max_tw_buckets") == "0"


def test_rst_close_answers_then_resets(lab: LabStatus, family: int) -> None:
    namespace = lab.namespace_of("rst-close")
    aborts = tcp_counter(namespace, "TCPAbortOnData")
    with connection(address(lab, "rst-close", family)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer, end = read_to_end(sock)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and end == "rst"
    eventually(lambda: tcp_counter(namespace, "TCPAbortOnData") > aborts,
               "the server counts its abortive close")


def test_half_close_sends_after_our_fin(lab: LabStatus, family: int) -> None:
    with connection(address(lab, "half-close", family)) as sock:
        sock.sendall(b"hello")
        sock.shutdown(socket.SHUT_WR)
        sent_fin = time.monotonic()
        answer, end = read_to_end(sock)
        took = time.monotonic() - sent_fin
    assert answer.splitlines() == [f"chunk {n}/3 after your FIN".encode() for n in (1, 2, 3)]
    assert end == "fin"
    assert took >= 0.15  # two pauses of 0.1 s between the chunks


def test_syncookies_answers_with_cookies(lab: LabStatus, family: int) -> None:
    namespace = lab.namespace_of("syncookies")
    sent = tcp_counter(namespace, "SyncookiesSent")
    with connection(address(lab, "syncookies", family)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer, _ = read_to_end(sock)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert tcp_counter(namespace, "SyncookiesSent") > sent  # a cookie even without a flood
    assert tcp_counter(namespace, "SyncookiesRecv") > 0
    assert sysctl(namespace, "net.ipv4.tcp_syncookies") == "2"


def test_impatient_settings(lab: LabStatus) -> None:
    namespace = lab.namespace_of("impatient")
    assert sysctl(namespace, "net.ipv4.tcp_synack_retries") == "2"
    assert sysctl(namespace, "net.ipv4.tcp_orphan_retries") == "1"
    with connection(address(lab, "impatient", 4)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_to_end(sock)[0].startswith(b"HTTP/1.0 200 OK\r\n")


# What `tuned` is set to (the Linux default in brackets), read back as a user would.
TUNED = {
    "net.ipv4.tcp_timestamps": ("0", "1"),
    "net.ipv4.tcp_sack": ("0", "1"),
    "net.ipv4.tcp_window_scaling": ("0", "1"),
    "net.ipv4.tcp_ecn": ("0", "2"),
    "net.ipv4.tcp_rfc1337": ("1", "0"),
    "net.ipv4.tcp_invalid_ratelimit": ("1000", "500"),
}


def test_tuned_settings_are_its_own(lab: LabStatus) -> None:
    """Set in tuned's namespace only: `open` next to it keeps the kernel's defaults."""
    tuned, other = lab.namespace_of("tuned"), lab.namespace_of("open")
    assert {key: sysctl(tuned, key) for key in TUNED} == {
        key: value for key, (value, _) in TUNED.items()}
    assert {key: sysctl(other, key) for key in TUNED} == {
        key: default for key, (_, default) in TUNED.items()}


def test_tuned_synack_offers_mss_only(lab: LabStatus, family: int) -> None:
    """Over IPv4 and IPv6 alike (the net.ipv4.tcp_* settings govern TCP over both): no
    timestamps, SACK-permitted or window scale option, where `open`'s SYN/ACK has all three."""
    probes, summary = syn(address(lab, "tuned", family), 80)
    assert (summary["state"], summary["reason"]) == ("open", "syn-ack")
    tcp = probes[0]["tcp"]
    assert tcp["flags"] == "S." and tcp["options"] == "M" and tcp["mss"] is not None
    assert (tcp["window_scale"], tcp["sack_permitted"], tcp["tsval"]) == (None, False, None)
    baseline = syn(address(lab, "open", family), 80)[0][0]["tcp"]
    assert set(baseline["options"]) >= {"M", "S", "T", "W"}
    assert baseline["window_scale"] is not None and baseline["sack_permitted"]
    assert baseline["tsval"] is not None


def test_tuned_protects_time_wait(lab: LabStatus, family: int) -> None:
    """Its status row: `prober timewait --no-duration --assassinate` finds the TIME-WAIT held
    and not ended by a RST at RCV.NXT (tcp_rfc1337=1), where `open` lets the RST end it."""
    entry, = (e for e in lab.entries if (e.peer, e.family) == ("tuned", family)
              and shlex.split(e.command)[2] == "timewait")
    code, records = run_printed(entry.command)
    assert code == 0, records
    result, = records
    assert (result["holds_time_wait"], result["assassinated"]) == (True, False), result


def root_address(lab: LabStatus, family: int) -> str:
    """Root's own address on the lab (link 0, host 1): the source of everything it sends."""
    uplink = TEST_POOL.topology(int(lab.prefix[2:], 16)).link(0)
    return str(uplink.host_v4(1).ip if family == 4 else uplink.host_v6(1).ip)


@contextlib.contextmanager
def raw_segments(lab: LabStatus, family: int) -> Iterator[
        tuple[Callable[..., None], Callable[[str, int, int], list[TcpSegment]]]]:
    """(send, received): send(dst, sport, dport, flags, seq) puts one bare TCP segment from
    root on the wire; received(src, sport, dport) is what came back so far (a packet socket
    on root's lab link: the kernel's own answers, e.g. its RSTs to SYN/ACKs, change nothing
    here)."""
    device = f"{lab.prefix}-rtr"
    assert device in os.listdir("/sys/class/net")
    proto = 0x0800 if family == 4 else 0x86DD
    listen = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(proto))
    out = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_RAW,
                        socket.IPPROTO_RAW)  # IPv4 and IPv6: we write the IP header
    listen.bind((device, proto))  # Python converts this one to network order itself
    listen.setblocking(False)
    source = ipaddress.ip_address(root_address(lab, family)).packed
    seen: list[Packet] = []

    def send(dst: str, sport: int, dport: int, flags: TcpFlags, seq: int) -> None:
        route_check(dst)  # never send beyond the lab
        packet = template(family, flags).build(source, ipaddress.ip_address(dst).packed,
                                               sport, dport, seq)
        out.sendto(packet, (dst, 0))

    def received(src: str, sport: int, dport: int) -> list[TcpSegment]:
        with contextlib.suppress(BlockingIOError):
            for _ in range(10_000):
                seen.append(parse_packet(listen.recv(65_535)))
        wanted = ipaddress.ip_address(src).packed
        return [p.tcp for p in seen if p.tcp is not None and p.src == wanted
                and (p.tcp.sport, p.tcp.dport) == (sport, dport)]

    try:
        yield send, received
    finally:
        listen.close()
        out.close()


def test_tuned_never_agrees_to_ecn(lab: LabStatus, family: int) -> None:
    """An ECN-setup SYN (ECE and CWR, RFC 3168 §6.1.1): tuned's SYN/ACK has no ECE
    (tcp_ecn=0), `open`'s has (the default 2 accepts ECN when asked)."""
    ecn_syn = TcpFlags.SYN | TcpFlags.ECE | TcpFlags.CWR
    answers = {}
    with raw_segments(lab, family) as (send, received):
        for peer in ("tuned", "open"):
            host, sport = address(lab, peer, family), random.randrange(40_000, 60_000)
            send(host, sport, 80, ecn_syn, random.getrandbits(32))
            eventually(lambda: bool(received(host, 80, sport)), f"{peer}'s SYN/ACK")  # noqa: B023
            answers[peer] = received(host, 80, sport)[0].flags
    assert answers == {"tuned": TcpFlags.SYN | TcpFlags.ACK,
                       "open": TcpFlags.SYN | TcpFlags.ACK | TcpFlags.ECE}


def test_tuned_sends_one_challenge_ack_a_second(lab: LabStatus, family: int) -> None:
    """SYNs into an established connection draw challenge ACKs (RFC 5961 §4), at most one
    per tcp_invalid_ratelimit: SYNs at 0, 0.6 and 1.2 s draw two from tuned (1000 ms; the one
    at 0.6 s is held back) and three from `open` (500 ms), as their kernels count them."""
    counters = ("TCPSYNChallenge", "TCPChallengeACK", "TCPACKSkippedChallenge")
    seen = {}
    with raw_segments(lab, family) as (send, received):
        for peer in ("tuned", "open"):
            namespace, host = lab.namespace_of(peer), address(lab, peer, family)
            before = [tcp_counter(namespace, name) for name in counters]
            with connection(host) as sock:  # the server waits for a request: established
                sport = sock.getsockname()[1]
                sent_at = []
                for n in range(3):
                    if n:
                        time.sleep(0.6)
                    sent_at.append(time.monotonic())
                    send(host, sport, 80, TcpFlags.SYN, random.getrandbits(32))
                # What the counts below rest on (a stalled test process would break it).
                assert 0.5 < sent_at[1] - sent_at[0] < 0.9 and sent_at[2] - sent_at[0] > 1.1
                eventually(lambda: len(received(host, 80, sport)) >= 2,  # noqa: B023
                           f"{peer}'s challenge ACKs")
                time.sleep(0.1)  # a third, if one comes
                acks = [seg for seg in received(host, 80, sport) if seg.flags == TcpFlags.ACK]
            after = [tcp_counter(namespace, name) for name in counters]
            seen[peer] = (len(acks), [b - a for a, b in zip(before, after, strict=True)])
    assert seen == {"tuned": (2, [3, 2, 1]), "open": (3, [3, 3, 0])}


# --- refusing addresses that are not the lab's -------------------------------------------------


@contextlib.contextmanager
def root_route(route: str) -> Iterator[None]:
    """A blackhole route (it sends nothing) in the root namespace, removed afterwards."""
    family = "-6" if ":" in route else "-4"
    argv = ["ip", family, "route", "add", "blackhole", route]
    subprocess.run(argv, check=True, capture_output=True, timeout=10)
    try:
        yield
    finally:
        argv[3] = "del"
        subprocess.run(argv, check=False, capture_output=True, timeout=10)


@contextlib.contextmanager
def root_rule(destination: str) -> Iterator[None]:
    """A policy routing rule towards `destination` (looking up main: it changes nothing)."""
    argv = ["ip", "rule", "add", "to", destination, "lookup", "main", "priority", "32700"]
    subprocess.run(argv, check=True, capture_output=True, timeout=10)
    try:
        yield
    finally:
        argv[2] = "del"
        subprocess.run(argv, check=False, capture_output=True, timeout=10)


@pytest.fixture
def claimed_index() -> Iterator[int]:
    """A test-pool index no other topology uses while the test runs (held by an empty
    topology in the shared state directory)."""
    with Topology.create() as claim:
        yield claim.index


def test_refuses_routes_inside_covering_or_equal(claimed_index: int) -> None:
    prefixes = lab_prefixes(TEST_POOL, claimed_index)
    topology = TEST_POOL.topology(claimed_index)
    blocks = TEST_POOL.lab_blocks(claimed_index)
    inside, covering, equal = blocks.many_v4, topology.v4.supernet(), topology.v4
    for route in (inside, covering, equal, blocks.lossy_v6):
        with root_route(str(route)), pytest.raises(LabRefused, match=f"blackhole {route}"):
            refuse_if_routed(prefixes)
    with root_rule(str(topology.v4)), pytest.raises(LabRefused, match="rule to"):
        refuse_if_routed(prefixes)
    # Elsewhere in the lab ranges (198.18.64.0/24 is unassigned): not the lab's business.
    with root_route("198.18.64.0/24"):
        refuse_if_routed(prefixes)


def test_up_refuses_and_leaves_nothing(claimed_index: int) -> None:
    directory = new_lab_state_dir("refused")
    prefix = TEST_POOL.prefix(claimed_index)
    block = TEST_POOL.lab_blocks(claimed_index).many_v4
    try:
        with root_route(str(block)), pytest.raises(LabRefused, match=f"blackhole {block}"):
            lab_up(OPTIONS, pool=TEST_POOL, state_dir=directory, persistent=False,
                   index=claimed_index)
        assert list(directory.glob("*.json")) == []
        assert [name for name in os.listdir("/sys/class/net") if name.startswith(prefix)] == []
        assert not any(Path("/run/netns").glob(f"{prefix}-*"))
    finally:
        remove_lab_state_dir(directory)


# --- down leaves nothing -----------------------------------------------------------------------


def leftovers(prefix: str, state_dir: Path) -> list[str]:
    """Anything of test lab `prefix` still present, found without the lab's own code."""
    found = system_leftovers(prefix)
    found += [f"file {path}" for path in state_dir.iterdir() if not path.name.endswith(".lock")]
    return found


def test_down_leaves_nothing_after_a_normal_run_even_broken() -> None:
    directory = new_lab_state_dir("normal")
    try:
        up = prober_lab(directory, "up", "--seed", "1")
        assert up.returncode == 0, up.stderr
        status = lab_status(pool=TEST_POOL, state_dir=directory)
        assert status is not None and status.healthy
        assert len(leftovers(status.prefix, directory)) > 20  # the check sees a live lab
        # A server that dies makes the lab broken: status says so, up refuses to paper over it.
        state = json.loads(status.state_path.read_text())
        server = next(r for r in state["resources"] if r["kind"] == "process")
        os.kill(server["pid"], signal.SIGKILL)  # the lab's own child, by its recorded PID
        eventually(lambda: process_start_time(server["pid"]) is None, "the server is gone")
        broken = prober_lab(directory, "status")
        assert broken.returncode == 7
        assert f"lab is broken: process {server['pid']}" in broken.stdout
        refused = prober_lab(directory, "up")
        assert refused.returncode == 8 and "up but broken" in refused.stderr
        down = prober_lab(directory, "down")
        assert (down.returncode, down.stdout) == (0, f"lab is down: removed {status.prefix}\n")
        assert leftovers(status.prefix, directory) == []
        again = prober_lab(directory, "status")
        assert (again.returncode, again.stdout) == (1, "lab is down\n")
        assert prober_lab(directory, "down").stdout == "lab is down (nothing to remove)\n"
    finally:
        remove_lab_state_dir(directory)


def _recorded(directory: Path) -> list[dict[str, Any]]:
    for path in directory.glob("pt??.json"):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            resources: list[dict[str, Any]] = json.loads(path.read_text())["resources"]
            return resources
    return []


KILL_POINTS: dict[str, Callable[[list[dict[str, Any]]], bool]] = {
    # a namespace and a link in: nothing running yet
    "links": lambda resources: sum(r["kind"] == "veth" for r in resources) >= 2,
    # a server recorded (perhaps not even started)
    "first-server": lambda resources: any(r["kind"] == "process" for r in resources),
    # the delay element is starting: servers and a half-wired element link exist
    "element": lambda resources: any(
        r["kind"] == "process" and any("-element" in arg for arg in r["argv"])  # its --tag
        for r in resources),
}


@pytest.mark.parametrize(
    ("kill_point", "then"),
    [("links", "down"), ("first-server", "up"), ("element", "down")],
)
def test_nothing_is_left_after_up_was_killed(kill_point: str, then: str) -> None:
    """`down` removes what a killed `up` made; so does the next `up`, before it builds."""
    directory = new_lab_state_dir(f"killed-{kill_point}")
    child = subprocess.Popen([*PROBER, "lab", "up", "--seed", "2"], env=lab_env(directory),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not KILL_POINTS[kill_point](_recorded(directory)):
            assert child.poll() is None, "`lab up` finished before the kill point"
            assert time.monotonic() < deadline, f"`lab up` never reached {kill_point}"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        prefix = next(directory.glob("pt??.json")).stem
        assert leftovers(prefix, directory) != []  # it did leave something behind
        status = prober_lab(directory, "status")
        assert status.returncode == 7 and status.stdout.startswith("lab is half-built")
        prefixes = {prefix}
        if then == "up":
            up = prober_lab(directory, "up", "--seed", "2")
            assert up.returncode == 0, up.stderr
            assert up.stdout.startswith(
                f"removed what an interrupted `prober lab up` left ({prefix}); built the lab")
            rebuilt = lab_status(pool=TEST_POOL, state_dir=directory)
            assert rebuilt is not None and rebuilt.healthy
            prefixes.add(rebuilt.prefix)
        down = prober_lab(directory, "down")
        assert down.returncode == 0, down.stderr
        for removed in prefixes:
            assert leftovers(removed, directory) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        remove_lab_state_dir(directory)
