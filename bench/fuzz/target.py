"""One atheris fuzz target, run by ``bench/fuzz`` in a process of its own (libFuzzer exits
when it is done): ``python bench/fuzz/target.py NAME [libFuzzer flags]``.

NAME is ``parse`` (the bytes are one captured packet) or a probe kind of
tests/unit/fuzzing.py ``ProbeKind`` (the bytes choose a run of steps: time passing, plausible,
random and replayed segments, late TX stamps, failing sends). An exception is a finding:
libFuzzer stops, writes the input to ``-artifact_prefix`` and exits non-zero.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # tests.unit.fuzzing and prober, from this checkout

with atheris.instrument_imports(include=["prober"]):
    from tests.unit.fuzzing import Harness, ProbeKind, parse_or_malformed

STEPS_PER_INPUT = 64


class FuzzedChooser:
    """The harness's choices, consumed from libFuzzer's bytes."""

    def __init__(self, data: bytes) -> None:
        self._provider = atheris.FuzzedDataProvider(data)

    @property
    def exhausted(self) -> bool:
        return self._provider.remaining_bytes() == 0

    def integer(self, low: int, high: int) -> int:
        value: int = self._provider.ConsumeIntInRange(low, high)
        return value

    def blob(self, most: int) -> bytes:
        data: bytes = self._provider.ConsumeBytes(self._provider.ConsumeIntInRange(0, most))
        return data


def fuzz_parse(data: bytes) -> None:
    parse_or_malformed(data)


def fuzz_probe(kind: ProbeKind) -> Callable[[bytes], None]:
    def one_input(data: bytes) -> None:
        chooser = FuzzedChooser(data)
        harness = Harness(kind, 6 if chooser.integer(0, 1) else 4)  # sends fail too, at times
        for _ in range(STEPS_PER_INPUT):
            if chooser.exhausted:
                break
            harness.step(chooser)

    return one_input


def main() -> None:
    name, flags = sys.argv[1], sys.argv[2:]
    target = fuzz_parse if name == "parse" else fuzz_probe(ProbeKind(name))
    atheris.Setup([sys.argv[0], *flags], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
