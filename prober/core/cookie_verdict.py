"""The SYN-cookie verdict: how the half-open watch's and the cookie check's evidence combine.

A verdict is only as strong as its evidence. Each piece is a ``CookieClue`` that points to yes
or no, strong or weak:

| clue                                                 | points to | strength |
|------------------------------------------------------|-----------|----------|
| a SYN/ACK retransmission (a kept request)            | no        | strong   |
| no retransmission before a safe silence              | yes       | weak     |
| TSval difference = the option encodings' (Linux)     | yes       | strong   |
| TSval difference follows the elapsed time            | no        | weak     |
| SYN/ACK2 repeated the answer to SYN1 / answered SYN2 | no / yes  | strong   |

Only strong clues decide. "No retransmission seen" alone is weak: tcp_synack_retries=0, copies
lost on the path, or a stack whose first retransmission comes later than the watch lasted
look the same, so it gives ``unknown`` with the reason; so does strong evidence that
disagrees. With ``--kernel-rst`` nothing is judged: the local kernel's RST ends the peer's
request at its first SYN/ACK (``KERNEL_RST_COOKIE_VERDICT``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from prober.core.cookie_check import CookieEvidence, CookieVerdict

if TYPE_CHECKING:
    from prober.core.halfopen import HalfOpenResult

__all__ = [
    "KERNEL_RST_COOKIE_VERDICT",
    "CookieAnswer",
    "CookieClue",
    "SynCookieVerdict",
    "combine_cookie_evidence",
    "judge_cookies",
]


class CookieAnswer(StrEnum):
    """A yes/no question's answer when the evidence may not suffice."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CookieClue:
    """One piece of SYN-cookie evidence: what it points to, how strongly, and why."""

    source: str  # "retransmissions", "timestamps" or "answer"
    points_to: CookieAnswer  # YES or NO
    strong: bool  # strong clues decide; weak ones only when there is no strong one
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "points_to": self.points_to.value,
            "strong": self.strong,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class SynCookieVerdict:
    """Does the peer answer with SYN cookies? ``verdict`` is yes, no or unknown.

    ``reasons`` lists every clue's reason and what could not be judged; ``clues`` the clues.
    """

    verdict: CookieAnswer
    reasons: tuple[str, ...]
    clues: tuple[CookieClue, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "clues": [c.to_dict() for c in self.clues],
        }



KERNEL_RST_COOKIE_VERDICT: Final = SynCookieVerdict(
    CookieAnswer.UNKNOWN,
    (
        "not judged: with --kernel-rst the local kernel's RST ends the peer's request at its "
        "first SYN/ACK, so missing retransmissions prove nothing",
    ),
)
WEAK_ONLY: Final = (
    "only weak evidence, which decides nothing alone: a verdict needs a retransmission, the "
    "TSval encoding, or which SYN the second SYN/ACK answered"
)


def _retransmission_clue(
    syn_acks: int, retransmissions: int, ended_by: str, state: str, caveat: str | None
) -> CookieClue | str:
    if syn_acks == 0:
        return f"no SYN/ACK came back (the port is {state}): no retransmission evidence"
    if retransmissions > 0:
        times = "time" if retransmissions == 1 else "times"
        return CookieClue(
            "retransmissions",
            CookieAnswer.NO,
            True,
            f"the peer retransmitted its SYN/ACK {retransmissions} {times}: it kept the "
            "request, which a SYN cookie does not",
        )
    if ended_by == "silence":
        return CookieClue(
            "retransmissions",
            CookieAnswer.YES,
            False,
            "the peer never retransmitted its SYN/ACK: a SYN cookie keeps no request to "
            "retransmit, but tcp_synack_retries=0 or copies lost on the path look the same",
        )
    if caveat:
        return f"the half-open watch ended ({ended_by}) before a conclusion was safe: {caveat}"
    return f"the half-open watch ended ({ended_by}) before a retransmission was due"


