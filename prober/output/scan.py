"""`prober scan`'s renderers: records as JSON lines, CSV or a table; the live progress line;
the final summary (docs/scan.md, docs/json.md).

Writers take any object with ``write(str)``: the command buffers their text and flushes it
itself (between progress refreshes), so a renderer never touches a terminal or a socket.
Nothing here imports rich unless a progress line is shown (stderr is a terminal).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from prober.core.scan_result import SCAN_FIELDS, ScanResult, ScanSummary
from prober.core.syn import PortState, Reason
from prober.core.timing import Clock
from prober.output import jsonl
from prober.output.strays import invalid_lines

if TYPE_CHECKING:
    from rich.live import Live

    from prober.engine.scan.run import ScanProgress


class TextSink(Protocol):
    def write(self, text: str, /) -> Any: ...


class RecordWriter(Protocol):
    """One of the formats below: ``write`` each record, then ``end`` once."""

    def write(self, result: ScanResult) -> None: ...

    def end(self) -> None: ...


class JsonLinesWriter:
    """One JSON object per record (``ScanResult.to_dict()``), nothing else: the outputs of
    several shards merge with ``cat``."""

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink

    def write(self, result: ScanResult) -> None:
        self._sink.write(jsonl.dumps(result.to_dict()) + "\n")

    def end(self) -> None:
        pass


class CsvWriter:
    """A header of ``SCAN_FIELDS``, then one row per record; null is the empty field.

    The header is written with the first row (or at the end of a scan without records), so
    a scan refused for bad input writes nothing at all.
    """

    def __init__(self, sink: TextSink) -> None:
        # "\n", not RFC 4180's "\r\n": the files are read by shell tools as often as by
        # spreadsheets (csv readers accept both).
        self._csv = csv.writer(sink, lineterminator="\n")
        self._started = False

    def _header(self) -> None:
        if not self._started:
            self._started = True
            self._csv.writerow(SCAN_FIELDS)

    def write(self, result: ScanResult) -> None:
        self._header()
        self._csv.writerow(result.to_dict().values())

    def end(self) -> None:
        self._header()


TABLE_HEADER = (
    f"{'TARGET':<15} {'PORT':>5}  {'STATE':<8} {'REASON':<18} {'RTT ms':>9} {'TTL':>3}  OPTIONS"
)


def table_line(result: ScanResult) -> str:
    """One record for a person: target, port, state, reason, RTT (ms), TTL, TCP options,
    then what else identifies the answer (who sent an ICMP error, the name, the attempt)."""
    rtt = "-" if result.rtt_us is None else f"{result.rtt_us / 1000:.3f}"
    ttl = "-" if result.ttl is None else str(result.ttl)
    notes = []
    if result.icmp_type is not None:
        notes.append(f"ICMP {result.icmp_type}/{result.icmp_code} from {result.icmp_from}")
    if result.name is not None:
        notes.append(f"({result.name})")
    if result.attempt > 1:
        notes.append(f"attempt {result.attempt}")
    if result.clock is Clock.USER:
        notes.append("user clock")
    if result.error:
        notes.append(result.error)
    line = (
        f"{result.target:<15} {result.port:>5}  {result.state.value:<8} {result.reason.value:<18}"
        f" {rtt:>9} {ttl:>3}  {result.options or '-'}"
    )
    return " ".join([line, *notes])


class TableWriter:
    """The human table (the default on a terminal): a header, then a line per record."""

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink
        self._started = False

    def write(self, result: ScanResult) -> None:
        if not self._started:
            self._started = True
            self._sink.write(TABLE_HEADER + "\n")
        self._sink.write(table_line(result) + "\n")

    def end(self) -> None:
        pass


class OpenOnly:
    """``--open-only``: pass on open ports' records only (the summary still counts all)."""

    def __init__(self, writer: RecordWriter) -> None:
        self._writer = writer

    def write(self, result: ScanResult) -> None:
        if result.state is PortState.OPEN:
            self._writer.write(result)

    def end(self) -> None:
        self._writer.end()


