"""`prober syn` under fire: a hostile host forges SYN/ACKs, RSTs and ICMP errors at prober.

The router namespace of the SYN topology (tests/integration/conftest.py) plays the hostile
host, sending at layer 2 straight to prober's interface while `prober syn` probes a port the
target drops and a port where it listens:
- as a blind, off-path forger, it never reads the SYNs and knows only prober's (fixed) source
  port and the target: SYN/ACKs and RSTs with random acks, from the target and from itself,
  from other ports, bare ACKs, ICMP errors quoting random sequence numbers or another port;
  the verdicts stay right (filtered by silence, open) and each kind is counted as invalid;
- as an on-path router, it answers each SYN with ICMP errors that are not errors of
  reachability, quoting it exactly: shown as notices, never a verdict.

Run as a script (``python test_hostile.py forge ...``), this file is the forger itself.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prober.lab import SynTopology, route_check

# Forgery kinds, named as prober counts them (prober.core.syn.Stray).
WRONG_ACK, WRONG_SOURCE, WRONG_PORTS = "wrong-ack", "wrong-source", "wrong-ports"
OTHER_SEGMENT, ICMP_NOT_OURS = "other-segment", "icmp-not-ours"
FORGER_MAX_SECONDS = 30.0  # the forger stops by itself even if nobody stops it
FORGER_RATE = 400  # packets per second
# "Another port" is one the target neither rejects nor serves: prober's kernel answers forged
# SYN/ACKs with RSTs, and a port that answered those with ICMP would add errors of its own.
OTHER = 1000


def forgeries(args: argparse.Namespace) -> list[tuple[str, int, bytes]]:
    """(kind, ethertype, IP packet) for a blind forger: random acks and quoted sequences."""
    from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
    from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, IPerror6, IPv6
    from scapy.layers.inet6 import TCPerror as TCPerror6

    rng = random.Random(args.seed)
    v4 = args.version == 4
    net, err, tcperr = (IP, IPerror, TCPerror) if v4 else (IPv6, IPerror6, TCPerror6)
    ethertype = 0x0800 if v4 else 0x86DD
    root, sport, target, port, router = args.root, args.sport, args.target, args.port, args.router

    def from_target(**tcp: Any) -> bytes:
        return bytes(net(src=target, dst=root) / TCP(sport=port, dport=sport, **tcp))

    def icmp_about(dport: int, seq: int, *, redirect: bool = False) -> bytes:
        quoted = err(src=root, dst=target) / tcperr(sport=sport, dport=dport, seq=seq, flags="S")
        if v4:
            icmp = ICMP(type=5, code=1, gw=router) if redirect else ICMP(type=3, code=13)
        else:
            icmp = ICMPv6PacketTooBig(mtu=1280) if redirect else ICMPv6DestUnreach(code=1)
        return bytes(net(src=router, dst=root) / icmp / quoted)

    out: list[tuple[str, bytes]] = []
    for _ in range(64):
        ack, seq = rng.getrandbits(32), rng.getrandbits(32)
        out += [
            (WRONG_ACK, from_target(flags="SA", seq=seq, ack=ack)),
            (WRONG_ACK, from_target(flags="RA", ack=ack)),
            (WRONG_ACK, from_target(flags="R", seq=seq)),
            (WRONG_SOURCE, bytes(net(src=router, dst=root)
                                 / TCP(sport=port, dport=sport, flags="SA", ack=ack))),
            (WRONG_PORTS, bytes(net(src=target, dst=root)
                               / TCP(sport=port + OTHER, dport=sport, flags="SA", ack=ack))),
            (OTHER_SEGMENT, from_target(flags="A", seq=seq, ack=ack)),
            (ICMP_NOT_OURS, icmp_about(port, seq)),
            (ICMP_NOT_OURS, icmp_about(port + OTHER, seq)),  # quoting another probe's port
            (ICMP_NOT_OURS, icmp_about(port, seq, redirect=True)),
        ]
    return [(kind, ethertype, packet) for kind, packet in out]


def notices_about(syn: bytes, args: argparse.Namespace) -> list[bytes]:
    """ICMP errors that are not errors of reachability, quoting ``syn`` as a router would
    (RFC 792: the IP header and 8 bytes; RFC 4443: as much as fits)."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6PacketTooBig, ICMPv6ParamProblem, IPv6

    if args.version == 4:
        quote = syn[: (syn[0] & 0xF) * 4 + 8]
        outer = IP(src=args.router, dst=args.root)
        return [bytes(outer / ICMP(type=5, code=1, gw=args.router) / quote),
                bytes(outer / ICMP(type=4, code=0) / quote),
                bytes(outer / ICMP(type=12, code=0, ptr=8) / quote)]
    outer6 = IPv6(src=args.router, dst=args.root)
    return [bytes(outer6 / ICMPv6PacketTooBig(mtu=1280) / syn),
            bytes(outer6 / ICMPv6ParamProblem(code=0, ptr=7) / syn)]


