"""The ``prober monitor`` command: ``Prober.monitor`` as a service, with a Prometheus endpoint.

Registered on prober.cli's app (imported there); prometheus_client, the exporter and the
library are imported inside the command, so other commands do not pay for them.

Signals: SIGTERM is the normal stop of a service: the run ends, the endpoint closes, exit 0.
Ctrl-C (SIGINT) stops the same way but exits 130, as for the other commands. SIGHUP re-reads
the targets file (not when it was stdin).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prober.cli import (
    Exit,
    Ipv4Option,
    Ipv6Option,
    TtlOption,
    _fail,
    _run,
    _seconds,
    _stdout,
    app,
)
from prober.errors import UsageError

if TYPE_CHECKING:
    from prober.api import Prober
    from prober.cli_scan import _ScanSink
    from prober.core.syn import SynProbeResult
    from prober.monitor.loop import Monitor
    from prober.monitor.metrics import MonitorCollector
    from prober.monitor.targets_file import TargetList
    from prober.output.monitor import StateChanges

MAX_WINDOW = 10_000  # prober.monitor.loop.MAX_WINDOW (not imported here)
DEFAULT_LISTEN = "127.0.0.1:9108"  # prober.monitor.exporter.DEFAULT_LISTEN (not imported here)
MAX_INTERVAL_S = 86_400.0  # prober.api.MAX_MONITOR_INTERVAL_S (not imported here)
COUNTS_EVERY_S = 1.0  # how often the kernel's and the monitor's drop counts are read
SINK_BACKLOG_BYTES = 8 << 20  # stdout lagging by more: stop reading samples until it drains


class _Session:
    """One ``prober monitor`` run: samples to the metrics and stdout, reloads on SIGHUP
    (``Monitor.set_targets``: kept targets keep their statistics and phase)."""

    def __init__(self, path: str, targets: TargetList, collector: MonitorCollector,
                 sink: _ScanSink, changes: StateChanges | None, options: dict[str, Any], *,
                 endpoint: bool = False) -> None:
        self.path = path
        self.targets = targets
        self.collector = collector
        self.sink = sink
        self.changes = changes  # None: --json
        self.options = options
        self.endpoint = endpoint  # /metrics is served: it must not wait for stdout
        self._left_out = 0  # lines not written while stdout lagged (the metrics took them)
        self._monitor: Monitor | None = None
        self._reloading = False
        self._reload_again = False  # a SIGHUP came while a reload was reading the file
        self._flush_pending = False

    async def run(self, prober: Prober, stop: asyncio.Event) -> None:
        """Monitor until ``stop`` is set."""
        from prober.output import jsonl

        loop = asyncio.get_running_loop()
        observe, sink, changes = self.collector.observe, self.sink, self.changes
        ticker = asyncio.ensure_future(self._read_counts(prober))
        monitor = self._monitor = prober.monitor(self.targets, stop=stop, **self.options)
        frozen = False
        try:
            async for sample in monitor:
                if not frozen:
                    # Every target's state now exists and lives as long as the process: out
                    # of the collector's reach, a full collection walks only what comes and
                    # goes (at 10,000 targets its pause, which delays every probe due
                    # meanwhile, fell from ~117 ms to ~25 ms). The process is ours, so
                    # freezing the heap is no surprise to a library's caller.
                    gc.freeze()
                    frozen = True
                observe(sample)
                line = None if changes is None else changes.line(sample)
                if changes is not None and line is None:
                    continue
                if sink.backlog > SINK_BACKLOG_BYTES:
                    if self.endpoint:
                        # Waiting for stdout here would stop the samples reaching /metrics,
                        # which would serve values of minutes ago as the last round's: the
                        # line is left out (and counted on stderr) instead.
                        self._leave_out()
                        continue
                    await sink.drained()  # the monitor queues (and counts what it drops)
                elif self._left_out:
                    self._caught_up()
                sink.write(jsonl.dumps(sample.to_dict()) + "\n" if line is None else line + "\n")
                if not self._flush_pending:
                    # The monitor hands over the samples it has without awaiting: this runs
                    # once they are written, so stdout gets one write per batch.
                    self._flush_pending = True
                    loop.call_soon(self._flush)
        finally:
            ticker.cancel()
            await monitor.aclose()
            self._flush()
            if self._left_out:
                self._caught_up()

    def _leave_out(self) -> None:
        if not self._left_out:
            typer.echo(f"prober: stdout fell {SINK_BACKLOG_BYTES >> 20} MiB behind: lines are "
                       "left out of it until it catches up (/metrics still takes every "
                       "sample)", err=True)
        self._left_out += 1

    def _caught_up(self) -> None:
        typer.echo(f"prober: stdout: {self._left_out:,} lines were left out while it lagged",
                   err=True)
        self._left_out = 0

    def _flush(self) -> None:
        self._flush_pending = False
        self.sink.flush()

    async def _read_counts(self, prober: Prober) -> None:
        from prober.output.monitor import losses

        collector = self.collector
        reported = (0, 0, 0)
        while True:
            collector.kernel_drops = prober.engine.take_kernel_drops()
            if self._monitor is not None:
                collector.samples_dropped = self._monitor.dropped
                collector.rounds_skipped = self._monitor.skipped
            counts = (collector.samples_dropped, collector.rounds_skipped,
                      collector.kernel_drops)
            if not self.endpoint and counts != reported:
                # No /metrics to show these counters: what was lost is said on stderr (at
                # most once per tick), or --json --no-listen would lose samples silently.
                typer.echo(losses(*counts), err=True)
                reported = counts
            await asyncio.sleep(COUNTS_EVERY_S)

    # -- SIGHUP ---------------------------------------------------------------------------
    def on_hangup(self) -> None:
        """Re-read the targets file in a thread (a big file must not hold the probes)."""
        from prober.monitor.targets_file import read_targets_file

        if self.path == "-":
            typer.echo("prober: SIGHUP ignored: the targets were read from stdin", err=True)
            return
        if self._reloading:
            # One reload at a time; the one under way may have read the file before this
            # edit, so the file is read once more when it ends (several SIGHUPs: once).
            self._reload_again = True
            return
        self._reloading = True
        loop = asyncio.get_running_loop()  # (a signal handler runs on the loop)
        future = loop.run_in_executor(None, read_targets_file, self.path)
        future.add_done_callback(self._reloaded)

    def _reloaded(self, future: asyncio.Future[TargetList]) -> None:
        from prober.monitor.metrics import target_name
        from prober.output.monitor import reloaded

        self._reloading = False
        if self._reload_again:
            self._reload_again = False
            asyncio.get_running_loop().call_soon(self.on_hangup)  # after this one is taken
        try:
            new = future.result()
            if self._monitor is not None:
                self._monitor.set_targets(new)
        except UsageError as exc:
            typer.echo(f"prober: reload refused: {exc} (still monitoring the previous "
                       f"{len(self.targets):,} targets)", err=True)
            return
        added, removed = self.collector.set_targets(new)
        if self.changes is not None:
            self.changes.keep_only(target_name(host, port) for host, port in new)
        self.targets = new
        typer.echo(reloaded(len(new), added, removed), err=True)


class _OneShot:
    """``/probe``'s SYN: answered as soon as its result is known (Prober.syn itself goes on
    for a while to count late duplicates; those runs end in the background)."""

    def __init__(self, prober: Prober, version: int | None, ttl: int) -> None:
        self.prober = prober
        self.version = version
        self.ttl = ttl
        self.pending: set[asyncio.Future[Any]] = set()

    async def __call__(self, host: str, port: int, timeout: float) -> SynProbeResult:
        loop = asyncio.get_running_loop()
        first: asyncio.Future[SynProbeResult] = loop.create_future()

        def on_probe(result: SynProbeResult) -> None:
            if not first.done():
                first.set_result(result)

        run = asyncio.ensure_future(self.prober.syn(
            host, port, count=1, timeout=timeout, version=self.version, ttl=self.ttl,
            on_probe=on_probe))
        await asyncio.wait((first, run), return_when=asyncio.FIRST_COMPLETED)
        if first.done():
            self.pending.add(run)
            run.add_done_callback(self._ended)
            return first.result()
        best = run.result().best  # raises the run's error (a name that does not resolve)
        if best is None:
            raise UsageError("the probe gave no result")
        return best

    def _ended(self, run: asyncio.Future[Any]) -> None:
        self.pending.discard(run)
        if not run.cancelled():
            run.exception()  # retrieved: a late failure of a run already answered is moot

    async def drain(self) -> None:
        """Wait for the runs still counting late answers (each ends within its timeout)."""
        if self.pending:
            await asyncio.wait(set(self.pending))


@app.command()
def monitor(
    file: Annotated[
        str,
        typer.Option("-f", "--file", metavar="FILE",
                     help="Targets: one HOST:PORT or [IPv6]:PORT per line, '#' comments "
                     "('-': stdin, read once).", show_default=False),
    ],
    interval: Annotated[
        float, typer.Option("-i", "--interval", metavar="SECONDS",
                            help="Seconds between two probes of a target (at most a day).",
                            min=0.01, max=MAX_INTERVAL_S),
    ] = 5.0,
    timeout: Annotated[
        float, _seconds("-W", "--timeout", text="Seconds to wait for each answer (at most "
                        "the interval).", minimum=0.001),
    ] = 1.0,
    listen: Annotated[
        str | None,
        typer.Option("--listen", metavar="HOST:PORT",
                     help="Serve /metrics and /probe here ([::1]:9108 for IPv6; port 0: any "
                     f"free port, shown in the banner)  [default: {DEFAULT_LISTEN}]",
                     show_default=False),
    ] = None,
    no_listen: Annotated[
        bool, typer.Option("--no-listen", help="No HTTP endpoint (needs --json).")
    ] = False,
    vantage: Annotated[
        str | None,
        typer.Option("--vantage", metavar="NAME",
                     help="The 'vantage' label of every series: where the probes leave from  "
                     "[default: this host's name]", show_default=False),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Every sample as a JSON line on stdout, instead of "
                           "the state changes.")
    ] = False,
    resolve_every: Annotated[
        float, _seconds("--resolve-every", text="Seconds between resolutions of host names.",
                        minimum=1.0),
    ] = 300.0,
    window: Annotated[
        int, typer.Option("--window", metavar="ROUNDS",
                          help="Rounds the JSON statistics (percentiles, loss) cover.", min=1,
                          max=MAX_WINDOW),
    ] = 100,
    ipv4: Ipv4Option = False,
    ipv6: Ipv6Option = False,
    ttl: TtlOption = 64,
) -> None:
    """Probe many targets every interval; export to Prometheus.

    Each target gets one SYN per --interval, at its own point of the interval, so a round is
    spread out and a silent target delays no other. Nothing is connected: no server log
    fills, no TIME-WAIT piles up. stdout shows one line per change of a target's state
    (open, closed, filtered, unknown); --json writes every sample instead.

    \b
    The endpoint (--listen) serves, for Prometheus:
      /metrics  every target, labelled target, port and vantage:
                prober_probe_success (1: open, else 0), prober_port_state{state},
                prober_syn_rtt_seconds (histogram, 10 us to 10 s),
                prober_last_rtt_seconds (NaN when no SYN/ACK or RST came),
                prober_probes_total{result}, prober_kernel_drops_total
      /probe?target=HOST:PORT  one SYN now, as blackbox_exporter's multi-target
                pattern: probe_success, probe_duration_seconds,
                probe_tcp_syn_rtt_seconds

    Signals: SIGHUP re-reads FILE (with a bad line the old list is kept); SIGTERM stops
    (exit 0); Ctrl-C stops (exit 130). Exit status 2 bad usage or a bad line in FILE (shown
    as FILE:LINE), 3 not permitted (needs root or CAP_NET_RAW), 12 cannot listen, 141 stdout
    closed.

    \b
    Example:
      printf '198.18.0.18:80\\n198.18.0.18:81\\n[2001:2::1:2]:80\\n' > targets.txt
      prober monitor -f targets.txt --vantage fra1 &
      curl -s 127.0.0.1:9108/metrics | grep '^prober_probe_success'
      curl -s '127.0.0.1:9108/probe?target=198.18.0.34:80'
      kill -HUP %1    # after editing targets.txt
    """
    from prober.cli_scan import _ScanSink
    from prober.monitor.exporter import Exporter, ListenFailed, parse_listen
    from prober.monitor.metrics import MonitorCollector
    from prober.monitor.targets_file import read_targets_file
    from prober.output.monitor import StateChanges, banner

    if ipv4 and ipv6:
        raise _fail("-4 and -6 exclude each other", Exit.USAGE)
    if timeout > interval:
        raise _fail(f"--timeout ({timeout:g} s) must be at most --interval ({interval:g} s)",
                    Exit.USAGE)
    if no_listen and listen is not None:
        raise _fail("--listen and --no-listen exclude each other", Exit.USAGE)
    if no_listen and not json_output:
        raise _fail("--no-listen needs --json: otherwise nothing would report the samples",
                    Exit.USAGE)
    vantage_name = socket.gethostname() if vantage is None else vantage
    if not vantage_name.strip():
        raise _fail("--vantage must not be empty", Exit.USAGE)
    try:
        address = None if no_listen else parse_listen(listen or DEFAULT_LISTEN)
        targets = read_targets_file(file, sys.stdin.buffer if file == "-" else None)
    except UsageError as exc:
        raise _fail(str(exc), Exit.USAGE) from None
    collector = MonitorCollector(vantage_name, targets)
    try:
        exporter = None if address is None else Exporter(address, collector)
    except ListenFailed as exc:
        raise _fail(str(exc), Exit.LISTEN_FAILED) from None
    sink = _ScanSink(None)
    version = 4 if ipv4 else 6 if ipv6 else None
    options = {"interval": interval, "timeout": timeout, "resolve_every": resolve_every,
               "window": window, "version": version, "ttl": ttl}
    session = _Session(file, targets, collector, sink, None if json_output else StateChanges(),
                       options, endpoint=exporter is not None)
    terminated = False

    async def main(stop: asyncio.Event) -> None:
        from prober.api import Prober

        nonlocal terminated
        loop = asyncio.get_running_loop()

        def on_terminate() -> None:
            nonlocal terminated
            terminated = True
            stop.set()

        # Replaces _run's SIGTERM handler: for a service SIGTERM is the normal stop (exit 0),
        # not an interruption (130). Ctrl-C keeps _run's handling.
        loop.add_signal_handler(signal.SIGTERM, on_terminate)
        loop.add_signal_handler(signal.SIGHUP, session.on_hangup)
        sink.stop = stop
        try:
            async with Prober() as prober:
                one_shot = _OneShot(prober, version, ttl)
                if exporter is not None:
                    exporter.start(loop, one_shot)
                url = None if exporter is None else exporter.address.url("/metrics")
                line = banner(len(targets), interval, timeout, vantage_name, url)
                if json_output:
                    typer.echo(line, err=True)
                else:
                    sink.write(line + "\n")
                    sink.flush()
                try:
                    await session.run(prober, stop)
                finally:
                    if exporter is not None:
                        exporter.close()  # no /probe may start on an engine being released
                    await one_shot.drain()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            # On the loop: a sink that had nothing to write yet (SIGTERM before the first
            # --json sample, raw sockets refused) opens its writer now, which needs the loop.
            sink.flush(final=True)

    try:
        _run(main)
    finally:
        if exporter is not None:
            exporter.close()
    _stdout.exit_if_closed()
    if sink.error is not None:
        raise _fail(sink.error, Exit.USAGE)
    raise typer.Exit(int(Exit.OPEN if terminated else Exit.INTERRUPTED))

__all__ = ["monitor"]
