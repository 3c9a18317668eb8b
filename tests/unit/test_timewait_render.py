"""`prober timewait`'s report and JSON, on results of TimeWaitProbe runs against the model
peer (tests/unit/timewait_model.py)."""

from __future__ import annotations

import json
import re

import pytest

from prober.core.timewait_result import ReuseAnswer, Role, TimeWaitResult, summarize
from prober.output.timewait import timewait_report, timewait_verdicts
from tests.unit.timewait_model import PeerConfig, TwRun, run_role


def verdicts(
    *runs: TwRun, step: float = 1.0, max_time: float = 250.0, measure: bool = True,
    refin_at: float | None = None,
) -> TimeWaitResult:
    return summarize(
        target="198.18.0.18", port=80, source="198.18.0.1",
        connections=[r.probe.result() for r in runs], step=step, max_time=max_time,
        measure_duration=measure, refin_at=refin_at,
    )


@pytest.fixture(scope="module")
def full() -> TimeWaitResult:
    """Every role against a default Linux-like peer: 60 s TIME-WAIT, --refin 20."""
    config = PeerConfig()
    return verdicts(
        run_role(config, max_time=120.0, refin_at=20.0),
        run_role(config, role=Role.ABOVE_ISN),
        run_role(config, role=Role.NEWER_TSVAL),
        run_role(config, role=Role.ASSASSINATE),
        max_time=120.0, refin_at=20.0,
    )


def rows(lines: list[str]) -> dict[int, str]:
    return {int(m.group(1)): line for line in lines if (m := re.match(r"\s*(\d+)\s", line))}


def test_a_60_probe_duration_shows_a_short_ladder() -> None:
    result = verdicts(run_role(PeerConfig(), max_time=70.0), max_time=70.0)
    lines = timewait_report(result)
    collapsed = [line for line in lines if "more the same" in line]
    assert collapsed == [
        "...             58 more the same: SYN below the old ISN → an ACK of the old "
        "connection (TIME-WAIT), +1.0 s … +58.0 s"
    ]
    assert len(lines) < 40
    # The first two rounds and the last TIME-WAIT one are shown, then the SYN/ACK and our RST.
    assert sum("SYN below the old ISN, no timestamps" in line for line in lines) == 3


def test_the_rst_that_frees_a_new_connection_names_the_syn_acks_row() -> None:
    result = verdicts(run_role(PeerConfig(time_wait_s=5.0), max_time=10.0), max_time=10.0)
    numbered = rows(timewait_report(result))
    [(number, rst)] = [(n, line) for n, line in numbered.items() if "RST frees" in line]
    match = re.search(r"answers #(\d+)", rst)
    assert match is not None
    answered = numbered[int(match.group(1))]
    assert " S. " in answered and "SYN/ACK" in answered
    assert int(match.group(1)) == number - 1


def test_the_other_connections_show_only_their_probes(full: TimeWaitResult) -> None:
    lines = timewait_report(full)
    for role in Role:
        assert sum(line.startswith(f"{role.value} connection, from ") for line in lines) == 1
    assert sum("as above; then" in line for line in lines) == 3
    # Each ladder numbers its own rows: our RST names the SYN/ACK's row in it.
    starts = [i for i, line in enumerate(lines) if " connection, from " in line]
    frees = 0
    for first, last in zip(starts, [*starts[1:], len(lines)], strict=True):
        numbered = rows(lines[first:last])
        for line in numbered.values():
            match = re.search(r"answers #(\d+)", line)
            if match and "RST frees" in line:
                frees += 1
                assert " S. " in numbered[int(match.group(1))]
    assert frees == 4  # the duration's end, both reopens, the assassinated TIME-WAIT


def test_the_verdicts_name_each_finding_and_its_evidence(full: TimeWaitResult) -> None:
    lines = timewait_verdicts(full)
    text = "\n".join(lines)
    assert lines[0].startswith("The peer holds TIME-WAIT: a SYN below the old sequence space")
    assert "drew an ACK of the old connection" in lines[0]
    [duration] = [line for line in lines if line.startswith("Duration: ")]
    assert re.match(r"Duration: 79\.5 s ± 0\.5 s from the peer's ACK of our FIN \(still "
                    r"TIME-WAIT at \+\d+\.0 s, gone at \+\d+\.0 s; a probe every 1 s\)\.",
                    duration), duration
    assert "Our FIN again at +20 s (as if the peer's last ACK was lost): ACKed again; " \
        "TIME-WAIT then lasted 59.5 s from it: the peer restarted its 2 MSL" in text
    assert "a SYN above the old sequence space was accepted with ISN = old SND.NXT + 65537" in text
    assert "a SYN with a newer TSval was accepted with ISN = old SND.NXT + 65537" in text
    assert "Assassination: a RST at RCV.NXT + 1 was ignored; one at exactly RCV.NXT ended the " \
        "TIME-WAIT: the peer does not protect it (RFC 1337; Linux tcp_rfc1337=0)." in text


