"""Shared by the `prober scan` integration tests (test_scan.py, test_scan_inputs.py): running
scans (CLI and library, bounded in time, never beyond the lab), checking a block's records,
and reading the block peer's kernel (TCP counters, half-open connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import uvloop

from prober import Prober
from prober.core.scan_result import ScanResult, ScanSummary
from prober.core.syn import PortState
from prober.engine.firewall import PROBER_MARK
from prober.lab.scan_topology import ScanTopology

PROBER = [sys.executable, "-m", "prober"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PORTS = "80-83"
EXPECTED = {  # port -> (state, reason)
    ScanTopology.OPEN_PORT: ("open", "syn-ack"),
    ScanTopology.CLOSED_PORT: ("closed", "rst"),
    ScanTopology.DROPPED_PORT: ("filtered", "no-response"),
    ScanTopology.UNREACHABLE_PORT: ("filtered", "icmp-unreachable"),
}
RATE = 5000  # SYNs/s: a /24 on four ports takes 0.2 s
WAIT_S = 1.0
SEED = 1
SCAN_TIMEOUT_S = 60.0  # any scan here ends within seconds; this bounds a hung one
EXIT_COMPLETE = 0
# The blocks are special-purpose addresses (RFC 2544's and RFC 5180's benchmarking ranges),
# which the blocklist skips inside CIDR blocks, except while the lab is up: the tests pass
# --no-blocklist (blocklist=False), so what they check does not hang on that exemption, and
# test_lab_blocks_are_exempt_from_the_blocklist checks the exemption itself.

# A SYN/ACK nobody answers is retransmitted after the initial RTO (1 s). The last SYN/ACKs of
# a scan are about WAIT_S old when it ends; this much later, each would have been resent.
AFTER_SCAN_S = 2.0
SYN_RECV_DRAIN_S = 10.0  # leftovers of an earlier test: cleared by the RST to a resend (3 s)
HALF_OPEN_COUNTERS = (
    "TcpExtSyncookiesSent",  # the SYN queue overflowed: half-open connections piled up
    "TcpExtTCPSynRetrans",  # SYN/ACKs retransmitted (the kernel counts them with SYNs)
    "TcpRetransSegs",  # every retransmission
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
)


# --- helpers -------------------------------------------------------------------------------


def spec(network: IPNetwork, ports: str) -> str:
    """A scan target for every address of `network` on `ports`."""
    return f"{network}:{ports}" if network.version == 4 else f"[{network}]:{ports}"


def checked(topo: ScanTopology, network: IPNetwork, ports: str) -> str:
    """`spec`, after confirming the block's first and last addresses are routed over this
    topology's link (never beyond the lab)."""
    for address in (network.network_address, network.broadcast_address):
        topo.topology.route_check(address)
    return spec(network, ports)


def addresses(network: IPNetwork) -> set[str]:
    return {str(address) for address in network}


def normalized(record: Mapping[str, Any]) -> tuple[str, int]:
    return str(ipaddress.ip_address(record["target"])), int(record["port"])


def run_cli(
    *args: str, blocklist: bool = False, stdin: str | None = None,
    timeout: float = SCAN_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """`prober scan ARGS` (`stdin` as its standard input); with --no-blocklist unless
    `blocklist` (see above)."""
    argv = [*PROBER, "scan", *args, *(() if blocklist else ("--no-blocklist",))]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=None if stdin is not None else subprocess.DEVNULL)


def cli_records(
    *args: str, blocklist: bool = False, stdin: str | None = None
) -> tuple[list[dict[str, Any]], subprocess.CompletedProcess[str]]:
    """`prober scan ... --format jsonl`'s records (each line parsed with json); the scan must
    have completed (exit status 0)."""
    done = run_cli(*args, "--format", "jsonl", blocklist=blocklist, stdin=stdin)
    assert done.returncode == EXIT_COMPLETE, f"exit {done.returncode}: {done.stderr}"
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return records, done


def library_scan(targets: Sequence[str], **options: Any) -> tuple[list[ScanResult], ScanSummary]:
    """`async for result in p.scan(targets, **options)`, bounded by SCAN_TIMEOUT_S; without
    the blocklist unless `options` say otherwise (see BLOCKLIST)."""
    options.setdefault("blocklist", False)

    async def collect() -> tuple[list[ScanResult], ScanSummary]:
        async with Prober() as prober:
            run = prober.scan(targets, **options)
            results: list[ScanResult] = []
            try:
                async with asyncio.timeout(SCAN_TIMEOUT_S):
                    async for result in run:
                        results.append(result)
            except TimeoutError:
                run.stop()
                raise
            assert run.summary is not None, "the iteration ended without a summary"
            return results, run.summary

    return uvloop.run(collect())


