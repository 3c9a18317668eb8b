"""The built-in lab without root: its address plan, its peer table, and its command's errors."""

from __future__ import annotations

import ipaddress
import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from prober.cli import Exit, app
from prober.lab import (
    LAB_V4,
    LAB_V6,
    PEER_NAMES,
    PERSISTENT_POOL,
    TEST_POOL,
    LabEntry,
    LabOptions,
    LabStatus,
    lab_prefixes,
)
from prober.lab.addresses import AddressPool
from prober.lab.builtin import PEERS, POOL_ENV, PeerPlan, _block, _entries, _impairment
from prober.lab.render import status_json, status_text, table
from prober.lab.state import STATE_DIR_ENV


def test_persistent_lab_addresses() -> None:
    assert PERSISTENT_POOL.topologies == 1 and TEST_POOL.topologies == 128
    blocks = PERSISTENT_POOL.lab_blocks(0)
    assert str(PERSISTENT_POOL.topology(0).v4) == "198.18.0.0/24"
    assert str(PERSISTENT_POOL.topology(0).v6) == "2001:2::/64"
    assert (str(blocks.lossy_v4), str(blocks.lossy_v6)) == ("198.18.1.0/24", "2001:2:0:0:1::/120")
    assert (str(blocks.many_v4), str(blocks.many_v6)) == ("198.19.0.0/16", "2001:2:0:0:2::/112")
    assert [str(p) for p in lab_prefixes(PERSISTENT_POOL, 0)] == [
        "198.18.0.0/24", "198.18.1.0/24", "198.19.0.0/16", "2001:2::/64"]


def test_a_test_lab_fits_in_its_own_topology() -> None:
    index = 7
    topology = TEST_POOL.topology(index)
    blocks = TEST_POOL.lab_blocks(index)
    assert str(topology.v4) == "198.18.135.0/24"
    assert (str(blocks.lossy_v4), str(blocks.many_v4)) == ("198.18.135.192/27",
                                                           "198.18.135.224/27")
    assert str(blocks.many_v6) == "2001:2:0:107:2::/112"
    assert lab_prefixes(TEST_POOL, index) == (topology.v4, topology.v6)
    # The lab's links (0..11) stay below the blocks.
    highest_link = max(peer.link for peer in PEERS)
    assert topology.link(highest_link).v4.broadcast_address < blocks.lossy_v4.network_address


def test_lab_and_test_pools_never_overlap() -> None:
    persistent = lab_prefixes(PERSISTENT_POOL, 0)
    tests = [p for index in range(TEST_POOL.topologies) for p in lab_prefixes(TEST_POOL, index)]
    for prefix in (*persistent, *tests):
        assert prefix.subnet_of(LAB_V4 if prefix.version == 4 else LAB_V6)  # type: ignore[arg-type]
    for mine in persistent:
        for theirs in tests:
            assert mine.version != theirs.version or not mine.overlaps(theirs)
    assert all(pool.v4.subnet_of(LAB_V4) and pool.v6.subnet_of(LAB_V6)
               for pool in (PERSISTENT_POOL, TEST_POOL))


def test_every_peer_has_a_distinct_link_and_namespace() -> None:
    assert len(set(PEER_NAMES)) == len(PEERS)
    assert len({peer.link for peer in PEERS}) == len(PEERS)
    assert 0 not in {peer.link for peer in PEERS}  # link 0 is root's, to the router
    assert set(PEER_NAMES) == {"open", "filtered", "syncookies", "impatient", "rst-close",
                               "half-close", "no-timewait", "far", "lossy", "many", "tuned"}


def _peer(name: str) -> PeerPlan:
    peer, = (peer for peer in PEERS if peer.name == name)
    return peer


def _rows(name: str, pool: AddressPool = PERSISTENT_POOL, index: int = 0) -> list[LabEntry]:
    """The status rows of one peer, at the addresses `lab up` gives it in `pool`."""
    peer = _peer(name)
    plan = pool.topology(index).link(peer.link)
    link: Any = SimpleNamespace(right=SimpleNamespace(v4=plan.host_v4(2), v6=plan.host_v6(2)))
    answered = (plan.v4, plan.v6)
    return _entries(peer, f"{pool.prefix(index)}-{peer.name}", link, answered, "20ms ± 1ms")


