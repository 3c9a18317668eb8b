"""`prober scan` against whole blocks of real Linux hosts: exact verdicts, no half-open
connections left behind, retries through loss, the output formats, the exit status, pacing.

Topology (prober.lab.scan_topology, the `scan_topo` fixture): root ns (prober) — router —
`block`, which answers every address of a /24 and a /120 (80 open, 81 closed, 82 dropped,
83 ICMP port unreachable; Linux's default SYN/ACK retries) — and, behind the loss element,
`lossy`, a /24 and a /120 open on 80.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from prober.core.scan_result import SCAN_FIELDS, ScanResult
from prober.core.syn import Reason
from prober.engine.firewall import PROBER_MARK
from prober.lab.scan_topology import ScanTopology

from .scan_support import (
    AFTER_SCAN_S,
    EXIT_COMPLETE,
    EXPECTED,
    HALF_OPEN_COUNTERS,
    PORTS,
    PROBER,
    RATE,
    SCAN_TIMEOUT_S,
    SEED,
    WAIT_S,
    addresses,
    check_block,
    check_summary,
    checked,
    cli_records,
    counter_increase,
    kernel_rsts_dropped,
    library_scan,
    normalized,
    raw_tcp,
    run_cli,
    syn_recv,
    tcp_counters,
    wait_no_syn_recv,
)

pytestmark = pytest.mark.integration

EXIT_INTERRUPTED = 130

# --- the loss plan -------------------------------------------------------------------------
# The element drops each frame with probability LOSS, in each direction, so a try finds an
# open host unless its SYN or its SYN/ACK is lost: TRY_MISS = 1 - (1 - LOSS)^2 = 5.91 %.
# Over a block of N = 256 hosts:
#   one try (--retries 0) finds all with (1 - TRY_MISS)^N = 1.7e-7: it misses some;
#   --retries R (R + 1 tries) misses a host with TRY_MISS^(R+1) at most (the peer's own
#   SYN/ACK resends only help), so some host with N * TRY_MISS^(R+1) at most: 3.8e-8 for R = 7
#   (R = 1, the example, would miss 256 * 0.35 % = 0.9 hosts on average; R = 6 gives
#   6.4e-7, too close to the bound for comfort).
# test_loss_plan_bounds checks these numbers; FALSE_FAILURE bounds each loss test's chance
# of failing with a correct scanner.
LOSS = 0.03
LOSS_SEED = 7
TRY_MISS = 1 - (1 - LOSS) ** 2
LOSS_RETRIES = 7
FALSE_FAILURE = 1e-6
LOSS_RATE = 2000  # through the element (a Python process): far below what it forwards
LOSS_WAIT_S = 0.5  # one try: the scan ends before the peer would resend a lost SYN/ACK (1 s)


def binomial_tail_above(n: int, p: float, k: int) -> float:
    """P(X > k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1, n + 1))


def most_single_try_misses(n: int) -> int:
    """The fewest misses M with P(misses > M) < FALSE_FAILURE for one try over n hosts."""
    return next(m for m in range(n + 1) if binomial_tail_above(n, TRY_MISS, m) < FALSE_FAILURE)


# --- 1. exact verdicts ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_cli_scan_gives_every_verdict_exactly_once(scan_topo: ScanTopology, version: int) -> None:
    network = scan_topo.block(version)
    records, done = cli_records(checked(scan_topo, network, PORTS), "--rate", str(RATE),
                                "--wait", str(WAIT_S), "--seed", str(SEED))
    check_block(scan_topo, records, network, EXPECTED)
    assert len(records) == 4 * network.num_addresses
    assert "summary" not in done.stdout  # stdout holds records only; the summary is stderr's


@pytest.mark.parametrize("version", [4, 6])
def test_library_scan_gives_every_verdict_exactly_once(
    scan_topo: ScanTopology, version: int
) -> None:
    network = scan_topo.block(version)
    results, summary = library_scan([checked(scan_topo, network, PORTS)], rate=RATE,
                                    wait=WAIT_S, seed=SEED)
    assert all(isinstance(result, ScanResult) for result in results)
    records = [result.to_dict() for result in results]
    assert all(list(record) == list(SCAN_FIELDS) for record in records)
    check_block(scan_topo, records, network, EXPECTED)
    check_summary(summary, len(records), network.num_addresses)
    assert summary.by_reason.get(Reason.ICMP_UNREACHABLE, 0) == network.num_addresses


