"""The table of known stack defaults and the matcher `prober profile` uses (pure, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from prober.core.challenge import ChallengeAnswer
from prober.core.profile import Basis, CookieMode, Property, PropertyName, Value
from prober.core.stack_defaults import (
    MIN_AGREEMENTS,
    REFERENCES,
    STACKS,
    match_stack,
    meaning,
)

P = PropertyName
CA = ChallengeAnswer.CHALLENGE_ACK.value


def prop(name: PropertyName, value: Value, basis: Basis = Basis.MEASURED,
         error: float | None = None) -> Property:
    if basis in (Basis.UNKNOWN, Basis.NOT_MEASURED):
        value = None
    return Property(name, value, str(value), basis, "test", error=error)


# The lab's default Linux 6.x peer, as prober measures it (TTL 63 behind one router: the
# initial TTL 64 is INFERRED).
LINUX_LAB: dict[PropertyName, Value] = {
    P.OPTION_ORDER: "MSTNW",
    P.WINDOW_SCALE: 7,
    P.SACK: True,
    P.TIMESTAMPS: True,
    P.INITIAL_TTL: 64,
    P.INITIAL_RTO_S: 1.02,
    P.SYNACK_BACKOFF: 2.0,
    P.SYNACK_RETRIES: 5,
    P.SYN_COOKIES: CookieMode.NOT_FOR_A_LONE_SYN.value,
    P.TIME_WAIT: True,
    P.TIME_WAIT_S: 61.0,
    P.RFC1337: False,
    P.ECN: True,
    P.CHALLENGE_RST: CA,
    P.CHALLENGE_SYN: CA,
    P.CHALLENGE_ACK_INTERVAL_S: 0.5,
}

WINDOWS_LIKE: dict[PropertyName, Value] = {
    P.OPTION_ORDER: "MNWST",
    P.WINDOW_SCALE: 8,
    P.SACK: True,
    P.TIMESTAMPS: True,
    P.INITIAL_TTL: 128,
    P.TIME_WAIT: True,
    P.TIME_WAIT_S: 120.0,
    P.SYN_COOKIES: CookieMode.NOT_FOR_A_LONE_SYN.value,
}

LWIP_LIKE: dict[PropertyName, Value] = {
    P.OPTION_ORDER: "M",
    P.WINDOW_SCALE: False,
    P.SACK: False,
    P.TIMESTAMPS: False,
    P.INITIAL_TTL: 255,
    P.ECN: False,
    P.INITIAL_RTO_S: 3.3,
    P.TIME_WAIT: True,
    P.TIME_WAIT_S: 121.0,
    P.RFC1337: True,
    P.CHALLENGE_RST: CA,
    P.CHALLENGE_SYN: CA,
}


def profile(values: dict[PropertyName, Value]) -> list[Property]:
    out = []
    for name, value in values.items():
        basis = Basis.INFERRED if name is P.INITIAL_TTL else Basis.MEASURED
        out.append(prop(name, value, basis, error=1.0 if name is P.TIME_WAIT_S else None))
    return out


def test_linux_defaults_match_linux() -> None:
    match = match_stack(profile(LINUX_LAB))
    assert match.stack == "Linux"
    assert match.closest == "Linux"
    assert match.disagree == ()
    assert set(match.agree) == set(LINUX_LAB)
    assert match.candidates == ("Linux",)
    assert "Linux" in match.explanation


def test_linux_with_synack_retries_changed_is_unknown_but_closest_linux() -> None:
    match = match_stack(profile({**LINUX_LAB, P.SYNACK_RETRIES: 2}))
    assert match.stack is None
    assert match.closest == "Linux"
    assert match.disagree == (P.SYNACK_RETRIES,)
    assert "synack_retries 2, Linux default 5" in match.explanation
    assert match.candidates == ()


def test_linux_give_up_time_follows_the_retries() -> None:
    ok = match_stack(profile({**LINUX_LAB, P.SYNACK_GIVE_UP_S: 31.2}))
    assert ok.stack == "Linux" and P.SYNACK_GIVE_UP_S in ok.agree
    changed = match_stack(profile({**LINUX_LAB, P.SYNACK_RETRIES: 2, P.SYNACK_GIVE_UP_S: 3.0}))
    assert changed.closest == "Linux"
    assert set(changed.disagree) == {P.SYNACK_RETRIES, P.SYNACK_GIVE_UP_S}


def test_linux_with_extensions_off_stays_closest_to_linux() -> None:
    # tcp_timestamps=0, tcp_sack=0, tcp_window_scaling=0: the SYN/ACK carries MSS only.
    values = {**LINUX_LAB, P.TIMESTAMPS: False, P.SACK: False, P.WINDOW_SCALE: False,
              P.OPTION_ORDER: "M"}
    match = match_stack(profile(values))
    assert match.stack is None
    assert match.closest == "Linux"
    assert set(match.disagree) == {P.TIMESTAMPS, P.SACK, P.WINDOW_SCALE}
    assert "lwIP" not in match.candidates and "Windows" not in match.candidates


def test_one_extension_off_changes_the_layout_but_not_the_order() -> None:
    # Linux with timestamps off answers MSS, NOP, NOP, SACK-permitted, NOP, WS.
    match = match_stack(profile({**LINUX_LAB, P.TIMESTAMPS: False, P.OPTION_ORDER: "MNNSNW"}))
    assert match.closest == "Linux"
    assert match.disagree == (P.TIMESTAMPS,)
    # The same options in another order disagree.
    # The same options in another order disagree: the layout is code, so a peer with
    # Linux's sysctls but Windows's layout is closer to Windows (only tunables differ).
    linux = next(s for s in STACKS if s.name == "Linux")
    assert not linux.expectation(P.OPTION_ORDER).accepts("MNWST")  # type: ignore[union-attr]
    other = match_stack(profile({**LINUX_LAB, P.OPTION_ORDER: "MNWST"}))
    assert other.closest == "Windows" and P.OPTION_ORDER in other.agree
    # No MSS at all fits no stack's layout; an extra unknown option is left out.
    assert P.OPTION_ORDER in match_stack(profile({**LINUX_LAB, P.OPTION_ORDER: ""})).disagree
    mptcp = match_stack(profile({**LINUX_LAB, P.OPTION_ORDER: "MSTNW?30"}))
    assert P.OPTION_ORDER in mptcp.agree


def test_linux_with_cookies_always_is_closest_linux() -> None:
    # tcp_syncookies=2: no state, so no SYN/ACK retransmission to time.
    values = {**LINUX_LAB, P.SYN_COOKIES: CookieMode.ALWAYS.value, P.SYNACK_RETRIES: 0}
    del values[P.INITIAL_RTO_S], values[P.SYNACK_BACKOFF]
    match = match_stack(profile(values))
    assert match.stack is None and match.closest == "Linux"
    assert set(match.disagree) == {P.SYN_COOKIES, P.SYNACK_RETRIES}
    assert meaning(P.SYN_COOKIES, CookieMode.ALWAYS.value) is not None


# A Linux 6.18 peer with tcp_timestamps=0, tcp_sack=0, tcp_window_scaling=0, tcp_ecn=0,
# tcp_rfc1337=1 and tcp_invalid_ratelimit=1000, measured by a quick run (no retry count).
TUNED_LINUX: dict[PropertyName, Value] = {
    P.INITIAL_TTL: 64, P.WINDOW_SCALE: False, P.SACK: False, P.TIMESTAMPS: False,
    P.OPTION_ORDER: "M", P.ECN: False, P.MSS: 1460, P.INITIAL_RTO_S: 1.017,
    P.SYNACK_BACKOFF: 1.98, P.SYN_COOKIES: CookieMode.NOT_FOR_A_LONE_SYN.value,
    P.TIME_WAIT: True, P.RFC1337: True, P.CHALLENGE_RST: CA,
    P.RST_OUT_OF_WINDOW: ChallengeAnswer.IGNORED.value, P.CHALLENGE_SYN: CA,
    P.CHALLENGE_ACK_INTERVAL_S: 1.05, P.TIME_WAIT_REOPEN_ABOVE_ISN: True,
}


def test_linux_with_six_sysctls_changed_is_closest_linux_not_lwip() -> None:
    props = [*profile(TUNED_LINUX), prop(P.SYNACK_RETRIES, None, Basis.UNKNOWN)]
    match = match_stack(props)
    assert match.stack is None
    assert match.closest == "Linux"
    assert set(match.disagree) == {P.TIMESTAMPS, P.SACK, P.WINDOW_SCALE, P.ECN, P.RFC1337,
                                   P.CHALLENGE_ACK_INTERVAL_S}
    text = match.explanation
    assert "closest to Linux defaults: 6 tunable settings differ" in text
    assert "no fixed behaviour disagrees" in text
    for knob in ("[tcp_sack]", "[tcp_timestamps]", "[tcp_window_scaling, tcp_rmem]",
                 "[tcp_ecn]"):
        assert knob in text, knob
    assert "and 2 more" in text
    assert len(text.rstrip(".").split(". ")) <= 2  # at most two sentences


def test_a_fixed_disagreement_outweighs_several_tunable_ones() -> None:
    # lwIP's TTL 255 and 3 s RTO are compile-time options; its unspaced challenge ACKs and
    # its never reopening TIME-WAIT are code: Linux with sysctls changed stays closer.
    values = {**TUNED_LINUX, P.INITIAL_TTL: 255}
    match = match_stack(profile(values))
    assert match.closest == "Linux"
    assert "7 tunable settings differ" in match.explanation
    assert "no fixed behaviour disagrees" in match.explanation
    # And the other way round: lwIP's own code against a Linux reading is named as fixed.
    lwip = match_stack(profile({**LWIP_LIKE, P.CHALLENGE_ACK_INTERVAL_S: 1.05}))
    assert lwip.closest == "lwIP"
    assert "1 fixed behaviour disagrees" in lwip.explanation
    assert "(fixed)" in lwip.explanation


def test_default_linux_618_matches_linux() -> None:
    # tcp_rmem max 32 MB: window scale 10; TIME-WAIT measured 61.5 +- 0.5 s.
    values = {**LINUX_LAB, P.WINDOW_SCALE: 10, P.CHALLENGE_ACK_INTERVAL_S: 0.5,
              P.TIME_WAIT_REOPEN_ABOVE_ISN: True}
    props = [p for p in profile(values) if p.name is not P.TIME_WAIT_S]
    props.append(prop(P.TIME_WAIT_S, 61.5, error=0.5))
    match = match_stack(props)
    assert match.stack == "Linux" and match.disagree == ()


def test_every_expectation_says_whether_it_is_tunable() -> None:
    for stack in STACKS:
        for expectation in stack.expectations:
            assert expectation.tunable == bool(expectation.knob), (stack.name, expectation.name)
    linux = next(s for s in STACKS if s.name == "Linux")
    assert linux.expectation(P.SACK).tunable  # type: ignore[union-attr]
    assert not linux.expectation(P.INITIAL_RTO_S).tunable  # type: ignore[union-attr]
    assert not linux.expectation(P.TIME_WAIT_S).tunable  # type: ignore[union-attr]
    assert not linux.expectation(P.OPTION_ORDER).tunable  # type: ignore[union-attr]


def test_windows_like_profile_matches_windows() -> None:
    match = match_stack(profile(WINDOWS_LIKE))
    assert match.stack == "Windows"
    assert match.disagree == ()


def test_lwip_like_profile_matches_lwip() -> None:
    match = match_stack(profile(LWIP_LIKE))
    assert match.stack == "lwIP"
    assert match.disagree == ()


def test_freebsd_and_fstack_are_told_apart_by_time_wait_and_scale() -> None:
    base: dict[PropertyName, Value] = {
        P.OPTION_ORDER: "MNWST", P.SACK: True, P.TIMESTAMPS: True, P.INITIAL_TTL: 64,
        P.INITIAL_RTO_S: 1.0, P.SYNACK_RETRIES: 3, P.RFC1337: True, P.ECN: True,
    }
    freebsd = match_stack(profile({**base, P.WINDOW_SCALE: 6, P.TIME_WAIT_S: 60.5}))
    assert freebsd.stack == "FreeBSD"
    fstack = match_stack(profile({**base, P.WINDOW_SCALE: 9, P.TIME_WAIT_S: 4.0}))
    assert fstack.stack == "F-Stack"
    # Without either, both fit equally: no single stack is claimed.
    tied = match_stack(profile(base))
    assert tied.stack is None
    assert set(tied.candidates) == {"FreeBSD", "F-Stack"}
    assert "do not tell them apart" in tied.explanation


def test_almost_empty_profile_is_unknown() -> None:
    match = match_stack([prop(P.INITIAL_TTL, 64, Basis.INFERRED), prop(P.SACK, True)])
    assert match.stack is None and match.closest is None
    assert "too few properties" in match.explanation
    assert match_stack([]).stack is None


def test_unknown_and_not_measured_are_never_compared() -> None:
    props = [prop(name, None, Basis.NOT_MEASURED) for name in LINUX_LAB]
    props += [prop(P.SYNACK_RETRIES, None, Basis.UNKNOWN)]
    match = match_stack(props)
    assert match.agree == () and match.disagree == ()
    assert "too few properties" in match.explanation


def test_meanings() -> None:
    assert meaning(P.INITIAL_RTO_S, 1.0) is not None
    assert "RFC 6298" in (meaning(P.INITIAL_RTO_S, 1.0) or "")
    assert meaning(P.SYNACK_RETRIES, 5) == "Linux default (tcp_synack_retries)"
    assert meaning(P.INITIAL_TTL, 64) == "Linux, BSD, macOS"
    assert meaning(P.INITIAL_TTL, 128) == "Windows"
    assert "embedded" in (meaning(P.INITIAL_TTL, 255) or "")
    assert "assassinated" in (meaning(P.RFC1337, False) or "")
    assert "Linux (fixed), FreeBSD" in (meaning(P.TIME_WAIT_S, 60.0) or "")
    assert meaning(P.WINDOW_SCALE, 0) is None  # shift 0 is not "not offered"
    assert meaning(P.WINDOW_SCALE, False) is not None
    assert meaning(P.HANDSHAKE_RTT_MS, 12.5) is None
    assert meaning(P.SYNACK_RETRIES, None) is None


def test_every_used_value_has_a_source() -> None:
    numbers = {ref.number for ref in REFERENCES}
    assert len(numbers) == len(REFERENCES)
    for stack in STACKS:
        assert len({e.name for e in stack.expectations}) == len(stack.expectations)
        for expectation in stack.expectations:
            assert set(expectation.refs) <= numbers
            if expectation.used:
                assert expectation.refs, (stack.name, expectation.name)
            else:
                assert expectation.note, (stack.name, expectation.name)


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-1, 300),
    st.floats(0, 300, allow_nan=False), st.sampled_from(
        ["MSTNW", "MNWST", "M", "MNWNNTSE", "", "?30M", CA, "reset", "ignored",
         CookieMode.ALWAYS.value, CookieMode.NOT_FOR_A_LONE_SYN.value]),
)
_PROPS = st.lists(
    st.builds(prop, st.sampled_from(list(PropertyName)), _VALUES, st.sampled_from(list(Basis)),
              st.one_of(st.none(), st.floats(0, 5))),
    max_size=40,
)


@given(_PROPS)
def test_any_profile_gives_a_consistent_match(props: list[Property]) -> None:
    match = match_stack(props)
    assert not set(match.agree) & set(match.disagree)
    compared = {p.name for p in props
                if p.basis in (Basis.MEASURED, Basis.INFERRED) and p.value is not None}
    assert set(match.agree) | set(match.disagree) <= compared
    names = {stack.name for stack in STACKS}
    assert match.stack is None or match.stack in names
    assert match.closest is None or match.closest in names
    assert set(match.candidates) <= names
    if match.stack is not None:
        assert match.disagree == () and len(match.agree) >= MIN_AGREEMENTS
        assert match.stack in match.candidates
    assert match.explanation


def markdown_table() -> list[str]:
    """The table of docs/stack-defaults.md as STACKS gives it (one line per property; a
    tunable default shows its knob in backticks)."""
    names = [n for n in PropertyName if any(e.name is n for s in STACKS for e in s.expectations)]
    lines = ["| property | " + " | ".join(s.name for s in STACKS) + " |",
             "|---|" + "---|" * len(STACKS)]
    for name in names:
        cells = []
        for stack in STACKS:
            e = next((e for e in stack.expectations if e.name is name), None)
            if e is None:
                cells.append("—")
                continue
            text = f"{e.describe()} " + ("".join(f"[{r}]" for r in e.refs) or "(unsourced)")
            if e.tunable:  # the knob that changes it; no knob: fixed in the code
                text += f" `{e.knob}`"
            cells.append(text if e.used else f"*({text}; not used)*")
        lines.append(f"| `{name.value}` | " + " | ".join(cells) + " |")
    return lines


def test_docs_show_the_table_and_every_reference() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "stack-defaults.md").read_text()
    for line in markdown_table():
        assert line in doc, line
    for ref in REFERENCES:
        assert f"{ref.number}. {ref.text}" in doc, ref.number
