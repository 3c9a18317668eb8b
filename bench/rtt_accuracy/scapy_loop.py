"""The Scapy contender: `count` x sr1(IP(dst)/TCP(dport, sport=RandShort(), flags="S")).

Run by bench/rtt_accuracy in its own process (as root):

    python scapy_loop.py --dst 198.19.7.2 --port 80 --count 1000 --rate 100

One JSON line per probe: the reply's destination port (the SYN's source port), Scapy's own
`sent.sent_time` (time.time() just before send()) and `reply.time` (the capture socket's
kernel timestamp), then a summary line. `--socket fresh` calls the module-level `sr1()`, which
opens and closes a socket per call (~35 ms each here, so well under 100/s); `--socket reuse`
calls `sr1()` on one `conf.L3socket()`, the same send/receive code without that set-up.
Sends are paced to start + k / rate (late ones go at once), and the loop stops at
`--max-seconds` whatever happened.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dst", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--socket", choices=("fresh", "reuse"), default="fresh")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)

    # Slow imports: after the argument checks.
    from scapy.config import conf
    from scapy.layers.inet import IP, TCP
    from scapy.sendrecv import sr1
    from scapy.volatile import RandShort

    sock = conf.L3socket() if args.socket == "reuse" else None
    started = time.monotonic()
    deadline = started + args.max_seconds
    sent = 0
    try:
        for number in range(args.count):
            due = started + number / args.rate
            now = time.monotonic()
            if now >= deadline:
                break
            if due > now:
                time.sleep(due - now)
            probe = IP(dst=args.dst) / TCP(dport=args.port, sport=RandShort(), flags="S")
            if sock is None:
                reply = sr1(probe, timeout=args.timeout, verbose=0)
            else:
                reply = sock.sr1(probe, timeout=args.timeout, verbose=0)
            sent += 1
            line: dict[str, object] = {
                "probe": number,
                "sport": None,
                "sent_time": float(probe.sent_time) if probe.sent_time else None,
                "reply_time": None,
            }
            if reply is not None and reply.haslayer(TCP):
                line["sport"] = int(reply[TCP].dport)
                line["reply_time"] = float(reply.time)
            sys.stdout.write(json.dumps(line) + "\n")
    finally:
        if sock is not None:
            sock.close()
        sys.stdout.write(json.dumps({
            "type": "summary",
            "sent": sent,
            "seconds": time.monotonic() - started,
            "socket": args.socket,
        }) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
