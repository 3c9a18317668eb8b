"""`prober monitor`'s targets file: what a user writes, what is monitored, and the one-line
FILE:LINE error for what is wrong."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from prober.monitor.targets_file import TargetsFileError, parse_targets, read_targets_file


def write(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "targets.txt"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def test_comments_blanks_v6_and_names(tmp_path: Path) -> None:
    path = write(tmp_path, "# web\n198.18.0.18:80\n\n  [2001:2::18]:443  # v6\nexample.test:22\n")
    assert read_targets_file(path) == (
        ("198.18.0.18", 80), ("2001:2::18", 443), ("example.test", 22))


def test_duplicates_are_one_target_in_first_place(tmp_path: Path) -> None:
    path = write(tmp_path, "198.18.0.18:80\n198.18.0.18:81\n198.18.0.18:80\n")
    assert read_targets_file(path) == (("198.18.0.18", 80), ("198.18.0.18", 81))


@pytest.mark.parametrize(("line", "why"), [
    ("198.18.0.18", "a port is required"),
    ("198.18.0.18:0", "invalid port 0"),
    ("2001:2::18:80", "[2001:2::18:80]:80"),
    ("999.1.1.1:80", "not an IPv4 address"),
])
def test_a_bad_line_names_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    path = write(tmp_path, f"198.18.0.18:80\n# comment\n{line}\n")
    with pytest.raises(TargetsFileError) as caught:
        read_targets_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ") and why in message
    assert "\n" not in message


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing yet\n\n")
    with pytest.raises(TargetsFileError, match="no targets"):
        read_targets_file(path)


def test_cap_counts_distinct_targets(tmp_path: Path) -> None:
    lines = ["198.18.0.1:80", "198.18.0.1:80", "198.18.0.2:80", "198.18.0.3:80"]
    assert len(parse_targets(lines[:3], "f", limit=2)) == 2
    with pytest.raises(TargetsFileError, match=r"^f:4: more than 2 targets"):
        parse_targets(lines, "f", limit=2)


def test_not_utf8_and_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, b"198.18.0.18:80\n\xff\xfe:80\n")
    with pytest.raises(TargetsFileError, match=r":2: not UTF-8 text"):
        read_targets_file(path)
    with pytest.raises(TargetsFileError, match=r"^cannot read .*missing: No such file"):
        read_targets_file(str(tmp_path / "missing"))
    with pytest.raises(TargetsFileError, match="cannot read"):
        read_targets_file(str(tmp_path))  # a directory


def test_stdin_is_named_stdin() -> None:
    assert read_targets_file("-", io.BytesIO(b"198.18.0.18:80\n")) == (("198.18.0.18", 80),)
    with pytest.raises(TargetsFileError, match=r"^stdin:1: "):
        read_targets_file("-", io.BytesIO(b"nope\n"))


def test_an_address_written_two_ways_is_one_target_in_its_canonical_spelling() -> None:
    targets = parse_targets(["[2001:2:0:0::1:2]:80", "[2001:2::1:2]:80", "[2001:0002::1:2]:80",
                             "Example.test:80"], "t.txt")
    assert targets == (("2001:2::1:2", 80), ("Example.test", 80))
