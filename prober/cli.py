"""The ``prober`` command: parse options, call the library once, render. Nothing else.

Exit status (documented in the README): 0 open; 1 no answer; 2 bad usage or input; 3 raw
sockets not allowed; 4 closed; 5 ICMP error (unreachable or expired); 6 no probe could be sent;
9 RST suppression unavailable (nftables missing or refusing; halfopen and close).
`prober scan` (docs/scan.md): 0 the scan completed; 10 it completed but answers may be missing
(the kernel dropped captured frames, or SYNs could not be sent); 130 stopped by a first Ctrl-C
(its records and summary are still written: they are partial); 2 and 3 as above.
`prober timewait` (docs/timewait.md): 0 its verdicts are given (TIME-WAIT held or not, each
with its evidence); 11 the peer did not close first (or the close did not complete): there is
no TIME-WAIT of the peer's to observe; 1, 4, 5, 6 as above for its handshake; 130 stopped by a
first Ctrl-C (the report of what was seen is still printed); 2 and 3 as above.
With several probes the best answer seen decides. halfopen and close use the same codes for
their handshake: 0 means the peer answered SYN/ACK and the observation ran.
130: a second Ctrl-C (or SIGTERM) quit at once, without a report. 141: stdout was closed (a
reader such as `head` left): the run ended quietly, its pcap still written in full.

`prober lab up|down|status` (docs/lab.md): 0 done (up: built, or up already with these
options; down: removed, or was down; status: up and whole); 1 status only: the lab is down;
2 bad usage (e.g. --delay 20); 3 up/down not run as root, or status cannot read the state;
7 the lab failed: a command to build, remove or read it failed, or status finds it
half-built or broken; 8 the lab refused and changed nothing: its addresses are routed by
something else on this host, it is up with other options, or another `lab up`/`down` runs.

Start-up cost: a command imports only what it runs. The lab, the conversation renderers and
the firewall are imported inside the commands that use them, and nothing here imports Scapy
(bench/startup measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from prober.core.syn import Reason
from prober.errors import ProberError, RawSocketsNotPermitted, UsageError
from prober.targets import Target, parse_escaped, parse_target

if TYPE_CHECKING:
    from prober.core.close import CloseResult, Handshake
    from prober.core.halfopen import HalfOpenResult
    from prober.core.syn import SynProbeResult, SynRun
    from prober.core.trace import SegmentRecord


class Exit(IntEnum):
    OPEN = 0
    NO_ANSWER = 1
    USAGE = 2
    NOT_PERMITTED = 3
    CLOSED = 4
    ICMP = 5
    NOT_SENT = 6
    LAB_FAILED = 7
    LAB_REFUSED = 8
    FIREWALL = 9
    INCOMPLETE = 10  # scan: finished, but answers may be missing (kernel drops, unsent SYNs)
    NOT_CLOSED_FIRST = 11  # timewait: the peer did not close first; nothing to observe
    LISTEN_FAILED = 12  # monitor: --listen cannot be bound (the port is taken, no such address)
    INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a process Ctrl-C ended
    STDOUT_CLOSED = 128 + signal.SIGPIPE  # 141, as a shell reports ping killed by SIGPIPE


EXIT_OF_REASON: dict[Reason | None, Exit] = {
    Reason.SYN_ACK: Exit.OPEN,
    Reason.RST: Exit.CLOSED,
    Reason.ICMP_UNREACHABLE: Exit.ICMP,
    Reason.ICMP_TIME_EXCEEDED: Exit.ICMP,
    Reason.NO_RESPONSE: Exit.NO_ANSWER,
    Reason.INTERRUPTED: Exit.NO_ANSWER,
    Reason.SEND_FAILED: Exit.NOT_SENT,
    Reason.UNRESOLVED: Exit.NOT_SENT,
    None: Exit.NO_ANSWER,
}

# Click's plain help, not Rich's panels: at 80 columns the panels cut long option names and
# show a `<bool>` type beside every flag; the plain layout wraps only the help text.
app: typer.Typer = typer.Typer(
    add_completion=False,
    help="TCP handshake and close observation on raw sockets.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

T = TypeVar("T")


def _print_version(value: bool) -> None:
    if value:
        from prober import __version__

        typer.echo(f"prober {__version__}")
        raise typer.Exit()


@app.callback()
def _group(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print prober's version and exit.", is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """TCP handshake and close observation on raw sockets."""


def _fail(message: str, code: Exit) -> typer.Exit:
    typer.echo(f"prober: error: {message}", err=True)
    return typer.Exit(int(code))


class _Stdout:
    """Where the commands' lines go. A reader that leaves (``prober syn ... | head -1``) ends
    the run as a first Ctrl-C does, so everything captured so far still reaches --pcap; the
    command then exits with ``Exit.STDOUT_CLOSED`` and prints nothing more."""

    def __init__(self) -> None:
        self.closed = False
        self.stop: asyncio.Event | None = None  # the running command's, while it runs

    def emit(self, line: str) -> None:
        self.write(line + "\n")
        self.flush()

    def write(self, text: str) -> None:
        """Write without flushing (``scan`` writes many lines, then flushes once)."""
        if self.closed:
            return
        try:
            sys.stdout.write(text)
        except BrokenPipeError:
            self._reader_left()

    def flush(self) -> None:
        if self.closed:
            return
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            self._reader_left()

    def _reader_left(self) -> None:
        self.closed = True
        # What is still buffered goes nowhere, also at exit (Python's advice for EPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        if self.stop is not None:
            self.stop.set()

    def exit_if_closed(self) -> None:
        if self.closed:
            raise typer.Exit(int(Exit.STDOUT_CLOSED))


_stdout = _Stdout()
_emit = _stdout.emit

# After a first Ctrl-C, a run that has not ended within this says how to quit at once.
STILL_STOPPING_HINT_S = 0.5
STILL_STOPPING_HINT = "prober: stopping; Ctrl-C again quits at once"


def _run(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main`` on uvloop. The first Ctrl-C (or SIGTERM) sets its stop event: the run ends
    and reports what it saw. A second one cancels it: every ``finally`` and ``async with``
    exit still runs (the nftables table is removed) and the command exits 130 with no
    report. A third exits the process on the spot; the kernel then deletes prober's table
    itself (it is owned by the process: prober/engine/firewall.py)."""
    import uvloop

    from prober.engine.firewall import FirewallUnavailable

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        signals = 0
        hint: asyncio.TimerHandle | None = None

        def on_signal() -> None:
            nonlocal signals, hint
            signals += 1
            if signals == 1:
                stop.set()
                hint = loop.call_later(
                    STILL_STOPPING_HINT_S, typer.echo, STILL_STOPPING_HINT, None, True, True
                )
            elif signals == 2:
                task.cancel()
            else:
                os._exit(int(Exit.INTERRUPTED))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        _stdout.stop = stop
        if _stdout.closed:
            stop.set()
        try:
            return await main(stop)
        except asyncio.CancelledError:
            if signals < 2:
                raise
            # main() has unwound: its finally blocks and `async with` exits ran (the engine
            # is released, the nftables table removed). Leaving the loop normally would wait
            # for the resolver's threads (a name lookup cannot be cancelled, and asyncio's
            # shutdown joins them): a dead nameserver would hold the exit for its timeout.
            with contextlib.suppress(OSError):
                typer.echo("prober: interrupted", err=True)
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(int(Exit.INTERRUPTED))
        finally:
            _stdout.stop = None
            if hint is not None:
                hint.cancel()

    try:
        return uvloop.run(runner())
    except RawSocketsNotPermitted as exc:
        raise _fail(str(exc), Exit.NOT_PERMITTED) from None
    except FirewallUnavailable as exc:
        raise _fail(str(exc), Exit.FIREWALL) from None
    except UsageError as exc:
        raise _fail(str(exc), Exit.USAGE) from None
    except ProberError as exc:
        raise _fail(str(exc), Exit.USAGE) from None


