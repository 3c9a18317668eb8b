"""A Scapy sr() over a block on one port, as a user would write it (run as a subprocess).

    python scapy_sr.py BLOCK PORT TIMEOUT

Prints one JSON object: {"sent": N, "answered": N, "open": [...], "closed": [...]} with the
addresses that answered SYN/ACK and RST. The bench checks the route before starting it.
"""

from __future__ import annotations

import json
import sys

from scapy.config import conf
from scapy.layers.inet import IP, TCP
from scapy.sendrecv import sr


def main(block: str, port: int, timeout: float) -> int:
    conf.verb = 0
    probes = IP(dst=block) / TCP(dport=port, flags="S")
    answered, unanswered = sr(probes, timeout=timeout, inter=0, verbose=0)
    opened: list[str] = []
    closed: list[str] = []
    for _sent, reply in answered:
        flags = int(reply[TCP].flags) if TCP in reply else 0
        if flags & 0x12 == 0x12:
            opened.append(reply[IP].src)
        elif flags & 0x04:
            closed.append(reply[IP].src)
    print(json.dumps({"sent": len(answered) + len(unanswered), "answered": len(answered),
                      "open": opened, "closed": closed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
