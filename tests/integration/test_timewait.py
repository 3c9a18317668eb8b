"""`prober timewait` against real Linux TCP stacks in namespaces of the test pool, over IPv4 and
IPv6: a default peer (60 s TIME-WAIT), one that keeps none (tcp_max_tw_buckets=0), one that
protects it from RSTs (tcp_rfc1337=1) and a server that never closes first. Ground truth comes
from the peers' sysctls and from their kernels (`ss`, `nstat` in the peer's namespace).

The tests that wait out a real TIME-WAIT are marked `minutes` (-m 'not minutes' leaves them
out) and run at once in one Prober; the others ask without measuring the duration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from prober import Prober
from prober.core.timewait_result import (
    DurationEnd,
    PeerClose,
    ReuseAnswer,
    ReuseKind,
    Role,
    TimeWaitConnection,
    TimeWaitResult,
)
from prober.core.trace import Direction

from .peers import Peer, PeerSpec, peer_topology
from .peers import in_peer as in_namespace

pytestmark = pytest.mark.integration

PROBER = [sys.executable, "-m", "prober"]
PORT = 80
CLOSE_AT_ONCE_PORT = 81  # notw's `close` server: accepts and closes at once, without a request
REQUEST = b"GET / HTTP/1.0\r\n\r\n"  # the `http` server answers it, then closes first
CLI_REQUEST = r"GET / HTTP/1.0\r\n\r\n"  # --send takes escapes
# Linux: TCP_TIMEWAIT_LEN, and its timer fires up to one timer-wheel slot late (60.4-62.0 s
# measured here); the estimate lies within a step of that.
LINUX_TIME_WAIT_S = (60.0, 62.1)
STEP_S = 1.0
REFIN_AT_S = 20.0

# name: (sysctls, {port: server behaviour})
PEERS: dict[str, PeerSpec] = {
    "dflt": ({}, {PORT: "http"}),
    # Keeps no TIME-WAIT at all (nor the FIN-WAIT-2 bucket of a closed socket).
    "notw": ({"net.ipv4.tcp_max_tw_buckets": 0}, {PORT: "http", CLOSE_AT_ONCE_PORT: "close"}),
    "r1337": ({"net.ipv4.tcp_rfc1337": 1}, {PORT: "http"}),  # ignores a RST in TIME-WAIT
    "eof": ({}, {PORT: "eof"}),  # closes only on our FIN: never the first to close
}


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Peer]]:
    with peer_topology(PEERS) as built:
        yield built


# -- the peer's kernel ---------------------------------------------------------------------
def in_peer(peer: Peer, *argv: str) -> str:
    return in_namespace(peer.namespace, *argv)


def remote_ports(ss_output: str) -> set[int]:
    """The remote (our) ports of `ss -Htan state X` lines: the last field is Peer Address:Port."""
    return {int(line.split()[-1].rsplit(":", 1)[1]) for line in ss_output.splitlines()
            if line.strip()}


def ports_in_state(peer: Peer, state: str) -> set[int]:
    return remote_ports(in_peer(peer, "ss", "-Htan", "state", state))


def time_wait_left_s(peer: Peer, port: int) -> float | None:
    """What the peer's kernel has left of its TIME-WAIT with our `port` (`ss -o`'s timer)."""
    for line in in_peer(peer, "ss", "-Htano", "state", "time-wait").splitlines():
        fields = line.split()
        timer = re.fullmatch(r"timer:\(timewait,(?:(\d+)min)?(?:(\d+)sec)?(?:(\d+)ms)?,\d+\)",
                             fields[-1])
        if timer is not None and int(fields[-2].rsplit(":", 1)[1]) == port:
            minutes, seconds, ms = (int(group or 0) for group in timer.groups())
            return minutes * 60 + seconds + ms / 1000
    return None


def time_wait_overflows(peer: Peer) -> int:
    out = in_peer(peer, "nstat", "-az", "TcpExtTCPTimeWaitOverflow")
    for line in out.splitlines():
        if line.startswith("TcpExtTCPTimeWaitOverflow"):
            return int(line.split()[1])
    raise AssertionError(out)


def our_ports(result: TimeWaitResult | dict[str, Any]) -> set[int]:
    if isinstance(result, TimeWaitResult):
        return {c.source_port for c in result.connections}
    return {c["source_port"] for c in result["connections"]}


def assert_no_request_socket_left(peer: Peer, ports: set[int]) -> None:
    """Every SYN/ACK a probe drew was answered with our RST: no request sock stays behind."""
    assert not ports & ports_in_state(peer, "syn-recv")


# -- running prober --------------------------------------------------------------------------
def timewait(peer: Peer, version: int, **options: Any) -> TimeWaitResult:
    async def run() -> TimeWaitResult:
        async with Prober() as prober:
            return await prober.timewait(
                peer.address(version), PORT, send=REQUEST, **options
            )

    return uvloop.run(run())


def connection(result: TimeWaitResult, role: Role) -> TimeWaitConnection:
    found = result.connection(role)
    assert found is not None, [c.role for c in result.connections]
    return found


def run_prober(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROBER, *args], capture_output=True, text=True, timeout=timeout)


# -- the duration (minutes) --------------------------------------------------------------------
@dataclass
class TimeWaitWatch:
    """When each remote port's TIME-WAIT was seen in the peer's kernel (CLOCK_REALTIME)."""

    seen: dict[int, list[float]]

    def last_seen(self, port: int, since: float) -> float | None:
        """The last poll after `since` that showed the port's TIME-WAIT."""
        times = [t for t in self.seen.get(port, []) if t >= since]
        return max(times) if times else None


