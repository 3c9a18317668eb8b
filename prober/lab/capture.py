"""tcpdump as a measuring instrument: nanosecond kernel stamps, started and stopped safely.

Shared by the integration tests and the benchmarks, which compare prober's own timestamps
(and the delay element's) with what the wire shows.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .commands import command_env, in_namespace, tool
from .errors import LabError

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
# Without --immediate-mode libpcap reads TPACKET_V3 blocks, which the kernel hands over when
# full or after tcpdump's 1 s timeout; SIGINT earlier loses the last, partly filled block.
BUFFERED_LINGER_S = 1.5


@dataclass
class CaptureStats:
    """What tcpdump said when it stopped (``captured``/``dropped`` from its last lines)."""

    argv: list[str] = field(default_factory=list)
    captured: int | None = None
    dropped: int | None = None
    stderr: str = ""


@contextlib.contextmanager
def tcpdump(
    device: str,
    path: Path,
    bpf_filter: str,
    *,
    namespace: str | None = None,
    immediate: bool = True,
    linger_s: float = 0.3,
    extra_args: Sequence[str] = (),
) -> Iterator[CaptureStats]:
    """Capture on ``device`` (in ``namespace``) into ``path`` for the block.

    Ready once tcpdump says 'listening on'. After the block it waits ``linger_s`` (the last
    answers still arrive; buffered mode at least BUFFERED_LINGER_S), then stops tcpdump with
    SIGINT by PID (`ip netns exec` execs it in place) so it flushes, and SIGKILL if it lingers.
    ``immediate=False`` drops --immediate-mode and -U: the kernel then no longer wakes
    tcpdump for every packet.
    """
    stats = CaptureStats()
    argv = [tool("tcpdump"), "-i", device, "-n", "-w", str(path), *extra_args]
    if immediate:
        argv += ["--immediate-mode", "-U"]
    argv += ["--time-stamp-precision=nano", bpf_filter]
    stats.argv = in_namespace(namespace, argv)
    process = subprocess.Popen(
        stats.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=command_env(),
        start_new_session=True,
    )
    received = b""
    try:
        received = _read_until(process, b"listening on", READY_TIMEOUT_S)
        yield stats
        time.sleep(linger_s if immediate else max(linger_s, BUFFERED_LINGER_S))
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
        try:
            rest = process.communicate(timeout=STOP_TIMEOUT_S)[1]
        except subprocess.TimeoutExpired:
            process.kill()
            rest = process.communicate(timeout=STOP_TIMEOUT_S)[1]
        stats.stderr = (received + (rest or b"")).decode(errors="replace")
    for name, pattern in (
        ("captured", r"(\d+) packets? captured"),
        ("dropped", r"(\d+) packets? dropped by kernel"),
    ):
        match = re.search(pattern, stats.stderr)
        if match:
            setattr(stats, name, int(match.group(1)))


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout_s: float) -> bytes:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout_s
    received = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while marker not in received and len(received) < 65536:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"tcpdump not listening after {timeout_s} s: {received!r}")
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                code = process.wait(timeout=STOP_TIMEOUT_S)
                text = received.decode(errors="replace").strip()
                raise LabError(f"tcpdump exited with {code}: {text}")
            received += chunk
    return received