def test_tuned_peer_plan() -> None:
    tuned = _peer("tuned")
    assert dict(tuned.sysctls) == {
        "net.ipv4.tcp_timestamps": 0, "net.ipv4.tcp_sack": 0, "net.ipv4.tcp_window_scaling": 0,
        "net.ipv4.tcp_ecn": 0, "net.ipv4.tcp_rfc1337": 1, "net.ipv4.tcp_invalid_ratelimit": 1000}
    # Its own link, an HTTP/1.0 server that closes first after a GET (like open's).
    assert (tuned.link, tuned.server, tuned.server_ports) == (11, "http", (80,))
    assert (tuned.element, tuned.block, tuned.ruleset) == (None, None, None)
    # Interface names: <prefix>-<label>-gw within the kernel's 15 characters.
    assert len(f"{TEST_POOL.prefix(0x7F)}-{tuned.label}-gw") <= 15
    # The persistent lab's address, and a test lab's, below that test lab's blocks.
    link = PERSISTENT_POOL.topology(0).link(tuned.link)
    assert (str(link.host_v4(2).ip), str(link.host_v6(2).ip)) == ("198.18.0.178", "2001:2::b:2")
    test_link = TEST_POOL.topology(7).link(tuned.link)
    assert (str(test_link.host_v4(2).ip), str(test_link.host_v6(2).ip)) == (
        "198.18.135.178", "2001:2:0:107::b:2")
    assert test_link.v4.broadcast_address < TEST_POOL.lab_blocks(7).lossy_v4.network_address
    rows = _rows("tuned")
    assert [(row.family, row.address, row.port) for row in rows[:2]] == [
        (4, "198.18.0.178", 80), (6, "2001:2::b:2", 80)]
    assert rows[0].behaviour == ("profile: no TS, SACK, WS or ECN; RFC 1337 on; "
                                 "challenge ACKs 1/s")
    assert [row.command for row in rows] == [
        r"sudo prober profile 198.18.0.178:80 --send 'GET / HTTP/1.0\r\n\r\n'",
        r"sudo prober profile '[2001:2::b:2]:80' --send 'GET / HTTP/1.0\r\n\r\n'",
        "sudo prober syn 198.18.0.178:80 -c 1",
        "sudo prober syn '[2001:2::b:2]:80' -c 1",
        r"sudo prober timewait 198.18.0.178:80 --send 'GET / HTTP/1.0\r\n\r\n' --no-duration"
        " --assassinate",
        r"sudo prober timewait '[2001:2::b:2]:80' --send 'GET / HTTP/1.0\r\n\r\n'"
        " --no-duration --assassinate",
        *["sudo ip netns exec pl00-tuned nstat -az TcpExtTCPChallengeACK "
          "TcpExtTCPACKSkippedChallenge"] * 2,
    ]


def test_profile_rows() -> None:
    """Every peer a profile tells something about has a `prober profile` row; those whose
    server closes only after a request send one; only far's is --quick."""
    profiled = {}
    for peer in PEERS:
        commands = [shlex.split(row.command) for row in _rows(peer.name)]
        profiles = [argv for argv in commands if argv[:3] == ["sudo", "prober", "profile"]]
        assert len(profiles) in (0, 2), peer.name  # one per family
        if profiles:
            profiled[peer.name] = profiles[0][4:]
    get = ["--send", r"GET / HTTP/1.0\r\n\r\n"]  # as typed: prober unescapes it
    assert profiled == {
        "open": get, "syncookies": get, "impatient": get, "rst-close": get, "half-close": [],
        "no-timewait": get, "far": ["--quick", *get], "tuned": get,
    }
    assert all(_peer(name).server in ("http", "rst") for name, argv in profiled.items()
               if "--send" in argv)


