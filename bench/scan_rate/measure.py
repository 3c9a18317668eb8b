"""Run one tool and measure it from outside: wall time, CPU and peak RSS of its process tree,
and its sending window from the link's transmit counter.

- CPU: user + system from `wait4()`'s rusage, which includes every descendant the tool
  itself reaped (prober's sender process).
- Peak RSS: each process's VmHWM (its address space's high-water mark, fresh at exec),
  sampled from /proc every SAMPLE_RSS_S; the largest is the peak RSS. Not `ru_maxrss`: the
  kernel carries the RSS of the address space a process leaves at exec into it, so a tool
  forked (vfork) from this bench, grown by the outputs it has read, would report the bench's
  size (kept in the JSON as `ru_maxrss_kib`). The tree's summed RSS is sampled too (a tool of
  two processes, like prober's receiver and sender, holds both at once).
- Sending window: the SYNs to the block on the lab link (syncount.SynCounter), read every
  SAMPLE_TX_S. The window runs from the first to the last sample interval whose rate reached
  ACTIVE_FRACTION of the 90th percentile one; SYN/s sent = the probes the tool was given /
  the window. The counter sees anyone's SYNs to the block: each run waits for the link to be
  quiet first (QUIET_PPS), and reports the rate it started with and the SYNs it saw.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .syncount import SynCounter

SAMPLE_TX_S = 0.005
SAMPLE_RSS_S = 0.05
ACTIVE_FRACTION = 0.25  # of the 90th percentile interval rate: a spike does not set the bar
QUIET_PPS = 1_000  # the link's rate below which nobody else is using it
QUIET_SAMPLE_S = 0.3
QUIET_MAX_WAIT_S = 30.0
NUDGE_EVERY_S = 1.0


@dataclass(frozen=True)
class Measured:
    argv: list[str]
    returncode: int | None  # None: killed
    wall_s: float  # exec to exit
    user_s: float
    sys_s: float
    maxrss_kib: int  # the largest VmHWM of the tree's processes (sampled)
    ru_maxrss_kib: int  # wait4's (at least this bench's size at the fork: see above)
    hwm_by_process: dict[str, int]  # "pid command" -> its VmHWM
    tree_rss_peak_kib: int  # the tree's summed RSS, highest sample
    send_window_s: float | None  # None: no sending seen on the link
    syns_seen: int  # SYNs to the block on the link while the tool ran (anyone's)
    killed: bool  # we killed it (by its PID) after kill_after_s or the timeout
    nudged: bool  # we sent the frames that end masscan's wait (lab.nudge)
    background_pps: float  # the link's rate just before the start (others' traffic)
    output: str  # its stdout and stderr, last OUTPUT_TAIL characters

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


OUTPUT_TAIL = 20_000


def tree_pids(root: int) -> list[int]:
    """`root` and its descendants, from /proc/PID/task/TID/children."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
        except OSError:
            continue  # exited meanwhile
    return pids


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            words = cmdline.read().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    return " ".join(Path(words[0]).name.split() + words[1:4])[:80]


def tree_memory_kib(root: int, hwm: dict[int, int]) -> int:
    """The tree's summed RSS now; records each process's VmHWM in `hwm` on the way."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        hwm[pid] = max(hwm.get(pid, 0), int(line.split()[1]))
                    elif line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break  # VmRSS follows VmHWM
        except (OSError, IndexError, ValueError):
            continue
    return total


class Sampler(threading.Thread):
    """Reads the SYN counter and the tree's RSS until stopped."""

    def __init__(self, counter: SynCounter, pid: int) -> None:
        super().__init__(daemon=True)
        self.counter, self.pid = counter, pid
        self.samples: list[tuple[float, int]] = []
        self.rss_peak_kib = 0
        self.hwm_kib: dict[int, int] = {}  # pid -> its VmHWM, highest seen
        self.names: dict[int, str] = {}  # pid -> its command line, shortened
        self.done = threading.Event()

    def run(self) -> None:
        next_rss, total = 0.0, 0
        while True:
            now = time.monotonic()
            total += self.counter.read()
            self.samples.append((now, total))
            if self.done.is_set():
                break
            if now >= next_rss:
                now_kib = tree_memory_kib(self.pid, self.hwm_kib)
                for pid in self.hwm_kib.keys() - self.names.keys():
                    self.names[pid] = command_name(pid)
                self.rss_peak_kib = max(self.rss_peak_kib, now_kib)
                next_rss = now + SAMPLE_RSS_S
            self.done.wait(SAMPLE_TX_S)

    def send_window(self) -> float | None:
        rates = [(t0, t1, (c1 - c0) / (t1 - t0))
                 for (t0, c0), (t1, c1) in zip(self.samples, self.samples[1:], strict=False)
                 if t1 > t0]
        busy = sorted(rate for _, _, rate in rates if rate > 0)
        bar = ACTIVE_FRACTION * busy[int(len(busy) * 0.9)] if busy else 0.0
        active = [(t0, t1) for t0, t1, rate in rates if bar > 0 and rate >= bar]
        return active[-1][1] - active[0][0] if active else None

    def syns(self) -> int:
        return self.samples[-1][1] - self.samples[0][1] if len(self.samples) > 1 else 0