async def watch_time_waits(peer: Peer, stop: asyncio.Event) -> TimeWaitWatch:
    watch = TimeWaitWatch({})
    while not stop.is_set():
        shown = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", peer.namespace, "ss", "-Htan", "state", "time-wait",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await shown.communicate()
        now = time.time()
        for port in remote_ports(out.decode()):
            watch.seen.setdefault(port, []).append(now)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)
    return watch


def t0_realtime(duration: TimeWaitConnection) -> float:
    """When the peer's ACK of our FIN arrived (the start of its TIME-WAIT), CLOCK_REALTIME."""
    last = duration.close.segments[-1]
    assert last.direction is Direction.RECEIVED and "." in last.flags, last
    return last.time_ns / 1e9


def assert_duration(result: TimeWaitResult, low: float, high: float) -> None:
    assert result.holds_time_wait is True, result.holds_evidence
    assert result.duration_end is DurationEnd.MEASURED, result.notes
    assert result.duration_s is not None and result.duration_error_s is not None
    assert low - STEP_S <= result.duration_s <= high + STEP_S, result.duration_s
    assert result.duration_error_s <= STEP_S / 2 + 0.05
    below = [p for p in result.reuse if p.kind is ReuseKind.SYN_BELOW]
    # Every probe drew the TIME-WAIT's ACK until the one that found it gone (a SYN/ACK).
    assert [p.answer for p in below[:-1]] == [ReuseAnswer.TIME_WAIT_ACK] * (len(below) - 1)
    assert below[-1].answer is ReuseAnswer.SYN_ACK


def assert_kernel_agrees(result: TimeWaitResult, watch: TimeWaitWatch) -> None:
    """The peer's kernel dropped the TIME-WAIT between prober's last ACK and its SYN/ACK."""
    duration = connection(result, Role.DURATION)
    t0 = t0_realtime(duration)
    last_seen = watch.last_seen(duration.source_port, t0)
    assert last_seen is not None, "the peer's kernel never showed the TIME-WAIT"
    assert result.duration_low_s is not None and result.duration_high_s is not None
    # Polled every 0.25 s (and ss takes a few ms): the last sighting lies within a poll of
    # the bracket prober gives.
    assert result.duration_low_s - 0.5 <= last_seen - t0 <= result.duration_high_s + 0.1, (
        last_seen - t0, result.duration_low_s, result.duration_high_s
    )