def test_verdicts_of_a_protected_peer_without_time_wait_answers() -> None:
    config = PeerConfig(rfc1337=True)
    protected = verdicts(run_role(config, measure_duration=False),
                         run_role(config, role=Role.ASSASSINATE), measure=False)
    text = "\n".join(timewait_verdicts(protected))
    assert "one at exactly RCV.NXT was ignored: the peer protects TIME-WAIT" in text
    assert "Duration" not in text
    none = verdicts(run_role(PeerConfig(keeps_no_time_wait=True)))
    lines = timewait_verdicts(none)
    assert lines[0].startswith("The peer keeps no TIME-WAIT: a SYN below the old sequence")
    assert "SYN/ACK (a new connection)" in lines[0]


def test_json_has_the_issues_keys_and_round_trips(full: TimeWaitResult) -> None:
    record = full.to_dict()
    for key in ("holds_time_wait", "duration_s", "duration_error_s", "reuse", "assassinated",
                "refin_acked"):
        assert key in record
    assert record["holds_time_wait"] is True and record["assassinated"] is True
    assert record["refin_acked"] is True
    assert record["duration_error_s"] == 0.5
    reuse = record["reuse"]
    assert len(reuse) == len(full.reuse) > 60
    assert {p["connection"] for p in reuse} == {role.value for role in Role}
    for probe in reuse:
        assert probe["kind"] and probe["answer"] in {a.value for a in ReuseAnswer}
    assert json.loads(json.dumps(record)) == record


def test_json_of_an_unknown_answer_is_null() -> None:
    record = verdicts(run_role(PeerConfig(never_closes_first=True), close_timeout=1.0)).to_dict()
    assert record["holds_time_wait"] is None and record["duration_s"] is None
    assert record["peer_close"] == "did-not-close" and record["reuse"] == []
    assert json.loads(json.dumps(record)) == record


def test_a_stray_before_the_first_probe_does_not_shift_the_collapsed_times() -> None:
    # The network repeats the peer's ACK of our FIN: it arrives before the first probe.
    run = run_role(PeerConfig(time_wait_s=10.0, duplicate_fin_ack_s=0.1), max_time=20.0)
    assert run.probe.result().segments[0].note.endswith("answers no open probe")
    lines = timewait_report(verdicts(run, max_time=20.0))
    [collapsed] = [line for line in lines if "more the same" in line]
    assert collapsed.endswith("8 more the same: SYN below the old ISN → an ACK of the old "
                              "connection (TIME-WAIT), +1.0 s … +8.0 s")


def test_a_short_step_shows_its_uncertainty_in_full() -> None:
    run = run_role(PeerConfig(time_wait_s=10.0), step=0.3, max_time=30.0)
    result = verdicts(run, step=0.3, max_time=30.0)
    assert result.duration_error_s == 0.15
    text = "\n".join(timewait_verdicts(result))
    assert "Duration: 10.05 s ± 0.15 s from the peer's ACK of our FIN (still TIME-WAIT at " \
        "+9.9 s, gone at +10.2 s; a probe every 0.3 s)." in text
    assert "tcp_invalid_ratelimit" in text  # and why some of its probes drew silence
    answers = [p.answer for p in run.probe.probes()]
    assert ReuseAnswer.NONE in answers


def test_a_fin_again_after_the_end_says_it_was_not_sent() -> None:
    run = run_role(PeerConfig(time_wait_s=10.0), max_time=40.0, refin_at=20.0)
    result = verdicts(run, max_time=40.0, refin_at=20.0)
    assert result.duration_s == 9.5 and result.refin_acked is None
    assert "Our FIN again at +20 s: not sent (the probing had ended before it)." in \
        timewait_verdicts(result)