def is_our_syn(data: bytes, args: argparse.Namespace) -> bool:
    from prober.core.parse import parse_packet
    from prober.core.wire import MalformedPacket, TcpFlags

    try:
        packet = parse_packet(data)
    except MalformedPacket:
        return False
    tcp = packet.tcp
    return (
        tcp is not None
        and tcp.flags == TcpFlags.SYN
        and (tcp.sport, tcp.dport) == (args.sport, args.port)
        and str(packet.dst_address) == args.target
    )


def forge(argv: list[str]) -> None:
    """Until SIGTERM or FORGER_MAX_SECONDS, send prober's interface forgeries (``--mode
    blind``: never looking at the SYNs), or ICMP notices quoting each SYN it sees on the
    way (``--mode notices``: an on-path router); then print what was sent, by kind."""
    parser = argparse.ArgumentParser()
    for name in ("--root", "--target", "--router", "--mac", "--device"):
        parser.add_argument(name, required=True)
    for name in ("--version", "--sport", "--port", "--seed"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--mode", choices=["blind", "notices"], default="blind")
    args = parser.parse_args(argv)
    frames = forgeries(args)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    mac = bytes.fromhex(args.mac.replace(":", ""))
    ethertype = 0x0800 if args.version == 4 else 0x86DD
    sent: Counter[str] = Counter()
    all_protocols = socket.htons(0x0003)  # ETH_P_ALL
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, all_protocols) as sock:
        sock.settimeout(0.05)  # unbound (bound to the device, it saw nothing here): filtered
        print("ready", flush=True)
        end = time.monotonic() + FORGER_MAX_SECONDS
        i = 0
        while not stop and time.monotonic() < end:
            if args.mode == "notices":
                try:
                    data, address = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                incoming = address[0] == args.device and address[2] == socket.PACKET_HOST
                if incoming and is_our_syn(data, args):
                    for notice in notices_about(data, args):
                        sock.sendto(notice, (args.device, ethertype, 0, 0, mac))
                        sent["notice"] += 1
                continue
            kind, ethertype, packet = frames[i % len(frames)]
            sock.sendto(packet, (args.device, ethertype, 0, 0, mac))
            sent[kind] += 1
            i += 1
            time.sleep(1 / FORGER_RATE)
    print(json.dumps(sent), flush=True)


