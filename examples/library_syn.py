"""The library API: probe a port from asyncio code and use the typed results.

    sudo .venv/bin/python examples/library_syn.py 127.0.0.1 22
"""

from __future__ import annotations

import sys

import uvloop

from prober import PortState, Prober


async def main(host: str, port: int) -> int:
    async with Prober() as prober:
        run = await prober.syn(host, port, count=3, interval=0.1, timeout=1.0)
    for probe in run.probes:
        rtt = "-" if probe.rtt is None else f"{probe.rtt.us:.1f} µs ({probe.rtt.clock})"
        print(f"probe {probe.probe}: {probe.state} ({probe.reason}) rtt {rtt}")
    print(run.to_dict())
    return 0 if run.state is PortState.OPEN else 1


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1], int(sys.argv[2]))))