def check_block(
    topo: ScanTopology, records: Sequence[Mapping[str, Any]], network: IPNetwork,
    ports: Iterable[int],
) -> None:
    """Exactly one record per address and port, each with the port's expected verdict."""
    ports = tuple(ports)
    keys = [normalized(record) for record in records]
    repeated = [key for key, n in Counter(keys).items() if n > 1]
    assert not repeated, f"{len(repeated)} targets have several records, e.g. {repeated[:3]}"
    expected = {(address, port) for address in addresses(network) for port in ports}
    missing, extra = expected - set(keys), set(keys) - expected
    assert not missing, f"{len(missing)} of {len(expected)} records missing, e.g. " \
                        f"{sorted(missing)[:3]} (blocklisted?)"
    assert not extra, f"{len(extra)} records for targets not asked for, e.g. {sorted(extra)[:3]}"
    wrong = [dict(record) for record in records
             if (record["state"], record["reason"]) != EXPECTED[int(record["port"])]]
    assert not wrong, f"{len(wrong)} wrong verdicts, e.g. {wrong[:3]}"
    source = str(topo.root_v4 if network.version == 4 else topo.root_v6)
    for record in records:
        port, address = int(record["port"]), str(ipaddress.ip_address(record["target"]))
        assert record["source"] == source, record
        assert record["attempt"] == 1, record  # no loss here: the first SYN was answered
        if port in (ScanTopology.OPEN_PORT, ScanTopology.CLOSED_PORT):
            assert record["ttl"] == 63, record  # one router in between
            assert record["rtt_us"] is not None and 0 < record["rtt_us"] < 1_000_000, record
        if port == ScanTopology.OPEN_PORT:
            assert record["window"] and record["options"], record
        if port == ScanTopology.UNREACHABLE_PORT:
            # Port unreachable: ICMP 3/3; ICMPv6 1/4, sent from the peer's configured address.
            icmp = (3, 3) if network.version == 4 else (1, 4)
            assert (record["icmp_type"], record["icmp_code"]) == icmp, record
            sender = address if network.version == 4 else str(topo.block_peer_v6)
            assert record["icmp_from"] == sender, record
        if port == ScanTopology.DROPPED_PORT:
            assert record["rtt_us"] is None, record


def check_summary(summary: ScanSummary, records: int, open_hosts: int) -> None:
    assert summary.complete, summary.to_dict()
    assert (summary.targets, summary.results) == (records, records), summary.to_dict()
    assert summary.sent == records and summary.send_failed == 0, summary.to_dict()
    # (summary.invalid is not checked: on a shared machine, SYN/ACKs to other scanners
    # (nmap, zmap, masscan: raw sockets, ports the kernel never reserved) may reach ports
    # of ours and are rightly counted invalid; our own answers' verdicts are checked.)
    assert summary.kernel_drops == 0, summary.to_dict()
    assert summary.by_state.get(PortState.OPEN, 0) == open_hosts, summary.to_dict()
    assert summary.duplicates == 0, summary.to_dict()  # no SYN/ACK was ever resent


# --- the block peer's kernel ---------------------------------------------------------------


def in_namespace(namespace: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True,
                          text=True, timeout=10, check=True).stdout


def tcp_counters(namespace: str) -> dict[str, int]:
    """The namespace's absolute TCP counters (nstat -a: ignore, and -s: keep, its history)."""
    shown = json.loads(in_namespace(namespace, "nstat", "-asz", "--json",
                                    *HALF_OPEN_COUNTERS))
    counters = {name: int(value) for name, value in shown["kernel"].items()}
    assert set(counters) == set(HALF_OPEN_COUNTERS), counters
    return counters


def counter_increase(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in HALF_OPEN_COUNTERS}


def syn_recv(namespace: str) -> list[str]:
    """The namespace's half-open connections (SYN-RECV: its SYN/ACK was not answered)."""
    return in_namespace(namespace, "ss", "-Htn", "state", "syn-recv").splitlines()


def wait_no_syn_recv(namespace: str, timeout_s: float = SYN_RECV_DRAIN_S) -> None:
    deadline = time.monotonic() + timeout_s
    while (pending := syn_recv(namespace)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pending, f"{len(pending)} half-open connections in {namespace} for more than " \
                        f"{timeout_s} s, e.g. {pending[:3]}"


@contextlib.contextmanager
def kernel_rsts_dropped(networks: Iterable[IPNetwork]) -> Iterator[str]:
    """Root drops its own kernel's RSTs to `networks` (as a host firewall dropping
    conntrack-invalid packets would); packets with prober's SO_MARK pass. The table is
    deleted on the way out, also on failure; it is an nftables `owner` table (made through
    libnftables, as prober's own RST suppression is), so the kernel deletes it should this
    process die first."""
    from prober.engine.firewall import _Libnftables

    lib = _Libnftables().lib
    context = lib.nft_ctx_new(0)
    assert context, "libnftables could not create a context"
    lib.nft_ctx_buffer_output(context)
    lib.nft_ctx_buffer_error(context)

    def nft(command: str) -> None:
        if lib.nft_run_cmd_from_buffer(context, command.encode()) != 0:
            raise AssertionError(f"nft {command!r}: {lib.nft_ctx_get_error_buffer(context)!r}")

    table = f"prober_itest_rstdrop_{os.getpid()}"
    try:
        commands = [
            f"add table inet {table} {{ flags owner; }}",
            f"add chain inet {table} out {{ type filter hook output priority filter; }}",
        ]
        for network in networks:
            family = "ip" if network.version == 4 else "ip6"
            commands.append(f"add rule inet {table} out meta mark != {PROBER_MARK:#x} "
                            f"{family} daddr {network} tcp flags & rst == rst drop")
        nft("\n".join(commands) + "\n")
        yield table
    finally:
        with contextlib.suppress(AssertionError):  # never made, or gone with its owner
            nft(f"delete table inet {table}")
        lib.nft_ctx_free(context)


def raw_tcp(source: ipaddress.IPv4Address, destination: ipaddress.IPv4Address, *,
            sport: int, dport: int, flags: str, seq: int) -> bytes:
    """A TCP segment with its checksum (the kernel adds the IPv4 header)."""
    from scapy.layers.inet import IP, TCP

    packet = IP(src=str(source), dst=str(destination)) / TCP(sport=sport, dport=dport,
                                                              flags=flags, seq=seq)
    return bytes(packet)[20:]
