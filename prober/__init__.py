"""prober: TCP handshake and close observation on raw sockets.

    async with Prober() as p:
        run = await p.syn("198.18.0.2", 80, count=5)
        print(run.state, run.rtt)
"""

from __future__ import annotations

from prober.api import Prober
from prober.core.syn import PortState, Reason, RttSummary, SynProbeResult, SynRun
from prober.errors import (
    ProberError,
    RawSocketsNotPermitted,
    ResolutionError,
    SourcePortInUse,
    UsageError,
)

__all__ = [
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
    "UsageError",
]
__version__ = "0.1.0"