def _check_writable(path: Path) -> None:
    """Fail before probing, not after, when an output file cannot be written."""
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror}", Exit.USAGE) from None


def _write_pcap(path: Path | None, packets: Sequence[tuple[int, bytes]]) -> None:
    if path is not None:
        from prober.output.pcap import write_pcap

        write_pcap(path, packets)


def _target(target: str, ipv4: bool, ipv6: bool) -> tuple[Target, int | None]:
    if ipv4 and ipv6:
        raise _fail("-4 and -6 exclude each other", Exit.USAGE)
    try:
        parsed = parse_target(target)
    except UsageError as exc:
        raise _fail(str(exc), Exit.USAGE) from None
    return parsed, 4 if ipv4 else 6 if ipv6 else None


# Options every probing command shares. Metavars say what a value is (plain help shows the
# metavar, and the range or default beside the help text).
TargetArgument = Annotated[
    str,
    typer.Argument(
        metavar="HOST:PORT", help="An IPv4 address, [IPv6] in brackets, or a name: [2001:2::2]:80"
    ),
]
Ipv4Option = Annotated[bool, typer.Option("-4", help="Resolve HOST to IPv4.")]
Ipv6Option = Annotated[bool, typer.Option("-6", help="Resolve HOST to IPv6.")]
TtlOption = Annotated[
    int, typer.Option("--ttl", metavar="N", help="IP TTL / hop limit.", min=1, max=255)
]
KernelRstOption = Annotated[
    bool,
    typer.Option(
        "--kernel-rst",
        help="Do not suppress the local kernel's RSTs (to watch them end the conversation).",
    ),
]