@pytest.mark.minutes
def test_default_peer_holds_time_wait_60_s_and_a_repeated_fin_restarts_it(
    peers: dict[str, Peer],
) -> None:
    peer = peers["dflt"]

    async def run() -> tuple[list[TimeWaitResult], TimeWaitWatch]:
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(watch_time_waits(peer, stop))
        try:
            async with Prober() as prober:
                common: dict[str, Any] = {
                    "send": REQUEST, "step": STEP_S, "max_time": 120, "reopen": False,
                }
                results = await asyncio.gather(
                    prober.timewait(peer.v4, PORT, **common),
                    prober.timewait(peer.v6, PORT, **common),
                    prober.timewait(peer.v4, PORT, refin_at=REFIN_AT_S, **common),
                )
        finally:
            stop.set()
        return list(results), await watcher

    started = time.monotonic()
    (plain4, plain6, refin), watch = uvloop.run(run())
    assert time.monotonic() - started < 100  # all at once, not one after the other
    low, high = LINUX_TIME_WAIT_S
    for plain in (plain4, plain6):
        assert plain.peer_close is PeerClose.FIN
        assert_duration(plain, low, high)
        assert plain.refin_acked is None
        assert_kernel_agrees(plain, watch)
    assert ":" in plain6.target

    # The repeated FIN at +20 s: re-ACKed, and the 60 s count from it.
    assert_duration(refin, REFIN_AT_S + low, REFIN_AT_S + high)
    assert refin.refin_acked is True
    assert refin.duration_after_refin_s is not None
    assert low - STEP_S <= refin.duration_after_refin_s <= high + STEP_S
    assert_kernel_agrees(refin, watch)
    again = connection(refin, Role.DURATION)
    fin = again.first(ReuseKind.FIN_AGAIN)
    assert fin is not None and fin.answer is ReuseAnswer.TIME_WAIT_ACK
    assert abs(fin.at_s - REFIN_AT_S) < 0.2
    # The re-ACK is in the records, right after our FIN: the old connection's ACK.
    records = again.segments
    sent_fin = next(i for i, r in enumerate(records)
                    if r.direction is Direction.SENT and "F" in r.flags)
    reack = records[sent_fin + 1]
    assert (reack.direction, reack.flags) == (Direction.RECEIVED, ".")
    assert (reack.seq, reack.ack) == (again.old_rcv_nxt, again.old_snd_max)
    for result in (plain4, plain6, refin):
        assert_no_request_socket_left(peer, our_ports(result))


def test_max_bounds_the_duration_probe(peers: dict[str, Peer]) -> None:
    peer = peers["dflt"]
    started = time.monotonic()
    result = timewait(peer, 4, step=STEP_S, max_time=3, reopen=False)
    assert time.monotonic() - started < 8
    assert result.holds_time_wait is True
    assert result.duration_end is DurationEnd.STILL_HELD
    assert result.duration_s is None and result.duration_low_s == pytest.approx(3, abs=0.1)
    assert result.duration_s is None and result.max_s == 3
    answers = [p.answer for p in result.reuse]
    assert answers == [ReuseAnswer.TIME_WAIT_ACK] * 4  # the early probe, then +1, +2, +3 s
    # Still there in the peer's kernel, and its timer ran on: the probes neither ended nor
    # restarted it (a SYN below the space, without timestamps, does not reschedule it).
    left = time_wait_left_s(peer, connection(result, Role.DURATION).source_port)
    assert left is not None and left <= 58, left  # restarted, it would show 59 or 60