def link_rate(counter: SynCounter, seconds: float = QUIET_SAMPLE_S) -> float:
    """SYNs/s to the block now (anyone's)."""
    counter.read()
    started = time.monotonic()
    time.sleep(seconds)
    return counter.read() / (time.monotonic() - started)


def wait_quiet(counter: SynCounter, max_wait_s: float) -> float:
    """Wait (up to `max_wait_s`) until the link is quiet, as others may use the lab too;
    returns the last rate seen, the background the run starts with."""
    deadline = time.monotonic() + max_wait_s
    rate = link_rate(counter)
    while rate >= QUIET_PPS and time.monotonic() < deadline:
        rate = link_rate(counter)
    return rate


def run_measured(argv: list[str], *, counter: SynCounter, output: Path, timeout_s: float,
                 cwd: Path | None = None, env: dict[str, str] | None = None,
                 nudge_after_s: float | None = None, nudge: Callable[[], None] | None = None,
                 kill_after_s: float | None = None) -> Measured:
    """Run `argv` (stdout and stderr to `output`) until it exits, or kill it (SIGKILL to its
    process group, which it leads: only what we started) at `kill_after_s` or `timeout_s`.
    `nudge` is called `nudge_after_s` after the start and then every NUDGE_EVERY_S while it
    still runs."""
    background = wait_quiet(counter, QUIET_MAX_WAIT_S)
    counter.read()  # from zero
    with open(output, "wb") as sink:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                   start_new_session=True)
        sampler = Sampler(counter, process.pid)
        sampler.start()
        killed = nudged = False
        next_nudge = started + nudge_after_s if nudge_after_s is not None else None
        deadline = started + min(timeout_s, kill_after_s if kill_after_s is not None
                                 else timeout_s)
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                now = time.monotonic()
                if nudge is not None and next_nudge is not None and now >= next_nudge:
                    nudged = True
                    nudge()
                    next_nudge = now + NUDGE_EVERY_S
                if now >= deadline:
                    killed = True
                    os.killpg(process.pid, signal.SIGKILL)
                    _, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.01)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            os.wait4(process.pid, 0)
            process.returncode = -signal.SIGKILL
            raise
        finally:
            sampler.done.set()
            sampler.join()
        wall = time.monotonic() - started
        # The counter's samples beside the output, for a look at a run's shape (--keep).
        output.with_suffix(".tx.csv").write_text("".join(
            f"{t - started:.4f},{count}\n" for t, count in sampler.samples))
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    text = output.read_bytes()[-OUTPUT_TAIL:].decode(errors="replace")
    return Measured(argv=argv, returncode=None if killed else process.returncode, wall_s=wall,
                    user_s=usage.ru_utime, sys_s=usage.ru_stime,
                    maxrss_kib=max(sampler.hwm_kib.values(), default=0),
                    ru_maxrss_kib=usage.ru_maxrss,
                    hwm_by_process={f"{pid} {sampler.names.get(pid, '?')}": kib
                                    for pid, kib in sampler.hwm_kib.items()},
                    tree_rss_peak_kib=sampler.rss_peak_kib, send_window_s=sampler.send_window(),
                    syns_seen=sampler.syns(), killed=killed, nudged=nudged,
                    background_pps=background, output=text)
