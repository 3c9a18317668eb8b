"""The lab's file lock: one holder at a time, a bounded wait, the caller's error on timeout."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from prober.lab.state import file_lock


class Busy(Exception):
    pass


def test_a_second_holder_waits_then_gets_the_callers_error(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from prober.lab.state import file_lock\n"
            f"with file_lock(Path({str(path)!r}), 1.0, RuntimeError):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(3)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(Busy), file_lock(path, 0.3, Busy):
            pass
        assert time.monotonic() - started >= 0.3
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: it is free at once.
    with file_lock(path, 0.3, Busy):
        pass
