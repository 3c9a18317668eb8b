"""`prober halfopen` waits for schedules other than a clean Linux one: a Linux peer (default
tcp_synack_retries and timers) behind the lab's element, which drops the first two
retransmissions of every SYN/ACK, so the first copy prober sees comes 7 s after the first.

    root ns (prober) ==veth== [ element: drops SYN/ACK copies 2 and 3 ] ==veth== peer ns

Each run is bounded by --max-wait (CI time: the first test sleeps about 12 s).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from prober.lab import Topology, is_lab_address, route_check
from prober.lab.element import add_element_link
from tests.integration.test_conversations import PROBER, run_json

pytestmark = pytest.mark.integration

LOST_COPIES = 2  # Linux retransmits at 1, 3, 7 s: the first copy seen is the one at 7 s


@pytest.fixture(scope="module")
def lossy_peer() -> Iterator[str]:
    """The peer's IPv4 endpoint behind the element; torn down with the topology."""
    with Topology.create() as topology:
        peer = topology.add_namespace("linux")  # the namespace's default TCP sysctls
        link = add_element_link(topology, None, peer, number=0, label="ho",
                                drop_synack_retransmissions=LOST_COPIES)
        topology.start_server(peer, [80], family="both", behaviour="close", max_seconds=600)
        address = str(link.right.v4.ip)
        assert is_lab_address(address)
        assert route_check(address, devices=(link.left.device,)) == link.left.device
        yield f"{address}:80"


def test_the_first_retransmission_seen_after_7_s_is_waited_for(lossy_peer: str) -> None:
    code, result = run_json("halfopen", lossy_peer, "--max-wait", "12", timeout=60)
    assert code == 0 and result["state"] == "open"
    since_first = [a["since_first_us"] / 1e6 for a in result["syn_acks"]]
    # The copies at 1 s and 3 s were dropped on the path; the one at 7 s arrived.
    assert len(since_first) == 2 and 6.5 < since_first[1] < 8.0, since_first
    assert result["retransmissions"] == 1 and result["syn_acks"][1]["retransmission"]
    # Nothing was concluded from the 7 s of silence, nor from the 5 s after the copy.
    assert result["ended_by"] == "max-wait" and result["peer_gave_up"] == "unknown"
    assert result["caveat"].startswith("the last SYN/ACK came")
    assert result["cookies"]["verdict"] == "no"  # it retransmitted: it kept the request


def test_a_short_max_wait_says_no_conclusion_was_safe_yet(lossy_peer: str) -> None:
    code, result = run_json("halfopen", lossy_peer, "--max-wait", "4", "--no-cookie-check")
    assert code == 0 and result["retransmissions"] == 0
    assert result["ended_by"] == "max-wait" and result["peer_gave_up"] == "unknown"
    assert result["caveat"].startswith("no retransmission within 4.0 s of the SYN/ACK")
    assert "6 s first timeout would not have retransmitted yet" in result["caveat"]
    assert result["cookies"]["verdict"] == "unknown"
    human = subprocess.run(
        [*PROBER, "halfopen", lossy_peer, "--max-wait", "4", "--no-cookie-check"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert human.returncode == 0, human.stderr
    assert "--max-wait ended the watch before a conclusion was safe: no retransmission" in (
        human.stdout
    )
    assert "whether the peer gave up is unknown" in human.stdout
    assert "SYN cookies: unknown" in human.stdout
