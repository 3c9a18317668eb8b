"""Review of the stateless scan path, without root: each test is a bug found in review (the
reply check's ring lookup, the sender's ring writes, its signals and its lifetime)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP

from prober.api import Prober
from prober.core.parse import parse_packet
from prober.core.pcap_format import record_time
from prober.core.scan_cookie import MASK32, ScanKey
from prober.core.strays import Stray
from prober.core.syn import PortState, Reason
from prober.engine.scan import rsts
from prober.engine.scan.events import EventReader, encode_note
from prober.engine.scan.replies import Answer, ReplyChecker
from prober.engine.scan.run import ScanOptions, ScanRun
from prober.engine.scan.sender import Sender, SenderConfig, spawn
from prober.engine.scan.shared import RING_MASK, RING_SIZE, ScanShared
from prober.engine.sockets import SO_TIMESTAMPNS
from prober.errors import UsageError
from prober.scan_plan import ScanPlan

PORTS = tuple(range(40000, 40256))
OURS = socket.inet_aton("198.18.0.1")
FIRST = socket.inet_aton("198.19.0.7")
SECOND = socket.inet_aton("198.19.0.8")
KEY = ScanKey(b"k" * 16, PORTS)


@pytest.fixture
def shared() -> Iterator[ScanShared]:
    segment = ScanShared.create(1000)
    yield segment
    segment.close()


class _Socket:
    """Stands in for the raw send socket: takes every packet."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, packet: bytes, _address: Any) -> int:
        self.sent.append(packet)
        return len(packet)

    def recvmsg(self, *_args: Any) -> Any:
        raise BlockingIOError

    def close(self) -> None:
        pass


@pytest.fixture
def sender(shared: ScanShared) -> Iterator[Sender]:
    events_read, events_write = os.pipe()
    config = SenderConfig(
        plan=ScanPlan(targets=("198.19.0.7:80",)).to_json(), secret=(b"k" * 16).hex(),
        ports=PORTS, rate=1000.0, retries=0, wait=1.0, shared_fd=os.dup(shared.fd),
        bitmap_bits=shared.bitmap_bits, events_fd=events_write, pcap=None,
    )
    made = Sender(config)
    made._sockets[4] = _Socket()  # type: ignore[assignment]
    yield made
    made.shared.close()
    os.close(events_read)
    os.close(events_write)


def _send(sender: Sender, k: int, position: int, address: bytes) -> int:
    """Send index k to ``address``:80 from position ``position``; returns its ISN."""
    sender.sent = k
    assert sender.send(position, 4, OURS, address, 80, 0, None)
    return KEY.isn(KEY.cookie(OURS, address, 80), k)


def _answer(address: bytes, ack: int, flags: str = "SA") -> bytes:
    sport = KEY.source_port(KEY.cookie(OURS, address, 80), 0)
    return bytes(IP(src=socket.inet_ntoa(address), dst="198.18.0.1")
                 / TCP(sport=80, dport=sport, flags=flags, ack=ack & MASK32))


def test_an_ack_naming_another_targets_send_is_not_that_targets_answer(
    shared: ScanShared, sender: Sender
) -> None:
    # Sends 5 and 6 go to two targets. A SYN/ACK from the first that acks one past its ISN
    # names send 6 by its index, but send 6 went to the second target: it proves nothing.
    isn = _send(sender, 5, position=3, address=FIRST)
    _send(sender, 6, position=4, address=SECOND)
    checker = ReplyChecker(KEY, shared)
    assert checker.check(parse_packet(_answer(FIRST, isn + 2)), 1, 1) is None
    assert checker.invalid == {Stray.WRONG_ACK: 1}
    assert not shared.is_concluded(4) and not shared.is_concluded(3)


def test_a_rst_that_acks_the_isn_itself_is_closed(shared: ScanShared, sender: Sender) -> None:
    # docs/scan.md (as prober syn): a RST with ACK and ack in {ISN, ISN + 1} means closed.
    _send(sender, 4, position=2, address=SECOND)
    isn = _send(sender, 5, position=3, address=FIRST)
    checker = ReplyChecker(KEY, shared)
    answer = checker.check(parse_packet(_answer(FIRST, isn, "RA")), 1, 1)
    assert answer is not None and answer.reason is Reason.RST
    assert (answer.position, answer.target) == (3, FIRST)
    assert not shared.is_concluded(2)