def test_lab_blocks_are_exempt_from_the_blocklist(scan_topo: ScanTopology) -> None:
    network = next(scan_topo.block_v4.subnets(new_prefix=28))
    records, _ = cli_records(checked(scan_topo, network, PORTS), "--rate", str(RATE),
                             "--wait", str(WAIT_S), blocklist=True)
    check_block(scan_topo, records, network, EXPECTED)
    results, summary = library_scan([checked(scan_topo, scan_topo.block_v6, "80")],
                                    rate=RATE, wait=WAIT_S, blocklist=True)
    assert summary.blocklisted == 0, summary.to_dict()
    check_block(scan_topo, [r.to_dict() for r in results], scan_topo.block_v6, [80])


# --- 2. no half-open connections left ------------------------------------------------------


def test_counters_see_half_open_connections(scan_topo: ScanTopology) -> None:
    """The control for the test below: SYNs whose SYN/ACKs nobody answers (root's RSTs
    dropped) leave SYN-RECV entries and SYN/ACK retransmissions, which it would catch; and
    RSTs with prober's mark pass the drop rule, as prober's own must."""
    namespace, network = scan_topo.block_namespace, scan_topo.block_v4
    hosts = [network.network_address + offset for offset in range(1, 9)]
    sport, isn = 40_000 + os.getpid() % 20_000, 1_000_000
    for host in hosts:
        scan_topo.topology.route_check(host)
    wait_no_syn_recv(namespace)
    before = tcp_counters(namespace)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, PROBER_MARK)
        with kernel_rsts_dropped([network]):
            try:
                for host in hosts:
                    raw.sendto(raw_tcp(scan_topo.root_v4, host, sport=sport, dport=80,
                                       flags="S", seq=isn), (str(host), 0))
                time.sleep(AFTER_SCAN_S)
                pending = syn_recv(namespace)
                after = tcp_counters(namespace)
            finally:  # close them with marked RSTs (at our ISN + 1) while the rule drops others
                for host in hosts:
                    raw.sendto(raw_tcp(scan_topo.root_v4, host, sport=sport, dport=80,
                                       flags="R", seq=isn + 1), (str(host), 0))
            wait_no_syn_recv(namespace, timeout_s=1.0)
    increase = counter_increase(before, after)
    assert len(pending) == len(hosts), pending
    assert increase["TcpExtTCPSynRetrans"] >= len(hosts), increase
    assert increase["TcpRetransSegs"] >= len(hosts), increase


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("kernel_rst", ["kept", "dropped"])
def test_scan_leaves_no_half_open_connections(
    scan_topo: ScanTopology, version: int, kernel_rst: str
) -> None:
    namespace, network = scan_topo.block_namespace, scan_topo.block(version)
    target = checked(scan_topo, network, str(ScanTopology.OPEN_PORT))
    wait_no_syn_recv(namespace)
    before = tcp_counters(namespace)
    dropping = kernel_rsts_dropped([network]) if kernel_rst == "dropped" else \
        contextlib.nullcontext()
    with dropping:
        results, summary = library_scan([target], rate=RATE, wait=WAIT_S, seed=SEED)
        # Still without the kernel's RSTs: a resent SYN/ACK would find none either.
        time.sleep(AFTER_SCAN_S)
        pending = syn_recv(namespace)
        after = tcp_counters(namespace)
    open_hosts = network.num_addresses
    check_block(scan_topo, [result.to_dict() for result in results], network,
                [ScanTopology.OPEN_PORT])
    check_summary(summary, open_hosts, open_hosts)
    increase = counter_increase(before, after)
    assert increase == dict.fromkeys(HALF_OPEN_COUNTERS, 0), (increase, summary.to_dict())
    assert not pending, f"{len(pending)} half-open connections left, e.g. {pending[:3]}"
    if kernel_rst == "dropped":
        # prober saw no RST of the kernel's on its capture and sent each one itself.
        assert summary.kernel_rsts == 0, summary.to_dict()
        assert summary.own_rsts >= open_hosts, summary.to_dict()
    else:
        assert summary.kernel_rsts + summary.own_rsts >= open_hosts, summary.to_dict()
        assert summary.kernel_rsts > 0, summary.to_dict()


# --- 3. retries through loss ---------------------------------------------------------------


def test_loss_plan_bounds() -> None:
    """The loss tests' numbers (see the loss plan above) keep false failures below 1e-6."""
    hosts = 256
    assert (1 - TRY_MISS) ** hosts < FALSE_FAILURE  # one try misses some host
    assert hosts * TRY_MISS ** (LOSS_RETRIES + 1) < FALSE_FAILURE  # R retries miss none
    assert most_single_try_misses(hosts) < hosts // 4