def test_readme_shows_the_status_table_of_the_plan() -> None:
    """README's `prober lab status` rows are the table the plan gives the persistent lab
    (the header line is one real run's; its options are the defaults)."""
    blocks = PERSISTENT_POOL.lab_blocks(0)
    options = LabOptions(seed=1)  # the defaults, as far as the rows show them
    entries = []
    for peer in PEERS:
        plan = PERSISTENT_POOL.topology(0).link(peer.link)
        link: Any = SimpleNamespace(right=SimpleNamespace(v4=plan.host_v4(2),
                                                          v6=plan.host_v6(2)))
        answered = _block(blocks, peer.block) if peer.block else (plan.v4, plan.v6)
        entries += _entries(peer, f"pl00-{peer.name}", link, answered,
                            _impairment(peer, options))
    lines = (Path(__file__).parents[2] / "README.md").read_text().splitlines()
    start = lines.index("$ prober lab status") + 2
    assert lines[start - 1].startswith("lab is up: pl00 since ")
    assert lines[start:lines.index("```", start)] == table(entries)


def _status(entries: list[LabEntry], problems: tuple[str, ...] = ()) -> LabStatus:
    return LabStatus(pool="persistent", prefix="pl00", state_path=Path("/run/prober/lab/pl00.json"),
                     created_at=0.0, options=LabOptions(seed=7), complete=True,
                     entries=tuple(entries), problems=problems)


def test_status_text_and_json() -> None:
    entries = [
        LabEntry("open", "pl00-open", 4, "198.18.0.18", 80, "HTTP",
                 "sudo prober syn 198.18.0.18:80"),
        LabEntry("open", "pl00-open", 6, "2001:2::1:2", 80, "HTTP",
                 "sudo prober syn '[2001:2::1:2]:80'"),
    ]
    text = status_text(_status(entries))
    lines = text.splitlines()
    assert lines[0].startswith("lab is up: pl00 since ")
    assert lines[0].endswith("delay 20ms ± 1ms, loss 1%, seed 7")
    assert lines[1].split() == ["ADDRESS", "PORT", "PEER", "BEHAVIOUR", "SHOW", "IT", "WITH"]
    assert "198.18.0.18" in lines[2] and "sudo prober syn 198.18.0.18:80" in lines[2]
    assert "[2001:2::1:2]" in lines[3] and "(same, over IPv6)" in lines[3]
    assert status_text(None) == "lab is down"
    assert json.loads(status_json(None)) == {"up": False}
    document = json.loads(status_json(_status(entries)))
    assert document["up"] is True and document["options"]["seed"] == 7
    assert [LabEntry.from_dict(entry) for entry in document["entries"]] == entries
    # An earlier version's state file, with a "coming" command prober lacks: not shown.
    old = {**entries[0].to_dict(), "coming": "prober timewait 198.18.0.18:80"}
    assert LabEntry.from_dict(old) == entries[0]
    broken = status_text(_status(entries, ("namespace pl00-open is gone",)))
    assert broken.splitlines()[-1].startswith("lab is broken: namespace pl00-open is gone")


runner = CliRunner()


def test_status_of_a_lab_that_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "none"))
    result = runner.invoke(app, ["lab", "status"])
    assert (result.exit_code, result.output) == (1, "lab is down\n")
    result = runner.invoke(app, ["lab", "status", "--json"])
    assert (result.exit_code, json.loads(result.output)) == (1, {"up": False})


@pytest.mark.parametrize("command", ["up", "down"])
def test_up_and_down_need_root(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = runner.invoke(app, ["lab", command])
    assert result.exit_code == Exit.NOT_PERMITTED
    assert result.output.startswith(f"prober: error: `prober lab {command}` needs root")
    assert len(result.output.splitlines()) == 1


def test_unknown_pool_is_a_lab_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(POOL_ENV, "nonesuch")
    result = runner.invoke(app, ["lab", "status"])
    assert result.exit_code == Exit.LAB_FAILED
    assert "PROBER_LAB_POOL='nonesuch' names no address pool" in result.output


def test_exit_statuses_are_distinct() -> None:
    assert len({int(code) for code in Exit}) == len(Exit)
    assert (Exit.LAB_FAILED, Exit.LAB_REFUSED) == (7, 8)


def test_sample_addresses_are_inside_their_blocks() -> None:
    from prober.lab.builtin import _sample_host

    for block in ("198.19.0.0/16", "198.18.1.0/24", "198.18.135.192/27", "2001:2:0:0:1::/120"):
        network = ipaddress.ip_network(block)
        assert _sample_host(network) in network
