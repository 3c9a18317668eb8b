"""The ``prober scan`` command (docs/scan.md): parse, call ``Prober.scan``, render.

Registered on prober.cli's app (imported there, so `prober --help` lists it in place); the
scan's library, renderers and rich are imported inside the command, so other commands do not
pay for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prober import cli
from prober.cli import Exit, Ipv4Option, Ipv6Option, _check_writable, _fail, _run, _stdout, app
from prober.errors import UsageError

if TYPE_CHECKING:
    from prober.core.scan_result import ScanSummary


class ScanFormat(StrEnum):
    """How `prober scan` writes its records (docs/json.md: the fields)."""

    JSONL = "jsonl"
    CSV = "csv"
    TABLE = "table"


def scan_format(chosen: ScanFormat | None, to_file: bool, stdout_tty: bool) -> ScanFormat:
    """JSON lines unless told otherwise, but a table for a person at a terminal."""
    if chosen is not None:
        return chosen
    return ScanFormat.TABLE if stdout_tty and not to_file else ScanFormat.JSONL


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (1-based, as people count shards) -> ``(I - 1, N)``, the library's form.

    Raises:
        UsageError: not two integers with 1 <= I <= N.
    """
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if match is not None:
        index, count = int(match[1]), int(match[2])
        if 1 <= index <= count:
            return index - 1, count
    raise UsageError(f"invalid --shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/4")


# Records are written in batches, not a flush per line (a scan yields up to its rate in
# records a second); a batch goes out at this many lines, and at least every tick.
SCAN_FLUSH_LINES = 512
SCAN_TICK_S = 0.25


# Records waiting for a slow reader beyond this make the scan wait for it (and the sender
# pause): memory stays bounded and no answer is dropped for a full pipe.
SCAN_BACKLOG_BYTES = 8 << 20


