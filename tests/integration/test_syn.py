"""`prober syn` against real Linux TCP stacks in namespaces: what a user would check.

Topology (tests/integration/conftest.py): root ns (prober) — router — target, with an open,
a closed, a dropped, a port-unreachable and a router-rejected (admin-prohibited) port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop

from prober import PortState, Prober, Reason
from prober.core.timing import Clock
from prober.lab import SynTopology, hosts_entry, route_check
from prober.lab.capture import tcpdump

PROBER = [sys.executable, "-m", "prober"]


def target(topo: SynTopology, version: int) -> str:
    return str(topo.target_v4 if version == 4 else topo.target_v6)


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def run_cli(*args: str, timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
    """Run `prober syn ... --json`; returns the exit status, the JSON records and stderr."""
    for arg in args:
        with contextlib.suppress(ValueError):
            host = arg.rsplit(":", 1)[0].strip("[]")
            route_check(ipaddress.ip_address(host))  # never send beyond the lab
    done = subprocess.run(
        [*PROBER, "syn", *args, "--json"], capture_output=True, text=True, timeout=timeout
    )
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, records, done.stderr


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.kernel_clock
def test_open_port_answers_syn_ack_with_linux_options(
    syn_topology: SynTopology, version: int
) -> None:
    address = target(syn_topology, version)
    code, records, stderr = run_cli(endpoint(address, 80), "-c", "3", "-i", "0.05")
    assert code == 0, stderr
    *probes, summary = records
    assert [p["probe"] for p in sorted(probes, key=lambda p: p["probe"])] == [1, 2, 3]
    assert summary["state"] == "open" and summary["reason"] == "syn-ack"
    assert (summary["sent"], summary["answered"], summary["lost"]) == (3, 3, 0)
    assert summary["rtt"]["clock"] == "kernel" and 0 < summary["rtt"]["min_us"] < 10_000
    for probe in probes:
        assert probe["target"] == address and probe["tcp"]["flags"] == "S."
        assert probe["tcp"]["options"] == "MSTNW"
        assert probe["tcp"]["mss"] == (1460 if version == 4 else 1440)
        assert probe["tcp"]["sack_permitted"] and probe["tcp"]["window_scale"] is not None
        assert probe["tcp"]["ttl"] == 63  # one router in between
    # Each probe has its own source port, held for the run.
    assert len({p["source_port"] for p in probes}) == 3


@pytest.mark.parametrize("version", [4, 6])
def test_closed_port_answers_rst(syn_topology: SynTopology, version: int) -> None:
    code, records, _ = run_cli(endpoint(target(syn_topology, version), 81), "-c", "2", "-i", "0.05")
    assert code == 4
    assert records[-1]["state"] == "closed" and records[-1]["reason"] == "rst"
    assert all(r["tcp"]["flags"] == "R." for r in records[:-1])


@pytest.mark.parametrize("version", [4, 6])
def test_dropped_port_is_filtered_by_silence(syn_topology: SynTopology, version: int) -> None:
    code, records, _ = run_cli(
        endpoint(target(syn_topology, version), 82), "-c", "2", "-i", "0.05", "-W", "0.3"
    )
    assert code == 1
    summary = records[-1]
    assert (summary["state"], summary["reason"]) == ("filtered", "no-response")
    assert (summary["sent"], summary["answered"], summary["lost"]) == (2, 0, 2)
    assert summary["rtt"] is None


@pytest.mark.parametrize(
    ("version", "port", "icmp_type", "icmp_code", "from_router"),
    [
        (4, 83, 3, 3, False),  # port unreachable, from the target itself
        (6, 83, 1, 4, False),
        (4, 84, 3, 13, True),  # administratively prohibited, from the router in front
        (6, 84, 1, 1, True),
    ],
)
def test_icmp_rejections_name_type_code_and_sender(
    syn_topology: SynTopology,
    version: int,
    port: int,
    icmp_type: int,
    icmp_code: int,
    from_router: bool,
) -> None:
    address = target(syn_topology, version)
    code, records, _ = run_cli(endpoint(address, port), "-c", "2", "-i", "0.05")
    assert code == 5
    summary = records[-1]
    assert (summary["state"], summary["reason"]) == ("filtered", "icmp-unreachable")
    router = str(syn_topology.router_v4 if version == 4 else syn_topology.router_v6)
    expected_source = router if from_router else address
    assert summary["icmp"] == {
        "icmp_version": version,
        "type": icmp_type,
        "code": icmp_code,
        "name": "destination-unreachable",
        "kind": "unreachable",  # an error of reachability: it may decide
        "source": expected_source,
        "ttl": summary["icmp"]["ttl"],
    }
    assert all(p["rtt_us"] is not None for p in records[:-1])


@pytest.mark.parametrize("version", [4, 6])
def test_ttl_one_expires_at_the_router(syn_topology: SynTopology, version: int) -> None:
    code, records, _ = run_cli(endpoint(target(syn_topology, version), 80), "-c", "1", "--ttl", "1")
    assert code == 5
    summary = records[-1]
    assert summary["reason"] == "icmp-time-exceeded"
    router = str(syn_topology.router_v4 if version == 4 else syn_topology.router_v6)
    assert summary["icmp"]["source"] == router


def test_fixed_source_port_is_used_by_every_probe(syn_topology: SynTopology) -> None:
    code, records, _ = run_cli(
        endpoint(target(syn_topology, 4), 80), "-c", "3", "-i", "0.05", "--source-port", "45123"
    )
    assert code == 0
    probes = records[:-1]
    assert {p["source_port"] for p in probes} == {45123}
    assert records[-1]["answered"] == 3 and records[-1]["invalid"] == 0


def test_a_name_resolves_once_in_the_requested_family(syn_topology: SynTopology) -> None:
    name = f"prober-syn-{os.getpid()}.test"
    # Entries for both families, so the resolver never falls through to DNS.
    with hosts_entry(name, syn_topology.target_v4), hosts_entry(name, syn_topology.target_v6):
        code, records, _ = run_cli(f"{name}:80", "-c", "1", "-4")
        assert code == 0 and records[-1]["target"] == str(syn_topology.target_v4)
        assert records[-1]["host"] == name
        code, records, _ = run_cli(f"{name}:80", "-c", "1", "-6")
        assert code == 0 and records[-1]["target"] == str(syn_topology.target_v6)


def test_a_name_that_does_not_resolve_is_a_usage_error(syn_topology: SynTopology) -> None:
    # In the target namespace the resolver's server is unreachable, so nothing leaves the lab.
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            syn_topology.target_namespace,
            *PROBER,
            "syn",
            "no-such-host.invalid:80",
            "-c",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines() == [done.stderr.strip()]
        and "cannot resolve 'no-such-host.invalid'" in done.stderr
    )


def test_two_concurrent_runs_each_see_only_their_own_answers(syn_topology: SynTopology) -> None:
    address = target(syn_topology, 4)
    route_check(address)
    runs = [
        subprocess.Popen(
            [*PROBER, "syn", f"{address}:80", "-c", "40", "-i", "0.01", "--json"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for run in runs:
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0
        records = [json.loads(line) for line in out.splitlines()]
        summary = records[-1]
        assert (summary["sent"], summary["answered"], summary["invalid"]) == (40, 40, 0)
        assert all(p["duplicates"] == 0 and p["late"] == 0 for p in records[:-1])


def test_ctrl_c_stops_and_still_prints_the_summary(syn_topology: SynTopology) -> None:
    address = target(syn_topology, 4)
    route_check(address)
    run = subprocess.Popen(
        [*PROBER, "syn", f"{address}:82", "-c", "0", "-i", "0.05", "-W", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=20)
    assert run.returncode == 1, err
    assert "prober syn statistics" in out
    assert "interrupted" in out and "Traceback" not in err


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.kernel_clock
def test_library_gives_typed_frozen_results(syn_topology: SynTopology, version: int) -> None:
    address = target(syn_topology, version)
    route_check(address)

    async def main() -> None:
        async with Prober() as prober:
            run = await prober.syn(address, 80, count=2, interval=0.02)
        assert run.state is PortState.OPEN and run.reason is Reason.SYN_ACK
        assert all(p.rtt is not None and p.rtt.clock is Clock.KERNEL for p in run.probes)
        with pytest.raises(AttributeError):
            run.probes[0].state = PortState.CLOSED  # type: ignore[misc]
        assert json.loads(json.dumps(run.to_dict()))["state"] == "open"

    uvloop.run(main())


# -- accuracy against the wire ------------------------------------------------------------------
def wire_times(pcap: Path, flags: str, port_field: str) -> dict[int, int]:
    """Capture time (ns) of each segment with exactly ``flags``, by our port."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    times = {}
    for packet in rdpcap(str(pcap)):
        tcp = packet[TCP]
        if tcp.flags == flags:
            times[int(getattr(tcp, port_field))] = int(packet.time * 1_000_000_000)
    return times


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.kernel_clock
def test_reported_times_match_tcpdump_on_the_wire(
    syn_topology: SynTopology, version: int, tmp_path: Path
) -> None:
    # Each segment is stamped where it arrives: the SYN on the router's side of the link, the
    # SYN/ACK on ours. (A capture on our own side stamps an outgoing SYN before the kernel
    # even hands it to the driver, by as much as tcpdump's own delivery takes: see
    # docs/syn.md.) The reference then lags the true RTT by one veth crossing, ~2 us.
    address = target(syn_topology, version)
    syn_pcap, synack_pcap = tmp_path / "syn.pcap", tmp_path / "synack.pcap"
    router_side = f"{syn_topology.prefix}-root"
    with (
        tcpdump(router_side, syn_pcap, "tcp port 80", namespace=syn_topology.router_namespace),
        tcpdump(syn_topology.root_interface, synack_pcap, "tcp port 80"),
    ):
        code, records, _ = run_cli(endpoint(address, 80), "-c", "30", "-i", "0.01")
    assert code == 0
    syns = wire_times(syn_pcap, "S", "sport")
    synacks = wire_times(synack_pcap, "SA", "dport")
    errors_us = []
    for probe in records[:-1]:
        assert probe["clock"] == "kernel"
        sent, received = syns[probe["source_port"]], synacks[probe["source_port"]]
        # Each probe's own instants, against the capture of its own segments.
        assert abs(probe["sent_ns"] - sent) < 100_000
        assert abs(probe["received_ns"] - received) < 100_000
        errors_us.append(abs(probe["rtt_us"] - (received - sent) / 1000))
    errors_us.sort()
    assert errors_us[len(errors_us) // 2] < 20, errors_us


def test_a_probe_that_cannot_be_sent_is_reported_not_lost(syn_topology: SynTopology) -> None:
    # prober runs inside the router namespace, whose output hook drops its SYNs: a raw send
    # that netfilter drops fails with EPERM, and every probe must say so.
    router = syn_topology.router_namespace
    table = f"prober_test_out_{os.getpid()}"
    ruleset = (
        f"table inet {table} {{\n chain out {{\n type filter hook output priority 0;\n"
        " tcp dport 80 drop\n }\n}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", router, "nft", "-f", "-"],
        input=ruleset,
        text=True,
        check=True,
        timeout=10,
    )
    try:
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                router,
                *PROBER,
                "syn",
                f"{syn_topology.target_v4}:80",
                "-c",
                "2",
                "-i",
                "0.05",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        subprocess.run(
            ["ip", "netns", "exec", router, "nft", "delete", "table", "inet", table],
            check=True,
            timeout=10,
        )
    assert done.returncode == 6, done.stderr
    *probes, summary = (json.loads(line) for line in done.stdout.splitlines())
    assert [p["reason"] for p in probes] == ["send-failed", "send-failed"]
    assert all(p["error"] == "Operation not permitted" for p in probes)
    assert (summary["sent"], summary["unsent"], summary["lost"]) == (0, 2, 0)