# --- progress and summary (stderr) ------------------------------------------------------------


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(progress: ScanProgress) -> str:
    """The live line: how far, how fast, then what may make the results incomplete (first,
    so a narrow terminal cuts the counts of sent and answered SYNs instead)."""
    if progress.targets is None:  # stdin: the total is known only at its end
        done = f"{progress.done:,} done (reading targets)"
    else:
        share = 100.0 * progress.done / progress.targets if progress.targets else 100.0
        done = f"{share:.1f}% {progress.done:,}/{progress.targets:,}"
    eta = "-" if progress.eta_s is None else _duration(progress.eta_s)
    return (
        f"{done}  {progress.rate_pps:,.0f} SYN/s  ETA {eta}"
        f"  drops {progress.kernel_drops:,}  invalid {progress.invalid:,}"
        f"  sent {progress.sent:,}  answered {progress.answered:,}"
        f"  [{_duration(progress.elapsed_s)}]"
    )


class ProgressLine:
    """The live progress line on a terminal's stderr (rich). ``show`` redraws it in place;
    ``above`` erases it, lets ``write`` print lines where it was, and redraws it below them."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        # The command decided stderr is a terminal; rich need not guess again.
        console = Console(stderr=True, force_terminal=True, highlight=False)
        self._live: Live = Live(
            console=console, auto_refresh=False, transient=True,
            redirect_stdout=False, redirect_stderr=False,
        )
        self._text = ""
        self._alert = False
        self._live.start()

    def _render(self, text: str, alert: bool) -> None:
        from rich.text import Text

        # Red once the kernel has dropped frames: the results are already incomplete.
        style = "bold red" if alert else ""
        self._live.update(Text(text, style=style, no_wrap=True, overflow="ellipsis"),
                          refresh=True)

    def show(self, progress: ScanProgress) -> None:
        self._text = progress_text(progress)
        self._alert = progress.kernel_drops > 0
        self._render(self._text, self._alert)

    def above(self, write: Callable[[], None]) -> None:
        self._render("", False)
        write()
        self._render(self._text, self._alert)

    def close(self) -> None:
        self._live.stop()


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {label}" for label, n in counts.items() if n) or "none"


def suggested_rate(rate_pps: float) -> int:
    """Half the rate that overflowed the capture queue, on a round number."""
    half = max(rate_pps / 2, 1.0)
    digits = len(str(int(half))) - 2
    step = 10 ** max(digits, 0)
    return max(int(half // step * step), 1)


def summary_lines(summary: ScanSummary) -> list[str]:
    """The final summary (stderr, always): counts per state, time and rate, what was left
    out, the RSTs that closed the targets' half-open connections, and whether anything may
    be missing."""
    lines = [
        f"--- prober scan: {summary.results:,} results for {summary.targets:,} targets"
        f" in {summary.duration_s:.2f} s ---",
        "states: " + _counts({state.value: summary.by_state.get(state, 0) for state in PortState}),
        "reasons: " + _counts({r.value: summary.by_reason.get(r, 0) for r in Reason}),
        f"sent {summary.sent:,} SYNs at {summary.rate_pps:,.0f}/s"
        + (f", {summary.send_failed:,} could not be sent" if summary.send_failed else "")
        + (f"; paused {summary.paused_s:.1f} s for the records' reader"
           if summary.paused_s >= 0.05 else ""),
        f"left out: {summary.excluded:,} excluded, {summary.blocklisted:,} blocklisted,"
        f" {summary.bad_lines:,} bad lines skipped",
        f"RSTs for SYN/ACKs: {summary.kernel_rsts:,} by the local kernel,"
        f" {summary.own_rsts:,} by prober",
    ]
    lines.append(
        f"kernel drops {summary.kernel_drops:,}, invalid {summary.invalid:,},"
        f" duplicates {summary.duplicates:,}, late {summary.late:,},"
        f" ICMP notices {summary.notices:,}"
    )
    lines += invalid_lines(summary.invalid_by_kind)
    if summary.kernel_drops:
        lines.append(
            f"INCOMPLETE: the kernel dropped {summary.kernel_drops:,} captured frames before"
            " prober read them, so some answers are missing (those targets read as filtered)."
            f" Scan again with a lower --rate, e.g. --rate {suggested_rate(summary.rate_pps)}."
        )
    if summary.send_failed:
        lines.append(
            f"INCOMPLETE: {summary.send_failed:,} SYNs could not be sent"
            " (their records say send-failed)."
        )
    if summary.interrupted:
        unsent = max(summary.targets - summary.results, 0)
        lines.append(
            f"INTERRUPTED: {unsent:,} planned targets have no record"
            " (probes in flight are marked interrupted)."
        )
    return lines
