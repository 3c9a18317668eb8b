"""The scan's sender: a process of its own, so pacing and sending never wait for the receiver.

Started by ScanRun as ``python -m prober.engine.scan.sender CONFIG_FD`` (its stdin is the
scan's, for ``-f -``). It rebuilds the probe sequence from the plan (``iter_probes``: the same
order the receiver's positions refer to), and for each probe:

1. paces: a token bucket of ``rate`` tokens per second holding at most 5 ms of them, so a
   stall is never made up by a burst (``--rate`` is accurate over any second);
2. sends a pre-built SYN template patched with the target, the keyed source port and ISN
   (core/scan_cookie.py), on a raw socket, and writes the send ring entry (shared.py);
3. pairs kernel TX stamps with sends (the socket's OPT_ID counter, engine/txstamps.py) and
   puts each into its ring entry, so the receiver's RTT is kernel to kernel;
4. keeps the probe in a delay line for ``wait`` seconds: then, if the receiver has not
   concluded it (shared bitmap), it is sent again (``retries``) or reported unanswered.

The delay line is the only state per outstanding probe, bounded by rate x wait x (retries+1).
SIGTERM stops sending, also while the plan's next line is awaited (stdin, a slow resolver):
probes still waiting are reported interrupted and the process ends. The process never
outlives its parent (PR_SET_PDEATHSIG): nothing would read its answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Final

from prober.core.handshake_conversation import tsval_at
from prober.core.packets import TcpTemplate
from prober.core.pcap_format import file_header, record
from prober.core.scan_cookie import MASK32, ScanKey
from prober.core.wire import TcpFlags
from prober.engine.scan.events import EventKind, encode_note, encode_unanswered
from prober.engine.scan.shared import (
    EMPTY_SLOT,
    KERNEL_TIME,
    NAMED,
    RING_MASK,
    RING_SIZE,
    Counter,
    ScanShared,
)
from prober.engine.sockets import open_send_socket, read_tx_stamps
from prober.engine.txstamps import KEY_TAKEN_BY_FAILED_SEND
from prober.errors import ProberError, ResolutionError, UsageError
from prober.scan_plan import PlannedProbe, PlanTally, ScanPlan, iter_probes

BATCH = 64  # sends between looks at the clock, the delay line and the TX stamps
BUCKET_S = 0.005  # the token bucket holds 5 ms of sends
_TRANSIENT = frozenset({errno.ENOBUFS, errno.EAGAIN})  # the socket buffer is full: retry
_TRANSIENT_TRIES = 200  # x 100 µs


@dataclass(frozen=True, slots=True)
class SenderConfig:
    plan: str  # ScanPlan.to_json()
    secret: str  # hex
    ports: tuple[int, ...]
    rate: float
    retries: int
    wait: float
    shared_fd: int
    bitmap_bits: int
    events_fd: int
    pcap: str | None  # a file for the SYNs sent (user-space send times)
    parent_pid: int = 0  # the receiver: the sender ends if it is gone (0: not checked)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SenderConfig:
        fields = json.loads(text)
        fields["ports"] = tuple(fields["ports"])
        return cls(**fields)


class _Sources:
    """The local address the kernel routes each destination from, looked up once per /24
    (IPv4) or /64 (IPv6): any local address gets the answer back, and blocks route alike."""

    def __init__(self) -> None:
        self._cache: dict[bytes, bytes] = {}

    def get(self, version: int, address: bytes) -> bytes:
        key = address[:3] if version == 4 else address[:8]
        source = self._cache.get(key)
        if source is None:
            if len(self._cache) > 65_536:
                self._cache.clear()
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.connect((socket.inet_ntop(family, address), 9))
                source = socket.inet_pton(family, udp.getsockname()[0])
            self._cache[key] = source
        return source


def _resolver(name: str, version: int | None) -> tuple[int, bytes]:
    family = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[version]
    try:
        infos = socket.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolutionError(f"cannot resolve {name!r}: {exc.strerror}") from None
    for info_family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        return (4, socket.inet_pton(socket.AF_INET, text)) if info_family == socket.AF_INET \
            else (6, socket.inet_pton(socket.AF_INET6, text))
    raise ResolutionError(f"cannot resolve {name!r}: no addresses")


class Sender:
    def __init__(self, config: SenderConfig) -> None:
        self.config = config
        self.plan = ScanPlan.from_json(config.plan)
        self.shared = ScanShared.attach(config.shared_fd, config.bitmap_bits)
        self.key = ScanKey(bytes.fromhex(config.secret), config.ports)
        self.events_fd = config.events_fd
        self._events = bytearray()
        self.stopping = False
        self.reading_plan = False  # in next(probes): SIGTERM interrupts it (_Stopped)
        self._sockets: dict[int, socket.socket] = {}
        self._templates = {v: TcpTemplate(v, TcpFlags.SYN) for v in (4, 6)}
        self._families = {4: socket.AF_INET, 6: socket.AF_INET6}
        # Per socket: the OPT_ID counter's next key, and which send index each key was.
        self._next_key = {4: 0, 6: 0}
        self._key_to_k = {4: array("Q", bytes(8 * RING_SIZE)), 6: array("Q", bytes(8 * RING_SIZE))}
        self._sources = _Sources()
        self.sent = 0
        self.failed = 0
        self.stamps = 0
        # (due, position, version, source, address, port, attempts sent, name)
        self.delay: deque[tuple[float, int, int, bytes, bytes, int, int, str | None]] = deque()
        self._pcap: BinaryIO | None = None
        if config.pcap:
            self._pcap = open(config.pcap, "wb")  # noqa: SIM115 (closed in run)
            self._pcap.write(file_header())

    # -- events ------------------------------------------------------------------------------
    def _emit(self, frame: bytes) -> None:
        self._events += frame
        if len(self._events) > 1 << 16:
            self._flush_events()

    def _flush_events(self) -> None:
        view = memoryview(self._events)
        while view:
            written = os.write(self.events_fd, view)  # blocking: the receiver sets the pace
            view = view[written:]
        view.release()
        self._events.clear()

    def note(self, note: str, **fields: Any) -> None:
        self._emit(encode_note(note, **fields))

    # -- sending -----------------------------------------------------------------------------
    def _socket(self, version: int) -> socket.socket:
        sock = self._sockets.get(version)
        if sock is None:
            sock = self._sockets[version] = open_send_socket(version)
        return sock

    def send(self, probe_position: int, version: int, source: bytes, address: bytes,
             port: int, attempt: int, name: str | None) -> bool:
        """Send attempt ``attempt`` (0-based); False if the send failed (reported)."""
        key = self.key
        cookie = key.cookie(source, address, port)
        k = self.sent + self.failed
        sport = key.source_port(cookie, attempt)
        packet = self._templates[version].build(
            source, address, sport, port, (cookie + k) & MASK32, 0, tsval_at(time.monotonic())
        )
        sock = self._socket(version)
        target = (socket.inet_ntop(self._families[version], address), 0)
        shared = self.shared
        slot = k & RING_MASK
        # The ring entry is written before the send: an answer can be read before sendto
        # returns (on loopback or a veth, the whole round trip runs inside the call). The
        # slot's old k goes first, so a reader never takes this entry for the old send's.
        shared.ring_k[slot] = EMPTY_SLOT
        shared.ring_position[slot] = probe_position
        shared.ring_tag[slot] = cookie & MASK32
        shared.ring_meta[slot] = attempt | NAMED if name else attempt
        for _ in range(_TRANSIENT_TRIES):
            now_ns = time.time_ns()
            shared.ring_time[slot] = now_ns
            shared.ring_k[slot] = k  # last: a reader that finds k finds a whole entry
            try:
                sock.sendto(packet, target)
            except OSError as exc:
                if exc.errno in _TRANSIENT:
                    time.sleep(0.0001)
                    continue
                shared.ring_k[slot] = EMPTY_SLOT
                if exc.errno in KEY_TAKEN_BY_FAILED_SEND:
                    self._next_key[version] += 1
                self.failed += 1
                shared.counters[Counter.SEND_FAILED] = self.failed
                self.note(
                    "send-failed", position=probe_position, version=version,
                    source=source.hex(), address=address.hex(), port=port,
                    attempt=attempt + 1, name=name, error=exc.strerror or str(exc),
                )
                return False
            break
        else:
            shared.ring_k[slot] = EMPTY_SLOT
            self.failed += 1
            shared.counters[Counter.SEND_FAILED] = self.failed
            self.note(
                "send-failed", position=probe_position, version=version, source=source.hex(),
                address=address.hex(), port=port, attempt=attempt + 1, name=name,
                error="the send buffer stayed full",
            )
            return False
        self._key_to_k[version][self._next_key[version] & RING_MASK] = k
        self._next_key[version] += 1
        self.sent += 1
        if self._pcap is not None:
            self._pcap.write(record(now_ns, packet))
        return True

    def drain_stamps(self) -> None:
        shared = self.shared
        for version, sock in self._sockets.items():
            key_to_k = self._key_to_k[version]
            for send_key, stamp_ns in read_tx_stamps(sock):
                k = key_to_k[send_key & RING_MASK]
                slot = k & RING_MASK
                # The entry must still be this send's, and the stamp not before the send.
                if shared.ring_k[slot] == k and stamp_ns >= shared.ring_time[slot] - 1000:
                    shared.ring_time[slot] = stamp_ns
                    shared.ring_meta[slot] |= KERNEL_TIME
                    self.stamps += 1
        shared.counters[Counter.TX_STAMPS] = self.stamps

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        # Bad lines of a file or the arguments were reported by the receiver's first pass
        # (check_plan); stdin is read only here.
        self.tally = PlanTally()
        probes: Iterator[PlannedProbe | _BadLine | None]
        if self.plan.file == "-":
            # A stream may pause between lines: read it in a thread, so that meanwhile
            # retries, silences and the TX stamps go on (None: no probe ready yet).
            probes = _StreamedPlan(self.plan, self.tally).probes()
        else:
            probes = iter_probes(self.plan, _resolver, None, tally=self.tally)
        with contextlib.suppress(_Stopped):
            self._loop(probes)
        self._finish()

    def _loop(self, probes: Iterator[PlannedProbe | _BadLine | None]) -> None:
        config = self.config
        rate = config.rate
        retries = config.retries
        wait = config.wait
        capacity = max(1.0, rate * BUCKET_S)
        shared = self.shared
        counters = shared.counters
        delay = self.delay
        pending: PlannedProbe | _BadLine | None = None
        planned = 0
        plan_done = False
        tokens = 1.0
        last = time.monotonic()
        while True:
            if self.stopping:
                break
            now = time.monotonic()
            tokens = min(capacity, tokens + (now - last) * rate)
            last = now
            if counters[Counter.PAUSED]:
                tokens = 0.0  # the consumer of the records lags: wait, drop nothing
            budget = BATCH
            # 1. Probes whose wait is over: concluded, sent again, or reported unanswered.
            while delay and delay[0][0] <= now and budget:
                _due, position, version, source, address, port, attempts, name = delay[0]
                if shared.concluded[position >> 3] & (1 << (position & 7)):
                    delay.popleft()
                    continue
                if attempts <= retries:
                    if tokens < 1.0:
                        break
                    delay.popleft()
                    tokens -= 1.0
                    budget -= 1
                    if self.send(position, version, source, address, port, attempts, name):
                        delay.append((time.monotonic() + wait, position, version, source,
                                      address, port, attempts + 1, name))
                    continue
                delay.popleft()
                self._emit(encode_unanswered(
                    EventKind.UNANSWERED, position, version, source, address, port, attempts,
                    name,
                ))
            # 2. New probes, as far as the tokens go.
            while not plan_done and tokens >= 1.0 and budget:
                if pending is None:
                    try:
                        self.reading_plan = True
                        pending = next(probes)
                    except StopIteration:
                        plan_done = True
                        counters[Counter.PLAN_DONE] = 1
                        break
                    except UsageError as exc:  # a bad stdin line without --skip-bad
                        # The plan ends here; the SYNs before it still get their answers.
                        self.note("fatal", error=str(exc), usage=True)
                        plan_done = True
                        counters[Counter.PLAN_DONE] = 1
                        break
                    finally:
                        self.reading_plan = False
                    if pending is None:
                        break  # the stream has no line ready: come back on the next turn
                    if isinstance(pending, _BadLine):  # skipped (--skip-bad), reported here
                        self._bad_line(pending.message)
                        pending = None
                        continue
                    planned += 1
                    counters[Counter.PLANNED] = planned
                probe = pending
                pending = None
                assert not isinstance(probe, _BadLine)  # handled where it was read
                if probe.position >= config.bitmap_bits:
                    self.note("fatal", error=f"more than {config.bitmap_bits} targets")
                    self.stopping = True
                    break
                if probe.address is None:
                    self.note("unresolved", position=probe.position, version=probe.version,
                              port=probe.port, name=probe.name, error=probe.error)
                    continue
                try:
                    source = self._sources.get(probe.version, probe.address)
                except OSError as exc:
                    self.failed += 1
                    counters[Counter.SEND_FAILED] = self.failed
                    self.note(
                        "send-failed", position=probe.position, version=probe.version,
                        source=None, address=probe.address.hex(), port=probe.port,
                        attempt=1, name=probe.name, error=f"no route: {exc.strerror}",
                    )
                    continue
                if probe.name:
                    self.note("name", position=probe.position, name=probe.name)
                tokens -= 1.0
                budget -= 1
                if self.send(probe.position, probe.version, source, probe.address, probe.port,
                             0, probe.name):
                    delay.append((time.monotonic() + wait, probe.position, probe.version,
                                  source, probe.address, probe.port, 1, probe.name))
            if self.sent != counters[Counter.SENT]:
                if not counters[Counter.SENT]:
                    counters[Counter.FIRST_SEND_NS] = int(now * 1e9)
                counters[Counter.LAST_SEND_NS] = time.monotonic_ns()
                counters[Counter.SENT] = self.sent
            self.drain_stamps()
            if plan_done and not delay:
                break
            self._flush_events()
            # Sleep until the next token or the next due probe, whichever is first.
            now = time.monotonic()
            nap = (1.0 - tokens) / rate if (not plan_done or delay) else 0.0
            if plan_done and delay:
                nap = max(nap, delay[0][0] - now)
            if nap > 0.0002 and budget:
                time.sleep(min(nap, 0.01))

    def _bad_line(self, message: str) -> None:
        self.note("bad-line", message=message)

    def _finish(self) -> None:
        shared = self.shared
        for _due, position, version, source, address, port, attempts, name in self.delay:
            if not shared.is_concluded(position):
                self._emit(encode_unanswered(
                    EventKind.INTERRUPTED, position, version, source, address, port, attempts,
                    name,
                ))
        self.delay.clear()
        time.sleep(0.001)
        self.drain_stamps()
        shared.counters[Counter.SENT] = self.sent
        tally = getattr(self, "tally", PlanTally())
        self.note("done", sent=self.sent, failed=self.failed, stamps=self.stamps,
                  stopped=self.stopping, planned=tally.probes, excluded=tally.excluded,
                  blocklisted=tally.blocklisted, bad_lines=tally.bad_lines,
                  blocklist_hits=dict(tally.blocklist_hits))
        self._flush_events()
        if self._pcap is not None:
            self._pcap.close()
        for sock in self._sockets.values():
            sock.close()


class _BadLine(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _StreamedPlan:
    """The plan of a stdin scan, read by a thread into a bounded queue."""

    _END: Final = object()

    def __init__(self, plan: ScanPlan, tally: PlanTally) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=8192)
        self._plan = plan
        self._tally = tally
        threading.Thread(target=self._read, name="prober-plan", daemon=True).start()

    def _read(self) -> None:
        put = self._queue.put
        try:
            for probe in iter_probes(
                self._plan, _resolver, lambda message: put(_BadLine(message)),
                tally=self._tally,
            ):
                put(probe)
        except Exception as exc:  # handed to the sending thread, raised there
            put(exc)
        put(self._END)

    def probes(self) -> Iterator[PlannedProbe | _BadLine | None]:
        get = self._queue.get_nowait
        while True:
            try:
                item = get()
            except queue.Empty:
                yield None
                continue
            if item is self._END:
                return
            if isinstance(item, _BadLine):
                yield item  # a value, not raised: raising would end this generator
            elif isinstance(item, BaseException):
                raise item  # the plan's own end (a bad line without --skip-bad)
            else:
                yield item  # type: ignore[misc]


class _Stopped(BaseException):
    """SIGTERM during a blocking read of the plan (a BaseException: no handler of the plan's
    may take it for an error of its own)."""


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the parent ends (its thread, strictly: ScanRun starts
    the sender from the thread that runs the scan), and end now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:  # it ended before the prctl
        os._exit(1)


_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def spawn(config_fd: int, pass_fds: tuple[int, ...], stdin: int | None
          ) -> subprocess.Popen[bytes]:
    """Start the sender process (``python -m`` this module). SIGINT and SIGTERM stay blocked
    in it (a signal mask is inherited across exec) until main() has its handlers: a stop
    while it starts is then a stop, not a kill by the default action (nor a traceback from
    KeyboardInterrupt on Ctrl-C at the terminal)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "prober.engine.scan.sender", str(config_fd)],
            pass_fds=pass_fds, stdin=stdin,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def main(argv: list[str]) -> int:
    config_fd = int(argv[1])
    with os.fdopen(config_fd, "r") as config_file:
        config = SenderConfig.from_json(config_file.read())
    _die_with_parent(config.parent_pid)
    sender = Sender(config)

    def stop(_signum: int, _frame: object) -> None:
        sender.stopping = True
        if sender.reading_plan:
            raise _Stopped

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by spawn()
    try:
        sender.run()
    except ProberError as exc:
        with contextlib.suppress(OSError):
            sender.note("fatal", error=str(exc))
            sender._flush_events()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
