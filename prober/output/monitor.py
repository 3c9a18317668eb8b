"""What ``prober monitor`` prints for a person: a banner, then one line per state change.

A state change is a target's port state differing from its previous round's (its first round
counts as one, from ``new``), so a steady set of targets prints nothing after the first
round, and a port that stops answering prints one line when it does and one when it is back::

    2026-12-02 06:25:49 198.18.0.18:80 new -> open (syn-ack, rtt 0.123 ms)
    2026-12-02 06:31:02 198.18.0.18:80 open -> filtered (no-response)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prober.core.syn import PortState

if TYPE_CHECKING:
    from prober.monitor.loop import MonitorSample


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def banner(targets: int, interval: float, timeout: float, vantage: str,
           metrics_url: str | None) -> str:
    """The first line: what is monitored, how often, and where the metrics are."""
    where = f"metrics on {metrics_url}" if metrics_url else "no metrics endpoint"
    return (f"prober: monitoring {_plural(targets, 'target')} every {interval:g} s (timeout "
            f"{timeout:g} s) from vantage {vantage!r}; {where}")


def reloaded(targets: int, added: int, removed: int) -> str:
    """The stderr line after a SIGHUP reload took the file."""
    return f"prober: reloaded: {_plural(targets, 'target')} (+{added}, -{removed})"


def losses(samples_dropped: int, rounds_skipped: int, kernel_drops: int) -> str:
    """The stderr line of what was lost so far, when no /metrics endpoint shows it."""
    return (f"prober: lost so far: {_plural(samples_dropped, 'sample')} dropped (the reader "
            f"of stdout fell behind), {_plural(rounds_skipped, 'round')} skipped (the process "
            f"stalled), {_plural(kernel_drops, 'captured frame')} dropped by the kernel")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def change_line(sample: MonitorSample, before: PortState | None) -> str:
    """One state change: when, which target, the states before and after, why, the RTT."""
    was = "new" if before is None else before.value
    detail = sample.reason.value
    if sample.rtt_s is not None:
        detail += f", rtt {sample.rtt_s * 1000:.3f} ms"
    if sample.error:
        detail += f": {sample.error}"
    return f"{_when(sample.at)} {sample.target} {was} -> {sample.state.value} ({detail})"


class StateChanges:
    """Remembers each target's last state and gives a line when a sample changes it."""

    def __init__(self) -> None:
        self._states: dict[str, PortState] = {}

    def line(self, sample: MonitorSample) -> str | None:
        """The change line for ``sample``, or None when its target's state held."""
        before = self._states.get(sample.target)
        if before is sample.state:
            return None
        self._states[sample.target] = sample.state
        return change_line(sample, before)

    def keep_only(self, targets: Iterable[str]) -> None:
        """Forget targets a reload removed (one re-added later starts again from ``new``)."""
        kept = set(targets)
        self._states = {name: state for name, state in self._states.items() if name in kept}


__all__ = ["StateChanges", "banner", "change_line", "losses", "reloaded"]
