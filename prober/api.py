"""The library API: ``async with Prober() as p: run = await p.syn("198.18.0.2", 80, count=5)``.

Every Prober in a process shares one engine (one set of raw sockets per event loop). The CLI is
a thin layer over exactly these calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from prober.core.cookies import IsnKey
from prober.core.packets import TcpTemplate
from prober.core.syn import Reason, SynProbe, SynProbeResult, SynRun, summarize
from prober.core.synack_schedules import DEFAULT_MAX_WAIT
from prober.core.wire import TcpFlags
from prober.engine.engine import DrivenProbe, Engine, Flight, fewer_full_collections
from prober.engine.firewall import Conversation
from prober.engine.ports import CONVERSATION_REST_S
from prober.errors import ResolutionError, UsageError
from prober.targets import check_host, peer_address_problem

if TYPE_CHECKING:
    # Imported where used (halfopen, close): `prober syn` need not pay for those probes.
    from prober.core.challenge import ChallengeResult, ChallengeRole
    from prober.core.close import CloseResult
    from prober.core.halfopen import HalfOpenResult
    from prober.core.profile import ProfileResult
    from prober.core.timewait import TimeWaitProbe
    from prober.core.timewait_result import TimeWaitResult
    from prober.engine.scan.run import ScanRun
    from prober.monitor.loop import Monitor
    from prober.profile_run import ProfileProgress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The longest monitor interval: a day. Beyond it the first round (at the target's phase of
# the interval) could be years away, and an infinite one was a traceback (NaN phases).
MAX_MONITOR_INTERVAL_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A resolved target and the local address the kernel would send to it from."""

    address: Address
    source: Address

    @property
    def version(self) -> int:
        return self.address.version


async def resolve(host: str, version: int | None = None) -> Address:
    """Resolve ``host`` once (a literal passes through); ``version`` 4 or 6 picks the family.

    Raises:
        ResolutionError: the name does not resolve, or not in the requested family.
    """
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if version is not None and literal.version != version:
            raise ResolutionError(
                f"{host} is an IPv{literal.version} address, but -{version} was given"
            )
        _check_peer(literal, host)
        return literal
    try:  # 999.1.1.1 is a mistyped address, not a name to ask DNS about (prober.targets)
        check_host(host)
    except UsageError as exc:
        raise ResolutionError(str(exc)) from None
    family = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[version]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        wanted = "" if version is None else f" (IPv{version})"
        raise ResolutionError(f"cannot resolve {host!r}{wanted}: {exc.strerror}") from None
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        _check_peer(address, host)
        return address
    raise ResolutionError(f"cannot resolve {host!r}: no addresses")


def _check_peer(address: Address, host: str) -> None:
    problem = peer_address_problem(address)
    if problem is not None:
        if host == str(address):
            raise ResolutionError(f"{address} is {problem}")
        raise ResolutionError(f"{host!r} resolves to {address}, {problem}")


LAB_PREFIXES = ("198.18.0.0/15", "2001:2::/48")


def lab_exemptions() -> tuple[str, ...]:
    """The lab's prefixes, which the scan blocklist spares while a prober lab or test
    topology is up (it has a state file under the lab's state directory), else nothing."""
    from prober.lab.state import default_state_dir

    try:
        up = next(default_state_dir().rglob("*.json"), None) is not None
    except OSError:
        up = False
    return LAB_PREFIXES if up else ()