# -- reuse of the 4-tuple (seconds) ------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 6])
def test_below_isn_syn_draws_the_time_wait_ack_and_reopening_syns_are_accepted(
    peers: dict[str, Peer], version: int
) -> None:
    peer = peers["dflt"]
    result = timewait(peer, version, measure_duration=False)
    assert result.peer_close is PeerClose.FIN
    assert result.holds_time_wait is True, result.holds_evidence
    assert result.duration_end is DurationEnd.NOT_MEASURED
    duration = connection(result, Role.DURATION)
    below = duration.first(ReuseKind.SYN_BELOW)
    assert below is not None and below.answer is ReuseAnswer.TIME_WAIT_ACK
    record = next(r for r in duration.segments if r.direction is Direction.RECEIVED)
    assert (record.flags, record.seq, record.ack) == (
        ".", duration.old_rcv_nxt, duration.old_snd_max
    )
    # Above-ISN and newer-TSval SYNs reopen the 4-tuple, with Linux's ISN: old SND.NXT + 65537.
    assert result.above_isn_accepted is True and result.above_isn_linux_isn is True
    assert result.newer_tsval_accepted is True and result.newer_tsval_linux_isn is True
    for role, kind in ((Role.ABOVE_ISN, ReuseKind.SYN_ABOVE),
                       (Role.NEWER_TSVAL, ReuseKind.SYN_NEWER_TSVAL)):
        reopened = connection(result, role)
        assert reopened.timestamps is True
        first = reopened.first(ReuseKind.SYN_BELOW)
        assert first is not None and first.answer is ReuseAnswer.TIME_WAIT_ACK
        syn = reopened.first(kind)
        assert syn is not None and syn.answer is ReuseAnswer.SYN_ACK
        assert reopened.old_rcv_nxt is not None
        assert syn.answer_seq == (reopened.old_rcv_nxt + 65537) & 0xFFFFFFFF
    # The peer's kernel: the untouched duration connection is still in TIME-WAIT, the
    # reopened ones are not, and our RSTs left no request sock.
    time_waits = ports_in_state(peer, "time-wait")
    assert duration.source_port in time_waits
    assert connection(result, Role.ABOVE_ISN).source_port not in time_waits
    assert connection(result, Role.NEWER_TSVAL).source_port not in time_waits
    assert_no_request_socket_left(peer, our_ports(result))


@pytest.mark.parametrize(("name", "version"), [("dflt", 4), ("dflt", 6), ("r1337", 4)])
def test_an_exact_rst_assassinates_time_wait_unless_rfc1337_protects_it(
    peers: dict[str, Peer], name: str, version: int
) -> None:
    peer = peers[name]
    protected = name == "r1337"
    result = timewait(peer, version, measure_duration=False, reopen=False, assassinate=True)
    assert result.holds_time_wait is True, result.holds_evidence
    assert result.offset_rst_ignored is True
    assert result.assassinated is (not protected)
    victim = connection(result, Role.ASSASSINATE)
    syns = [p.answer for p in victim.probes if p.kind is ReuseKind.SYN_BELOW]
    gone = ReuseAnswer.TIME_WAIT_ACK if protected else ReuseAnswer.SYN_ACK
    assert syns == [ReuseAnswer.TIME_WAIT_ACK, ReuseAnswer.TIME_WAIT_ACK, gone]
    # The peer's kernel agrees: the assassinated TIME-WAIT is gone, the protected one stays.
    assert (victim.source_port in ports_in_state(peer, "time-wait")) is protected
    assert_no_request_socket_left(peer, our_ports(result))


