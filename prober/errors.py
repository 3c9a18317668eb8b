"""prober's errors. The CLI maps each class to one exit status, in one place (cli.py)."""

from __future__ import annotations


class ProberError(Exception):
    """Base class of every error prober reports to its user."""


class UsageError(ProberError):
    """Bad input: a malformed target, an out-of-range option, a file that cannot be read."""


class ResolutionError(UsageError):
    """A host name that does not resolve (in the requested family)."""


class SourcePortInUse(UsageError):
    """The requested source port is held by another socket on this host."""


class RawSocketsNotPermitted(ProberError):
    """The process may not open raw or packet sockets (needs root or CAP_NET_RAW)."""


class PortsExhausted(ProberError):
    """No source port can be reserved (the ephemeral range or the open-files limit ran out)."""