PROBER = [sys.executable, "-m", "prober"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def device_towards(namespace: str, address: str) -> str:
    """The device of ``namespace`` that routes to ``address``."""
    shown = subprocess.run(
        ["ip", "-j", "-n", namespace, "route", "get", address],
        capture_output=True, text=True, check=True, timeout=10,
    )
    device: str = json.loads(shown.stdout)[0]["dev"]
    return device


def under_fire(
    topo: SynTopology, version: int, port: int, *prober_args: str, mode: str = "blind"
) -> tuple[int, list[dict[str, Any]], Counter[str]]:
    """Run `prober syn target:port --json` while the router forges at its source port."""
    target = str(topo.target_v4 if version == 4 else topo.target_v6)
    route_check(target)  # never send beyond the lab
    for _attempt in range(3):  # another process may take the free port before prober does
        code, records, sent, stderr = forged_run(topo, version, target, port, prober_args, mode)
        if "in use" not in stderr:
            break
    assert not stderr.strip(), stderr
    return code, records, sent


def forged_run(
    topo: SynTopology, version: int, target: str, port: int, prober_args: Sequence[str],
    mode: str,
) -> tuple[int, list[dict[str, Any]], Counter[str], str]:
    root = str(topo.root_v4 if version == 4 else topo.root_v6)
    router = str(topo.router_v4 if version == 4 else topo.router_v6)
    sport = free_port()
    mac = Path(f"/sys/class/net/{topo.root_interface}/address").read_text().strip()
    forger = subprocess.Popen(
        ["ip", "netns", "exec", topo.router_namespace, sys.executable, __file__, "forge",
         "--root", root, "--target", target, "--router", router, "--mac", mac,
         "--device", device_towards(topo.router_namespace, root), "--version", str(version),
         "--sport", str(sport), "--port", str(port), "--seed", str(port * 10 + version),
         "--mode", mode],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert forger.stdout is not None
        assert forger.stdout.readline().strip() == "ready"
        endpoint = f"[{target}]:{port}" if version == 6 else f"{target}:{port}"
        done = subprocess.run(
            [*PROBER, "syn", endpoint, "--source-port", str(sport), "--json", *prober_args],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        forger.send_signal(signal.SIGTERM)
        try:
            out, _ = forger.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            forger.kill()
            out, _ = forger.communicate(timeout=10)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    sent = Counter(json.loads(out.strip().splitlines()[-1]))
    return done.returncode, records, sent, done.stderr


def assert_forgeries_counted(records: list[dict[str, Any]], sent: Counter[str]) -> None:
    *probes, summary = records
    kinds = summary["invalid_by_kind"]
    # Every kind the forger sent while probes were waiting is counted as itself.
    assert set(kinds) == {WRONG_ACK, WRONG_SOURCE, WRONG_PORTS, OTHER_SEGMENT, ICMP_NOT_OURS}
    assert all(kinds[kind] <= sent[kind] for kind in kinds), (kinds, sent)
    assert summary["invalid"] == sum(kinds.values())
    # A probe's line is printed when its outcome is known; its port is watched (and forged
    # at) for one more timeout, which only the summary counts.
    assert sum(p["invalid"] for p in probes) <= summary["invalid"]
    assert summary["notices"] == 0  # the forged redirects quoted no SYN of ours


@pytest.mark.parametrize("version", [4, 6])
def test_forgeries_never_turn_a_dropped_port_into_an_answer(
    syn_topology: SynTopology, version: int
) -> None:
    code, records, sent = under_fire(
        syn_topology, version, SynTopology.DROPPED_PORT, "-c", "3", "-i", "0.3", "-W", "1"
    )
    summary = records[-1]
    assert code == 1
    assert (summary["state"], summary["reason"]) == ("filtered", "no-response")
    assert (summary["sent"], summary["answered"], summary["lost"]) == (3, 0, 3)
    assert all(p["tcp"] is None and p["icmp"] is None for p in records[:-1])
    assert_forgeries_counted(records, sent)


@pytest.mark.parametrize("version", [4, 6])
def test_forgeries_never_change_an_open_port(syn_topology: SynTopology, version: int) -> None:
    code, records, sent = under_fire(
        syn_topology, version, SynTopology.OPEN_PORT, "-c", "3", "-i", "0.3", "-W", "1"
    )
    *probes, summary = records
    assert code == 0
    assert (summary["state"], summary["reason"], summary["answered"]) == ("open", "syn-ack", 3)
    for probe in probes:
        # The answer is the target's own: Linux options and one hop, not a forgery.
        assert probe["tcp"]["flags"] == "S." and probe["tcp"]["options"] == "MSTNW"
        assert probe["tcp"]["ttl"] == 63
    assert_forgeries_counted(records, sent)


if __name__ == "__main__" and sys.argv[1:2] == ["forge"]:
    forge(sys.argv[2:])


@pytest.mark.parametrize("version", [4, 6])
def test_icmp_notices_quoting_the_syn_are_shown_and_decide_nothing(
    syn_topology: SynTopology, version: int
) -> None:
    # Redirect, source quench and parameter problem (ICMPv6: packet too big, parameter
    # problem) quoting each SYN exactly: today's main ended the probe "filtered (icmp-other)".
    code, records, sent = under_fire(
        syn_topology, version, SynTopology.DROPPED_PORT, "-c", "2", "-i", "0.3", "-W", "1",
        mode="notices",
    )
    *probes, summary = records
    assert code == 1
    assert (summary["state"], summary["reason"], summary["answered"]) == (
        "filtered", "no-response", 0,
    )
    assert summary["notices"] == sent["notice"] == (3 if version == 4 else 2) * 2
    names = {n["name"] for p in probes for n in p["icmp_notices"]}
    expected = {"redirect", "source-quench", "parameter-problem"} if version == 4 else {
        "packet-too-big", "parameter-problem"}
    assert names == expected
    router = str(syn_topology.router_v4 if version == 4 else syn_topology.router_v6)
    assert all(n["source"] == router and n["kind"] == "other"
               for p in probes for n in p["icmp_notices"])
    assert summary["invalid"] == 0
