"""A running scan: the library's async iterator of ScanResult (``Prober.scan``).

The receiver half of the stateless path, in the caller's event loop: it checks the plan
(bad lines are errors before anything is sent), reserves the source-port block, opens the
capture, starts the sender process (sender.py) and then reads three things as they come:
the capture (answers, checked by replies.py), the sender's events (silence, failures,
names, the end) and the kernel's own outgoing RSTs (rsts.py). Each target's first verdict
becomes one ScanResult.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from prober.core.parse import parse_packet
from prober.core.pcap_format import RECORD_HEADER_SIZE, file_header, record, record_length
from prober.core.pcap_format import record_time as pcap_record_time
from prober.core.scan_cookie import ScanKey
from prober.core.scan_result import ScanResult, ScanSummary
from prober.core.syn import STATE_OF_REASON, PortState, Reason
from prober.core.timing import Clock
from prober.core.wire import MalformedPacket
from prober.engine.ports import PortPool
from prober.engine.rx_ring import BLOCK_COUNT, RxRing
from prober.engine.scan.events import EventKind, EventReader, Unanswered
from prober.engine.scan.replies import Answer, ReplyChecker, address_text
from prober.engine.scan.rsts import RstDuty
from prober.engine.scan.sender import SenderConfig, spawn
from prober.engine.scan.shared import STDIN_BITMAP_BITS, Counter, ScanShared
from prober.engine.sockets import (
    attach_filter,
    capture_filter,
    kernel_drops,
    open_capture_socket,
    read_frames,
)
from prober.errors import ProberError, UsageError
from prober.scan_plan import PlanCounts, ScanPlan, check_plan

SCAN_PORTS = 256  # the source-port block (ports.py): spreads a target's attempts
TICK_S = 0.002
STAMP_HOLD_S = 0.05  # an answer may wait this long for its send's kernel TX stamp
NAME_HOLD_S = 0.5  # and this long for its target's name
STOP_GRACE_S = 3.0  # after SIGTERM, the sender has this long to say "done"
# Records not yet taken by the consumer: above the first the sender pauses, below the
# second it goes on (memory stays bounded when the consumer is slower than the scan).
READY_HIGH = 65_536
READY_LOW = 16_384


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """A snapshot for the live progress line."""

    targets: int | None  # planned probes (None while stdin is still being read)
    sent: int  # SYNs sent, retries included
    done: int  # targets with a record
    answered: int  # of which answered (open, closed, ICMP)
    rate_pps: float  # SYNs/s over the last second
    eta_s: float | None
    kernel_drops: int
    invalid: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class ScanOptions:
    rate: float = 1000.0  # SYNs per second, token bucket
    retries: int = 0  # re-sends of an unanswered SYN
    wait: float = 2.0  # seconds to wait for an answer after each SYN (and after the last)
    pcap: Path | None = None  # write sent and received packets here


class ScanRun:
    """``async for result in run`` yields one ScanResult per target and port, in the order
    verdicts are reached; ``summary`` is set once the iteration ends (also after ``stop``).

    Raises (from the iteration): UsageError for a bad line (without skip_bad),
    RawSocketsNotPermitted without CAP_NET_RAW, ProberError if the sender process fails.
    """

    def __init__(
        self,
        plan: ScanPlan,
        options: ScanOptions,
        on_bad: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.options = options
        self.on_bad = on_bad  # gets "SOURCE:LINE: ..." for each line skipped (plan.skip_bad)
        self.summary: ScanSummary | None = None
        self._counts: PlanCounts | None = None
        self._ready: deque[ScanResult] = deque()
        self._wake = asyncio.Event()
        self._finished = False
        self._stopping = False
        self._error: ProberError | None = None
        self._by_state: dict[PortState, int] = {}
        self._by_reason: dict[Reason, int] = {}
        self._results = 0
        self._answered = 0
        self._bad_lines = 0
        self._kernel_drops = 0
        self._interrupted = False
        self._names: dict[int, str] = {}
        self._held: deque[tuple[float, Answer]] = deque()  # waiting for a stamp or a name
        self._started = time.monotonic()
        self._sending_ended: float | None = None
        self._rate_samples: deque[tuple[float, int]] = deque()
        self._sender_done: dict[str, Any] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stop_sent_at: float | None = None
        self._paused_s = 0.0  # the sender waited this long for the consumer of the records
        self._paused_since = 0.0
        self._pcap_received: BinaryIO | None = None
        self._pcap_dir: tempfile.TemporaryDirectory[str] | None = None

    # -- the iterator ------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[ScanResult]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ScanResult]:
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as cleanup:
            self._start(loop, cleanup)
            while True:
                while self._ready:
                    yield self._ready.popleft()
                if self._finished:
                    break
                self._wake.clear()
                await self._wake.wait()
            self._finish_pcap()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End early (Ctrl-C): unsent targets are dropped (counted in the summary), probes
        in flight get an ``interrupted`` record, and the iteration ends."""
        if self._stopping or self._finished:
            return
        self._stopping = True
        self._interrupted = True
        self._signal_sender()

    def progress(self) -> ScanProgress:
        now = time.monotonic()
        shared = getattr(self, "_shared", None)
        sent = 0 if shared is None else shared.counters[Counter.SENT]
        planned = self._counts.targets if self._counts is not None else None
        if planned is None and shared is not None and shared.counters[Counter.PLAN_DONE]:
            planned = shared.counters[Counter.PLANNED]
        rate = 0.0
        if len(self._rate_samples) >= 2:
            (t0, s0), (t1, s1) = self._rate_samples[0], self._rate_samples[-1]
            rate = (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0
        eta = None
        if planned is not None and rate > 0:
            eta = max(0.0, (planned - sent) / rate) + self.options.wait
        invalid = 0 if getattr(self, "_checker", None) is None else sum(
            self._checker.invalid.values()
        )
        return ScanProgress(
            planned, sent, self._results, self._answered, rate, eta, self._kernel_drops,
            invalid, now - self._started,
        )

    # -- start and end -----------------------------------------------------------------------
    def _start(self, loop: asyncio.AbstractEventLoop, cleanup: contextlib.ExitStack) -> None:
        plan = self.plan
        self._counts = check_plan(plan, self._bad_line if plan.skip_bad else None)
        # One bit per element of this shard (positions stay below it), excluded ones too.
        bits = STDIN_BITMAP_BITS if self._counts is None else max(1, self._counts.elements)
        pool = PortPool(max_ports=SCAN_PORTS)
        cleanup.callback(pool.close)
        ports = sorted(pool.acquire() for _ in range(SCAN_PORTS))
        capture = open_capture_socket()
        cleanup.callback(capture.close)
        attach_filter(capture, capture_filter(pool.ranges()))
        self._capture = capture
        self._ring: RxRing | None = None
        with contextlib.suppress(OSError):  # without a ring, frames are read one by one
            self._ring = RxRing(capture)
            cleanup.callback(self._ring.close)
        shared = ScanShared.create(bits)
        cleanup.callback(shared.close)
        self._shared = shared
        secret = os.urandom(16)  # the sender derives the same cookies from it
        self._key = ScanKey(secret, ports)
        self._checker = ReplyChecker(self._key, shared)
        self._rsts = RstDuty(self._key.ports)
        cleanup.callback(self._rsts.close)
        if self.options.pcap is not None:
            self._pcap_dir = tempfile.TemporaryDirectory(prefix="prober-scan-")
            cleanup.callback(self._pcap_dir.cleanup)
            self._pcap_received = open(  # noqa: SIM115 (closed by the cleanup stack)
                Path(self._pcap_dir.name) / "received.pcap", "wb"
            )
            cleanup.callback(self._pcap_received.close)
            self._pcap_received.write(file_header())
            # The RSTs apart: read on their own socket, their times interleave with the
            # answers', and each file must be in time order for the merge.
            self._rsts.pcap = open(  # noqa: SIM115 (closed by the cleanup stack)
                Path(self._pcap_dir.name) / "rsts.pcap", "wb"
            )
            cleanup.callback(self._rsts.pcap.close)
            self._rsts.pcap.write(file_header())

        events_read, events_write = os.pipe()
        config_read, config_write = os.pipe()
        os.set_blocking(events_read, False)
        self._events = EventReader(events_read)
        cleanup.callback(os.close, events_read)
        config = SenderConfig(
            plan=plan.to_json(),
            secret=secret.hex(),
            ports=self._key.ports,
            rate=self.options.rate,
            retries=self.options.retries,
            wait=self.options.wait,
            shared_fd=shared.fd,
            bitmap_bits=bits,
            events_fd=events_write,
            pcap=None if self._pcap_dir is None else str(Path(self._pcap_dir.name) / "sent.pcap"),
            parent_pid=os.getpid(),
        )
        try:
            self._process = spawn(
                config_read, (config_read, shared.fd, events_write),
                None if plan.file == "-" else subprocess.DEVNULL,
            )
        except BaseException:
            os.close(config_write)
            raise
        finally:
            os.close(config_read)
            os.close(events_write)
        cleanup.callback(self._reap)
        if self._stopping:  # stop() before the iteration: the sender stops before sending
            self._signal_sender()
        with os.fdopen(config_write, "w") as config_file:
            config_file.write(config.to_json())

        # The capture and the RST socket are read on the tick, not when readable: a reader
        # registered with epoll is woken for every frame, and each wakeup is paid by the
        # CPU that delivers the frame, which is the sender's (the whole round trip through
        # a veth runs inside its sendto). Polled every TICK_S, a frame waits at most that
        # long in a queue sized for seconds, and its kernel RX stamp is unchanged.
        loop.add_reader(events_read, self._on_events)
        cleanup.callback(loop.remove_reader, events_read)
        self._timer = loop.call_later(TICK_S, self._tick)
        cleanup.callback(lambda: self._timer.cancel())
        self._started = time.monotonic()

    def _signal_sender(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            self._stop_sent_at = time.monotonic()

    def _reap(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _bad_line(self, message: str) -> None:
        self._bad_lines += 1
        if self.on_bad is not None:
            self.on_bad(message)

    # -- reading -----------------------------------------------------------------------------
    def _on_capture(self) -> None:
        checker = self._checker
        pcap = self._pcap_received
        ring = self._ring
        frames = ring.frames(BLOCK_COUNT) if ring is not None else read_frames(
            self._capture, 1 << 16
        )
        for data, kernel_ns in frames:
            user_ns = time.time_ns()
            try:
                packet = parse_packet(data)
            except MalformedPacket:
                continue
            answer = checker.check(packet, kernel_ns or user_ns, user_ns)
            if answer is None:
                continue
            if answer.synack_seq_ack is not None:
                self._rsts.owe(answer, time.monotonic())
            if pcap is not None:
                pcap.write(record(answer.received_ns, data))
            if answer.first:
                self._conclude_answer(answer, time.monotonic())
        self._wake.set()

    def _conclude_answer(self, answer: Answer, now: float) -> None:
        sent = self._checker.send_time(answer)
        waiting_stamp = sent is not None and not sent[1]
        waiting_name = answer.named and answer.position not in self._names
        if waiting_stamp or waiting_name:
            self._held.append((now + (NAME_HOLD_S if waiting_name else STAMP_HOLD_S), answer))
            return
        self._emit_answer(answer, sent)

    def _emit_answer(self, answer: Answer, sent: tuple[int, bool] | None) -> None:
        packet = answer.packet
        version = packet.version
        rtt_us = clock = None
        if sent is not None:
            sent_ns, kernel = sent
            if kernel:
                rtt_us, clock = (answer.received_ns - sent_ns) / 1000.0, Clock.KERNEL
            else:
                rtt_us, clock = (answer.received_user_ns - sent_ns) / 1000.0, Clock.USER
        tcp = packet.tcp
        icmp = packet.icmp
        self._record(ScanResult(
            target=address_text(version, answer.target),
            port=answer.port,
            state=answer.state,
            reason=answer.reason,
            attempt=answer.attempt + 1,
            source=address_text(version, answer.source),
            source_port=answer.source_port,
            name=self._names.pop(answer.position, None),
            rtt_us=None if rtt_us is None else round(rtt_us, 3),
            clock=clock,
            ttl=packet.ttl,
            window=None if tcp is None else tcp.window,
            options=None if tcp is None else tcp.options.order,
            icmp_type=None if icmp is None else icmp.type,
            icmp_code=None if icmp is None else icmp.code,
            icmp_from=None if icmp is None else address_text(version, packet.src),
            received_ns=answer.received_ns,
        ))
        self._answered += 1

    def _record(self, result: ScanResult) -> None:
        self._results += 1
        self._by_state[result.state] = self._by_state.get(result.state, 0) + 1
        self._by_reason[result.reason] = self._by_reason.get(result.reason, 0) + 1
        self._ready.append(result)

    def _on_events(self) -> None:
        shared = self._shared
        for event in self._events.read():
            if isinstance(event, Unanswered):
                position = event.position
                if shared.is_concluded(position):
                    continue
                shared.conclude(position)
                shared.mark_silent(position)
                reason = (
                    Reason.NO_RESPONSE if event.kind is EventKind.UNANSWERED
                    else Reason.INTERRUPTED
                )
                cookie = self._key.cookie(event.source, event.address, event.port)
                self._record(ScanResult(
                    target=address_text(event.version, event.address),
                    port=event.port,
                    state=STATE_OF_REASON[reason],
                    reason=reason,
                    attempt=event.attempts,
                    source=address_text(event.version, event.source),
                    source_port=self._key.source_port(cookie, event.attempts - 1),
                    name=event.name,
                    received_ns=time.time_ns(),
                ))
                self._names.pop(position, None)
            else:
                self._on_note(event)
        if self._events.closed:
            # EOF stays readable: a reader left on it would spin until the iteration ends.
            asyncio.get_running_loop().remove_reader(self._events.fd)
        if self._events.closed and self._sender_done is None:
            code = None
            if self._process is not None:  # its pipe closed as it died: it is about to end
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self._process.wait(0.5)
            self._error = self._error or ProberError(
                f"the scan's sender process ended unexpectedly (exit status {code})"
            )
            self._end()
        self._wake.set()

    def _on_note(self, note: dict[str, Any]) -> None:
        kind = note["note"]
        shared = self._shared
        if kind == "name":
            self._names[note["position"]] = note["name"]
        elif kind in ("unresolved", "send-failed"):
            position = note["position"]
            if shared.is_concluded(position):
                return
            shared.conclude(position)
            shared.mark_silent(position)
            reason = Reason.UNRESOLVED if kind == "unresolved" else Reason.SEND_FAILED
            version = note["version"]
            address = note.get("address")
            source = note.get("source")
            self._record(ScanResult(
                target=note.get("name") or "" if address is None
                else address_text(version, bytes.fromhex(address)),
                port=note["port"],
                state=STATE_OF_REASON[reason],
                reason=reason,
                attempt=note.get("attempt", 0),
                source="" if not source else address_text(version, bytes.fromhex(source)),
                source_port=0,
                name=note.get("name"),
                error=note.get("error"),
                received_ns=time.time_ns(),
            ))
            self._names.pop(position, None)
        elif kind == "bad-line":
            self._bad_line(note["message"])
        elif kind == "fatal":
            message = note["error"]
            self._error = UsageError(message) if note.get("usage") else ProberError(message)
        elif kind == "done":
            self._sender_done = note
            self._sending_ended = time.monotonic()
            self._end()

    # -- time --------------------------------------------------------------------------------
    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._on_capture()
        now = time.monotonic()
        self._kernel_drops += kernel_drops(self._capture)
        self._release_held(now, everything=False)
        self._rsts.settle(now)
        counters = self._shared.counters
        waiting = len(self._ready)
        if not counters[Counter.PAUSED] and waiting > READY_HIGH:
            counters[Counter.PAUSED] = 1
            self._paused_since = now
        elif counters[Counter.PAUSED] and waiting < READY_LOW:
            counters[Counter.PAUSED] = 0
            self._paused_s += now - self._paused_since
        self._rate_samples.append((now, counters[Counter.SENT]))
        while self._rate_samples and self._rate_samples[0][0] < now - 1.0:
            self._rate_samples.popleft()
        process = self._process
        if (
            self._stop_sent_at is not None
            and now - self._stop_sent_at > STOP_GRACE_S
            and process is not None
            and process.poll() is None
        ):
            process.kill()  # ours, by PID; it had its grace
        if not self._finished:
            self._timer = loop.call_later(TICK_S, self._tick)
        self._wake.set()

    def _release_held(self, now: float, *, everything: bool) -> None:
        held = self._held
        keep: deque[tuple[float, Answer]] = deque()
        while held:
            deadline, answer = held.popleft()
            sent = self._checker.send_time(answer)
            ready = (sent is None or sent[1]) and (
                not answer.named or answer.position in self._names
            )
            if ready or everything or deadline <= now:
                self._emit_answer(answer, sent)
            else:
                keep.append((deadline, answer))
        self._held = keep

    def _end(self) -> None:
        if self._finished:
            return
        # A last read of everything in flight, then the RSTs still owed.
        self._on_capture_safely()
        self._release_held(time.monotonic(), everything=True)
        self._rsts.settle(time.monotonic(), everything=True)
        self._kernel_drops += kernel_drops(self._capture)
        self._finished = True
        self._timer.cancel()
        self.summary = self._summary()
        self._wake.set()

    def _on_capture_safely(self) -> None:
        with contextlib.suppress(OSError):
            self._on_capture()

    def _summary(self) -> ScanSummary:
        counters = self._shared.counters
        sent = counters[Counter.SENT]
        # The sending rate: first to last send, as the sender clocked them (one send: 0 s).
        sending_ns = counters[Counter.LAST_SEND_NS] - counters[Counter.FIRST_SEND_NS]
        rate = sent / (sending_ns / 1e9) if sent > 1 and sending_ns > 0 else 0.0
        counts = self._counts
        checker = self._checker
        done = self._sender_done or {}
        planned = counts.targets if counts is not None else done.get(
            "planned", counters[Counter.PLANNED]
        )
        return ScanSummary(
            targets=planned,
            sent=sent,
            send_failed=counters[Counter.SEND_FAILED],
            results=self._results,
            by_state=dict(self._by_state),
            by_reason=dict(self._by_reason),
            duration_s=time.monotonic() - self._started,
            rate_pps=rate,
            kernel_drops=self._kernel_drops,
            duplicates=checker.duplicates,
            late=checker.late,
            excluded=done.get("excluded", 0) if counts is None else counts.excluded,
            blocklisted=done.get("blocklisted", 0) if counts is None else counts.blocklisted,
            bad_lines=self._bad_lines,
            kernel_rsts=self._rsts.kernel_rsts,
            own_rsts=self._rsts.own_rsts,
            interrupted=self._interrupted,
            invalid_by_kind=dict(checker.invalid),
            notices=checker.notices,
            paused_s=self._paused_s,
            blocklist_hits=dict(counts.blocklist_hits) if counts is not None
            else done.get("blocklist_hits", {}),
        )

    # -- pcap ----------------------------------------------------------------------------------
    def _finish_pcap(self) -> None:
        target = self.options.pcap
        if target is None or self._pcap_dir is None or self._pcap_received is None:
            return
        self._pcap_received.close()
        if self._rsts.pcap is not None:
            self._rsts.pcap.close()
        directory = Path(self._pcap_dir.name)
        with open(target, "wb") as out:
            out.write(file_header())
            for _time, chunk in heapq.merge(
                _pcap_records(directory / "sent.pcap"),
                _pcap_records(directory / "received.pcap"),
                _pcap_records(directory / "rsts.pcap"),
            ):
                out.write(chunk)


def _pcap_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(time, record bytes) of a pcap file written in time order, read as a stream."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with handle:
        handle.read(24)
        while True:
            header = handle.read(RECORD_HEADER_SIZE)
            if len(header) < RECORD_HEADER_SIZE:
                return
            data = handle.read(record_length(header))
            yield pcap_record_time(header), header + data


__all__ = ["ScanOptions", "ScanProgress", "ScanRun"]
