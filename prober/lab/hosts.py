"""Temporary /etc/hosts entries, so tests can probe lab targets by name."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from .addresses import IPAddress, is_lab_address, parse_address
from .errors import LabError

HOSTS_PATH = Path("/etc/hosts")
MARKER = "# prober-lab"
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def hosts_line(name: str, address: str | IPAddress) -> str:
    """A marked line unique to this call, so removing it cannot take anyone else's line."""
    if not _HOSTNAME.match(name):
        raise LabError(f"invalid host name {name!r}")
    parsed = parse_address(address)
    if not (is_lab_address(parsed) or parsed.is_loopback):
        raise LabError(f"{parsed} is neither a lab nor a loopback address")
    return f"{parsed}\t{name}\t{MARKER} pid={os.getpid()} id={secrets.token_hex(4)}"


def append_hosts_line(line: str, hosts_path: Path = HOSTS_PATH) -> None:
    # In place (not write-and-rename): /etc/hosts is often a bind mount in containers.
    with open(hosts_path, "r+", encoding="utf-8") as hosts:
        fcntl.flock(hosts, fcntl.LOCK_EX)
        content = hosts.read()
        separator = "" if not content or content.endswith("\n") else "\n"
        hosts.write(f"{separator}{line}\n")


def remove_hosts_line(line: str, hosts_path: Path = HOSTS_PATH) -> bool:
    """Remove the first line equal to `line`; False if there was none (already removed)."""
    try:
        hosts = open(hosts_path, "r+", encoding="utf-8")  # noqa: SIM115 - locked below
    except FileNotFoundError:
        return False
    with hosts:
        fcntl.flock(hosts, fcntl.LOCK_EX)
        lines = hosts.read().splitlines(keepends=True)
        for number, existing in enumerate(lines):
            if existing.rstrip("\n") == line:
                del lines[number]
                hosts.seek(0)
                hosts.write("".join(lines))
                hosts.truncate()
                return True
    return False


@contextlib.contextmanager
def hosts_entry(
    name: str, address: str | IPAddress, *, hosts_path: Path = HOSTS_PATH
) -> Iterator[str]:
    """Map `name` to a lab (or loopback) `address` in /etc/hosts for the duration of the block.

    Yields the added line; exactly that line is removed afterwards, also on failure.
    """
    line = hosts_line(name, address)
    append_hosts_line(line, hosts_path)
    try:
        yield line
    finally:
        remove_hosts_line(line, hosts_path)
