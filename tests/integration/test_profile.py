"""`prober profile` against the built-in lab (test pool): each peer's non-default sysctls
come back as exactly those values, over IPv4 and IPv6, and every peer can be profiled.

Every profile of a module runs at once in one event loop (each on its own source ports), so
the quick ones cost about one quick profile (~15 s) and the full ones one full profile
(~2 min, marked `minutes`).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from prober import Prober
from prober.core.profile import Basis, ProfileResult, PropertyName
from prober.lab import TEST_POOL, LabOptions, LabStatus, lab_down, lab_up, route_check
from tests.integration.conftest import new_lab_state_dir, remove_lab_state_dir

pytestmark = pytest.mark.integration

P = PropertyName
GET = b"GET / HTTP/1.0\r\n\r\n"
OPTIONS = LabOptions(delay_s=0.020, jitter_s=0.0, loss=0.0, seed=20261202)
# The peers a profile runs against, and the port.
PROFILED = ("open", "syncookies", "impatient", "no-timewait", "tuned", "far", "rst-close",
            "half-close")
FAMILIES = (4, 6)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabStatus]:
    directory = new_lab_state_dir("profile")
    try:
        result = lab_up(OPTIONS, pool=TEST_POOL, state_dir=directory, persistent=False,
                        server_max_seconds=900.0)
        try:
            assert result.created and result.status.healthy, result.status.problems
            yield result.status
        finally:
            lab_down(pool=TEST_POOL, state_dir=directory)
    finally:
        remove_lab_state_dir(directory)


def _profile_all(lab: LabStatus, peers: tuple[str, ...], *, quick: bool
                 ) -> dict[tuple[str, int], ProfileResult]:
    targets = [(peer, family, lab.address_of(peer, family)) for peer in peers
               for family in FAMILIES]
    for _peer, _family, address in targets:
        route_check(address)  # never beyond the lab

    async def main() -> list[ProfileResult]:
        async with Prober() as prober:
            return await asyncio.wait_for(asyncio.gather(*(
                prober.profile(address, 80, quick=quick, send=GET)
                for _peer, _family, address in targets
            )), timeout=60 if quick else 300)

    results = uvloop.run(main())
    return {(peer, family): result
            for (peer, family, _address), result in zip(targets, results, strict=True)}


@pytest.fixture(scope="module")
def quick(lab: LabStatus) -> dict[tuple[str, int], ProfileResult]:
    return _profile_all(lab, PROFILED, quick=True)


@pytest.fixture(scope="module")
def full(lab: LabStatus) -> dict[tuple[str, int], ProfileResult]:
    return _profile_all(lab, ("open", "syncookies", "impatient", "no-timewait", "tuned"),
                        quick=False)


def value(result: ProfileResult, name: PropertyName) -> object:
    prop = result.get(name)
    assert prop.basis in (Basis.MEASURED, Basis.INFERRED), (name, prop)
    return prop.value


@pytest.fixture(params=FAMILIES, ids=["v4", "v6"])
def family(request: pytest.FixtureRequest) -> int:
    version: int = request.param
    return version


# --- quick: options, ECN, TTL, cookies, close, RFC 1337, RFC 5961 ----------------------------


def test_every_peer_is_profiled(quick: dict[tuple[str, int], ProfileResult]) -> None:
    for (peer, family), result in quick.items():
        assert not result.interrupted, (peer, family)
        assert value(result, P.HANDSHAKE_RTT_MS) is not None, (peer, family)
        assert len(result.properties) == len(PropertyName)
        assert result.ladders, (peer, family)


def test_default_linux_peer(quick: dict[tuple[str, int], ProfileResult], family: int) -> None:
    result = quick[("open", family)]
    assert value(result, P.MSS) == (1460 if family == 4 else 1440)
    assert value(result, P.SACK) is True
    assert value(result, P.TIMESTAMPS) is True
    assert isinstance(value(result, P.WINDOW_SCALE), int)
    assert value(result, P.OPTION_ORDER) == "MSTNW"
    assert value(result, P.ECN) is True  # tcp_ecn=2: answers an ECN-setup SYN
    assert value(result, P.INITIAL_TTL) == 64
    assert result.get(P.INITIAL_TTL).basis is Basis.INFERRED
    assert value(result, P.SYN_COOKIES) == "not-for-a-lone-syn"
    assert value(result, P.INITIAL_RTO_S) == pytest.approx(1.0, abs=0.1)
    assert value(result, P.SYNACK_BACKOFF) == pytest.approx(2.0, abs=0.2)
    assert value(result, P.TIME_WAIT) is True
    assert value(result, P.RFC1337) is False  # tcp_rfc1337=0: a RST ends TIME-WAIT
    assert value(result, P.TIME_WAIT_REFIN) is True
    assert value(result, P.TIME_WAIT_REOPEN_ABOVE_ISN) is True
    assert value(result, P.TIME_WAIT_REOPEN_NEWER_TSVAL) is True
    assert value(result, P.CHALLENGE_RST) == "challenge-ack"
    assert value(result, P.RST_OUT_OF_WINDOW) == "ignored"
    assert value(result, P.CHALLENGE_SYN) == "challenge-ack"
    assert value(result, P.CHALLENGE_ACK_INTERVAL_S) == pytest.approx(0.5, abs=0.1)
    assert result.get(P.TIME_WAIT_S).basis is Basis.NOT_MEASURED  # --quick
    assert result.match.closest is not None and "Linux" in result.match.closest


def test_tuned_peer(quick: dict[tuple[str, int], ProfileResult], family: int) -> None:
    """tcp_timestamps=0, tcp_sack=0, tcp_window_scaling=0, tcp_ecn=0, tcp_rfc1337=1,
    tcp_invalid_ratelimit=1000."""
    result = quick[("tuned", family)]
    assert value(result, P.TIMESTAMPS) is False
    assert value(result, P.SACK) is False
    assert value(result, P.WINDOW_SCALE) is False
    assert value(result, P.OPTION_ORDER) == "M"
    assert value(result, P.ECN) is False
    assert value(result, P.RFC1337) is True
    assert value(result, P.CHALLENGE_ACK_INTERVAL_S) == pytest.approx(1.0, abs=0.1)
    # No timestamps: nothing can be newer, so that question has no answer.
    assert result.get(P.TIME_WAIT_REOPEN_NEWER_TSVAL).basis is Basis.UNKNOWN
    assert result.match.stack is None and result.match.closest == "Linux"
    disagree = set(result.match.disagree)
    assert {P.TIMESTAMPS, P.SACK, P.WINDOW_SCALE} <= disagree


def test_syncookies_peer(quick: dict[tuple[str, int], ProfileResult], family: int) -> None:
    result = quick[("syncookies", family)]
    assert value(result, P.SYN_COOKIES) == "always"
    # A cookie keeps no request to retransmit: the schedule is unknown, not "0 retries".
    assert result.get(P.SYNACK_RETRIES).basis is Basis.UNKNOWN
    assert "cookie" in result.get(P.SYNACK_RETRIES).evidence


def test_no_timewait_peer(quick: dict[tuple[str, int], ProfileResult], family: int) -> None:
    result = quick[("no-timewait", family)]
    assert value(result, P.TIME_WAIT) is False
    assert result.get(P.RFC1337).basis is Basis.UNKNOWN


def test_far_peer_rtt(quick: dict[tuple[str, int], ProfileResult], family: int) -> None:
    rtt = value(quick[("far", family)], P.HANDSHAKE_RTT_MS)
    assert isinstance(rtt, float) and 19.0 < rtt < 30.0  # the delay element's 20 ms


def test_rst_close_peer(quick: dict[tuple[str, int], ProfileResult], family: int) -> None:
    assert value(quick[("rst-close", family)], P.TIME_WAIT) is False


def test_closed_port_is_no_profile(lab: LabStatus, tmp_path: Path) -> None:
    """The CLI on a closed port: exit 4 as for syn, every other property not measured."""
    address = lab.address_of("open", 4)
    route_check(address)
    done = subprocess.run([sys.executable, "-m", "prober", "profile", f"{address}:81",
                           "--quick", "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 4, done.stderr
    import json

    record = json.loads(done.stdout)
    assert record["reason"] == "rst"
    assert record["synack_retries"]["basis"] == "not-measured"
    assert "did not answer SYN/ACK" in record["synack_retries"]["evidence"]


def test_cli_report_html_and_pcap(lab: LabStatus, tmp_path: Path) -> None:
    address = lab.address_of("open", 6)
    route_check(address)
    html, pcap = tmp_path / "p.html", tmp_path / "p.pcap"
    done = subprocess.run([sys.executable, "-m", "prober", "profile", f"[{address}]:80",
                           "--quick", "--send", r"GET / HTTP/1.0\r\n\r\n", "--html", str(html),
                           "--pcap", str(pcap)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"PROFILE [{address}]:80")
    assert any(line.startswith("synack_retries") for line in lines)
    assert any(line.startswith("stack:") for line in lines)
    assert len(lines) < 50  # one screen
    assert "<svg" in html.read_text()
    assert pcap.stat().st_size > 24 + 20 * 16  # the header and many packets


# --- full: the schedules and TIME-WAIT's length ------------------------------------------------


@pytest.mark.minutes
def test_full_schedules(full: dict[tuple[str, int], ProfileResult], family: int) -> None:
    default = full[("open", family)]
    assert value(default, P.SYNACK_RETRIES) == 5  # tcp_synack_retries default
    assert value(default, P.INITIAL_RTO_S) == pytest.approx(1.0, abs=0.1)
    # TCP_TIMEWAIT_LEN is 60 s; the timer wheel's granularity ends it up to ~2 s later.
    assert value(default, P.TIME_WAIT_S) == pytest.approx(61, abs=1.6)
    # tcp_orphan_retries bounds a time, not a count: Linux gives up an orphan's FIN once
    # (2^(n+1) - 1) x 200 ms have passed since it was first sent (n = 8 for the default 0),
    # so the count depends on the RTO; a tail loss probe comes first.
    # Its last copy comes near 55-61 s and the silence rule needs 2.5 gaps more, so the
    # 150 s watch may end first: then the count is "at least", never a wrong number.
    fins = default.get(P.FIN_RETRIES)
    seen = fins.value if fins.basis is Basis.MEASURED else int(fins.display.lstrip("≥ "))
    assert isinstance(seen, int) and seen >= 8, fins
    impatient = full[("impatient", family)]
    assert value(impatient, P.SYNACK_RETRIES) == 2  # tcp_synack_retries=2
    impatient_fins = value(impatient, P.FIN_RETRIES)  # tcp_orphan_retries=1: 600 ms
    assert isinstance(impatient_fins, int) and 1 <= impatient_fins <= 3
    assert value(impatient, P.FIN_GIVE_UP) == "silence"
    assert value(impatient, P.FIN_RTO_S) == pytest.approx(0.2, abs=0.1)
    assert impatient.match.stack is None and P.SYNACK_RETRIES in impatient.match.disagree
    assert value(full[("no-timewait", family)], P.TIME_WAIT_S) == 0
    assert value(full[("tuned", family)], P.TIME_WAIT_S) == pytest.approx(61, abs=1.6)
    assert value(full[("syncookies", family)], P.SYN_COOKIES) == "always"
    assert default.match.stack is not None and "Linux" in default.match.stack