def source_address_for(address: Address) -> Address:
    """The local address the kernel's routing picks for ``address`` (no packet is sent)."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe_socket:
        try:
            probe_socket.connect((str(address), 9))
        except OSError as exc:
            raise UsageError(f"no route to {address}: {exc.strerror}") from None
        return ipaddress.ip_address(probe_socket.getsockname()[0])


class PortReservations:
    """The source ports one halfopen or close run holds, taken from the running loop's engine
    (prober.engine.ports.PortPool: bound sockets reserved once per engine, so no local
    connection can share a probe's 4-tuple); ``release_all`` gives them back, to be handed
    out again only after the peer's TIME-WAIT on them is surely over.

    Construct it inside ``async with Prober()`` (the engine of the running loop is used).
    """

    def __init__(self) -> None:
        self._pool = Engine.running().ports
        self._held: list[int] = []

    def reserve(self, version: int, port: int = 0) -> int:
        """An exclusive source port (``port`` itself when not 0), held for IPv4 and IPv6
        alike whatever ``version`` is.

        Raises:
            SourcePortInUse: ``port`` is held by another socket or probe;
            PortsExhausted: no port is free and none can be reserved.
        """
        reserved = self._pool.reserve(port) if port else self._pool.acquire()
        self._held.append(reserved)
        return reserved

    def release(self, port: int) -> None:
        if port in self._held:
            self._held.remove(port)
            self._pool.release(port, rest_s=CONVERSATION_REST_S)

    def release_all(self) -> None:
        for port in self._held:
            self._pool.release(port, rest_s=CONVERSATION_REST_S)
        self._held.clear()


def _check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    # Written so that NaN, which every comparison refuses, is out of range too.
    if not value >= low or (high is not None and not value <= high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise UsageError(f"invalid {name} {value}: must be {bound}")


class Prober:
    """The async library API. Use as ``async with Prober() as p: ...``.

    Args:
        isn_key: the secret behind every probe's ISN; a fresh random one per Prober by default.
    """

    def __init__(self, *, isn_key: IsnKey | None = None) -> None:
        self._isn_key = isn_key or IsnKey.random()
        self._engine: Engine | None = None
        self._monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()

    async def __aenter__(self) -> Prober:
        self._engine = Engine.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for running in list(self._monitors):  # a reader that broke out of its loop
            await running.aclose()
        if self._engine is not None:
            self._engine.release()
            self._engine = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("use Prober inside 'async with'")
        return self._engine

    async def syn(
        self,
        host: str,
        port: int,
        *,
        count: int = 1,
        interval: float = 1.0,
        timeout: float = 1.0,
        version: int | None = None,
        source_port: int | None = None,
        ttl: int = 64,
        ecn: bool = False,
        on_probe: Callable[[SynProbeResult], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> SynRun:
        """Send ``count`` SYNs, ``interval`` seconds apart, and classify the port.

        Args:
            host: an IPv4/IPv6 literal or a name (resolved once, before the first probe).
            port: the target port.
            count: probes to send; 0 sends until ``stop`` is set.
            interval: seconds between sends.
            timeout: seconds to wait for each probe's answer.
            version: 4 or 6 to pick the family of a name.
            source_port: one fixed source port for every probe (default: a port of the
                engine's reserved block per probe, held until the probe has its outcome;
                shared by several probes only when every port of the block is held).
            ttl: IP TTL / hop limit of the SYNs.
            ecn: send ECN-setup SYNs (ECE and CWR set, RFC 3168 §6.1.1); a peer that agrees
                answers with ECE in its SYN/ACK (``TcpReply.flags`` shows ``E``).
            on_probe: called with each probe's result as soon as it is known. If it raises,
                the run ends: no further probe is sent, probes still waiting are interrupted
                (and not passed to it), every probe is retired and its port released, and
                then ``syn`` raises that same exception.
            stop: when set, no further probe is sent and unanswered ones end as interrupted.

        Returns:
            The run: every probe's result and the verdict (state, reason, RTT statistics).

        Raises:
            UsageError: bad arguments; ResolutionError: the name does not resolve;
            SourcePortInUse; RawSocketsNotPermitted; whatever ``on_probe`` raised.

        While a run is active the cyclic garbage collector's oldest generation is collected
        less often (process-wide; restored when the last run ends): a run keeps every probe
        until it returns, and full collections walking them all cost 15 µs per probe.
        """
        _check_range("port", port, 1, 65535)
        _check_range("count", count, 0)
        _check_range("interval", interval, 0)
        _check_range("timeout", timeout, 0.001)
        _check_range("ttl", ttl, 1, 255)
        if source_port is not None:
            _check_range("source port", source_port, 1, 65535)
        engine = self.engine
        address, source = await self._prepare(host, version)
        flags = TcpFlags.SYN | (TcpFlags.ECE | TcpFlags.CWR if ecn else 0)
        template = TcpTemplate(address.version, flags, ttl=ttl)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        ports = engine.ports
        fixed_port = None if source_port is None else ports.reserve(source_port)
        drops_before = engine.take_kernel_drops()
        dst, src = address.packed, source.packed
        waiting: set[Flight] = set()  # launched, no outcome yet
        settled: deque[tuple[float, Flight]] = deque()  # outcome known, still routed
        port_returned: set[Flight] = set()  # settled with an answer: port already given back
        results: list[SynProbeResult] = []
        invalid = 0
        progress = asyncio.Event()
        # What on_probe raised: the run ends (nothing more is sent, probes still waiting are
        # interrupted, every flight is retired and its port released), then it is re-raised.
        callback_errors: list[Exception] = []
        run_scope = contextlib.ExitStack()

        def finished(flight: Flight) -> None:
            waiting.discard(flight)
            settled.append((loop.time(), flight))
            progress.set()
            result = _syn_probe(flight).result()
            if fixed_port is None and result.reason in PORT_FREE_AT_OUTCOME:
                # An answer has already made the local kernel reset the peer's request (or
                # there was none), so the port is as good as new for the next probe, which
                # the free list gives it only after every other port of the block. A probe
                # without an answer keeps its port until retired: a slow peer may still hold
                # its request. Flights sharing a 4-tuple are told apart by their ISNs.
                port_returned.add(flight)
                ports.release(flight.key[2])
            if on_probe is not None and not callback_errors:
                try:
                    on_probe(result)
                except Exception as exc:  # the user's; never into the engine's reader
                    callback_errors.append(exc)

        def retire(flight: Flight) -> None:
            # Taken afresh: duplicates and late answers may have come since it was reported.
            nonlocal invalid
            engine.retire(flight)
            invalid += flight.invalid
            if flight.reported:
                results.append(_syn_probe(flight).result())
            if fixed_port is None and flight not in port_returned:
                ports.release(flight.key[2])
            port_returned.discard(flight)

        def retire_settled(now: float) -> None:
            # A settled probe stays routed for one more timeout, so a late or duplicate answer
            # is counted against it.
            while settled and settled[0][0] + timeout <= now:
                retire(settled.popleft()[1])

        def launch(number: int) -> None:
            sport = fixed_port or ports.acquire(share=True)
            probe = SynProbe(
                number=number,
                template=template,
                src=src,
                dst=dst,
                sport=sport,
                dport=port,
                isn=self._isn_key.isn(src, dst, sport, port, number),
                timeout=timeout,
                tsval=time.monotonic_ns() // 1_000_000 & 0xFFFFFFFF,
            )
            key = (dst, port, sport)
            flight = engine.launch(probe, address.version, str(address), key, finished)
            if not flight.reported:
                waiting.add(flight)

        # One waiter on `stop` for the whole run: pacing between probes is a timer entry,
        # never a task per probe.
        stopped = asyncio.ensure_future(stop.wait())
        run_scope.callback(stopped.cancel)
        try:
            run_scope.enter_context(fewer_full_collections())
            start = loop.time()
            number = 0
            while (count == 0 or number < count) and not stop.is_set() and not callback_errors:
                # Every probe already due goes out now, up to a batch (all of them at -i 0);
                # then the loop runs once, so the reader and the timer run between batches.
                for _ in range(SEND_BATCH):
                    number += 1
                    launch(number)
                    if callback_errors or (count and number >= count):
                        break
                    if start + number * interval > loop.time():
                        break
                if callback_errors or (count and number >= count):
                    break
                await _pause(stopped, start + number * interval - loop.time())
                retire_settled(loop.time())
            while waiting and not stop.is_set() and not callback_errors:
                progress.clear()
                await _wait_either(progress, stop)
            for flight in list(waiting):
                _syn_probe(flight).interrupt()
                engine.poke(flight)
        finally:
            for flight in [*waiting, *(f for _, f in settled)]:
                retire(flight)
            # No cycle through on_done outlives the run (flights -> finished -> these sets).
            waiting.clear()
            settled.clear()
            if fixed_port is not None:
                ports.release(fixed_port)
            run_scope.close()
        if callback_errors:
            raise callback_errors[0]
        results.sort(key=lambda r: r.probe)
        return summarize(
            host,
            str(address),
            port,
            results,
            invalid=invalid,
            kernel_drops=engine.take_kernel_drops() - drops_before,
        )

    def scan(
        self,
        targets: Iterable[str] = (),
        *,
        file: str | Path | None = None,
        ports: str | None = None,
        exclude: Sequence[str | Path] = (),
        blocklist: bool = True,
        skip_bad: Callable[[str], None] | None = None,
        rate: float = 1000.0,
        retries: int = 0,
        wait: float = 2.0,
        seed: int | None = None,
        shard: tuple[int, int] = (0, 1),
        version: int | None = None,
        pcap: str | Path | None = None,
    ) -> ScanRun:
        """A SYN scan of many targets on the stateless path: ``async for result in p.scan(...)``.

        Args:
            targets: ``HOST:PORTS``, ``[V6]:PORTS``, CIDR blocks, ``HOST`` with ``ports``.
            file: a targets file (one target per line, ``#`` comments), or ``"-"`` for stdin.
            ports: ports for targets written without any (``-p``), e.g. ``"22,80,8000-8100"``.
            exclude: files of targets (same syntax; a bare host or block means every port)
                that are not probed.
            blocklist: skip special-purpose addresses (IANA registry) inside CIDR blocks.
            skip_bad: called with ``"SOURCE:LINE: ..."`` for each bad line, which is
                skipped; without it a bad line raises UsageError before anything is sent
                (for stdin: when it is reached, and the scan stops).
            rate: SYNs per second (token bucket).
            retries: re-sends of a SYN that had no answer within ``wait`` (at most 63).
            wait: seconds to wait for an answer after each SYN.
            seed: keys the probe order (random by default); the same seed, targets and
                shards give the same order.
            shard: ``(index, count)``, 0-based: this machine probes every count-th target.
            version: 4 or 6, the family that names resolve to.
            pcap: write every SYN sent and every answer to this file.

        Returns:
            A ScanRun: iterate it for ScanResult records; its ``summary`` is set at the end.

        Raises:
            UsageError: a bad argument or target (file and line named).
        """
        from prober.engine.scan.run import ScanOptions, ScanRun
        from prober.engine.scan.shared import ATTEMPT_MASK
        from prober.scan_plan import ScanPlan

        _check_range("rate", rate, 1, 10_000_000)
        _check_range("retries", retries, 0, ATTEMPT_MASK)  # the send ring numbers attempts so
        _check_range("wait", wait, 0)
        index, count = shard
        if not (count >= 1 and 0 <= index < count):
            raise UsageError(f"invalid shard {index + 1}/{count}: expected I/N with 1 <= I <= N")
        if version not in (None, 4, 6):
            raise UsageError(f"invalid IP version {version}: expected 4 or 6")
        plan = ScanPlan(
            targets=tuple(targets),
            file=None if file is None else str(file),
            ports=ports,
            exclude=tuple(str(path) for path in exclude),
            blocklist=blocklist,
            exempt=lab_exemptions(),
            seed=secrets.randbits(64) if seed is None else seed,
            shard=index,
            shards=count,
            version=version,
            skip_bad=skip_bad is not None,
        )
        options = ScanOptions(
            rate=rate, retries=retries, wait=wait, pcap=None if pcap is None else Path(pcap)
        )
        return ScanRun(plan, options, on_bad=skip_bad)

    async def _prepare(self, host: str, version: int | None) -> tuple[Address, Address]:
        """Resolve once, pick the source address, and fail early without raw sockets."""
        address = await resolve(host, version)
        source = source_address_for(address)
        self.engine.send_socket(address.version)
        return address, source

    async def halfopen(
        self,
        host: str,
        port: int,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        syn_timeout: float = 1.0,
        leave_open: bool = False,
        cookie_check: bool = True,
        kernel_rst: bool = False,
        version: int | None = None,
        source_port: int | None = None,
        ttl: int = 64,
        stop: asyncio.Event | None = None,
    ) -> HalfOpenResult:
        """Send a SYN, never the final ACK, and record how the peer retransmits its SYN/ACK.

        Args:
            host, port: the target (a name is resolved once).
            max_wait: seconds to watch at most; a watch it ends before the silence rule
                could conclude says so (``HalfOpenResult.caveat``, ``peer_gave_up``).
            syn_timeout: seconds to wait for the first answer.
            leave_open: do not send a RST at the end to free the peer's request.
            cookie_check: also run the SYN-cookie check on a second source port.
            kernel_rst: let the local kernel answer the SYN/ACK with its RST (no
                suppression), to watch the difference.
            version, source_port, ttl, stop: as for ``syn``.

        Returns:
            The SYN/ACK arrivals, how the peer gave up, and the SYN-cookie verdict.

        Raises:
            UsageError, ResolutionError, SourcePortInUse, RawSocketsNotPermitted,
            FirewallUnavailable (nftables missing).
        """
        from prober.core.halfopen import CookieCheckProbe, HalfOpenProbe

        _check_range("port", port, 1, 65535)
        _check_range("max wait", max_wait, 0.001)
        _check_range("SYN timeout", syn_timeout, 0.001)
        _check_range("ttl", ttl, 1, 255)
        address, source = await self._prepare(host, version)
        dst, src = address.packed, source.packed
        cookie_check = cookie_check and not kernel_rst
        reservations = PortReservations()
        try:
            main_port = reservations.reserve(address.version, source_port or 0)
            probes: list[tuple[DrivenProbe, int]] = [
                (
                    HalfOpenProbe(
                        template=TcpTemplate(address.version, TcpFlags.SYN, ttl=ttl),
                        src=src,
                        dst=dst,
                        sport=main_port,
                        dport=port,
                        isn=self._isn_key.isn(src, dst, main_port, port, 1),
                        syn_timeout=syn_timeout,
                        max_wait=max_wait,
                        leave_open=leave_open,
                    ),
                    main_port,
                )
            ]
            if cookie_check:
                check_port = reservations.reserve(address.version)
                probes.append(
                    (
                        CookieCheckProbe(
                            src=src,
                            dst=dst,
                            sport=check_port,
                            dport=port,
                            isn=self._isn_key.isn(src, dst, check_port, port, 2),
                            syn_timeout=syn_timeout,
                            ttl=ttl,
                            number=2,
                        ),
                        check_port,
                    )
                )
            flights = await self._converse(address, port, probes, kernel_rst, stop)
        finally:
            reservations.release_all()
        halfopen = flights[0].probe
        assert isinstance(halfopen, HalfOpenProbe)
        evidence = None
        if cookie_check:
            check = flights[1].probe
            assert isinstance(check, CookieCheckProbe)
            evidence = check.result()
        # The verdict's policy (kernel_rst included) is core's: judge_cookies.
        return halfopen.result().with_cookie_check(evidence, kernel_rst=kernel_rst)

    async def close(
        self,
        host: str,
        port: int,
        *,
        peer_closes: bool = False,
        send: bytes = b"",
        drop_final_ack: bool = False,
        msl: float = 30.0,
        no_wait: bool = False,
        max_wait: float = 120.0,
        handshake_timeout: float = 3.0,
        kernel_rst: bool = False,
        version: int | None = None,
        source_port: int | None = None,
        ttl: int = 64,
        stop: asyncio.Event | None = None,
    ) -> CloseResult:
        """Open a connection in user space, optionally send data, and observe the close.

        Args:
            host, port: the target (a name is resolved once).
            peer_closes: wait for the peer's FIN instead of sending ours first.
            send: bytes to send once the connection is established.
            drop_final_ack: never acknowledge the peer's FIN; record its retransmissions.
            msl: after an active close we hold TIME-WAIT for 2 x ``msl`` seconds...
            no_wait: ...unless this is set (or ``stop`` is set: Ctrl-C cuts it short).
            max_wait: seconds to wait for the peer after the handshake.
            handshake_timeout: seconds to wait for the SYN/ACK.
            kernel_rst: no RST suppression (the local kernel will reset the connection).
            version, source_port, ttl, stop: as for ``syn``; ``stop`` ends the conversation
                with a RST that frees the peer, and so does cancelling the task (the RST
                goes out before the cancellation propagates).

        Returns:
            Every segment with kernel timestamps and both sides' states, the close's kind
            (four-way, three-way, simultaneous, peer-first, reset) and its timings.

        Raises:
            UsageError, ResolutionError, SourcePortInUse, RawSocketsNotPermitted,
            FirewallUnavailable (nftables missing).
        """
        from prober.core.close import CloseMode, CloseProbe

        _check_range("port", port, 1, 65535)
        _check_range("MSL", msl, 0)
        _check_range("max wait", max_wait, 0.001)
        _check_range("handshake timeout", handshake_timeout, 0.001)
        _check_range("ttl", ttl, 1, 255)
        address, source = await self._prepare(host, version)
        dst, src = address.packed, source.packed
        reservations = PortReservations()
        try:
            sport = reservations.reserve(address.version, source_port or 0)
            probe = CloseProbe(
                version=address.version,
                src=src,
                dst=dst,
                sport=sport,
                dport=port,
                isn=self._isn_key.isn(src, dst, sport, port, 1),
                mode=CloseMode.PEER_CLOSES if peer_closes else CloseMode.WE_CLOSE,
                send_data=send,
                drop_final_ack=drop_final_ack,
                msl=msl,
                no_wait=no_wait,
                max_wait=max_wait,
                handshake_timeout=handshake_timeout,
                ttl=ttl,
            )
            await self._converse(address, port, [(probe, sport)], kernel_rst, stop)
        finally:
            reservations.release_all()
        return probe.result()

    async def timewait(
        self,
        host: str,
        port: int,
        *,
        send: bytes = b"",
        close_timeout: float = 10.0,
        step: float = 1.0,
        max_time: float = 250.0,
        measure_duration: bool = True,
        refin_at: float | None = None,
        reopen: bool = True,
        assassinate: bool = False,
        handshake_timeout: float = 3.0,
        version: int | None = None,
        source_port: int | None = None,
        ttl: int = 64,
        stop: asyncio.Event | None = None,
        progress: Callable[[TimeWaitProbe, float], None] | None = None,
    ) -> TimeWaitResult:
        """Make the peer close first, then observe the TIME-WAIT it holds (docs/timewait.md).

        Each question runs on a connection of its own (a fresh source port), all at once:
        the duration (a SYN below the old sequence space every ``step`` seconds until the
        answer is no longer the TIME-WAIT's ACK), the reopening SYNs (``reopen``: one above
        the old sequence space, one with a newer TSval) and the assassination
        (``assassinate``: a RST at RCV.NXT + 1, then one at exactly RCV.NXT).

        Args:
            host, port: the target (a name is resolved once).
            send: bytes to send once connected: a request the server answers and closes on.
            close_timeout: seconds after the handshake for the peer to close first.
            step: seconds between the duration's probes; max_time: when they stop.
            measure_duration: False: one probe says whether TIME-WAIT is held, no duration.
            refin_at: seconds into the peer's TIME-WAIT to send our FIN again, as if its
                final ACK had been lost (the peer re-ACKs and restarts 2 MSL), or None.
            reopen, assassinate: run those connections too.
            handshake_timeout, version, source_port (the duration's connection), ttl,
                stop: as for ``close``. ``stop`` ends the run; the peer's TIME-WAIT is left
                to run out.
            progress: called about twice a second with the duration's probe and the
                loop's time (for a live line; see ``TimeWaitProbe.elapsed``/``probes``).

        Returns:
            Whether the peer holds TIME-WAIT, for how long, and how it answered each probe,
            with every connection's ladder.

        Raises:
            UsageError, ResolutionError, SourcePortInUse, RawSocketsNotPermitted,
            FirewallUnavailable (nftables missing).
        """
        from prober.core.timewait import MAX_BELOW_PROBES, TimeWaitProbe
        from prober.core.timewait_result import Role, summarize

        _check_range("port", port, 1, 65535)
        _check_range("close timeout", close_timeout, 0.001)
        _check_range("step", step, 0.01)
        _check_range("max", max_time, step)
        _check_range("handshake timeout", handshake_timeout, 0.001)
        _check_range("ttl", ttl, 1, 255)
        if refin_at is not None and not 0 < refin_at < max_time:
            raise UsageError(f"refin must lie between 0 and max ({max_time:g} s)")

        if measure_duration and max_time / step > MAX_BELOW_PROBES:
            raise UsageError(
                f"max / step allows at most {MAX_BELOW_PROBES} probes; "
                f"a step of {max_time / MAX_BELOW_PROBES:.3g} s or more covers {max_time:g} s"
            )
        address, source = await self._prepare(host, version)
        dst, src = address.packed, source.packed
        roles = [Role.DURATION]
        if reopen:
            roles += [Role.ABOVE_ISN, Role.NEWER_TSVAL]
        if assassinate:
            roles.append(Role.ASSASSINATE)
        reservations = PortReservations()
        ticker: asyncio.Task[None] | None = None
        try:
            probes: list[tuple[DrivenProbe, int]] = []
            for number, role in enumerate(roles, start=1):
                wanted = source_port if role is Role.DURATION and source_port else 0
                sport = reservations.reserve(address.version, wanted)
                probe = TimeWaitProbe(
                    role=role,
                    version=address.version,
                    src=src,
                    dst=dst,
                    sport=sport,
                    dport=port,
                    isn=self._isn_key.isn(src, dst, sport, port, number),
                    send_data=send,
                    close_timeout=close_timeout,
                    handshake_timeout=handshake_timeout,
                    ttl=ttl,
                    step=step,
                    max_time=max_time,
                    measure_duration=measure_duration,
                    refin_at=refin_at,
                )
                probes.append((probe, sport))
            duration_probe = probes[0][0]
            assert isinstance(duration_probe, TimeWaitProbe)
            if progress is not None:
                ticker = asyncio.ensure_future(_tick(duration_probe, progress))
            # Stopped mid-probe, answers may still be on the way: our RST suppression stays
            # until they are in, or the kernel's RST to one would end the peer's TIME-WAIT.
            await self._converse(
                address, port, probes, False, stop, stopped_settle=STOPPED_TIMEWAIT_SETTLE_S
            )
        finally:
            if ticker is not None:
                ticker.cancel()
            reservations.release_all()
        connections = []
        for driven, _sport in probes:
            assert isinstance(driven, TimeWaitProbe)
            connections.append(driven.result())
        return summarize(
            target=str(address),
            port=port,
            source=str(source),
            connections=connections,
            step=step,
            max_time=max_time,
            measure_duration=measure_duration,
            refin_at=refin_at,
        )

    async def challenge(
        self,
        host: str,
        port: int,
        *,
        send: bytes = b"",
        roles: Iterable[ChallengeRole] | None = None,
        handshake_timeout: float = 3.0,
        version: int | None = None,
        ttl: int = 64,
        stop: asyncio.Event | None = None,
    ) -> ChallengeResult:
        """Ask an established connection the RFC 5961 questions (docs/challenge.md).

        Each role runs on a connection of its own (a fresh source port), all at once: a RST
        in the window but not at RCV.NXT, a RST far outside it, a SYN, and SYNs every 50 ms
        for 2 s (how often challenge ACKs come). Each ends with a RST at exactly RCV.NXT
        that frees the peer's connection, unless the peer reset it.

        Args:
            host, port: the target (a name is resolved once).
            send: bytes to send once connected, acknowledged before the probe (a request the
                server does not answer by closing).
            roles: the questions to ask (``ChallengeRole``; default: all of them).
            handshake_timeout, version, ttl: as for ``close``.
            stop: ends the run; every connection still open is freed with its RST.

        Returns:
            Each role's answer with its evidence and ladder, and the RATE connection's
            shortest interval between challenge ACKs.

        Raises:
            UsageError, ResolutionError, PortsExhausted, RawSocketsNotPermitted,
            FirewallUnavailable (nftables missing).
        """
        from prober.core.challenge import ChallengeProbe, ChallengeRole, summarize

        _check_range("port", port, 1, 65535)
        _check_range("handshake timeout", handshake_timeout, 0.001)
        _check_range("ttl", ttl, 1, 255)
        wanted = list(ChallengeRole) if roles is None else list(dict.fromkeys(roles))
        if not wanted:
            raise UsageError("no challenge role to run")
        address, source = await self._prepare(host, version)
        dst, src = address.packed, source.packed
        stop = stop or asyncio.Event()
        reservations = PortReservations()
        try:
            probes: list[tuple[DrivenProbe, int]] = []
            for number, role in enumerate(wanted, start=1):
                sport = reservations.reserve(address.version)
                probe = ChallengeProbe(
                    role=ChallengeRole(role),
                    version=address.version,
                    src=src,
                    dst=dst,
                    sport=sport,
                    dport=port,
                    isn=self._isn_key.isn(src, dst, sport, port, number),
                    send_data=send,
                    handshake_timeout=handshake_timeout,
                    ttl=ttl,
                )
                probes.append((probe, sport))
            await self._converse(address, port, probes, False, stop)
        finally:
            reservations.release_all()
        connections = []
        for driven, _sport in probes:
            assert isinstance(driven, ChallengeProbe)
            connections.append(driven.result())
        return summarize(
            target=str(address),
            port=port,
            source=str(source),
            connections=connections,
            interrupted=stop.is_set(),
        )

    def monitor(
        self,
        targets: Sequence[tuple[str, int]],
        *,
        interval: float = 5.0,
        timeout: float = 1.0,
        resolve_every: float = 300.0,
        window: int = 100,
        version: int | None = None,
        ttl: int = 64,
        stop: asyncio.Event | None = None,
    ) -> Monitor:
        """Probe every target once per ``interval``, each at its own phase, and yield one
        sample per target per round with its rolling statistics, until ``stop`` is set or
        the iterator is closed: ``async for sample in p.monitor([("198.18.0.18", 80)])``.

        Args:
            targets: (host, port) pairs; a name is resolved before the first round and
                every ``resolve_every`` seconds.
            interval: seconds between one target's probes; timeout: seconds to wait for an
                answer (at most ``interval``).
            window: rounds the percentiles and the loss cover.
            version, ttl: as for ``syn``.

        Returns:
            A ``Monitor``: an async iterator of ``MonitorSample`` (frozen; ``to_dict()`` is
            the JSON line), whose ``set_targets`` replaces the list while it runs. A name
            that stops resolving or a send that fails is a sample (``UNRESOLVED``,
            ``SEND_FAILED``), never an exception. Leaving the loop early: ``await
            monitor.aclose()`` or ``async with`` it (the Prober closes it on exit anyway).

        Raises:
            UsageError: (on the first step) no targets, or timeout not in (0, interval].
        """
        from prober.monitor.loop import MAX_WINDOW, Monitor

        for _host, port in targets:
            _check_range("port", port, 1, 65535)
        _check_range("interval", interval, 0.01, MAX_MONITOR_INTERVAL_S)
        _check_range("resolve every", resolve_every, 1.0)
        _check_range("window", window, 1, MAX_WINDOW)
        _check_range("ttl", ttl, 1, 255)
        running = Monitor(self, targets, interval=interval, timeout=timeout,
                          resolve_every=resolve_every, window=window, version=version,
                          ttl=ttl, stop=stop)
        self._monitors.add(running)
        return running

    async def profile(
        self,
        host: str,
        port: int,
        *,
        quick: bool = False,
        send: bytes = b"",
        version: int | None = None,
        ttl: int = 64,
        stop: asyncio.Event | None = None,
        progress: Callable[[ProfileProgress], None] | None = None,
    ) -> ProfileResult:
        """A report card of the peer's TCP behaviour (docs/profile.md): its options, SYN/ACK
        and FIN retransmission schedules, SYN cookies, close, TIME-WAIT, RFC 1337 and
        RFC 5961 answers, each property with its value and the segments it rests on, and
        the known stack whose defaults it matches (or unknown).

        Args:
            host, port: the target (a name is resolved once). It should be a host you own:
                the profile holds half-open requests, leaves TIME-WAITs and sends RSTs.
            quick: watch each schedule a few seconds only and skip the TIME-WAIT's
                duration (about 10 s instead of about 2.5 min); those properties then read
                "at least" or "not measured".
            send: bytes to send on the TIME-WAIT connections once connected: a request the
                server answers and closes on (the peer must close first to hold TIME-WAIT).
            version, ttl, stop: as for ``syn``; ``stop`` ends the run with what was seen.
            progress: called about twice a second with the phase and the time so far.

        Returns:
            The properties (``ProfileResult.get(PropertyName.SYNACK_RETRIES)``), the stack
            match and every probe's ladder.

        Raises:
            UsageError, ResolutionError, SourcePortInUse, RawSocketsNotPermitted,
            FirewallUnavailable (nftables missing).
        """
        from prober.profile_run import run_profile

        _check_range("port", port, 1, 65535)
        _check_range("ttl", ttl, 1, 255)
        return await run_profile(self, host, port, quick=quick, send=send, version=version,
                                 ttl=ttl, stop=stop or asyncio.Event(), progress=progress)

    async def _converse(
        self,
        address: Address,
        port: int,
        probes: list[tuple[DrivenProbe, int]],
        kernel_rst: bool,
        stop: asyncio.Event | None,
        *,
        stopped_settle: float = 0.0,
    ) -> list[Flight]:
        """Run probes that hold a conversation until each is done, with the local kernel's
        RSTs suppressed on their 4-tuples; ``stop`` interrupts them (they send their RSTs).

        A cancelled task interrupts them too: the RST that frees the peer's state goes out
        (the engine sends synchronously) before the cancellation goes on."""
        engine = self.engine
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        conversations = [Conversation(sport, address, port) for _, sport in probes]
        waiting: set[Flight] = set()
        progress = asyncio.Event()
        flights: list[Flight] = []

        def finished(flight: Flight) -> None:
            waiting.discard(flight)
            progress.set()

        def interrupt_waiting() -> None:
            for flight in list(waiting):
                interrupt = getattr(flight.probe, "interrupt", None)
                if interrupt is not None:
                    interrupt(loop.time())
                engine.poke(flight)

        try:
            if not kernel_rst:
                for conversation in conversations:
                    engine.suppress_rsts(conversation)
            for probe, sport in probes:
                flight = engine.launch(
                    probe, address.version, str(address), (address.packed, port, sport), finished
                )
                flights.append(flight)
                if not flight.reported:
                    waiting.add(flight)
            while waiting and not stop.is_set():
                progress.clear()
                await _wait_either(progress, stop)
            interrupt_waiting()
            # A moment for the last segments' TX stamps and for late copies to be counted.
            await asyncio.sleep(max(SETTLE_SECONDS, stopped_settle if stop.is_set() else 0.0))
        finally:
            # Cancelled (or failed) mid-conversation: free the peers before leaving.
            interrupt_waiting()
            for flight in flights:
                engine.retire(flight)
            if not kernel_rst:
                for conversation in conversations:
                    engine.allow_rsts(conversation)
        return flights


SETTLE_SECONDS = 0.05
# After a stopped timewait: the answers of a path up to this RTT are still suppressed.
STOPPED_TIMEWAIT_SETTLE_S = 1.0
# Outcomes after which a SYN probe's source port can serve the next probe at once.
PORT_FREE_AT_OUTCOME = frozenset(
    {Reason.SYN_ACK, Reason.RST, Reason.ICMP_UNREACHABLE, Reason.ICMP_TIME_EXCEEDED,
     Reason.SEND_FAILED}
)
# SYNs sent back to back before the loop runs once (when they are due at once, as at -i 0).
SEND_BATCH = 64


def _syn_probe(flight: Flight) -> SynProbe:
    probe = flight.probe
    assert isinstance(probe, SynProbe)
    return probe


PROGRESS_INTERVAL_S = 0.5


async def _tick(probe: TimeWaitProbe, progress: Callable[[TimeWaitProbe, float], None]) -> None:
    loop = asyncio.get_running_loop()
    while not probe.done:
        progress(probe, loop.time())
        await asyncio.sleep(PROGRESS_INTERVAL_S)


async def _pause(stopped: asyncio.Task[Any], seconds: float) -> None:
    """Sleep ``seconds`` unless ``stopped`` completes first; always yields to the loop once."""
    if seconds <= 0 or stopped.done():
        await asyncio.sleep(0)
        return
    await asyncio.wait((stopped,), timeout=seconds)


async def _wait_either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