class _Spy:
    """A ring array whose writes call ``after`` (a reader running between two writes)."""

    def __init__(self, array: memoryview, after: Callable[[], None]) -> None:
        self._array = array
        self._after = after

    def __getitem__(self, index: int) -> int:
        return int(self._array[index])

    def __setitem__(self, index: int, value: int) -> None:
        self._array[index] = value
        self._after()


def test_a_reader_between_the_senders_ring_writes_never_mixes_two_sends(
    shared: ScanShared, sender: Sender
) -> None:
    # The slot of send 5 is reused by send 5 + RING_SIZE. An answer to send 5 read while
    # the new entry is half written must not get the new send's position.
    isn = _send(sender, 5, position=3, address=FIRST)
    checker = ReplyChecker(KEY, shared)
    seen: list[int | None] = []

    def reader() -> None:
        answer = checker.check(parse_packet(_answer(FIRST, isn + 1)), 1, 1)
        seen.append(None if answer is None else answer.position)

    real = sender.shared.ring_position
    sender.shared.ring_position = _Spy(real, reader)  # type: ignore[assignment]
    try:
        _send(sender, 5 + RING_SIZE, position=9, address=SECOND)
    finally:
        sender.shared.ring_position = real
    assert (5 + RING_SIZE) & RING_MASK == 5
    assert 9 not in seen


def test_retries_beyond_what_the_ring_can_number_are_refused() -> None:
    # The ring keeps a send's attempt in 6 bits: attempt 64 would read as attempt 0.
    Prober().scan(["198.19.0.7:80"], retries=63)
    with pytest.raises(UsageError, match="retries"):
        Prober().scan(["198.19.0.7:80"], retries=64)


# -- the sender process: its signals and its lifetime ---------------------------------------
def start_sender(plan: ScanPlan) -> tuple[subprocess.Popen[bytes], EventReader, ScanShared]:
    """Start the sender process as ScanRun does, its stdin this process's."""
    shared = ScanShared.create(1000)
    events_read, events_write = os.pipe()
    config_read, config_write = os.pipe()
    os.set_blocking(events_read, False)
    config = SenderConfig(
        plan=plan.to_json(), secret=(b"k" * 16).hex(), ports=PORTS, rate=1000.0, retries=0,
        wait=1.0, shared_fd=shared.fd, bitmap_bits=shared.bitmap_bits,
        events_fd=events_write, pcap=None, parent_pid=os.getpid(),
    )
    process = spawn(config_read, (config_read, shared.fd, events_write), None)
    os.close(config_read)
    os.close(events_write)
    with os.fdopen(config_write, "w") as config_file:
        config_file.write(config.to_json())
    return process, EventReader(events_read), shared


