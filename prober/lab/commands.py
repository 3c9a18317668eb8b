"""Running `ip`, `nft`, `ethtool` and `sysctl`, optionally inside a network namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from .errors import LabError

# Root's PATH does not always include the sbin directories (e.g. `sudo` without a login
# shell), but that is where Debian puts ip, nft, ethtool and sysctl.
_FALLBACK_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"

DEFAULT_TIMEOUT_S = 10.0


def find_tool(name: str) -> str | None:
    """Absolute path of a command-line tool, also looking in the sbin directories."""
    return shutil.which(name) or shutil.which(name, path=_FALLBACK_PATH)


def tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise LabError(f"`{name}` not found in PATH or {_FALLBACK_PATH}", command=[name])
    return path


def in_namespace(namespace: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` run inside `namespace` (None: the root namespace, i.e. unchanged)."""
    if namespace is None:
        return list(argv)
    return [tool("ip"), "netns", "exec", namespace, *argv]


def ip_command(namespace: str | None, *args: str) -> list[str]:
    # `ip -n NS` switches namespace inside ip itself: cheaper than `ip netns exec NS ip`.
    if namespace is None:
        return [tool("ip"), *args]
    return [tool("ip"), "-n", namespace, *args]


def command_env() -> dict[str, str]:
    # The C locale keeps tool messages stable and English, as error messages quote them.
    return {**os.environ, "LC_ALL": "C"}


def run(
    argv: Sequence[str], *, input_text: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> str:
    """Run a command and return its stdout; raise LabError naming it and its stderr on failure."""
    command = list(argv)
    try:
        completed = subprocess.run(
            command,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=command_env(),
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError.from_command(command, f"{exc.filename or command[0]}: not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError.from_command(command, f"timed out after {timeout_s} s") from exc
    if completed.returncode != 0:
        raise LabError.from_command(command, completed.stderr, completed.returncode)
    return completed.stdout
