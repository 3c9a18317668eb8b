"""The ``prober profile`` command (docs/profile.md): parse, call ``Prober.profile``, render.

Registered on prober.cli's app (imported there); the probes and renderers are imported inside
the command.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prober import cli
from prober.cli import (
    Exit,
    Ipv4Option,
    Ipv6Option,
    JsonOption,
    PcapOption,
    SendFileOption,
    SendOption,
    TargetArgument,
    TtlOption,
    _check_writable,
    _emit,
    _fail,
    _payload,
    _run,
    _stdout,
    _target,
    _write_pcap,
    app,
)

if TYPE_CHECKING:
    from prober.core.profile import ProfileResult
    from prober.profile_run import ProfileProgress


def exit_of_profile(result: ProfileResult) -> Exit:
    """0 when the profile ran (the port answered SYN/ACK); the SYN's code otherwise (1 no
    answer, 4 closed, 5 ICMP error, 6 not sent); 130 interrupted."""
    from prober.cli import EXIT_OF_REASON
    from prober.core.syn import Reason

    if result.interrupted:
        return Exit.INTERRUPTED
    if result.reason is Reason.SYN_ACK:
        return Exit.OPEN
    return EXIT_OF_REASON.get(result.reason, Exit.NO_ANSWER)


class _ProgressLine:
    """One line on stderr, rewritten in place: the phase and the time so far."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, progress: ProfileProgress) -> None:
        text = (f"profile {progress.elapsed_s:5.1f} s (at most {progress.bound_s:.0f} s): "
                f"{progress.phase}")
        sys.stderr.write(f"\r\x1b[2K{text}")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


HtmlOption = Annotated[
    Path | None,
    typer.Option(
        "--html", metavar="FILE",
        help="Write the report and every probe's ladder (SVG) as one self-contained page.",
    ),
]


@app.command()
def profile(
    target: TargetArgument,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A few seconds per schedule, no TIME-WAIT duration "
                     "(about 10 s instead of about 2.5 min)."),
    ] = False,
    send: SendOption = None,
    send_file: SendFileOption = None,
    json_output: JsonOption = False,
    html: HtmlOption = None,
    ipv4: Ipv4Option = False,
    ipv6: Ipv6Option = False,
    ttl: TtlOption = 64,
    pcap: PcapOption = None,
) -> None:
    """A report card of the peer's TCP stack: options, SYN/ACK and FIN retransmissions,
    SYN cookies, close, TIME-WAIT, RFC 1337 and RFC 5961, each with its evidence.

    Probe only hosts you own: it holds half-open requests, leaves TIME-WAITs and sends RSTs.
    Give --send with a request the server answers and closes on, or the TIME-WAIT questions
    stay unknown. Exit status 0 done, 1/4/5/6 as for syn when the port did not answer
    SYN/ACK, 130 interrupted (the report of what was seen is still printed).
    """
    from prober.api import Prober
    from prober.output import jsonl
    from prober.output.profile import profile_report

    parsed, version = _target(target, ipv4, ipv6)
    payload = _payload(send, send_file)
    for path in (pcap, html):
        if path is not None:
            _check_writable(path)
    progress = _ProgressLine() if cli._stderr_is_tty() and not json_output else None

    async def main(stop: asyncio.Event) -> ProfileResult:
        async with Prober() as prober:
            return await prober.profile(parsed.host, parsed.port, quick=quick, send=payload,
                                        version=version, ttl=ttl, stop=stop,
                                        progress=progress)

    try:
        result = _run(main)
    finally:
        if progress is not None:
            progress.clear()
    _write_pcap(pcap, result.packets())
    if html is not None:
        from prober.output.profile_html import profile_html

        try:
            html.write_text(profile_html(result), encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot write {html}: {exc.strerror}", Exit.USAGE) from None
    if json_output:
        _emit(jsonl.dumps(result.to_dict()))
    else:
        for line in profile_report(result):
            _emit(line)
    _stdout.exit_if_closed()
    raise typer.Exit(int(exit_of_profile(result)))


__all__ = ["exit_of_profile", "profile"]
