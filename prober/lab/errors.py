"""The lab's exceptions: LabError, and two kinds of it the command reports apart."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from prober.errors import ProberError


class LabError(ProberError, RuntimeError):
    """A lab operation failed; the message is one line naming the command and its stderr."""

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] | None = None,
        stderr: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.command = tuple(command) if command is not None else None
        self.stderr = stderr
        self.returncode = returncode

    @classmethod
    def from_command(
        cls, command: Sequence[str], stderr: str, returncode: int | None = None
    ) -> LabError:
        detail = one_line(stderr) or "no stderr"
        status = "" if returncode is None else f" (exit {returncode})"
        return cls(
            f"`{shlex.join(command)}` failed{status}: {detail}",
            command=command,
            stderr=stderr,
            returncode=returncode,
        )


def one_line(text: str) -> str:
    """Collapse multi-line tool output so an error stays one line in logs and test reports."""
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


class LabRefused(LabError):
    """The lab declined to act and changed nothing: its addresses are routed by something
    else on this host, it is up with other options, or another `lab up`/`down` is running."""


class LabNotPermitted(LabError):
    """Building or removing the lab needs root (network namespaces, root-namespace routes)."""
