"""The one exception the lab raises."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


class LabError(RuntimeError):
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