# -- a peer that keeps no TIME-WAIT, one that never closes first -------------------------------
@pytest.mark.parametrize("version", [4, 6])
def test_a_peer_with_no_time_wait_buckets_is_said_to_hold_none(
    peers: dict[str, Peer], version: int
) -> None:
    peer = peers["notw"]
    before = time_wait_overflows(peer)
    result = timewait(peer, version, measure_duration=False, reopen=False)
    assert result.peer_close in (PeerClose.FIN, PeerClose.FIN_THEN_RST)
    assert result.holds_time_wait is False
    assert "kept no TIME-WAIT" in result.holds_evidence
    assert result.duration_end is DurationEnd.NOT_MEASURED
    below = connection(result, Role.DURATION).first(ReuseKind.SYN_BELOW)
    assert below is not None and below.answer in (ReuseAnswer.SYN_ACK, ReuseAnswer.RST)
    # Ground truth: the peer's kernel counted an overflow instead of keeping a TIME-WAIT.
    assert time_wait_overflows(peer) == before + 1
    assert not our_ports(result) & ports_in_state(peer, "time-wait")
    assert_no_request_socket_left(peer, our_ports(result))


@pytest.mark.parametrize("version", [4, 6])
def test_a_peer_with_no_time_wait_buckets_resets_our_fin_after_closing_at_once(
    peers: dict[str, Peer], version: int
) -> None:
    # The server closes before our ACK of its FIN arrives: the orphaned socket would go on
    # in a FIN-WAIT-2 bucket, which it cannot have, so it is gone and our separate FIN is
    # answered with a RST. That RST is the evidence; one SYN after it confirms.
    peer = peers["notw"]
    before = time_wait_overflows(peer)

    async def run() -> TimeWaitResult:
        async with Prober() as prober:
            return await prober.timewait(
                peer.address(version), CLOSE_AT_ONCE_PORT, measure_duration=False, reopen=False
            )

    result = uvloop.run(run())
    assert result.peer_close is PeerClose.FIN_THEN_RST
    assert result.holds_time_wait is False
    assert "reset our FIN" in result.holds_evidence
    duration = connection(result, Role.DURATION)
    received = [r.flags for r in duration.close.segments if r.direction is Direction.RECEIVED]
    assert "F" in received[-2] and "R" in received[-1], received
    below = duration.first(ReuseKind.SYN_BELOW)
    assert below is not None and below.answer is ReuseAnswer.SYN_ACK
    assert time_wait_overflows(peer) == before + 1
    assert_no_request_socket_left(peer, our_ports(result))


def test_a_server_that_never_closes_first_is_reported_quickly(peers: dict[str, Peer]) -> None:
    started = time.monotonic()
    result = timewait(peers["eof"], 6, close_timeout=2)
    assert time.monotonic() - started < 6
    assert result.peer_close is PeerClose.DID_NOT_CLOSE
    assert result.holds_time_wait is None
    assert "did not close first" in result.holds_evidence
    assert result.duration_end is DurationEnd.UNKNOWN
    assert not result.reuse  # nothing to probe


def test_cli_says_the_server_did_not_close_first(peers: dict[str, Peer]) -> None:
    started = time.monotonic()
    done = run_prober("timewait", peers["eof"].endpoint(4), "--close-timeout", "2", timeout=30)
    assert time.monotonic() - started < 10
    assert done.returncode == 11, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    said = [line for line in done.stdout.splitlines()
            if line.startswith("The peer did not close first within --close-timeout")]
    assert len(said) == 1, done.stdout
    # That reason is the verdict: no second "unknown" line repeats it.
    assert "Whether the peer holds TIME-WAIT is unknown" not in done.stdout
    assert "Duration:" not in done.stdout  # nothing was probed: no duration to speak of


# -- the CLI end to end ------------------------------------------------------------------------
JSON_KEYS = {
    "type", "target", "port", "source", "handshake", "peer_close", "holds_time_wait",
    "holds_evidence", "duration_end", "duration_s", "duration_error_s", "refin_acked",
    "above_isn_accepted", "above_isn_linux_isn", "newer_tsval_accepted", "offset_rst_ignored",
    "assassinated", "reuse", "connections", "notes", "interrupted",
}