@contextlib.contextmanager
def loss_from_seed(topo: ScanTopology) -> Iterator[None]:
    """The loss element afresh at LOSS from LOSS_SEED's start; afterwards its counters say
    it dropped frames by loss only (none for a full queue or receive buffer)."""
    topo.restart_loss(LOSS, LOSS_SEED)
    yield
    counters = topo.restart_loss(LOSS, LOSS_SEED)
    directions = (counters.left_to_right, counters.right_to_left)
    assert counters.kernel_drops == 0, counters
    assert all(d.dropped_by_overflow == 0 and d.send_errors == 0 for d in directions), counters
    # Some frame was lost (one direction alone may, by chance, have lost none: 0.97^240).
    assert sum(d.dropped_by_loss for d in directions) > 0, counters


@pytest.mark.parametrize("version", [4, 6])
def test_one_try_through_loss_misses_some_hosts(scan_topo: ScanTopology, version: int) -> None:
    network = scan_topo.lossy(version)
    with loss_from_seed(scan_topo):
        records, _ = cli_records(checked(scan_topo, network, "80"), "--rate", str(LOSS_RATE),
                                 "--wait", str(LOSS_WAIT_S), "--retries", "0",
                                 "--seed", str(SEED))
    assert sorted(normalized(r) for r in records) == sorted(
        (address, 80) for address in addresses(network))
    missed = [r for r in records if r["state"] != "open"]
    assert all((r["state"], r["reason"], r["attempt"]) == ("filtered", "no-response", 1)
               for r in missed), missed[:3]
    assert 0 < len(missed) <= most_single_try_misses(network.num_addresses), len(missed)


@pytest.mark.parametrize("version", [4, 6])
def test_retries_through_loss_find_every_open_host(scan_topo: ScanTopology, version: int) -> None:
    network = scan_topo.lossy(version)
    with loss_from_seed(scan_topo):
        records, _ = cli_records(checked(scan_topo, network, "80"), "--rate", str(LOSS_RATE),
                                 "--wait", str(LOSS_WAIT_S), "--retries", str(LOSS_RETRIES),
                                 "--seed", str(SEED))
    assert sorted(normalized(r) for r in records) == sorted(
        (address, 80) for address in addresses(network))
    missed = [r for r in records if r["state"] != "open"]
    assert not missed, f"{len(missed)} open hosts missed, e.g. {missed[:3]}"
    assert all(1 <= r["attempt"] <= LOSS_RETRIES + 1 for r in records)
    # Some first tries were lost (as likely as the one-try test's misses): retries found them.
    assert any(r["attempt"] > 1 for r in records)


# --- 4. formats ----------------------------------------------------------------------------


def test_csv_parses_with_scan_fields_as_header(scan_topo: ScanTopology, tmp_path: Path) -> None:
    network = next(scan_topo.block_v4.subnets(new_prefix=28))
    output = tmp_path / "scan.csv"
    done = run_cli(checked(scan_topo, network, PORTS), "--rate", str(RATE), "--wait",
                   str(WAIT_S), "--format", "csv", "-o", str(output))
    assert done.returncode == EXIT_COMPLETE, done.stderr
    assert done.stdout == ""  # -o: the records go to the file only
    text = output.read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == SCAN_FIELDS
    records = list(csv.DictReader(io.StringIO(text)))
    assert all(None not in record for record in records)  # no row longer than the header
    check_block(scan_topo, [typed_csv_row(record) for record in records], network, EXPECTED)


def typed_csv_row(row: Mapping[str, str]) -> dict[str, Any]:
    """A CSV row's fields as the JSON line has them (the empty field is null)."""
    integers = ("port", "ttl", "window", "attempt", "source_port", "icmp_type", "icmp_code",
                "received_ns")
    typed: dict[str, Any] = {}
    for name, text in row.items():
        if text == "":
            typed[name] = None
        elif name in integers:
            typed[name] = int(text)
        elif name == "rtt_us":
            typed[name] = float(text)
        else:
            typed[name] = text
    return typed


