from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prober.errors import UsageError
from prober.targets import Target, parse_target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.18.0.2:80", Target("198.18.0.2", 80)),
        ("[2001:2::2]:443", Target("2001:2::2", 443)),
        ("lab-open.test:8080", Target("lab-open.test", 8080)),
        (" 198.18.0.2:1 ", Target("198.18.0.2", 1)),
    ],
)
def test_valid_targets(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty target"),
        ("198.18.0.2", "a port is required"),
        ("198.18.0.2:", "invalid port"),
        ("198.18.0.2:0", "invalid port 0"),
        ("198.18.0.2:65536", "invalid port 65536"),
        ("198.18.0.2:http", "invalid port 'http'"),
        (":80", "the host is missing"),
        ("2001:2::2", "a port is required, e.g. [2001:2::2]:80"),
        ("2001:zz::2:80", "put an IPv6 address in brackets"),
        ("[2001:2::2]", "a port is required"),
        ("[2001:2::2]80", "a port is required"),
        ("[2001:2::2:80", "missing ']'"),
        ("[198.18.0.2]:80", "is not an IPv6 address"),
    ],
)
def test_invalid_targets_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        parse_target(text)
    assert complaint in str(info.value)
    assert "\n" not in str(info.value)


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_usage_error(text: str) -> None:
    try:
        target = parse_target(text)
    except UsageError:
        return
    assert 1 <= target.port <= 65535 and target.host