def _seconds(*names: str, text: str, minimum: float) -> Any:
    return typer.Option(*names, metavar="SECONDS", help=text, min=minimum)


@app.command()
def syn(
    target: TargetArgument,
    count: Annotated[
        int, typer.Option("-c", "--count", metavar="N", help="Probes to send (0: until Ctrl-C).",
                          min=0)
    ] = 5,
    interval: Annotated[
        float, _seconds("-i", "--interval", text="Seconds between probes.", minimum=0)
    ] = 1.0,
    timeout: Annotated[
        float, _seconds("-W", "--timeout", text="Seconds to wait for each answer.", minimum=0.001)
    ] = 1.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="JSON lines: one per probe, then a summary.")
    ] = False,
    ipv4: Ipv4Option = False,
    ipv6: Ipv6Option = False,
    source_port: Annotated[
        int | None,
        typer.Option(
            "--source-port", "-s", metavar="PORT", help="Fixed source port for every probe.",
            min=1, max=65535,
        ),
    ] = None,
    ttl: TtlOption = 64,
    pcap: Annotated[
        Path | None,
        typer.Option(
            "--pcap", metavar="FILE",
            help="Write every SYN and answer, with kernel timestamps, to FILE.",
        ),
    ] = None,
) -> None:
    """Send SYNs; report each answer, the port's state and the RTT.

    Like ping: a line per probe as its answer arrives, then a summary. Exit status 0 open,
    1 no answer, 4 closed, 5 ICMP error (see the README for all).
    """
    from prober.api import Prober
    from prober.output import human, jsonl

    parsed, version = _target(target, ipv4, ipv6)

    def on_probe(result: SynProbeResult) -> None:
        _emit(jsonl.dumps(result.to_dict()) if json_output else human.syn_probe_line(result))

    async def main(stop: asyncio.Event) -> SynRun:
        async with Prober() as prober:
            return await prober.syn(
                parsed.host,
                parsed.port,
                count=count,
                interval=interval,
                timeout=timeout,
                version=version,
                source_port=source_port,
                ttl=ttl,
                on_probe=on_probe,
                stop=stop,
            )

    if pcap is not None:
        _check_writable(pcap)
    run = _run(main)
    _write_pcap(pcap, run.wire())
    _emit(jsonl.dumps(run.to_dict()) if json_output else human.syn_summary(run))
    _stdout.exit_if_closed()
    raise typer.Exit(int(EXIT_OF_REASON[run.reason]))


JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object with every segment.")]
SourcePortOption = Annotated[
    int | None,
    typer.Option("--source-port", "-s", metavar="PORT", help="Source port.", min=1, max=65535),
]
PcapOption = Annotated[
    Path | None,
    typer.Option(
        "--pcap", metavar="FILE",
        help="Write every segment sent and received, kernel-stamped, to FILE.",
    ),
]


def _conclude(
    segments: Sequence[SegmentRecord],
    pcap: Path | None,
    record: dict[str, Any] | None,
    report: list[str],
    code: Exit,
) -> NoReturn:
    """Write the pcap, print the JSON ``record`` (with --json) or the report, and exit."""
    from prober.output import jsonl

    _write_pcap(pcap, [(s.time_ns, s.raw) for s in segments if s.raw])
    if record is not None:
        _emit(jsonl.dumps(record))
    else:
        for line in report:
            _emit(line)
    _stdout.exit_if_closed()
    raise typer.Exit(int(code))


@app.command()
def halfopen(
    target: TargetArgument,
    max_wait: Annotated[
        float, _seconds("--max-wait", text="Seconds to watch at most.", minimum=0.001)
    ] = 90.0,
    timeout: Annotated[
        float, _seconds("-W", "--timeout", text="Seconds to wait for the SYN/ACK.", minimum=0.001)
    ] = 1.0,
    leave_open: Annotated[
        bool, typer.Option("--leave-open", help="Send no RST at the end.")
    ] = False,
    cookie_check: Annotated[
        bool,
        typer.Option("--cookie-check/--no-cookie-check", help="Check for SYN cookies."),
    ] = True,
    kernel_rst: KernelRstOption = False,
    json_output: JsonOption = False,
    ipv4: Ipv4Option = False,
    ipv6: Ipv6Option = False,
    source_port: SourcePortOption = None,
    ttl: TtlOption = 64,
    pcap: PcapOption = None,
) -> None:
    """Send a SYN, never the ACK: watch the SYN/ACK retransmissions.

    The peer keeps the half-open connection and retransmits its SYN/ACK on its own
    schedule; prober records each one, then (unless --leave-open) sends the RST that frees
    the peer, and checks whether the peer answers with SYN cookies.
    """
    from prober.api import Prober
    from prober.output import conversation

    parsed, version = _target(target, ipv4, ipv6)

    async def main(stop: asyncio.Event) -> HalfOpenResult:
        async with Prober() as prober:
            return await prober.halfopen(
                parsed.host,
                parsed.port,
                max_wait=max_wait,
                syn_timeout=timeout,
                leave_open=leave_open,
                cookie_check=cookie_check,
                kernel_rst=kernel_rst,
                version=version,
                source_port=source_port,
                ttl=ttl,
                stop=stop,
            )

    if pcap is not None:
        _check_writable(pcap)
    if not json_output:
        typer.echo(f"prober: watching for up to {max_wait:g} s; Ctrl-C stops and reports", err=True)
    result = _run(main)
    check = () if result.cookie_check is None else result.cookie_check.segments
    _conclude(
        [*result.segments, *check],
        pcap,
        result.to_dict() if json_output else None,
        conversation.halfopen_report(result),
        EXIT_OF_REASON[result.reason],
    )


HandshakeTimeoutOption = Annotated[
    float, _seconds("-W", "--timeout", text="Seconds to wait for the SYN/ACK.", minimum=0.001)
]
SendOption = Annotated[
    str | None,
    typer.Option(
        "--send", metavar="TEXT", help=r"Data to send once connected; escapes like \r\n work."
    ),
]
SendFileOption = Annotated[
    Path | None,
    typer.Option("--send-file", metavar="FILE", help="Send this file's bytes once connected."),
]