def test_a_source_port_in_use_is_refused(syn_topology: SynTopology) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        port = holder.getsockname()[1]
        code, records, stderr = run_cli(
            f"{syn_topology.target_v4}:80", "-c", "1", "--source-port", str(port)
        )
    assert code == 2 and records == []
    assert stderr.strip() == f"prober: error: source port {port} is in use on this host"


@pytest.mark.parametrize("version", [4, 6])
def test_pcap_holds_every_syn_and_answer_and_tshark_reads_it(
    syn_topology: SynTopology, version: int, tmp_path: Path
) -> None:
    address = target(syn_topology, version)
    pcap = tmp_path / "syn.pcap"
    code, records, _ = run_cli(endpoint(address, 80), "-c", "3", "-i", "0.02", "--pcap", str(pcap))
    assert code == 0
    done = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.flags.syn",
            "-e",
            "tcp.flags.ack",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert len(rows) == 6
    syns = {
        int(r[1]): float(r[0]) for r in rows if r[2] in ("1", "True") and r[3] in ("0", "False")
    }
    probes = records[:-1]
    assert set(syns) == {p["source_port"] for p in probes}
    for probe in probes:
        # The pcap carries prober's own kernel timestamps, to the microsecond at least.
        assert abs(syns[probe["source_port"]] * 1e9 - probe["sent_ns"]) < 1_000
