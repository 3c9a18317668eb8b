"""The command line's contract without root: usage errors are one line with exit status 2,
help that reads at 80 columns, `--version`, and every command the docs and the lab print."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import prober
from prober.cli import EXIT_OF_REASON, Exit, app
from prober.core.syn import Reason
from prober.lab import LabEntry
from prober.lab.builtin import PEERS, _entries
from prober.lab.commands import find_tool
from prober.lab.render import table
from prober.targets import parse_target

REPOSITORY = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["syn", "198.18.0.2"],
        ["syn", "198.18.0.2:0"],
        ["syn", "2001:2::2"],
        ["syn", "[2001:2::2]:80", "-4"],
        ["syn", "198.18.0.2:80", "-4", "-6"],
        ["syn", "198.18.0.2:80", "--ttl", "0"],
        ["syn", "198.18.0.2:80", "-c", "-1"],
        ["syn", "198.18.0.2:80", "-W", "0"],
    ],
)
def test_bad_input_exits_2_before_any_socket(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == Exit.USAGE, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["syn", "198.18.0.2"],
        ["syn", "198.18.0.2:80", "--bogus"],
        ["syn"],
        [],
        ["frobnicate"],
        # Near-addresses: invalid addresses, not names to resolve.
        ["syn", "999.1.1.1:80"],
        ["syn", "1.2.3:80"],
        ["halfopen", "1.2.3.4.5:80"],
        ["close", "[fe80::1%eth0]:80"],
        ["syn", "[::1"],
    ],
)
def test_the_installed_command_prints_one_error_line(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from prober.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prober: error: "), done.stderr


def test_every_reason_has_a_documented_exit_status() -> None:
    assert set(EXIT_OF_REASON) >= set(Reason)
    assert EXIT_OF_REASON[Reason.SYN_ACK] == 0
    assert EXIT_OF_REASON[Reason.NO_RESPONSE] == 1
    assert EXIT_OF_REASON[Reason.RST] == 4
    assert EXIT_OF_REASON[Reason.ICMP_UNREACHABLE] == 5
    assert (Exit.INTERRUPTED, Exit.STDOUT_CLOSED) == (130, 141)


# --- --version and --help --------------------------------------------------------------------


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "prober", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"prober {prober.__version__}\n", "")
    assert re.fullmatch(r"\d+\.\d+\.\d+", prober.__version__)
    assert importlib.metadata.version("prober") == prober.__version__  # one version, one place


def command_paths(command: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group of the CLI, as the words that name it."""
    command = typer.main.get_command(app) if command is None else command
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def command_at(path: tuple[str, ...]) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def test_every_command_is_checked() -> None:
    assert {" ".join(p) for p in command_paths()} == {
        "", "syn", "halfopen", "close", "scan", "timewait", "monitor", "profile", "lab", "lab up",
        "lab down", "lab status"}


@pytest.mark.parametrize("path", list(command_paths()), ids=lambda p: " ".join(p) or "prober")
def test_help_at_80_columns(path: tuple[str, ...]) -> None:
    """No `<bool>` beside a flag, no line past 80 columns, and every option name whole."""
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "<bool>" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for param in command_at(path).params:
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), name


# --- every command the lab and the docs print exists, with options that parse --------------


def parse_prober_command(words: list[str]) -> dict[str, Any]:
    """Parse ``prober ...`` as the CLI will (options, types, ranges, the target); raise on a
    command, option or value that does not exist. Returns the parsed parameters."""
    assert words[0] == "prober", words
    command = typer.main.get_command(app)
    path = ["prober"]
    rest = words[1:]
    while hasattr(command, "commands"):
        assert rest, f"{shlex.join(words)}: no command"
        assert rest[0] in command.commands, f"{shlex.join(words)}: no command {rest[0]!r}"
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    params: dict[str, Any] = command.make_context(" ".join(path), rest).params
    if "target" in params:
        parse_target(params["target"])
    return params