def nft_tables() -> str:
    return subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def test_cli_json_and_pcap_end_to_end(peers: dict[str, Peer], tmp_path: Path) -> None:
    peer = peers["dflt"]
    pcap = tmp_path / "timewait.pcap"
    process = subprocess.Popen(
        [*PROBER, "timewait", peer.endpoint(6), "--send", CLI_REQUEST, "--no-duration",
         "--assassinate", "--json", "--pcap", str(pcap)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    table = f"prober_{process.pid}"
    try:
        seen_table = False
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline and not seen_table:
            seen_table = table in nft_tables()
            time.sleep(0.05)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert seen_table  # the local kernel's RSTs were suppressed while it ran...
    assert table not in nft_tables()  # ...and the table went with prober
    result = json.loads(out)
    assert result.keys() >= JSON_KEYS, JSON_KEYS - result.keys()
    assert result["type"] == "timewait" and result["port"] == PORT
    assert result["holds_time_wait"] is True and result["peer_close"] == "fin"
    assert result["duration_end"] == "not-measured" and result["duration_s"] is None
    assert result["above_isn_accepted"] is True and result["assassinated"] is True
    roles = [c["role"] for c in result["connections"]]
    assert roles == ["duration", "above-isn", "newer-tsval", "assassinate"]
    kinds = {p["kind"] for p in result["reuse"]}
    assert {"syn-below-isn", "syn-above-isn", "syn-newer-tsval", "rst-exact"} <= kinds
    assert_no_request_socket_left(peer, our_ports(result))

    segments = sum(len(c["close"]["segments"]) + len(c["segments"])
                   for c in result["connections"])
    shown = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "tcp.flags.str"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert len(shown.stdout.splitlines()) == segments


def test_cli_human_report(peers: dict[str, Peer]) -> None:
    done = run_prober("timewait", peers["dflt"].endpoint(4), "--send", CLI_REQUEST,
                      "--no-duration")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "The peer holds TIME-WAIT" in done.stdout
    assert "SYN/ACK" in done.stdout  # the reopening SYNs' answers are shown


def test_cli_human_report_for_a_peer_without_time_wait(peers: dict[str, Peer]) -> None:
    done = run_prober("timewait", peers["notw"].endpoint(4), "--send", CLI_REQUEST,
                      "--no-duration", "--no-reopen")
    assert done.returncode == 0, done.stderr
    assert "The peer keeps no TIME-WAIT" in done.stdout
    # The duration's ladder shows its close, then the probe: our RST that frees the peer's
    # new connection names the row of the SYN/ACK it answers.
    rows = [line.split() for line in done.stdout.splitlines()]
    synack = next(row[0] for row in rows if "S." in row and "SYN/ACK:" in " ".join(row))
    freeing = next(" ".join(row) for row in rows if "frees" in " ".join(row))
    assert f"answers #{synack} after" in freeing, done.stdout


def test_ctrl_c_during_the_duration_reports_and_removes_the_rst_suppression(
    peers: dict[str, Peer],
) -> None:
    peer = peers["dflt"]
    process = subprocess.Popen(
        [*PROBER, "timewait", peer.endpoint(4), "--send", CLI_REQUEST, "--no-reopen", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    table = f"prober_{process.pid}"
    try:
        deadline = time.monotonic() + 10
        while table not in nft_tables() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert table in nft_tables()
        time.sleep(3.0)  # into the peer's TIME-WAIT: a few probes have gone out
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert table not in nft_tables()
    result = json.loads(out)  # the report of what was seen so far
    assert result["interrupted"] is True
    assert result["holds_time_wait"] is True
    assert result["duration_end"] == "unknown" and result["duration_s"] is None
    answers = [p["answer"] for p in result["reuse"] if p["note"] != "interrupted"]
    assert answers and set(answers) == {"time-wait-ack"}
    # prober leaves the TIME-WAIT it measured to run out; it does not end it.
    assert result["connections"][0]["source_port"] in ports_in_state(peer, "time-wait")
