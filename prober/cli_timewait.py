"""The ``prober timewait`` command (docs/timewait.md): parse, call ``Prober.timewait``, render.

Registered on prober.cli's app (imported there); the probe and its renderer are imported
inside the command.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from prober import cli
from prober.cli import (
    Exit,
    HandshakeTimeoutOption,
    Ipv4Option,
    Ipv6Option,
    JsonOption,
    PcapOption,
    SendFileOption,
    SendOption,
    SourcePortOption,
    TargetArgument,
    TtlOption,
    _check_writable,
    _conclude,
    _fail,
    _payload,
    _run,
    _seconds,
    _target,
    app,
    exit_of_handshake,
)

if TYPE_CHECKING:
    from prober.core.timewait import TimeWaitProbe
    from prober.core.timewait_result import TimeWaitResult


def exit_of_timewait(result: TimeWaitResult) -> Exit:
    """0 when the run gave its verdicts; the handshake's code when there was no connection;
    11 when the peer did not close first (or the close did not complete); 130 interrupted."""
    from prober.core.close import Handshake
    from prober.core.timewait_result import PeerClose

    if result.interrupted:
        return Exit.INTERRUPTED
    if result.handshake is not Handshake.OPEN:
        return exit_of_handshake(result.handshake)
    if result.peer_close in (PeerClose.DID_NOT_CLOSE, PeerClose.INCOMPLETE):
        return Exit.NOT_CLOSED_FIRST
    return Exit.OPEN


class _ProgressLine:
    """One line on stderr, rewritten in place: how far into the peer's TIME-WAIT we are;
    before it, once the probing has started (not before a bad target's one-line error, nor
    when the peer never closed), the ``banner`` if any. ``live`` False: the banner only."""

    def __init__(self, banner: str = "", *, live: bool = True) -> None:
        self.shown = False
        self.banner = banner
        self.live = live

    def __call__(self, probe: TimeWaitProbe, now: float) -> None:
        elapsed = probe.elapsed(now)
        if self.banner and elapsed is not None:  # probing starts (not for a peer that never
            self.clear()                         # closed first: nothing is probed then)
            typer.echo(self.banner, err=True)
            self.banner = ""
        if not self.live:
            return
        if elapsed is None:
            text = "closing: waiting for the peer's FIN"
        else:
            answer = probe.last_answer()
            last = "-" if answer is None else answer.value
            text = (
                f"TIME-WAIT +{elapsed:5.1f} s: {probe.probes_sent} probe(s), "
                f"last answer {last}"
            )
        sys.stderr.write(f"\r\x1b[2K{text}")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


@app.command()
def timewait(
    target: TargetArgument,
    send: SendOption = None,
    send_file: SendFileOption = None,
    close_timeout: Annotated[
        float,
        _seconds("--close-timeout", text="Seconds for the peer to close first.", minimum=0.001),
    ] = 10.0,
    step: Annotated[
        float,
        _seconds("--step", text="Seconds between the duration's probes.", minimum=0.01),
    ] = 1.0,
    max_time: Annotated[
        float,
        _seconds("--max", text="Probe the duration for this long at most.", minimum=0.01),
    ] = 250.0,
    no_duration: Annotated[
        bool, typer.Option("--no-duration", help="Only ask whether TIME-WAIT is held.")
    ] = False,
    refin: Annotated[
        float | None,
        _seconds(
            "--refin",
            text="Send our FIN again this long into the peer's TIME-WAIT (its last ACK "
            "'was lost').",
            minimum=0.01,
        ),
    ] = None,
    no_reopen: Annotated[
        bool,
        typer.Option("--no-reopen", help="Skip the reopening SYNs (above-ISN, newer TSval)."),
    ] = False,
    assassinate: Annotated[
        bool,
        typer.Option("--assassinate", help="Also try to end a TIME-WAIT with a RST (RFC 1337)."),
    ] = False,
    timeout: HandshakeTimeoutOption = 3.0,
    json_output: JsonOption = False,
    ipv4: Ipv4Option = False,
    ipv6: Ipv6Option = False,
    source_port: SourcePortOption = None,
    ttl: TtlOption = 64,
    pcap: PcapOption = None,
) -> None:
    """Make the peer close first, then observe its TIME-WAIT.

    Whether it holds one, for how long, how it answers SYNs and RSTs on the old 4-tuple,
    and whether it re-ACKs a repeated FIN (docs/timewait.md). Exit status 0 done, 11 the
    peer did not close first, 1/4/5/6 as for close's handshake.
    """
    from prober.api import Prober
    from prober.output import timewait as render

    parsed, version = _target(target, ipv4, ipv6)
    payload = _payload(send, send_file)
    if refin is not None and refin >= max_time:
        raise _fail(f"--refin must come before --max ({max_time:g} s)", Exit.USAGE)
    if max_time < step:
        raise _fail(f"--max must be at least --step ({step:g} s)", Exit.USAGE)
    from prober.core.timewait import MAX_BELOW_PROBES

    if not no_duration and max_time / step > MAX_BELOW_PROBES:
        raise _fail(
            f"--max / --step allows at most {MAX_BELOW_PROBES} probes; a --step of "
            f"{max_time / MAX_BELOW_PROBES:.3g} s or more covers --max {max_time:g} s",
            Exit.USAGE,
        )
    banner = "" if json_output or no_duration else (
        f"prober: probing the peer's TIME-WAIT every {step:g} s for up to {max_time:g} s;"
        " Ctrl-C stops and reports"
    )
    live = cli._stderr_is_tty() and not json_output
    progress = _ProgressLine(banner, live=live) if live or banner else None

    async def main(stop: asyncio.Event) -> TimeWaitResult:
        async with Prober() as prober:
            return await prober.timewait(
                parsed.host,
                parsed.port,
                send=payload,
                close_timeout=close_timeout,
                step=step,
                max_time=max_time,
                measure_duration=not no_duration,
                refin_at=refin,
                reopen=not no_reopen,
                assassinate=assassinate,
                handshake_timeout=timeout,
                version=version,
                source_port=source_port,
                ttl=ttl,
                stop=stop,
                progress=progress,
            )

    if pcap is not None:
        _check_writable(pcap)
    try:
        result = _run(main)
    finally:
        if progress is not None:
            progress.clear()
    segments = [
        record
        for connection in result.connections
        for record in (*connection.close.segments, *connection.segments)
    ]
    _conclude(
        segments,
        pcap,
        result.to_dict() if json_output else None,
        render.timewait_report(result),
        exit_of_timewait(result),
    )


__all__ = ["exit_of_timewait", "timewait"]