def _answer_clue(answers: str | None) -> CookieClue | None:
    if answers == "syn1":
        return CookieClue(
            "answer",
            CookieAnswer.NO,
            True,
            "the second SYN/ACK repeated the answer to the first SYN (its TSecr or options): "
            "a retransmission from a kept request",
        )
    if answers == "syn2":
        return CookieClue(
            "answer",
            CookieAnswer.YES,
            True,
            "the second SYN/ACK answered the second SYN afresh (its TSecr or options): "
            "the peer kept no request",
        )
    return None


def _timestamp_clue(verdict: str, explanation: str) -> CookieClue | str:
    if verdict == CookieVerdict.COOKIES.value:
        return CookieClue("timestamps", CookieAnswer.YES, True, explanation)
    if verdict == CookieVerdict.NO_COOKIES.value:
        # Only Linux encodes options in TSval: other cookie implementations would look the same.
        return CookieClue("timestamps", CookieAnswer.NO, False, explanation)
    return explanation


def combine_cookie_evidence(
    halfopen: HalfOpenResult | Mapping[str, Any],
    cookie_evidence: CookieEvidence | Mapping[str, Any] | None,
) -> SynCookieVerdict:
    """Weigh the SYN-cookie evidence of a half-open watch and a cookie check (pure).

    Args:
        halfopen: a ``HalfOpenResult`` or its ``to_dict()`` (syn_acks, retransmissions,
            ended_by, state and caveat are read).
        cookie_evidence: a ``CookieEvidence`` or its ``to_dict()`` (verdict, explanation,
            syn_ack2_answers), or None if no cookie check ran.

    Returns:
        The verdict of the strong clues (a retransmission: no; the TSval encoding: yes; which
        SYN the second SYN/ACK answered: either way) when they agree; "unknown" when they
        disagree or only weak clues exist, with every clue's reason and why.
    """
    if isinstance(halfopen, Mapping):
        raw_caveat = halfopen.get("caveat")
        fields = (
            len(halfopen.get("syn_acks") or ()),
            int(halfopen.get("retransmissions") or 0),
            str(halfopen.get("ended_by")),
            str(halfopen.get("state")),
            None if raw_caveat is None else str(raw_caveat),
        )
    else:
        fields = (
            len(halfopen.syn_acks),
            halfopen.retransmissions,
            halfopen.ended_by.value,
            halfopen.state.value,
            halfopen.caveat,
        )
    items: list[CookieClue | str] = [_retransmission_clue(*fields)]
    if cookie_evidence is None:
        items.append("no cookie check ran")
    else:
        if isinstance(cookie_evidence, CookieEvidence):
            verdict = cookie_evidence.verdict.value
            explanation = cookie_evidence.explanation
            answers = cookie_evidence.syn_ack2_answers
        else:
            verdict = str(cookie_evidence.get("verdict"))
            explanation = str(cookie_evidence.get("explanation"))
            raw = cookie_evidence.get("syn_ack2_answers")
            answers = None if raw is None else str(raw)
        items.append(_timestamp_clue(verdict, explanation))
        answer = _answer_clue(answers)
        if answer is not None:
            items.append(answer)
    clues = tuple(item for item in items if isinstance(item, CookieClue))
    reasons = tuple(item.reason if isinstance(item, CookieClue) else item for item in items)
    pointed = {c.points_to for c in clues if c.strong}
    if len(pointed) == 1:
        return SynCookieVerdict(pointed.pop(), reasons, clues)
    if not pointed and clues:
        reasons += (WEAK_ONLY,)
    if len(pointed) > 1 or (not pointed and len({c.points_to for c in clues}) > 1):
        reasons += ("the evidence disagrees",)
    return SynCookieVerdict(CookieAnswer.UNKNOWN, reasons, clues)


def judge_cookies(
    halfopen: HalfOpenResult,
    cookie_evidence: CookieEvidence | None,
    *,
    kernel_rst: bool = False,
) -> SynCookieVerdict:
    """The verdict ``prober halfopen`` reports: ``combine_cookie_evidence``, except that with
    ``kernel_rst`` (our kernel reset the request) nothing is judged."""
    if kernel_rst:
        return KERNEL_RST_COOKIE_VERDICT
    return combine_cookie_evidence(halfopen, cookie_evidence)