def _payload(send: str | None, send_file: Path | None) -> bytes:
    """The bytes of --send or --send-file (one at most)."""
    if send is not None and send_file is not None:
        raise _fail("--send and --send-file exclude each other", Exit.USAGE)
    try:
        if send is not None:
            return parse_escaped(send)
        if send_file is not None:
            return send_file.read_bytes()
    except UsageError as exc:
        raise _fail(str(exc), Exit.USAGE) from None
    except OSError as exc:
        raise _fail(f"cannot read {send_file}: {exc.strerror}", Exit.USAGE) from None
    return b""


def exit_of_handshake(handshake: Handshake) -> Exit:
    """The exit status of a conversation command, from how its handshake went."""
    from prober.core.close import Handshake

    return {
        Handshake.OPEN: Exit.OPEN,
        Handshake.CLOSED: Exit.CLOSED,
        Handshake.FILTERED: Exit.ICMP,
        Handshake.EXPIRED: Exit.ICMP,
        Handshake.NO_ANSWER: Exit.NO_ANSWER,
        Handshake.SEND_FAILED: Exit.NOT_SENT,
        Handshake.INTERRUPTED: Exit.NO_ANSWER,
    }[handshake]


@app.command()
def close(
    target: TargetArgument,
    we_close: Annotated[
        bool,
        typer.Option(
            "--we-close/--peer-closes",
            help="Send our FIN first (default), or wait for the peer's FIN.",
        ),
    ] = True,
    send: SendOption = None,
    send_file: SendFileOption = None,
    drop_final_ack: Annotated[
        bool,
        typer.Option(
            "--drop-final-ack", help="Never ACK the peer's FIN; record its retransmissions."
        ),
    ] = False,
    msl: Annotated[
        float, _seconds("--msl", text="We hold TIME-WAIT for 2 x MSL seconds.", minimum=0)
    ] = 30.0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not hold TIME-WAIT.")] = False,
    max_wait: Annotated[
        float,
        _seconds("--max-wait", text="Seconds to wait for the peer after the handshake.",
                 minimum=0.001),
    ] = 120.0,
    timeout: HandshakeTimeoutOption = 3.0,
    kernel_rst: KernelRstOption = False,
    json_output: JsonOption = False,
    ipv4: Ipv4Option = False,
    ipv6: Ipv6Option = False,
    source_port: SourcePortOption = None,
    ttl: TtlOption = 64,
    pcap: PcapOption = None,
) -> None:
    """Connect, optionally send data, and record how it closes.

    prober holds the connection in user space and shows every segment of the close: who
    sent the first FIN (and so whose TIME-WAIT it is), how FINs are retransmitted.
    """
    from prober.api import Prober
    from prober.output import conversation

    parsed, version = _target(target, ipv4, ipv6)
    payload = _payload(send, send_file)

    async def main(stop: asyncio.Event) -> CloseResult:
        async with Prober() as prober:
            return await prober.close(
                parsed.host,
                parsed.port,
                peer_closes=not we_close,
                send=payload,
                drop_final_ack=drop_final_ack,
                msl=msl,
                no_wait=no_wait,
                max_wait=max_wait,
                handshake_timeout=timeout,
                kernel_rst=kernel_rst,
                version=version,
                source_port=source_port,
                ttl=ttl,
                stop=stop,
            )

    if pcap is not None:
        _check_writable(pcap)
    if not json_output and we_close and not no_wait and msl > 0:
        typer.echo(
            f"prober: after an active close we hold TIME-WAIT for 2 x MSL = {2 * msl:g} s;"
            " Ctrl-C or --no-wait cuts it short",
            err=True,
        )
    result = _run(main)
    _conclude(
        result.segments,
        pcap,
        result.to_dict() if json_output else None,
        conversation.close_report(result),
        exit_of_handshake(result.handshake),
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced by a test harness, or closed
        return False


def _stdout_is_tty() -> bool:
    return _isatty(sys.stdout)


def _stderr_is_tty() -> bool:
    return _isatty(sys.stderr)


# `prober scan`, `prober timewait` and `prober monitor` live in modules of their own;
# importing them registers the commands here, in order.
from prober import cli_monitor, cli_profile, cli_scan, cli_timewait  # noqa: E402
from prober.cli_scan import ScanFormat, parse_shard, scan_format  # noqa: E402

__all__ = [
    "Exit", "ScanFormat", "app", "cli_monitor", "cli_profile", "cli_scan", "cli_timewait", "main",
    "parse_shard",
    "scan_format",
]


lab_app = typer.Typer(
    help="The built-in lab: TCP peers in network namespaces.\n\nEach peer is a real Linux "
    "TCP stack on this machine, set to show one behaviour of the handshake or the close.",
    rich_markup_mode=None,
)
app.add_typer(lab_app, name="lab")


def _lab_call(call: Callable[[], T]) -> T:
    """Call the lab library once; its errors become one line and their exit status."""
    from prober import lab

    try:
        return call()
    except lab.LabNotPermitted as exc:
        raise _fail(str(exc), Exit.NOT_PERMITTED) from None
    except lab.LabRefused as exc:
        raise _fail(str(exc), Exit.LAB_REFUSED) from None
    except lab.LabError as exc:
        raise _fail(str(exc), Exit.LAB_FAILED) from None
    except UsageError as exc:
        raise _fail(str(exc), Exit.USAGE) from None


def _duration(name: str, text: str) -> Any:
    return typer.Option(name, metavar="DURATION", help=text)


@lab_app.command("up")
def lab_up(
    delay: Annotated[
        str, _duration("--delay", text="Round-trip time `far` adds, e.g. 20ms, 0.5s.")
    ] = "20ms",
    jitter: Annotated[
        str, _duration("--jitter", text="± this much on far's round trip, e.g. 1ms.")
    ] = "1ms",
    loss: Annotated[
        str,
        typer.Option(
            "--loss", metavar="SHARE", help="Share of round trips `lossy` loses, e.g. 1% or 0.01."
        ),
    ] = "1%",
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", metavar="N",
            help="Seed of the delay and loss draws (default: random, shown by status).",
        ),
    ] = None,
) -> None:
    """Build the lab (needs root); a no-op if it is up already.

    Up already with other options, it refuses and changes nothing (exit 8).
    """
    from prober import lab
    from prober.lab import render

    options = _lab_call(lambda: lab.LabOptions.parse(delay, jitter, loss, seed))
    result = _lab_call(lambda: lab.lab_up(options))
    _emit(result.message)
    _emit(render.status_text(result.status))


@lab_app.command("down")
def lab_down() -> None:
    """Remove everything `lab up` made (needs root).

    Also after an `up` that was interrupted half-way: it works from the state file alone.
    """
    from prober import lab

    result = _lab_call(lab.lab_down)
    _emit(result.message)


@lab_app.command("status")
def lab_status(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """List the lab's peers and the commands that show them.

    No root needed. Exit status 0 up and whole, 1 down, 7 half-built or broken.
    """
    from prober import lab
    from prober.lab import render

    status = _lab_call(lab.lab_status)
    _emit(render.status_json(status) if json_output else render.status_text(status))
    _stdout.exit_if_closed()
    if status is None:
        raise typer.Exit(int(Exit.NO_ANSWER))  # 1, as for syn's silence: nothing is there
    if not status.healthy:
        raise typer.Exit(int(Exit.LAB_FAILED))


def main() -> None:
    """The console entry point: usage errors become one line and exit status 2."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # Click's usage errors (exit code 2) and the like
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"prober: error: {exc.format_message()}{where}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(int(Exit.INTERRUPTED))
    sys.exit(code if isinstance(code, int) else 0)
