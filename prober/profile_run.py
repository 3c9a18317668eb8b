"""`Prober.profile`: the probes of a profile, in a safe order, and their properties.

The order (each phase on fresh source ports; nothing destructive before the observation it
could spoil):

1. Look: three plain SYNs (RTT, options, TTL) and one ECN-setup SYN. A port that does not
   answer SYN/ACK ends the profile here: every other property is "not measured".
2. Watch, all at once: the half-open watch with its SYN-cookie check, our close, the FIN we
   never acknowledge, the TIME-WAIT run (its duration, its reuse rules, and its RFC 1337 test,
   which kills only the TIME-WAIT of a connection of its own), and our FIN again into another
   TIME-WAIT (apart, so the duration is not restarted by it). Full: up to ``FULL_WATCH_S``;
   ``quick``: a few seconds each, without the TIME-WAIT's duration.
3. Disturb: the RFC 5961 probe, last, since its RSTs and SYN bursts are what a defensive
   stack (or a middlebox) could remember.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from prober.core.profile import ProbeKind, ProfileResult
from prober.core.profile_infer import ProbeResults, infer
from prober.core.stack_defaults import match_stack, meaning
from prober.core.syn import REASON_RANK, Reason

if TYPE_CHECKING:
    from prober.api import Prober

# The long watches of a full profile: a SYN/ACK schedule of 5 retries (63 s) with its
# silence rule; Linux's FIN schedule (a tail loss probe, then 8 RTOs from 200-250 ms: the
# last near 55-61 s) and the silence after it (2.5 x its last gap + 1 s: up to 139 s); a
# TIME-WAIT of Linux's 60 s, FreeBSD's 60 s or Windows' 120 s (240 s reads "at least").
FULL_WATCH_S = 150.0
QUICK_WATCH_S = 5.0
QUICK_CLOSE_TIMEOUT_S = 5.0
FULL_CLOSE_TIMEOUT_S = 10.0
REFIN_AT_S = 1.0
PROGRESS_INTERVAL_S = 0.5


class Phase:
    LOOK = "SYNs: RTT, options, TTL, ECN"
    WATCH = "watching SYN/ACK and FIN retransmissions, the close and TIME-WAIT"
    DISTURB = "RFC 5961: RSTs and SYNs into established connections"


@dataclass(frozen=True, slots=True)
class ProfileProgress:
    """What the live line shows: the phase, seconds so far, and at most how many more."""

    phase: str
    elapsed_s: float
    bound_s: float


def bound_s(quick: bool) -> float:
    """At most how long a profile runs (the watches plus the phases around them)."""
    return (QUICK_WATCH_S + QUICK_CLOSE_TIMEOUT_S if quick else FULL_WATCH_S) + 15.0


async def run_profile(
    prober: Prober,
    host: str,
    port: int,
    *,
    quick: bool,
    send: bytes,
    version: int | None,
    ttl: int,
    stop: asyncio.Event,
    progress: Callable[[ProfileProgress], None] | None,
) -> ProfileResult:
    """See ``Prober.profile``."""
    from prober.api import resolve, source_address_for

    loop = asyncio.get_running_loop()
    started_ns = time.time_ns()
    start = loop.time()
    address = await resolve(host, version)
    source = source_address_for(address)
    target = str(address)
    phase = [Phase.LOOK]
    ticker = None
    if progress is not None:
        ticker = asyncio.ensure_future(_tick(progress, phase, start, bound_s(quick)))
    skipped: dict[ProbeKind, str] = {}
    results = ProbeResults(skipped=skipped)
    try:
        syn, ecn = await asyncio.gather(
            prober.syn(target, port, count=3, interval=0.2, timeout=1.0, ttl=ttl, stop=stop),
            prober.syn(target, port, count=1, timeout=1.0, ttl=ttl, ecn=True, stop=stop),
        )
        results = replace(results, syn=syn, ecn=ecn)
        if syn.reason is not Reason.SYN_ACK and ecn.reason is not Reason.SYN_ACK:
            reason = "no answer" if syn.reason is None else syn.reason.value
            why = f"the port did not answer SYN/ACK ({syn.state.value}: {reason})"
            skipped.update({kind: why for kind in ProbeKind})
        elif not stop.is_set():
            phase[0] = Phase.WATCH
            watch = QUICK_WATCH_S if quick else FULL_WATCH_S
            close_timeout = QUICK_CLOSE_TIMEOUT_S if quick else FULL_CLOSE_TIMEOUT_S
            try:
                async with asyncio.TaskGroup() as group:
                    halfopen = group.create_task(prober.halfopen(
                        target, port, max_wait=watch, ttl=ttl, stop=stop))
                    close = group.create_task(prober.close(
                        target, port, no_wait=True, max_wait=10.0, ttl=ttl, stop=stop))
                    fin = group.create_task(prober.close(
                        target, port, drop_final_ack=True, no_wait=True, max_wait=watch,
                        ttl=ttl, stop=stop))
                    timewait = group.create_task(prober.timewait(
                        target, port, send=send, close_timeout=close_timeout,
                        max_time=FULL_WATCH_S, measure_duration=not quick, reopen=True,
                        assassinate=True, ttl=ttl, stop=stop))
                    refin = group.create_task(prober.timewait(
                        target, port, send=send, close_timeout=close_timeout,
                        measure_duration=False, refin_at=REFIN_AT_S, reopen=False,
                        ttl=ttl, stop=stop))
            except BaseExceptionGroup as failed:
                # The first error, as the single probes raise it (the CLI maps it to its
                # exit status); the other probes were cancelled and freed their peers.
                raise failed.exceptions[0] from None
            results = replace(
                results, halfopen=halfopen.result(), close=close.result(), fin=fin.result(),
                timewait=timewait.result(), refin=refin.result())
            if not stop.is_set():
                phase[0] = Phase.DISTURB
                challenge = await prober.challenge(target, port, ttl=ttl, stop=stop)
                results = replace(results, challenge=challenge)
            else:
                skipped[ProbeKind.CHALLENGE] = "interrupted before it ran"
        else:
            skipped.update({kind: "interrupted before it ran" for kind in ProbeKind
                            if kind not in (ProbeKind.SYN, ProbeKind.ECN)})
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    properties, ladders = infer(results, quick=quick)
    properties = tuple(
        replace(prop, meaning=meaning(prop.name, prop.value)) if prop.value is not None
        else prop
        for prop in properties
    )
    notes = []
    if not send:
        notes.append("no --send: the TIME-WAIT probes need the peer to close first, which a "
                     "server that waits for a request does only after one "
                     "(e.g. --send 'GET / HTTP/1.0\\r\\n\\r\\n')")
    return ProfileResult(
        host=host,
        target=target,
        port=port,
        source=str(source),
        quick=quick,
        started_ns=started_ns,
        elapsed_s=round(loop.time() - start, 3),
        properties=properties,
        match=match_stack(properties),
        ladders=ladders,
        notes=tuple(notes),
        interrupted=stop.is_set(),
        reason=_best_reason(results),
    )


def _best_reason(results: ProbeResults) -> Reason | None:
    reasons = [run.reason for run in (results.syn, results.ecn)
               if run is not None and run.reason is not None]
    return min(reasons, key=REASON_RANK.__getitem__) if reasons else None


async def _tick(progress: Callable[[ProfileProgress], None], phase: list[str], start: float,
                bound: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        progress(ProfileProgress(phase[0], loop.time() - start, bound))
        await asyncio.sleep(PROGRESS_INTERVAL_S)
