"""Every example takes --help and fails with one line on missing or bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith("_"))
# Arguments each example refuses. No arguments at all is demo.py's normal run (it brings the
# lab up), so it is tried with an argument it does not take instead.
BAD_ARGUMENTS = {
    "library_syn.py": [[], ["127.0.0.1"], ["127.0.0.1", "0"], ["127.0.0.1", "http"],
                       ["127.0.0.1", "80", "--count", "0"], ["127.0.0.1", "80", "--bogus"]],
    "demo.py": [["extra"], ["--bogus"]],
}


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=60)


def test_every_example_is_covered() -> None:
    assert set(SCRIPTS) == set(BAD_ARGUMENTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    done = run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}")
    assert done.stderr == ""


@pytest.mark.parametrize(("script", "args"),
                         [(s, a) for s, cases in BAD_ARGUMENTS.items() for a in cases])
def test_bad_arguments_are_one_line(script: str, args: list[str]) -> None:
    done = run(script, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), done.stderr
