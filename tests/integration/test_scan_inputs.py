"""`prober scan`'s inputs against the scan topology: targets on stdin and in files (bad lines
refused before anything is sent), --exclude, --shard, both families in one scan, --retries.

Topology: the `scan_topo` fixture (prober.lab.scan_topology), as in test_scan.py.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from prober.core.syn import PortState, Reason
from prober.lab.scan_topology import ScanTopology

from .scan_support import (
    EXPECTED,
    PORTS,
    PROBER,
    RATE,
    SCAN_TIMEOUT_S,
    SEED,
    WAIT_S,
    IPNetwork,
    addresses,
    check_block,
    check_summary,
    checked,
    cli_records,
    in_namespace,
    library_scan,
    normalized,
    run_cli,
)

pytestmark = pytest.mark.integration

EXIT_USAGE = 2


def subnet(network: IPNetwork, number: int, prefixlen: int) -> IPNetwork:
    """The `number`-th subnet of `network` of length `prefixlen`."""
    size = 1 << (network.max_prefixlen - prefixlen)
    return ipaddress.ip_network((int(network.network_address) + number * size, prefixlen))


def of(records: list[dict[str, Any]], network: IPNetwork) -> list[dict[str, Any]]:
    return [r for r in records if ipaddress.ip_address(r["target"]) in network]


def targets_text(topo: ScanTopology) -> tuple[str, IPNetwork, IPNetwork]:
    """A targets file: comments, blank lines, a v4 /28 on 80-83 and a v6 /124 on 80,81."""
    v4 = subnet(topo.block_v4, 1, 28)
    v6 = subnet(topo.block_v6, 2, 124)
    text = (f"# scan-topology targets\n\n{checked(topo, v4, PORTS)}\n"
            f"   {checked(topo, v6, '80,81')}   # the IPv6 block's third /124\n")
    return text, v4, v6


def test_targets_from_stdin(scan_topo: ScanTopology) -> None:
    text, v4, v6 = targets_text(scan_topo)
    records, _ = cli_records("-f", "-", "--rate", str(RATE), "--wait", str(WAIT_S),
                             stdin=text)
    assert len(records) == 16 * 4 + 16 * 2
    check_block(scan_topo, of(records, v4), v4, EXPECTED)
    check_block(scan_topo, of(records, v6), v6, [80, 81])


def test_a_pause_on_stdin_does_not_hold_back_verdicts(scan_topo: ScanTopology) -> None:
    """While stdin has no next line, SYNs already sent still get their verdicts (silence
    included, after --wait) and a skipped bad line is reported: the stream is read apart."""
    first = ipaddress.ip_address(int(scan_topo.block_v4.network_address) + 1)
    second = ipaddress.ip_address(int(scan_topo.block_v4.network_address) + 2)
    with subprocess.Popen(
        [*PROBER, "scan", "-f", "-", "--wait", "0.5", "--skip-bad", "--format", "jsonl"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(f"{first}:80,82\nbad line\n")
        process.stdin.flush()
        # Both verdicts (open; silence after 0.5 s) come while the next line is awaited.
        early = [json.loads(process.stdout.readline()) for _ in range(2)]
        process.stdin.write(f"{second}:80\n")
        process.stdin.close()
        rest = [json.loads(line) for line in process.stdout]
        assert process.stderr is not None
        stderr = process.stderr.read()
        process.wait(timeout=SCAN_TIMEOUT_S)
    assert {(r["port"], r["reason"]) for r in early} == {(80, "syn-ack"), (82, "no-response")}
    assert [(r["target"], r["state"]) for r in rest] == [(str(second), "open")]
    assert "<stdin>:2" in stderr and process.returncode == 0


def test_targets_file(scan_topo: ScanTopology, tmp_path: Path) -> None:
    text, v4, v6 = targets_text(scan_topo)
    path = tmp_path / "targets.txt"
    path.write_text(text)
    records, _ = cli_records("-f", str(path), "--rate", str(RATE), "--wait", str(WAIT_S))
    assert len(records) == 16 * 4 + 16 * 2
    check_block(scan_topo, of(records, v4), v4, EXPECTED)
    check_block(scan_topo, of(records, v6), v6, [80, 81])


def ip_packets_received(namespace: str) -> int:
    shown = json.loads(in_namespace(namespace, "nstat", "-asz", "--json", "IpInReceives"))
    return int(shown["kernel"]["IpInReceives"])


def test_bad_line_in_a_file_is_refused_before_anything_is_sent(
    scan_topo: ScanTopology, tmp_path: Path
) -> None:
    good = checked(scan_topo, subnet(scan_topo.block_v4, 2, 28), PORTS)
    path = tmp_path / "targets.txt"
    path.write_text(f"{good}\n# fine so far\n198.18.0.0/33:80\n{good}\n")
    before = ip_packets_received(scan_topo.block_namespace)
    done = run_cli("-f", str(path), "--rate", str(RATE), "--wait", str(WAIT_S))
    assert done.returncode == EXIT_USAGE, done.stderr
    assert f"{path}:3" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    # The first pass read the whole file before sending: the good line's block saw nothing.
    assert ip_packets_received(scan_topo.block_namespace) == before


def test_exclude_removes_blocks_and_single_ports(scan_topo: ScanTopology, tmp_path: Path) -> None:
    network = subnet(scan_topo.block_v4, 0, 26)  # 64 addresses
    gone_block = subnet(network, 1, 28)
    gone_port = network.network_address + 2
    exclude = tmp_path / "exclude.txt"
    exclude.write_text(f"{gone_block}\n{gone_port}:81\n")
    results, summary = library_scan([checked(scan_topo, network, PORTS)], rate=RATE,
                                    wait=WAIT_S, seed=SEED, exclude=[exclude])
    keys = {normalized(r.to_dict()) for r in results}
    expected = {(a, port) for a in addresses(network) - addresses(gone_block) for port in EXPECTED}
    expected.discard((str(gone_port), 81))
    assert keys == expected
    assert len(results) == len(expected) == 48 * 4 - 1
    assert summary.excluded == 16 * 4 + 1, summary.to_dict()
    assert all((r.state.value, r.reason.value) == EXPECTED[r.port] for r in results)


def test_shards_are_disjoint_and_complete(scan_topo: ScanTopology) -> None:
    network = scan_topo.block_v4
    target = checked(scan_topo, network, PORTS)
    shards = []
    for shard in ("1/2", "2/2"):
        records, _ = cli_records(target, "--rate", str(RATE), "--wait", str(WAIT_S),
                                 "--seed", str(SEED), "--shard", shard)
        shards.append(records)
    first, second = ({normalized(r) for r in records} for records in shards)
    assert not first & second
    assert abs(len(first) - len(second)) <= 1, (len(first), len(second))
    # Merging the shards' outputs is `cat`: together they are the whole scan.
    check_block(scan_topo, shards[0] + shards[1], network, EXPECTED)


def test_both_families_in_one_scan(scan_topo: ScanTopology) -> None:
    v4, v6 = scan_topo.block_v4, scan_topo.block_v6
    results, summary = library_scan([checked(scan_topo, v4, PORTS), checked(scan_topo, v6, PORTS)],
                                    rate=RATE, wait=WAIT_S, seed=SEED)
    records = [r.to_dict() for r in results]
    assert len(records) == 4 * (v4.num_addresses + v6.num_addresses)
    check_block(scan_topo, of(records, v4), v4, EXPECTED)
    check_block(scan_topo, of(records, v6), v6, EXPECTED)
    check_summary(summary, len(records), v4.num_addresses + v6.num_addresses)


def test_retries_resend_only_unanswered_probes(scan_topo: ScanTopology) -> None:
    network = subnet(scan_topo.block_v6, 0, 122)  # 64 addresses
    retries = 2
    results, summary = library_scan([checked(scan_topo, network, PORTS)], rate=RATE,
                                    wait=0.3, retries=retries, seed=SEED)
    assert sorted(normalized(r.to_dict()) for r in results) == sorted(
        (a, port) for a in addresses(network) for port in EXPECTED)
    attempts = Counter((r.port, r.attempt) for r in results)
    # Answered on the first SYN; the dropped port's silence after every try.
    assert attempts == {(80, 1): 64, (81, 1): 64, (83, 1): 64, (82, retries + 1): 64}, attempts
    assert all((r.state.value, r.reason.value) == EXPECTED[r.port] for r in results)
    assert summary.sent == 4 * 64 + retries * 64, summary.to_dict()
    assert summary.by_state.get(PortState.OPEN) == 64
    assert summary.by_reason.get(Reason.NO_RESPONSE) == 64
    assert summary.duplicates == 0, summary.to_dict()