def _wait_for_handlers(pid: int) -> None:
    """Until the process catches SIGTERM (the sender's main() has set itself up)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << (15 - 1)):
                time.sleep(0.2)  # and has gone on to read its plan
                return
        time.sleep(0.02)
    raise AssertionError("the sender did not start")


def test_sigterm_stops_a_sender_blocked_reading_stdin() -> None:
    # `prober scan -f -` fed by a slow producer: the sender waits in a read of stdin, and
    # Ctrl-C (SIGTERM from ScanRun) must end it at once, with its "done".
    stdin_read, stdin_write = os.pipe()
    saved = os.dup(0)
    os.dup2(stdin_read, 0)
    try:
        process, events, shared = start_sender(ScanPlan(file="-"))
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(stdin_read)
    try:
        _wait_for_handlers(process.pid)
        process.terminate()
        assert process.wait(5) == 0
        notes = [event for event in events.read() if isinstance(event, dict)]
        assert notes and notes[-1]["note"] == "done" and notes[-1]["stopped"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(stdin_write)
        os.close(events.fd)
        shared.close()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_the_sender_does_not_outlive_a_killed_parent() -> None:
    # The parent (ScanRun's process) is SIGKILLed: nothing runs its cleanup, and the sender
    # must not go on sending. Its stdin stays open here, so only its own check can end it.
    stdin_read, stdin_write = os.pipe()
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import time\n"
         "from prober.scan_plan import ScanPlan\n"
         "from tests.unit.test_scan_review import start_sender\n"
         "process, _events, _shared = start_sender(ScanPlan(file='-'))\n"
         "print(process.pid, flush=True)\n"
         "time.sleep(60)\n"],
        stdin=stdin_read, stdout=subprocess.PIPE,
    )
    os.close(stdin_read)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        _wait_for_handlers(pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = not _gone(pid)
        if alive:
            os.kill(pid, signal.SIGKILL)  # ours: started by the parent this test started
        assert not alive, "the sender outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        os.close(stdin_write)


# -- the RSTs owed to SYN/ACKs, and the pcap ---------------------------------------------------
class _RstTap:
    """Stands in for the outgoing-RST packet socket: what left, with its kernel time."""

    def __init__(self) -> None:
        self.queue: list[tuple[bytes, int]] = []

    def recvmsg(self, *_args: Any) -> Any:
        if not self.queue:
            raise BlockingIOError
        data, time_ns = self.queue.pop(0)
        stamp = struct.pack("qq", *divmod(time_ns, 1_000_000_000))
        return data, [(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp)], 0, None

    def recv(self, _size: int) -> bytes:
        if not self.queue:
            raise BlockingIOError
        return self.queue.pop(0)[0]

    def close(self) -> None:
        pass


def _synack_answer() -> Answer:
    sport = PORTS[3]
    data = bytes(IP(src="198.19.0.7", dst="198.18.0.1")
                 / TCP(sport=80, dport=sport, flags="SA", seq=7, ack=1000))
    return Answer(
        position=0, k=0, slot=0, attempt=0, state=PortState.OPEN, reason=Reason.SYN_ACK,
        packet=parse_packet(data), received_ns=1, received_user_ns=1, first=True, named=False,
        target=FIRST, port=80, source=OURS, source_port=sport, synack_seq_ack=1000,
    )


def test_prober_s_own_rst_seen_leaving_is_not_the_kernel_s_and_is_recorded_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tap, sent = _RstTap(), _Socket()
    monkeypatch.setattr(rsts, "open_outgoing_rst_socket", lambda: tap)
    monkeypatch.setattr(rsts, "open_send_socket", lambda _version: sent)
    monkeypatch.setattr(rsts, "disable_tx_timestamps", lambda _sock: None)
    duty = rsts.RstDuty(PORTS)
    with open(tmp_path / "rsts.pcap", "wb") as pcap:
        duty.pcap = pcap
        for round_ in range(2):  # a SYN/ACK, then its retransmission: each gets a RST
            duty.owe(_synack_answer(), now=10.0 * round_)
            duty.settle(10.0 * round_ + 1.0)  # the kernel's RST never came: prober's goes
            tap.queue.append((sent.sent[-1], 5_000 + round_))  # ... and is seen leaving
            duty.settle(10.0 * round_ + 1.1)
    assert (duty.own_rsts, duty.kernel_rsts) == (2, 0)
    data = (tmp_path / "rsts.pcap").read_bytes()
    times = [record_time(data[at : at + 16]) for at in (0, 16 + len(sent.sent[0]))]
    assert len(data) == 2 * (16 + len(sent.sent[0]))  # each RST once, at its kernel time
    assert times == [5_000, 5_001]


def test_a_stop_while_the_sender_starts_is_a_stop_not_a_kill() -> None:
    # Ctrl-C right after the scan began: SIGTERM reaches the sender before its handler.
    process, events, shared = start_sender(ScanPlan(targets=()))
    try:
        process.terminate()
        assert process.wait(20) == 0
        notes = [event for event in events.read() if isinstance(event, dict)]
        assert notes and notes[-1]["note"] == "done"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(events.fd)
        shared.close()


def test_the_receiver_stops_watching_the_events_pipe_at_its_end() -> None:
    # After the sender's last word its pipe reads as EOF, which epoll reports as readable
    # for ever: a reader left registered spins while the caller still iterates the records.
    run = ScanRun(ScanPlan(targets=("198.19.0.7:80",)), ScanOptions())
    events_read, events_write = os.pipe()
    os.set_blocking(events_read, False)
    os.write(events_write, encode_note("done", sent=0))
    os.close(events_write)
    run._events = EventReader(events_read)
    run._shared = ScanShared.create(8)
    calls = 0

    def on_events() -> None:
        nonlocal calls
        calls += 1
        run._finished = True  # _end has nothing to read here
        run._on_events()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(events_read, on_events)
        await asyncio.sleep(0.1)
        loop.remove_reader(events_read)

    try:
        asyncio.run(main())
    finally:
        os.close(events_read)
        run._shared.close()
    assert calls <= 2


def test_the_shared_segment_is_not_inherited_by_other_children() -> None:
    # Only the sender should hold the segment (spawn passes it by pass_fds); any other child
    # this process starts would otherwise keep 29 MiB and the scan's bitmap alive.
    segment = ScanShared.create(8)
    try:
        assert not os.get_inheritable(segment.fd)
    finally:
        segment.close()
