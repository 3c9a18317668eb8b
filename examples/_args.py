"""What the examples share: an argparse parser whose errors are one line (exit status 2)."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage and then the error; the examples, like prober, print one
    line (`--help` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
