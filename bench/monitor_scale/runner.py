"""Run one measured process: its CPU (wait4's rusage), its RSS over time (/proc/PID/status,
sampled), the SYNs it put on the link (a counting tap, read when the process prints a mark
line and at its exit), killed by its PID's process group at a time limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scan_rate.syncount import SynCounter  # the same tap scan_rate counts SYNs with

MARKS = ("begin", "end")  # lines of the monitor child (child.py) that the tap is read at
STDERR_TAIL = 4000


@dataclass
class ChildRun:
    argv: list[str]
    returncode: int | None  # None: killed at the time limit
    wall_s: float
    user_s: float  # the whole process, from exec to exit
    sys_s: float
    hwm_kib: int  # VmHWM, the highest seen (fresh at exec, unlike ru_maxrss after a fork)
    rss_samples: list[tuple[float, int]]  # (seconds since start, VmRSS KiB)
    marks: dict[str, tuple[float, int]]  # mark -> (seconds since start, SYNs on the link)
    syns: int  # SYNs on the link from start to exit
    stdout: list[str] = field(default_factory=list)  # lines other than the marks
    stderr: str = ""  # its tail

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def window_syns(self) -> tuple[float, int] | None:
        """(seconds, SYNs on the link) between the begin and end marks."""
        if "begin" not in self.marks or "end" not in self.marks:
            return None
        (t0, c0), (t1, c1) = self.marks["begin"], self.marks["end"]
        return t1 - t0, c1 - c0


def status_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process, KiB; (0, 0) once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break  # VmRSS follows VmHWM
    except (OSError, IndexError, ValueError):
        pass
    return rss, hwm


def cpu_ticks_s(pid: int) -> float:
    """utime + stime of a live process so far, seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(argv: Sequence[str], *, counter: SynCounter | None, timeout_s: float,
              rss_every_s: float = 0.5, env: dict[str, str] | None = None,
              cwd: Path | None = None,
              on_mark: Callable[[str], None] | None = None) -> ChildRun:
    """Run `argv` to its exit (or kill its process group, which it leads, at `timeout_s`);
    `on_mark(line)` is called (in a reader thread) as each mark line arrives."""
    syns = 0
    lock = threading.Lock()

    def count() -> int:
        nonlocal syns
        with lock:
            if counter is not None:
                syns += counter.read()
            return syns

    count()  # from zero
    stdout: list[str] = []
    marks: dict[str, tuple[float, int]] = {}
    rss_samples: list[tuple[float, int]] = []
    hwm = 0
    done = threading.Event()
    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=err, env=env, cwd=cwd, start_new_session=True)
        assert process.stdout is not None
        pipe = process.stdout

        def read_lines() -> None:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip("\n")
                if line in MARKS:
                    marks[line] = (time.monotonic() - started, count())
                    if on_mark is not None:
                        on_mark(line)
                else:
                    stdout.append(line)

        def sample_rss() -> None:
            nonlocal hwm
            while True:
                rss, high = status_kib(process.pid)
                if rss:
                    rss_samples.append((time.monotonic() - started, rss))
                    hwm = max(hwm, high)
                if done.wait(rss_every_s):
                    return

        reader = threading.Thread(target=read_lines, daemon=True)
        sampler = threading.Thread(target=sample_rss, daemon=True)
        reader.start()
        sampler.start()
        killed = False
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() - started > timeout_s:
                    killed = True
                    os.killpg(process.pid, signal.SIGKILL)
                    _, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            os.wait4(process.pid, 0)
            process.returncode = -signal.SIGKILL
            raise
        finally:
            done.set()
            sampler.join()
            reader.join(timeout=5)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        err.seek(0)
        tail = err.read()[-STDERR_TAIL:].decode(errors="replace")
    return ChildRun(argv=list(argv), returncode=None if killed else process.returncode,
                    wall_s=wall, user_s=usage.ru_utime, sys_s=usage.ru_stime, hwm_kib=hwm,
                    rss_samples=rss_samples, marks=marks, syns=count(), stdout=stdout,
                    stderr=tail)