class _ScanSink:
    """Where a scan's text goes: buffered, then handed to a writer thread (a lagging reader
    must not block the event loop, which reads the capture) for stdout (a reader that
    leaves ends the scan as for the other commands) or the ``-o`` file, opened (and
    truncated) only when there is something to write or the scan has ended well, so a
    refused scan leaves an existing file alone."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.error: str | None = None
        self.stop: asyncio.Event | None = None
        self.on_full: Callable[[], None] = self.flush
        self._pending: list[str] = []
        self._thread: Any = None

    def write(self, text: str) -> None:
        self._pending.append(text)
        if len(self._pending) >= SCAN_FLUSH_LINES:
            self.on_full()

    @property
    def backlog(self) -> int:
        return 0 if self._thread is None else int(self._thread.backlog)

    async def drained(self) -> None:
        """Wait until the reader has taken most of what waits for it."""
        while self.backlog > SCAN_BACKLOG_BYTES // 2 and self._alive():
            await asyncio.sleep(0.01)

    def _alive(self) -> bool:
        thread = self._thread
        return thread is not None and not thread.closed and thread.error is None

    def _open(self) -> Any:
        from prober.output.writer_thread import InlineWriter, WriterThread

        if self.path is None:
            sys.stdout.flush()
            try:
                fd = sys.stdout.fileno()
            except (OSError, ValueError):  # a stream without a descriptor (CliRunner's)
                return InlineWriter(sys.stdout, on_closed=_stdout._reader_left)
            loop = asyncio.get_running_loop()

            def reader_left() -> None:
                with contextlib.suppress(RuntimeError):  # the loop may have ended
                    loop.call_soon_threadsafe(_stdout._reader_left)

            return WriterThread(fd, on_closed=reader_left)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        return WriterThread(fd)

    def flush(self, final: bool = False) -> None:
        if self.error is not None or _stdout.closed:
            self._pending.clear()
            return
        if self._pending or (final and self._thread is None):
            text = "".join(self._pending)
            self._pending.clear()
            try:
                if self._thread is None:
                    self._thread = self._open()
            except OSError as exc:
                self._failed(exc)
                return
            self._thread.write(text.encode())
        thread = self._thread
        if thread is not None and thread.error is not None:
            self._failed(thread.error)
        if final and thread is not None:
            thread.close()
            if self.path is not None and thread.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(thread.fd)
            if thread.error is not None:
                self._failed(thread.error)

    def _failed(self, exc: OSError) -> None:
        where = "stdout" if self.path is None else str(self.path)
        self.error = f"cannot write {where}: {exc.strerror or exc}"
        if self.stop is not None:
            self.stop.set()


@app.command()
def scan(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="TARGET",
            help="host:ports, [v6]:ports, CIDR:ports, or host with -p: 198.18.0.0/24:22,80",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("-f", "--file", metavar="FILE", help="Targets, one per line ('-': stdin)."),
    ] = None,
    ports: Annotated[
        str | None,
        typer.Option("-p", "--ports", metavar="PORTS",
                     help="Ports for targets given without any: 22,80,8000-8100."),
    ] = None,
    exclude: Annotated[
        list[Path] | None,
        typer.Option("--exclude", metavar="FILE", help="Targets not to probe (repeatable).",
                     show_default=False),
    ] = None,
    no_blocklist: Annotated[
        bool,
        typer.Option("--no-blocklist",
                     help="Expand CIDR blocks over special-purpose addresses too."),
    ] = False,
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Report bad target lines on stderr and go on."),
    ] = False,
    rate: Annotated[
        float, typer.Option("--rate", metavar="PPS", help="SYNs per second.")
    ] = 1000.0,
    retries: Annotated[
        int, typer.Option("--retries", metavar="N", help="Re-sends of an unanswered SYN.")
    ] = 0,
    wait: Annotated[
        float, typer.Option("--wait", metavar="SECONDS", help="Seconds to wait for an answer.")
    ] = 2.0,
    seed: Annotated[
        int | None,
        typer.Option("--seed", metavar="N", help="Seed of the probe order (default: random)."),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option("--shard", metavar="I/N",
                     help="Probe the I-th of N disjoint shares of the targets (1-based)."),
    ] = None,
    ipv4: Ipv4Option = False,
    ipv6: Ipv6Option = False,
    output_format: Annotated[
        ScanFormat | None,
        typer.Option("--format", help="Records as JSON lines, CSV, or a table "
                     "(default: table on a terminal, else jsonl).", show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="FILE", help="Write the records to FILE."),
    ] = None,
    open_only: Annotated[
        bool, typer.Option("--open-only", help="Write open ports' records only.")
    ] = False,
    pcap: Annotated[
        Path | None,
        typer.Option("--pcap", metavar="FILE", help="Write every SYN and answer to FILE."),
    ] = None,
) -> None:
    """SYN-scan many targets at a steady rate: one record per target and port.

    Records go to stdout (or -o); a live progress line (on a terminal) and the summary go
    to stderr. Exit status 0 complete, 10 incomplete (the kernel dropped answers, or SYNs
    could not be sent), 130 stopped by Ctrl-C, 2 bad input (docs/scan.md).
    """
    from prober.api import Prober
    from prober.output import scan as render

    if not targets and file is None:
        raise _fail("no targets: give TARGET... or -f FILE (see 'prober scan --help')",
                    Exit.USAGE)
    if ipv4 and ipv6:
        raise _fail("-4 and -6 exclude each other", Exit.USAGE)
    try:
        index_count = (0, 1) if shard is None else parse_shard(shard)
    except UsageError as exc:
        raise _fail(str(exc), Exit.USAGE) from None
    for path in (output, pcap):
        if path is not None:
            _check_writable(path)
    stdout_tty = output is None and cli._stdout_is_tty()
    chosen = scan_format(output_format, output is not None, stdout_tty)
    sink = _ScanSink(output)
    writers: dict[ScanFormat, Callable[[_ScanSink], render.RecordWriter]] = {
        ScanFormat.JSONL: render.JsonLinesWriter,
        ScanFormat.CSV: render.CsvWriter,
        ScanFormat.TABLE: render.TableWriter,
    }
    writer = writers[chosen](sink)
    if open_only:
        writer = render.OpenOnly(writer)
    progress: render.ProgressLine | None = None

    def say(line: str) -> None:
        """A line on stderr, above the progress line if one is shown."""
        if progress is None:
            typer.echo(line, err=True)
        else:
            progress.above(lambda: typer.echo(line, err=True))

    def flush() -> None:
        # Table lines on the terminal that shows the progress line go above it.
        if progress is not None and stdout_tty:
            progress.above(sink.flush)
        else:
            sink.flush()

    def on_bad(message: str) -> None:
        say(f"prober: skipped {message}")

    async def main(stop: asyncio.Event) -> ScanSummary | None:
        nonlocal progress
        run = Prober().scan(
            targets or (),
            file=file,
            ports=ports,
            exclude=exclude or (),
            blocklist=not no_blocklist,
            skip_bad=on_bad if skip_bad else None,
            rate=rate,
            retries=retries,
            wait=wait,
            seed=seed,
            shard=index_count,
            version=4 if ipv4 else 6 if ipv6 else None,
            pcap=pcap,
        )
        sink.stop = stop
        sink.on_full = flush

        async def stop_when_asked() -> None:
            await stop.wait()  # Ctrl-C, SIGTERM, the reader of stdout left, -o failed
            run.stop()

        async def tick() -> None:
            while True:
                await asyncio.sleep(SCAN_TICK_S)
                flush()
                if progress is not None:
                    progress.show(run.progress())

        if cli._stderr_is_tty():
            progress = render.ProgressLine()
        helpers = [asyncio.ensure_future(stop_when_asked()), asyncio.ensure_future(tick())]
        try:
            async for result in run:
                writer.write(result)
                if sink.backlog > SCAN_BACKLOG_BYTES:
                    await sink.drained()
            writer.end()
            if progress is not None and stdout_tty:
                progress.above(lambda: sink.flush(final=True))
            else:
                sink.flush(final=True)
        finally:
            for helper in helpers:
                helper.cancel()
            flush()  # records before a bad stdin line are results too
            if progress is not None:
                progress.close()
                progress = None
        return run.summary

    summary = _run(main)
    _stdout.exit_if_closed()  # 141, quietly, as the other commands end there
    if summary is not None:
        for line in render.summary_lines(summary):
            typer.echo(line, err=True)
    if sink.error is not None:
        raise _fail(sink.error, Exit.USAGE)
    if summary is None:
        raise _fail("the scan ended without a summary", Exit.INCOMPLETE)
    if summary.interrupted:
        raise typer.Exit(int(Exit.INTERRUPTED))
    raise typer.Exit(int(Exit.OPEN if summary.complete else Exit.INCOMPLETE))
