"""The built-in lab's options (`prober lab up --delay 20ms --jitter 1ms --loss 1% --seed N`),
parsed from text by pure functions so the command and the tests share one definition."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prober.errors import UsageError

DEFAULT_DELAY = "20ms"
DEFAULT_JITTER = "1ms"
DEFAULT_LOSS = "1%"
MAX_DELAY_S = 10.0  # longer is a configuration mistake, not a network to emulate
MAX_SEED = 2**32 - 1

_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_DURATION = re.compile(r"^(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>s|ms|us|µs)$")
_FRACTION = re.compile(r"^(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<percent>%?)$")


def parse_duration(text: str, *, name: str = "duration") -> float:
    """``20ms``, ``0.5s``, ``250us`` -> seconds. A unit is required: a bare ``20`` could mean
    seconds or milliseconds, and the wrong guess is a thousandfold error.

    Raises:
        UsageError: not a non-negative number with a unit, or above MAX_DELAY_S.
    """
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(
            f"invalid {name} {text!r}: expected a number with a unit, e.g. 20ms, 0.5s, 250us"
        )
    seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    if seconds > MAX_DELAY_S:
        raise UsageError(f"invalid {name} {text!r}: at most {MAX_DELAY_S:g}s")
    return seconds


def parse_loss(text: str) -> float:
    """``1%`` or ``0.01`` -> 0.01: the fraction of frames the loss element drops.

    Raises:
        UsageError: not a number, a percentage, or outside 0..100 %.
    """
    match = _FRACTION.match(text.strip())
    if match is None:
        raise UsageError(f"invalid loss {text!r}: expected a percentage or a fraction, e.g. 1%")
    value = float(match["number"])
    fraction = value / 100 if match["percent"] else value
    if fraction > 1:
        raise UsageError(f"invalid loss {text!r}: at most 100% (a fraction at most 1)")
    return fraction


def parse_seed(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= MAX_SEED:
        raise UsageError(f"invalid seed {value}: expected 0..{MAX_SEED}")
    return value


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact-looking text, e.g. 0.02 -> ``20ms``."""
    if seconds == 0:
        return "0ms"
    if seconds >= 1:
        return f"{seconds:g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds * 1e6:g}us"


def format_loss(fraction: float) -> str:
    return f"{fraction * 100:g}%"


@dataclass(frozen=True)
class LabOptions:
    """How the lab's impairment elements behave: `far`'s delay and jitter, `lossy`'s loss,
    and one seed for both (so a run can be repeated frame for frame)."""

    delay_s: float = 0.020
    jitter_s: float = 0.001
    loss: float = 0.01
    seed: int | None = None  # None: `lab up` picks one and records it

    @classmethod
    def parse(
        cls,
        delay: str = DEFAULT_DELAY,
        jitter: str = DEFAULT_JITTER,
        loss: str = DEFAULT_LOSS,
        seed: int | None = None,
    ) -> LabOptions:
        """The options from the command line's text.

        Raises:
            UsageError: any value malformed or out of range, or jitter above the delay (the
                element cannot deliver a frame before it was sent).
        """
        delay_s = parse_duration(delay, name="delay")
        jitter_s = parse_duration(jitter, name="jitter")
        if jitter_s > delay_s:
            raise UsageError(
                f"invalid jitter {jitter!r}: larger than the delay {delay!r}"
            )
        return cls(delay_s=delay_s, jitter_s=jitter_s, loss=parse_loss(loss),
                   seed=parse_seed(seed))

    def same_impairments(self, other: LabOptions) -> bool:
        """Equal delay, jitter and loss; and seeds equal unless `other` leaves it open."""
        return (
            (self.delay_s, self.jitter_s, self.loss) == (other.delay_s, other.jitter_s, other.loss)
            and (other.seed is None or other.seed == self.seed)
        )

    def summary(self) -> str:
        seed = "random" if self.seed is None else str(self.seed)
        return (f"delay {format_duration(self.delay_s)} ± {format_duration(self.jitter_s)}, "
                f"loss {format_loss(self.loss)}, seed {seed}")

    def flags(self) -> str:
        """The `prober lab up` options that give these settings."""
        text = (f"--delay {format_duration(self.delay_s)} "
                f"--jitter {format_duration(self.jitter_s)} --loss {format_loss(self.loss)}")
        return text if self.seed is None else f"{text} --seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"delay_s": self.delay_s, "jitter_s": self.jitter_s, "loss": self.loss,
                "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabOptions:
        seed = data.get("seed")
        return cls(delay_s=float(data["delay_s"]), jitter_s=float(data["jitter_s"]),
                   loss=float(data["loss"]), seed=None if seed is None else int(seed))