def check_printed_command(line: str) -> None:
    """A command as printed for a user: ``sudo prober ...`` parses with the real CLI; any
    other program (also behind ``sudo`` and ``ip netns exec NS``) is installed."""
    words = shlex.split(line, comments=True)
    if words[0] == "sudo":
        words = words[1:]
    if words[0] == "prober":
        parse_prober_command(words)
        return
    if words[:3] == ["ip", "netns", "exec"]:
        assert find_tool("ip"), line
        words = words[4:]
    assert find_tool(words[0]), f"{line}: {words[0]} is not installed"


def lab_entries() -> list[LabEntry]:
    """Every row `prober lab status` can print, for every peer, port and family (the
    addresses are the persistent lab's first link's: only the commands matter here)."""
    right = SimpleNamespace(v4=SimpleNamespace(ip="198.18.0.18"),
                            v6=SimpleNamespace(ip="2001:2::1:2"))
    link: Any = SimpleNamespace(right=right)
    block = (ipaddress.ip_network("198.18.1.0/24"), ipaddress.ip_network("2001:2:0:0:1::/120"))
    return [entry for peer in PEERS
            for entry in _entries(peer, f"pl00-{peer.name}", link, block, "20ms ± 1ms")]


def test_lab_status_lists_only_commands_that_exist() -> None:
    entries = lab_entries()
    assert len(entries) == 2 * sum(len(peer.ports) for peer in PEERS)
    rows = table(entries)[1:]
    for entry, row in zip(entries, rows, strict=True):
        check_printed_command(entry.command)
        # Nothing else in the row names a command (the table once had a column of prober
        # commands still to come, `prober timewait` and `prober scan`).
        assert entry.command in row
        assert "prober" not in row.replace(entry.command, ""), row


def test_a_command_that_does_not_exist_is_caught() -> None:
    """The checks above would see a command prober does not have (the lab once printed
    `prober timewait` before it existed) and a bad option value."""
    for line in ("prober nonesuch 198.18.0.114:80", "sudo prober timewait 198.18.0.18:80 --step x",
                 "sudo prober syn 198.18.0.18:80 -c x",
                 "sudo prober close 198.18.0.18:80 --bogus", "sudo prober syn 999.1.1.1:80",
                 "sudo ip netns exec pl00-open no-such-tool-here"):
        with pytest.raises(Exception):  # noqa: B017 (any failure will do)
            check_printed_command(line)


def doc_command_lines(path: Path) -> list[str]:
    """Commands in a Markdown file's code blocks: lines that start (after a prompt `$ `) with
    `sudo`, `prober` or `python3`; comments after `#` dropped."""
    lines = []
    inside = False
    for raw in path.read_text().splitlines():
        if raw.startswith("```"):
            inside = not inside
            continue
        line = raw.strip().removeprefix("$ ")
        # "prober: ..." is prober's own output (a banner, an error), not a command.
        if inside and re.match(r"(sudo|prober|python3)(?=\s|$)", line):
            lines.append(line)
    return lines


def check_synopsis(line: str) -> None:
    """``prober syn HOST:PORT [-c COUNT] [-4|-6]``: the command and every option exist."""
    words = line.split("#")[0].replace("[", " ").replace("]", " ").replace("|", " ").split()
    words = words[1:] if words[0] == "sudo" else words
    command = typer.main.get_command(app)
    rest = words[1:]
    while hasattr(command, "commands"):
        assert rest[0] in command.commands, line
        command = command.commands[rest.pop(0)]
    names = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    for word in rest:
        if word.startswith("-"):
            assert word in names, f"{line}: no option {word}"


@pytest.mark.parametrize("document", ["README.md", "docs/lab.md", "docs/syn.md", "docs/scan.md",
                                      "docs/halfopen.md", "docs/close.md", "docs/timewait.md",
                                      "docs/monitor.md", "docs/profile.md", "docs/challenge.md",
                                      "docs/stack-defaults.md"])
def test_every_command_in_the_docs_exists(document: str) -> None:
    lines = doc_command_lines(REPOSITORY / document)
    assert lines or document != "README.md"
    for line in lines:
        if "[" in line.replace("'[", "").replace("[2001", "") or "HOST:PORT" in line:
            check_synopsis(line)
        else:
            check_printed_command(line)
