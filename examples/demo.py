"""A tour of `prober syn` against real Linux TCP stacks built on this machine.

Run as root (``sudo ./demo`` installs prober first and then runs this). It builds two network
namespaces (a router and a target, addressed from 198.18.0.0/15 and 2001:2::/48), runs
`prober syn` against an open, a closed, a dropped, a port-unreachable and a router-rejected
port, and tears everything down again, also when interrupted.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from prober.lab import SynTopology, Topology, build_syn_topology


def show(*args: str) -> None:
    command = ["prober", *args]
    print(f"\n$ sudo {shlex.join(command)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "prober", *args], check=False)
    print(f"(exit status {done.returncode})", flush=True)


def tour(topo: SynTopology) -> None:
    v4, v6 = str(topo.target_v4), str(topo.target_v6)
    print(f"target {v4} / {v6} behind router {topo.router_v4} / {topo.router_v6}")
    show("syn", f"{v4}:{topo.OPEN_PORT}", "-c", "3", "-i", "0.2")
    show("syn", f"[{v6}]:{topo.OPEN_PORT}", "-c", "1")
    show("syn", f"{v4}:{topo.CLOSED_PORT}", "-c", "1")
    show("syn", f"{v4}:{topo.DROPPED_PORT}", "-c", "1", "-W", "0.5")
    show("syn", f"{v4}:{topo.PORT_UNREACHABLE_PORT}", "-c", "1")
    show("syn", f"[{v6}]:{topo.ADMIN_PROHIBITED_PORT}", "-c", "1")
    show("syn", f"{v4}:{topo.OPEN_PORT}", "-c", "1", "--json")


def main() -> int:
    with Topology.create() as topology:
        topo = build_syn_topology(topology)
        try:
            tour(topo)
        except KeyboardInterrupt:
            print("\ninterrupted; tearing the namespaces down")
            return 130
    print("\nThe namespaces are gone again. Next: `sudo .venv/bin/prober syn --help`,")
    print("and the tests: `sudo .venv/bin/python -m pytest`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