@pytest.mark.parametrize("version", [4, 6])
def test_open_only_yields_open_records(scan_topo: ScanTopology, version: int) -> None:
    network = scan_topo.block(version)
    records, _ = cli_records(checked(scan_topo, network, PORTS), "--rate", str(RATE),
                             "--wait", str(WAIT_S), "--open-only")
    assert {r["state"] for r in records} == {"open"}
    assert sorted(normalized(r) for r in records) == sorted(
        (address, ScanTopology.OPEN_PORT) for address in addresses(network))


# --- 5. exit status and summary ------------------------------------------------------------


def test_complete_scan_exits_0_with_summary_on_stderr(scan_topo: ScanTopology) -> None:
    network = next(scan_topo.block_v6.subnets(new_prefix=124))
    records, done = cli_records(checked(scan_topo, network, PORTS), "--rate", str(RATE),
                                "--wait", str(WAIT_S))
    assert done.returncode == EXIT_COMPLETE
    check_block(scan_topo, records, network, EXPECTED)
    total = len(records)
    summary = done.stderr
    # The final summary: how many results, counts per state, no word of incompleteness.
    assert re.search(rf"\b{total:,}\b", summary), summary
    for state, count in (("open", 16), ("closed", 16), ("filtered", 32)):
        assert re.search(rf"\b{count:,} {state}\b", summary), summary
    assert "INCOMPLETE" not in summary and "Traceback" not in summary, summary


# --- 6. pacing -----------------------------------------------------------------------------

PACED_PORTS = "80-99"  # 84..99 closed like 81: 20 ports of the /24, 5,120 SYNs in about 1 s
RATE_TOLERANCE = 0.02  # the issue: accurate to ±2 % over a second
# Never faster (a burst is a bug); slower where a busy machine stalls the sender, since a
# stall is not made up by a burst: 4,600..5,000/s measured at a load average of 2.5 on 2
# cores, so only a gross error (a rate off by a quarter) fails here; bench/ measures it.
RATE_SLOWER_TOLERANCE = 0.20


def test_rate_paces_sends(scan_topo: ScanTopology) -> None:
    network = scan_topo.block_v4
    results, summary = library_scan([checked(scan_topo, network, PACED_PORTS)], rate=RATE,
                                    wait=WAIT_S, seed=SEED)
    assert len(results) == 20 * network.num_addresses
    # Answers come some 40 µs after their SYN, in send order: their capture times span the
    # sending (silence's records carry the time it was concluded instead, so are left out).
    answered = sorted(r.received_ns for r in results
                      if r.reason is not Reason.NO_RESPONSE and r.received_ns is not None)
    span_s = (answered[-1] - answered[0]) / 1e9
    sent_rate = (len(results) - 1) / span_s
    assert RATE * (1 - RATE_SLOWER_TOLERANCE) <= sent_rate <= RATE * (1 + RATE_TOLERANCE), \
        sent_rate
    # The summary's effective rate says the same.
    assert abs(summary.rate_pps - sent_rate) <= RATE_TOLERANCE * sent_rate, \
        (summary.rate_pps, sent_rate)


# --- 7. Ctrl-C and a slow reader -----------------------------------------------------------

LONG_PORTS = "1-1000"  # 256,000 SYNs: some 50 s at RATE, so still running when interrupted
READER_PAUSE_S = 1.5  # the reader leaves stdout unread this long: the pipe (64 KiB) fills


def test_ctrl_c_ends_with_whole_lines_and_exit_130(scan_topo: ScanTopology) -> None:
    network = scan_topo.block_v4
    argv = [*PROBER, "scan", checked(scan_topo, network, LONG_PORTS), "--rate", str(RATE),
            "--wait", str(WAIT_S), "--no-blocklist", "--format", "jsonl"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True) as scan:
        try:
            time.sleep(READER_PAUSE_S)  # nobody reads: the scan's writes block on the pipe
            scan.send_signal(signal.SIGINT)
            out, err = scan.communicate(timeout=SCAN_TIMEOUT_S)
        finally:
            if scan.poll() is None:
                scan.kill()
    assert scan.returncode == EXIT_INTERRUPTED, err
    lines = out.splitlines()
    broken = [(number, line) for number, line in enumerate(lines) if not is_json(line)]
    assert not broken, f"{len(broken)} of {len(lines)} lines are not JSON, e.g. {broken[:2]}"
    records = [json.loads(line) for line in lines]
    keys = [normalized(record) for record in records]
    assert len(keys) == len(set(keys)), "a target has several records"
    assert any(r["reason"] == "interrupted" for r in records)
    assert "INTERRUPTED" in err and "Traceback" not in err, err
    wait_no_syn_recv(scan_topo.block_namespace)


def is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
