"""prober: TCP handshake and close observation on raw sockets.

    async with Prober() as p:
        run = await p.syn("198.18.0.2", 80, count=5)
        print(run.state, run.rtt)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prober.errors import (
    ProberError,
    RawSocketsNotPermitted,
    ResolutionError,
    SourcePortInUse,
    UsageError,
)

if TYPE_CHECKING:
    from prober.api import Prober
    from prober.core.syn import PortState, Reason, RttSummary, SynProbeResult, SynRun
    from prober.core.timewait_result import DurationEnd, TimeWaitResult

__all__ = [
    "DurationEnd",
    "PortState",
    "Prober",
    "ProberError",
    "RawSocketsNotPermitted",
    "Reason",
    "ResolutionError",
    "RttSummary",
    "SourcePortInUse",
    "SynProbeResult",
    "SynRun",
    "TimeWaitResult",
    "UsageError",
]
__version__ = "0.1.0"  # the one place: pyproject.toml reads it from here

# Imported on first use (PEP 562), so `prober --version` or `prober lab status`, which import
# this package too, do not pay for the engine and the probes.
_LAZY = {
    "Prober": "prober.api",
    "PortState": "prober.core.syn",
    "Reason": "prober.core.syn",
    "RttSummary": "prober.core.syn",
    "SynProbeResult": "prober.core.syn",
    "SynRun": "prober.core.syn",
    "DurationEnd": "prober.core.timewait_result",
    "TimeWaitResult": "prober.core.timewait_result",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prober' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
