"""The targets file of ``prober monitor``: one ``host:port`` or ``[v6]:port`` per line.

Blank lines and ``#`` comments (whole lines or after a target) are skipped; a target written
twice is one target (the first line's place is kept). Read in full before monitoring starts,
and again on SIGHUP: a bad line is an error naming ``FILE:LINE`` (at start the command exits;
on a reload the old list is kept), so a file is taken whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from prober.errors import UsageError
from prober.targets import parse_target

# Past this many distinct targets one prober is not the tool: spread them over several, each
# with its own --vantage, scraped by one Prometheus. A million keeps memory in the GBs at most.
MAX_TARGETS = 1_000_000

# (host as written, port): what Prober.monitor takes.
TargetList = tuple[tuple[str, int], ...]


class TargetsFileError(UsageError):
    """A targets file that cannot be read or holds a bad line (``FILE:LINE: why``)."""


def parse_targets(lines: Iterable[bytes | str], source: str, *,
                  limit: int = MAX_TARGETS) -> TargetList:
    """The distinct targets of ``lines``, in the order first written.

    Args:
        lines: the file's lines (bytes are decoded as UTF-8).
        source: the file's name, for messages (``-`` reads as ``stdin``).
        limit: the most distinct targets allowed.

    Returns:
        (host, port) pairs, duplicates removed.

    Raises:
        TargetsFileError: ``SOURCE:LINE: message`` for the first bad line, too many targets,
            or none at all.
    """
    name = "stdin" if source == "-" else source
    seen: dict[tuple[str, int], None] = {}
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TargetsFileError(f"{name}:{number}: not UTF-8 text") from None
        else:
            line = raw
        text = line.partition("#")[0].strip()
        if not text:
            continue
        try:
            target = parse_target(text)
        except UsageError as exc:
            raise TargetsFileError(f"{name}:{number}: {exc}") from None
        # An address in its one canonical spelling (RFC 5952 for IPv6), so that two ways of
        # writing it are one target and one series; a name stays as written.
        literal = target.literal
        key = (target.host if literal is None else str(literal), target.port)
        if key not in seen:
            if len(seen) >= limit:
                raise TargetsFileError(
                    f"{name}:{number}: more than {limit:,} targets; split them over several "
                    "probers, each with its own --vantage"
                )
            seen[key] = None
    if not seen:
        raise TargetsFileError(f"{name}: no targets (one HOST:PORT per line, e.g. 198.18.0.18:80)")
    return tuple(seen)


def read_targets_file(path: str, stdin: BinaryIO | None = None, *,
                      limit: int = MAX_TARGETS) -> TargetList:
    """Read and parse the targets file at ``path`` (``-``: ``stdin``, read to its end).

    Raises:
        TargetsFileError: the file cannot be read, or ``parse_targets`` refuses it.
    """
    if path == "-":
        if stdin is None:
            raise TargetsFileError("stdin: cannot read targets from it")
        return parse_targets(stdin, path, limit=limit)
    try:
        with Path(path).open("rb") as file:
            return parse_targets(file, path, limit=limit)
    except OSError as exc:
        raise TargetsFileError(f"cannot read {path}: {exc.strerror or exc}") from None


__all__ = ["MAX_TARGETS", "TargetList", "TargetsFileError", "parse_targets", "read_targets_file"]
