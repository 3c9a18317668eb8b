"""A scan's targets as users write them: every syntax, bad lines with file:line, streaming."""

from __future__ import annotations

import ipaddress
import itertools
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.errors import UsageError
from prober.targets import (
    PortRanges,
    TargetSpec,
    iter_target_lines,
    parse_plain_ipv4,
    parse_ports,
    parse_target_spec,
)


def elements(spec: TargetSpec) -> list[tuple[str, int]]:
    return [spec.address_and_port(i) for i in range(spec.size)]


def test_port_lists_and_ranges_keep_the_order_written() -> None:
    ports = parse_ports("22,80,8000-8002")
    assert ports.ranges == ((22, 22), (80, 80), (8000, 8002))
    assert ports.size == 5
    assert [ports[i] for i in range(5)] == [22, 80, 8000, 8001, 8002]


@pytest.mark.parametrize("text", ["", "0", "65536", "80-70", "a", "80,", "-80", "1-2-3"])
def test_bad_port_lists_are_one_line_errors(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_ports(text)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.18.0.18:80", [("198.18.0.18", 80)]),
        ("198.18.0.18:22,80", [("198.18.0.18", 22), ("198.18.0.18", 80)]),
        ("[2001:2::2]:443", [("2001:2::2", 443)]),
        ("198.18.0.0/31:80-81", [("198.18.0.0", 80), ("198.18.0.0", 81),
                                 ("198.18.0.1", 80), ("198.18.0.1", 81)]),
        ("[2001:2::/127]:80", [("2001:2::", 80), ("2001:2::1", 80)]),
        ("lab-peer.example:8080", [("lab-peer.example", 8080)]),
    ],
)
def test_each_syntax_gives_its_elements(text: str, expected: list[tuple[str, int]]) -> None:
    assert elements(parse_target_spec(text)) == expected


def test_a_host_without_ports_takes_the_default_ports() -> None:
    default = parse_ports("80,443")
    assert elements(parse_target_spec("198.18.0.18", default)) == [
        ("198.18.0.18", 80), ("198.18.0.18", 443)]
    assert elements(parse_target_spec("[2001:2::2]", default))[1] == ("2001:2::2", 443)
    with pytest.raises(UsageError, match="no port"):
        parse_target_spec("198.18.0.18")


@pytest.mark.parametrize(
    "text",
    ["999.1.1.1:80", "198.18.0.1/24:80", "198.18.0.0/33:80", "2001:2::1:80", "[2001:2::1",
     "[198.18.0.1]:80", "[2001:2::1]x", "198.18.0.1:", ":80", "a..b:80", "198.18.0.1:0"],
)
def test_bad_targets_are_one_line_errors(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_target_spec(text)
    assert "\n" not in str(error.value)
    assert text.strip() in str(error.value) or "port" in str(error.value)


def test_a_block_is_indexed_never_expanded() -> None:
    spec = parse_target_spec("198.0.0.0/8:1-65535")
    assert spec.size == (1 << 24) * 65535
    assert spec.address_and_port(spec.size - 1) == ("198.255.255.255", 65535)
    big = parse_target_spec("[2001:2::/64]:80")
    assert big.size == 1 << 64
    assert ipaddress.ip_address(big.address_and_port(12345)[0]) in ipaddress.ip_network(
        "2001:2::/64")


def test_a_file_skips_comments_and_blank_lines_and_names_a_bad_line() -> None:
    lines = ["# lab peers\n", "\n", "198.18.0.18:80  # open\n", "nonsense:x\n", "[2001:2::2]:80\n"]
    with pytest.raises(UsageError, match=r"^targets.txt:4: invalid target 'nonsense:x'"):
        list(iter_target_lines(lines, "targets.txt"))
    bad: list[str] = []
    specs = list(iter_target_lines(lines, "targets.txt", on_bad=bad.append))
    assert [s.address_and_port(0) for s in specs] == [("198.18.0.18", 80), ("2001:2::2", 80)]
    assert len(bad) == 1 and bad[0].startswith("targets.txt:4: ")


def peak_bytes_streaming(count: int) -> int:
    def lines() -> Iterator[str]:
        for n in range(count):
            yield f"198.{18 + (n >> 16) % 2}.{(n >> 8) & 255}.{n & 255}:80\n"

    tracemalloc.start()
    try:
        seen = sum(1 for _spec in iter_target_lines(lines(), "<generator>"))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    return peak


def test_streaming_keeps_memory_flat_with_the_line_count() -> None:
    # Ten times the lines, not more memory: a few specs alive at a time, never the file.
    # (10^6 lines take ~11 s here without tracemalloc; 10^5 with it prove the same.)
    small, large = peak_bytes_streaming(10_000), peak_bytes_streaming(100_000)
    assert large < small + 20_000
    assert large < 200_000


def test_port_ranges_refuse_an_index_past_the_end() -> None:
    with pytest.raises(IndexError):
        PortRanges(((80, 81),))[2]
    assert list(itertools.islice((parse_ports("1-3")[i] for i in range(3)), 3)) == [1, 2, 3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.18.0.18:80", (0xC6120012, 80)),
        ("198.18.0.18", (0xC6120012, 0)),
        ("0.0.0.0:1", (0, 1)),
        ("255.255.255.255:65535", (0xFFFFFFFF, 65535)),
        ("198.18.0.018:80", None),  # leading zero: the slow path explains
        ("256.1.1.1:80", None),
        ("1.1.1.1:0", None),
        ("1.1.1.1:65536", None),
        ("1.1.1.1:22,80", None),
        ("1.1.1.0/24:80", None),
        ("\uff11.1.1.1:80", None),  # a fullwidth digit: not ASCII
        ("host:80", None),
    ],
)
def test_the_plain_ipv4_fast_path(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_plain_ipv4(text) == expected


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.text("0123456789", min_size=1, max_size=4), min_size=4, max_size=4),
    port=st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=6)),
)
def test_the_fast_path_agrees_with_the_full_parser(parts: list[str], port: str | None) -> None:
    text = ".".join(parts) + ("" if port is None else f":{port}")
    fast = parse_plain_ipv4(text)
    if fast is None:
        return  # the full parser decides (and may refuse)
    address, fast_port = fast
    spec = parse_target_spec(text, parse_ports("7"))
    assert spec.network is not None and int(spec.network.network_address) == address
    assert spec.network.num_addresses == 1
    assert spec.ports.ranges == ((fast_port or 7, fast_port or 7),)
