"""A model peer for TimeWaitProbe and a virtual-time driver: no root, no sockets.

``ModelPeer`` plays the server: it answers our SYN (with or without timestamps), answers our
request and closes first, ACKs our FIN and then holds TIME-WAIT by Linux's rules
(net/ipv4/tcp_minisocks.c, tcp_timewait_state_process; see the module docstring of
prober/core/timewait.py), with knobs for what other stacks do. Its segments are built with
TcpTemplate and reach the probe through parse_packet. ``TwRun`` drives one probe against one
peer, stepping virtual time to the next deadline or arrival, bounded in steps and time.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
from dataclasses import dataclass, field
from enum import Enum
from functools import cache

from prober.core.packets import TcpTemplate
from prober.core.parse import parse_packet
from prober.core.timewait import TimeWaitProbe
from prober.core.timewait_result import Role, TimeWaitConnection
from prober.core.timing import Stamp
from prober.core.wire import TcpFlags, TcpSegment

MASK = 0xFFFFFFFF
F = TcpFlags
ADDRESSES = {4: ("198.18.0.1", "198.18.0.18"), 6: ("2001:2::1", "2001:2::18")}
SPORT, DPORT = 40001, 80
ISN = 0x0000_0100  # the below-ISN SYNs wrap around 0: sequence arithmetic must be modular
PEER_ISN = 0xFFFF_FFF0
LISTENER_ISN = 0x5EED_0000  # what the listener picks for a new connection (not Linux's TW ISN)
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
RESPONSE = b"HTTP/1.0 200 OK\r\n\r\nhello"
START = 1000.0  # virtual monotonic time of the first SYN
PEER_TS_OFFSET = 3_000_000


class Reopen(Enum):
    """What the model does with a SYN Linux would accept from TIME-WAIT."""

    LINUX = "linux"  # accept, ISN = old SND.NXT + 65537
    OTHER_ISN = "other-isn"  # accept, with an ISN of its own
    REFUSE = "refuse"  # answer it as any unacceptable segment: the TIME-WAIT ACK


class After(Enum):
    """What answers a SYN once the TIME-WAIT is gone."""

    LISTEN = "listen"  # the listener (SYN/ACK; RST when ``listening`` is False)
    SILENT = "silent"  # nothing (a full backlog, a firewall that drops)
    ICMP = "icmp"  # a firewall's ICMP port unreachable (IPv4)


@dataclass(frozen=True)
class PeerConfig:
    version: int = 4
    timestamps: bool = True
    time_wait_s: float = 60.0
    rfc1337: bool = False
    keeps_no_time_wait: bool = False  # ACKs our FIN, then keeps nothing
    resets_our_fin: bool = False  # dropped the connection after its FIN: RSTs ours
    never_closes_first: bool = False
    rate_limit_s: float = 0.5  # tcp_invalid_ratelimit
    lose_answers: frozenset[int] = frozenset()  # its answers after TIME-WAIT entry (1-based)
    reopen: Reopen = Reopen.LINUX
    listening: bool = True
    one_way_s: float = 0.001
    listener_delay_s: float = 0.0  # extra delay of the listener's answers (after TIME-WAIT)
    duplicate_fin_ack_s: float | None = None  # the network repeats its ACK of our FIN after
    lose_fin_ack: bool = False  # the network loses its first ACK of our FIN
    fin_with_response: bool = False  # its FIN rides on the response's last segment
    after_time_wait: After = After.LISTEN  # what answers SYNs once TIME-WAIT is over
    aborts: bool = False  # ends with a RST after its response (SO_LINGER 0)


def s32(value: int) -> int:
    return ((value + 0x80000000) & MASK) - 0x80000000


@cache
def _template(version: int, flags: TcpFlags, timestamps: bool) -> TcpTemplate:
    window = 65160 if flags & F.SYN else 0 if flags & F.RST else 502
    return TcpTemplate(version, flags, window=window, timestamps=timestamps)


class ModelPeer:
    """The server side of one 4-tuple (see module)."""

    def __init__(self, config: PeerConfig) -> None:
        self.config = config
        src, dst = ADDRESSES[config.version]
        self.ours = ipaddress.ip_address(dst).packed  # the peer's address
        self.theirs = ipaddress.ip_address(src).packed  # the probe's
        self.state = "LISTEN"
        self.snd_nxt = PEER_ISN
        self.rcv_nxt = 0
        self.timestamps = False
        self.ts_recent = 0
        self.now = 0.0
        # TIME-WAIT.
        self.tw_rcv_nxt = 0
        self.tw_snd_nxt = 0
        self.tw_entered: float | None = None
        self.tw_deadline: float | None = None
        self.tw_ended: float | None = None
        self.tw_killed_by_rst = False
        self.restarts = 0
        self.last_oow_ms: int | None = None
        self.answers_after_tw = 0
        self.lost = 0
        # After it: new connections the listener opened, and those our RSTs freed.
        self.requests: set[int] = set()
        self.freed = 0
        self.reset_by_us = False
        self.listener_isns = itertools.count(LISTENER_ISN, 0x10000)

    # -- segments out ---------------------------------------------------------------------------
    def _build(
        self, flags: TcpFlags, seq: int, ack: int, payload: bytes = b"", *,
        timestamps: bool | None = None, tsecr: int | None = None,
    ) -> bytes:
        ts = self.timestamps if timestamps is None else timestamps
        ts = ts and not flags & F.RST
        tsval = (round(self.now * 1000) + PEER_TS_OFFSET) & MASK
        return _template(self.config.version, flags, ts).build(
            self.ours, self.theirs, DPORT, SPORT, seq & MASK, ack & MASK, tsval,
            self.ts_recent if tsecr is None else tsecr, payload,
        )

    # -- segments in ----------------------------------------------------------------------------
    def receive(self, tcp: TcpSegment, now: float) -> list[tuple[float, bytes]]:
        """Answers to one of our segments, each with its extra delay."""
        self.now = now
        entered = self.tw_entered
        if self.state == "TIME_WAIT" and self.tw_deadline is not None and now >= self.tw_deadline:
            self.tw_ended = self.tw_deadline
            self.state = "GONE"
        if self.state == "TIME_WAIT":
            out = self._time_wait(tcp)
            return self._count(out)
        if self.tw_entered is not None or self.state == "GONE":
            return self._count(self._listener(tcp))
        out = [(0.0, raw) for raw in self._connection(tcp)]
        repeat = self.config.duplicate_fin_ack_s
        if entered is None and self.tw_entered is not None and repeat is not None and out:
            out.append((repeat, out[-1][1]))
        return out

    def _count(self, out: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        kept = []
        for item in out:
            self.answers_after_tw += 1
            if self.answers_after_tw in self.config.lose_answers:
                self.lost += 1
                continue
            kept.append(item)
        return kept

    def _connection(self, tcp: TcpSegment) -> list[bytes]:
        flags, config = tcp.flags, self.config
        timestamp = tcp.options.timestamp
        if self.state == "LISTEN":
            if flags & F.SYN and not flags & F.ACK:
                self.rcv_nxt = (tcp.seq + 1) & MASK
                self.timestamps = config.timestamps and timestamp is not None
                if timestamp is not None:
                    self.ts_recent = timestamp[0]
                self.state = "SYN_RECEIVED"
                self.snd_nxt = (PEER_ISN + 1) & MASK
                return [self._build(F.SYN | F.ACK, PEER_ISN, self.rcv_nxt)]
            return []
        if self.timestamps and timestamp is not None and tcp.seq == self.rcv_nxt:
            self.ts_recent = timestamp[0]
        if flags & F.RST:
            if tcp.seq == self.rcv_nxt:
                self.reset_by_us = True
                self.state = "CLOSED"
            return []
        out: list[bytes] = []
        if self.state == "SYN_RECEIVED" and flags & F.ACK and tcp.ack == self.snd_nxt:
            self.state = "ESTABLISHED"
        if tcp.payload and tcp.seq == self.rcv_nxt and self.state == "ESTABLISHED":
            self.rcv_nxt = (self.rcv_nxt + len(tcp.payload)) & MASK
            if config.aborts:
                out.append(self._build(F.RST, self.snd_nxt, 0))
                self.state = "CLOSED"
                return out
            if config.fin_with_response and not config.never_closes_first:
                out.append(self._build(F.FIN | F.PSH | F.ACK, self.snd_nxt, self.rcv_nxt,
                                       RESPONSE))
                self.snd_nxt = (self.snd_nxt + len(RESPONSE) + 1) & MASK
                self.state = "FIN_WAIT_1"
                return out
            out.append(self._build(F.PSH | F.ACK, self.snd_nxt, self.rcv_nxt, RESPONSE))
            self.snd_nxt = (self.snd_nxt + len(RESPONSE)) & MASK
            if not config.never_closes_first:
                out.append(self._build(F.FIN | F.ACK, self.snd_nxt, self.rcv_nxt))
                self.snd_nxt = (self.snd_nxt + 1) & MASK
                self.state = "FIN_WAIT_1"
            return out
        if self.state == "FIN_WAIT_1" and flags & F.ACK and tcp.ack == self.snd_nxt:
            self.state = "FIN_WAIT_2"
        if self.state == "FIN_WAIT_2" and flags & F.FIN and tcp.seq == self.rcv_nxt:
            if config.resets_our_fin:
                self.state = "CLOSED"
                self.tw_entered = self.now  # answers from here are phase two's
                return [self._build(F.RST, tcp.ack, 0)]
            self.rcv_nxt = (tcp.seq + len(tcp.payload) + 1) & MASK
            out.append(self._build(F.ACK, self.snd_nxt, self.rcv_nxt))
            self.tw_entered = self.now
            if config.keeps_no_time_wait:
                self.state = "GONE"
                self.tw_ended = self.now
                return out
            self.state = "TIME_WAIT"
            self.tw_rcv_nxt, self.tw_snd_nxt = self.rcv_nxt, self.snd_nxt
            self.tw_deadline = self.now + config.time_wait_s
            if config.lose_fin_ack:
                return []
        return out

    def _reschedule(self) -> None:
        self.restarts += 1
        self.tw_deadline = self.now + self.config.time_wait_s

    def _time_wait(self, tcp: TcpSegment) -> list[tuple[float, bytes]]:
        """tcp_timewait_state_process, for a TIME-WAIT whose timer has not fired."""
        flags, config = tcp.flags, self.config
        timestamp = tcp.options.timestamp
        tsval = None if timestamp is None else timestamp[0]
        paws_reject = tsval is not None and self.timestamps and s32(tsval - self.ts_recent) < 0
        length = len(tcp.payload) + bool(flags & F.SYN) + bool(flags & F.FIN)
        if not paws_reject and tcp.seq == self.tw_rcv_nxt and (length == 0 or flags & F.RST):
            if flags & F.RST:
                if not config.rfc1337:
                    self.state, self.tw_ended, self.tw_killed_by_rst = "GONE", self.now, True
            else:
                self._reschedule()
            if tsval is not None:
                self.ts_recent = tsval
            return []
        if (
            flags & F.SYN and not flags & (F.RST | F.ACK) and not paws_reject
            and (
                s32(tcp.seq - self.tw_rcv_nxt) > 0
                or (tsval is not None and s32(self.ts_recent - tsval) < 0)
            )
            and config.reopen is not Reopen.REFUSE
        ):
            isn = (self.tw_snd_nxt + 65537) & MASK or 1
            if config.reopen is Reopen.OTHER_ISN:
                isn = (isn + 0x1234567) & MASK
            self.state, self.tw_ended = "GONE", self.now
            return [(0.0, self._syn_ack(tcp, isn))]
        if flags & F.RST:
            return []
        if paws_reject or flags & F.ACK:
            self._reschedule()
        if length == 0 or flags & F.SYN:  # tcp_oow_rate_limited: not for data or FIN
            ms = round(self.now * 1000)
            if self.last_oow_ms is not None and 0 <= ms - self.last_oow_ms < round(
                config.rate_limit_s * 1000
            ):
                return []
            self.last_oow_ms = ms
        ack = self._build(F.ACK, self.tw_snd_nxt, self.tw_rcv_nxt)
        return [(0.0, ack)]

    def _syn_ack(self, tcp: TcpSegment, isn: int) -> bytes:
        timestamps = self.config.timestamps and tcp.options.timestamp is not None
        tsecr = 0 if tcp.options.timestamp is None else tcp.options.timestamp[0]
        self.requests.add((tcp.seq + 1) & MASK)
        return self._build(
            F.SYN | F.ACK, isn, tcp.seq + 1, timestamps=timestamps, tsecr=tsecr
        )

    def _icmp(self, tcp: TcpSegment) -> bytes:
        from scapy.layers.inet import ICMP, IP
        from scapy.packet import Raw

        quoted = TcpTemplate(4, tcp.flags, timestamps=False, window=tcp.window).build(
            self.theirs, self.ours, SPORT, DPORT, tcp.seq, tcp.ack
        )
        src, dst = ipaddress.ip_address(self.ours), ipaddress.ip_address(self.theirs)
        return bytes(IP(src=str(src), dst=str(dst)) / ICMP(type=3, code=3) / Raw(quoted[:28]))

    def _listener(self, tcp: TcpSegment) -> list[tuple[float, bytes]]:
        """No TIME-WAIT (any more): the listening socket, and the connections it opened."""
        flags, delay = tcp.flags, self.config.listener_delay_s
        after = self.config.after_time_wait
        if after is After.SILENT:
            return []
        if after is After.ICMP and flags & F.SYN:
            return [(delay, self._icmp(tcp))]
        if flags & F.RST:
            if tcp.seq in self.requests:
                self.requests.discard(tcp.seq)
                self.freed += 1
            return []
        if flags & F.SYN and not flags & F.ACK:
            if not self.config.listening:
                return [(delay, self._build(F.RST | F.ACK, 0, tcp.seq + 1, timestamps=False))]
            return [(delay, self._syn_ack(tcp, next(self.listener_isns)))]
        if flags & F.ACK:
            return [(delay, self._build(F.RST, tcp.ack, 0, timestamps=False))]
        return []


@dataclass
class Handed:
    """A segment the probe handed out: its engine index, when, and what."""

    index: int
    at: float
    raw: bytes
    tcp: TcpSegment
    failed: bool = False


@dataclass
class TwRun:
    """One TimeWaitProbe against one ModelPeer on virtual time."""

    probe: TimeWaitProbe
    peer: ModelPeer
    fail: frozenset[int] = frozenset()  # engine indices whose send fails
    now: float = START
    handed: list[Handed] = field(default_factory=list)
    _flight: list[tuple[float, int, bool, bytes]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def _flush(self) -> None:
        for raw in self.probe.segments_to_send():
            index = len(self.handed)
            tcp = parse_packet(raw).tcp
            assert tcp is not None
            failed = index in self.fail
            self.handed.append(Handed(index, self.now, raw, tcp, failed))
            if failed:
                self.probe.send_failed(index, "No buffer space available")
                continue
            ns = round(self.now * 1e9)
            self.probe.sent(index, Stamp(ns + 1000))
            self.probe.send_kernel_stamp(index, ns)
            self._push(self.now + self.peer.config.one_way_s, True, raw)

    def _push(self, at: float, to_peer: bool, raw: bytes) -> None:
        heapq.heappush(self._flight, (at, next(self._order), to_peer, raw))

    def _deliver(self) -> None:
        at, _, to_peer, raw = heapq.heappop(self._flight)
        self.now = max(self.now, at)
        if to_peer:
            tcp = parse_packet(raw).tcp
            assert tcp is not None
            for delay, answer in self.peer.receive(tcp, self.now):
                self._push(self.now + self.peer.config.one_way_s + delay, False, answer)
        elif not self.probe.done:
            ns = round(self.now * 1e9)
            assert self.probe.receive(parse_packet(raw), self.now, Stamp(ns + 1000, ns))

    def run(
        self, *, interrupt_at: float | None = None, limit_s: float = 1000.0,
        max_steps: int = 100_000,
    ) -> TimeWaitConnection:
        """Until the probe is done (then what is in flight to the peer reaches it)."""
        self.probe.start(self.now)
        self._flush()
        for _ in range(max_steps):
            if self.probe.done:
                break
            deadline = self.probe.next_deadline()
            arrival = self._flight[0][0] if self._flight else None
            times = [t for t in (deadline, arrival) if t is not None]
            assert times, "nothing to wait for, yet not done"
            t = min(times)
            assert t <= START + limit_s, f"virtual time ran past {limit_s} s"
            if interrupt_at is not None and t >= START + interrupt_at:
                self.now = START + interrupt_at
                self.probe.interrupt(self.now)
            elif arrival is not None and arrival <= t:
                self._deliver()
            else:
                self.now = max(self.now, t)
                self.probe.handle_timer(self.now)
            self._flush()
        else:
            raise AssertionError(f"the probe did not end within {max_steps} steps")
        for _ in range(max_steps):
            if not self._flight:
                break
            self._deliver()
            self._flush()
        return self.probe.result()

    def after_close(self) -> list[Handed]:
        """What the probe handed out in phase two (from its first index on)."""
        base = self.probe.connection.spaces().segments_emitted
        return self.handed[base:]


def make_probe(version: int = 4, *, role: Role = Role.DURATION, isn: int = ISN,
               send_data: bytes = REQUEST, **options: object) -> TimeWaitProbe:
    src, dst = ADDRESSES[version]
    return TimeWaitProbe(
        role=role,
        version=version,
        src=ipaddress.ip_address(src).packed,
        dst=ipaddress.ip_address(dst).packed,
        sport=SPORT,
        dport=DPORT,
        isn=isn,
        send_data=send_data,
        **options,  # type: ignore[arg-type]
    )


def run_role(
    config: PeerConfig | None = None,
    *,
    role: Role = Role.DURATION,
    isn: int = ISN,
    fail: frozenset[int] = frozenset(),
    interrupt_at: float | None = None,
    send_data: bytes = REQUEST,
    **options: object,
) -> TwRun:
    """A probe of ``role`` run to its end against a model peer of ``config``."""
    config = config or PeerConfig()
    probe = make_probe(config.version, role=role, isn=isn, send_data=send_data, **options)
    run = TwRun(probe, ModelPeer(config), fail)
    max_time = float(options.get("max_time", 250.0))  # type: ignore[arg-type]
    run.run(interrupt_at=interrupt_at, limit_s=max_time + 100.0)
    return run
