"""A scan's probe sequence: targets, file and stdin, exclusions, the blocklist, the
permutation, shards, positions, bad lines, counts (issue 8). No sockets."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prober.scan_plan as scan_plan
from prober.blocklist import (
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    AddressSet,
    explain_hits,
    network_range,
)
from prober.errors import ResolutionError, UsageError
from prober.scan_plan import (
    PlanCounts,
    PlannedProbe,
    PlanTally,
    ScanPlan,
    check_plan,
    iter_probes,
)
from prober.targets import parse_ports, parse_target_spec

LAB = ("198.18.0.0/15", "2001:2::/48")
Element = tuple[str, int]  # (address or name, port)


class Names:
    """A resolver from a table; counts its calls."""

    def __init__(self, table: dict[str, str] | None = None) -> None:
        self.table = table or {}
        self.calls: list[tuple[str, int | None]] = []

    def __call__(self, name: str, version: int | None) -> tuple[int, bytes]:
        self.calls.append((name, version))
        if name not in self.table:
            raise ResolutionError(f"cannot resolve {name!r}: Name or service not known")
        address = ipaddress.ip_address(self.table[name])
        return address.version, address.packed


def run(
    plan: ScanPlan,
    stdin: Iterable[str] | None = None,
    resolve: Names | None = None,
    on_bad: list[str] | None = None,
    tally: PlanTally | None = None,
) -> list[PlannedProbe]:
    return list(
        iter_probes(
            plan,
            resolve or Names(),
            None if on_bad is None else on_bad.append,
            stdin=stdin,
            tally=tally,
        )
    )


def element(probe: PlannedProbe) -> Element:
    if probe.address is None:
        assert probe.name is not None
        return probe.name, probe.port
    return str(ipaddress.ip_address(probe.address)), probe.port


def elements(probes: Iterable[PlannedProbe]) -> list[Element]:
    return [element(probe) for probe in probes]


def without_hits(counts: PlanCounts | None) -> PlanCounts | None:
    return None if counts is None else dataclasses.replace(counts, blocklist_hits=())


def write(directory: Path | str, name: str, lines: Iterable[str]) -> str:
    path = Path(directory) / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


# -- syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("198.18.0.18:80", [("198.18.0.18", 80)]),
        ("198.18.0.18:22,80", [("198.18.0.18", 22), ("198.18.0.18", 80)]),
        ("198.18.0.18:8000-8002", [("198.18.0.18", p) for p in (8000, 8001, 8002)]),
        ("[2001:2::2]:443", [("2001:2::2", 443)]),
        ("198.18.0.0/31:80-81", [("198.18.0.0", 80), ("198.18.0.0", 81),
                                 ("198.18.0.1", 80), ("198.18.0.1", 81)]),
        ("[2001:2::/127]:80", [("2001:2::", 80), ("2001:2::1", 80)]),
        ("198.18.0.18", [("198.18.0.18", 7), ("198.18.0.18", 9)]),  # -p
        ("[2001:2::/127]", [("2001:2::", 7), ("2001:2::", 9),
                            ("2001:2::1", 7), ("2001:2::1", 9)]),
        ("lab-peer.example:8080", [("198.18.0.30", 8080)]),
    ],
)
def test_each_syntax_gives_its_elements(target: str, expected: list[Element]) -> None:
    plan = ScanPlan(targets=(target,), ports="7,9", exempt=LAB)
    probes = run(plan, resolve=Names({"lab-peer.example": "198.18.0.30"}))
    assert sorted(elements(probes)) == sorted(expected)
    counts = check_plan(plan)
    assert counts is not None and counts.targets == len(expected)


def test_the_same_targets_from_a_file(tmp_path: Path) -> None:
    lines = ["# peers", "", "198.18.0.18:80   # open", "[2001:2::/127]:22,80",
             "198.18.0.18", "  198.18.0.19:443  "]
    plan = ScanPlan(file=write(tmp_path, "t.txt", lines), ports="7", exempt=LAB)
    got = elements(run(plan))
    assert got[0] == ("198.18.0.18", 80)
    assert sorted(got[1:5]) == sorted((a, p) for a in ("2001:2::", "2001:2::1") for p in (22, 80))
    assert got[5:] == [("198.18.0.18", 7), ("198.18.0.19", 443)]
    assert check_plan(plan) == PlanCounts(7, 0, 0, 0, elements=7)


def test_arguments_come_first_then_the_file_in_order(tmp_path: Path) -> None:
    lines = [f"198.18.1.{n}:80" for n in range(20)]
    plan = ScanPlan(
        targets=("198.18.0.0/28:80", "198.18.2.0/30:22"),
        file=write(tmp_path, "t.txt", lines),
        exempt=LAB,
    )
    got = elements(run(plan))
    assert len(got) == 16 + 4 + 20
    arguments = {(f"198.18.0.{n}", 80) for n in range(16)} | {
        (f"198.18.2.{n}", 22) for n in range(4)}
    assert set(got[:20]) == arguments
    assert got[:20] != sorted(got[:20])  # one permuted space, not the specs one after another
    assert got[20:] == [(f"198.18.1.{n}", 80) for n in range(20)]


def test_a_file_line_of_many_elements_is_permuted_in_its_place(tmp_path: Path) -> None:
    lines = ["198.18.9.9:1", "198.18.0.0/26:80", "198.18.9.9:2"]
    got = elements(run(ScanPlan(file=write(tmp_path, "t.txt", lines), exempt=LAB)))
    assert got[0] == ("198.18.9.9", 1) and got[-1] == ("198.18.9.9", 2)
    middle = got[1:-1]
    assert sorted(middle, key=lambda e: ipaddress.ip_address(e[0])) == [
        (f"198.18.0.{n}", 80) for n in range(64)]
    assert middle != sorted(middle, key=lambda e: ipaddress.ip_address(e[0]))


def test_ipv6_blocks_scan_as_ipv4_ones_do() -> None:
    plan = ScanPlan(targets=("[2001:2::2:0:0/120]:80,443",), exempt=LAB)
    probes = run(plan)
    assert len(probes) == 512 and {p.version for p in probes} == {6}
    assert all(len(p.address or b"") == 16 for p in probes)
    assert len(set(elements(probes))) == 512


# -- stdin -------------------------------------------------------------------------------------


def test_stdin_is_read_once_as_it_is_sent() -> None:
    plan = ScanPlan(file="-", exempt=LAB)
    assert check_plan(plan) is None
    got = elements(run(plan, stdin=io.StringIO("198.18.0.1:80\n# x\n198.18.0.2:81\n")))
    assert got == [("198.18.0.1", 80), ("198.18.0.2", 81)]


def test_stdin_defaults_to_sys_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("198.18.0.1:80\n"))
    assert elements(run(ScanPlan(file="-"))) == [("198.18.0.1", 80)]


def test_a_bad_stdin_line_stops_the_scan_there_or_is_skipped() -> None:
    text = "198.18.0.1:80\n198.18.0.2:80\nnonsense:x\n198.18.0.3:80\n"
    probes = iter_probes(ScanPlan(file="-"), Names(), stdin=io.StringIO(text))
    assert element(next(probes)) == ("198.18.0.1", 80)
    assert element(next(probes)) == ("198.18.0.2", 80)
    with pytest.raises(UsageError, match=r"^<stdin>:3: invalid target 'nonsense:x'"):
        next(probes)
    bad: list[str] = []
    tally = PlanTally()
    got = run(ScanPlan(file="-", skip_bad=True), stdin=io.StringIO(text), on_bad=bad,
              tally=tally)
    assert len(got) == 3 and [p.position for p in got] == [0, 1, 2]
    assert len(bad) == 1 and bad[0].startswith("<stdin>:3: ")
    assert tally.bad_lines == 1 and tally.probes == 3


def test_streaming_stdin_keeps_memory_flat() -> None:
    def peak(count: int) -> int:
        def lines() -> Iterator[str]:
            for n in range(count):
                yield f"198.{18 + (n >> 16) % 2}.{(n >> 8) & 255}.{n & 255}:80\n"
                if n % 1000 == 0:
                    yield "[2001:2::/126]:80\n"  # a block now and then (the slow path)

        tracemalloc.start()
        try:
            seen = sum(1 for _ in iter_probes(ScanPlan(file="-", exempt=LAB), Names(),
                                              stdin=lines()))
            _current, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert seen == count + 4 * len(range(0, count, 1000))
        return top

    small, large = peak(10_000), peak(100_000)
    assert large < small + 20_000
    assert large < 100_000


# -- exclusion ---------------------------------------------------------------------------------


def test_exclusion_by_address_on_every_port_and_by_port(tmp_path: Path) -> None:
    exclude = write(tmp_path, "ex.txt", [
        "# never these",
        "198.18.0.1",  # every port
        "198.18.0.2:80",  # just port 80
        "198.18.0.8/30",  # a block, every port
        "[2001:2::1]:81",
    ])
    plan = ScanPlan(
        targets=("198.18.0.0/28:80,81", "[2001:2::/127]:80,81"),
        exclude=(exclude,),
        exempt=LAB,
    )
    tally = PlanTally()
    got = set(elements(run(plan, tally=tally)))
    assert ("198.18.0.1", 80) not in got and ("198.18.0.1", 81) not in got
    assert ("198.18.0.2", 80) not in got and ("198.18.0.2", 81) in got
    assert not any(a in {"198.18.0.8", "198.18.0.9", "198.18.0.10", "198.18.0.11"}
                   for a, _ in got)
    assert ("2001:2::1", 81) not in got and ("2001:2::1", 80) in got
    excluded = 2 + 1 + 8 + 1
    assert len(got) == 32 + 4 - excluded
    assert tally.excluded == excluded
    assert check_plan(plan) == PlanCounts(36 - excluded, excluded, 0, 0, elements=36)


def test_exclusion_applies_to_single_addresses_and_resolved_names(tmp_path: Path) -> None:
    exclude = write(tmp_path, "ex.txt", ["198.18.0.5"])
    plan = ScanPlan(targets=("198.18.0.5:80", "peer.example:80", "198.18.0.6:80"),
                    exclude=(exclude,))
    got = elements(run(plan, resolve=Names({"peer.example": "198.18.0.5"})))
    assert got == [("198.18.0.6", 80)]


@pytest.mark.parametrize(
    ("line", "message"),
    [("peer.example", "not host names"), ("198.18.0.1/24", "host bits"), ("x:y", "invalid")],
)
def test_a_bad_exclusion_names_its_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    exclude = write(tmp_path, "ex.txt", ["198.18.0.1", line])
    plan = ScanPlan(targets=("198.18.0.1:80",), exclude=(exclude,))
    with pytest.raises(UsageError, match=rf"^{exclude}:2: .*{message}"):
        check_plan(plan)
    bad: list[str] = []
    counts = check_plan(ScanPlan(targets=("198.18.0.2:80",), exclude=(exclude,),
                                 skip_bad=True), bad.append)
    assert counts is not None and counts.bad_lines == 1 and counts.targets == 1
    assert bad[0].startswith(f"{exclude}:2: ")


# -- blocklist ---------------------------------------------------------------------------------


def test_the_blocklist_skips_special_addresses_inside_blocks() -> None:
    plan = ScanPlan(targets=("192.0.0.0/23:80",))  # IETF assignments, then 192.0.1.0/24
    tally = PlanTally()
    got = elements(run(plan, tally=tally))
    assert sorted(got) == sorted((f"192.0.1.{n}", 80) for n in range(256))
    assert tally.blocklisted == 256
    assert tally.blocklist_hits["IETF Protocol Assignments"] == 256 - 8 - 3 - 2
    assert tally.blocklist_hits["IPv4 dummy address"] == 1
    counts = check_plan(plan)
    assert without_hits(counts) == PlanCounts(256, 0, 256, 0, elements=512)
    assert counts is not None and dict(counts.blocklist_hits) == tally.blocklist_hits
    assert explain_hits(tally.blocklist_hits)[0] == (
        "IETF Protocol Assignments (192.0.0.0/24, 2001::/23; RFC 6890, RFC 2928): 243")


def test_blocklisted_elements_count_every_port() -> None:
    counts = check_plan(ScanPlan(targets=("224.0.0.0/30:1-10", "[ff02::/127]:80,81")))
    assert without_hits(counts) == PlanCounts(0, 0, 44, 0, elements=44)
    assert counts is not None and dict(counts.blocklist_hits) == {"Multicast": 44}


def test_no_blocklist_probes_everything() -> None:
    plan = ScanPlan(targets=("10.0.0.0/30:80", "[ff02::/127]:1"), blocklist=False)
    assert len(run(plan)) == 6
    assert check_plan(plan) == PlanCounts(6, 0, 0, 0, elements=6)


def test_exempt_networks_are_probed() -> None:
    assert run(ScanPlan(targets=("198.18.0.0/30:80",))) == []
    assert len(run(ScanPlan(targets=("198.18.0.0/30:80",), exempt=LAB))) == 4
    assert len(run(ScanPlan(targets=("[2001:2::/126]:80",), exempt=LAB))) == 4
    # Exempting the lab's /48 leaves the rest of the IETF /23 blocked.
    assert run(ScanPlan(targets=("[2001:3::/126]:80",), exempt=LAB)) == []


@pytest.mark.parametrize(
    "target",
    ["10.0.0.1:80", "10.0.0.1/32:80", "255.255.255.255:80", "224.0.0.1:80", "[ff02::1]:80",
     "[::1/128]:80", "127.0.0.1"],
)
def test_a_single_address_is_always_probed(target: str) -> None:
    plan = ScanPlan(targets=(target,), ports="80")
    assert len(run(plan)) == 1
    assert check_plan(plan) == PlanCounts(1, 0, 0, 0, elements=1)


def test_exclusion_wins_over_the_blocklist_in_the_counts(tmp_path: Path) -> None:
    exclude = write(tmp_path, "ex.txt", ["10.0.0.0/31", "10.0.0.2:80"])
    plan = ScanPlan(targets=("10.0.0.0/29:80,81", "8.8.8.0/31:80"), exclude=(exclude,))
    tally = PlanTally()
    assert len(run(plan, tally=tally)) == 2
    assert (tally.excluded, tally.blocklisted) == (5, 11)
    assert without_hits(check_plan(plan)) == PlanCounts(2, 5, 11, 0, elements=18)


# -- order, shards, positions --------------------------------------------------------------------


def test_the_order_is_determined_by_the_seed() -> None:
    def order(seed: int) -> list[Element]:
        return elements(run(ScanPlan(targets=("198.18.0.0/24:80,443",), seed=seed, exempt=LAB)))

    assert order(7) == order(7)
    assert order(7) != order(8)
    assert sorted(order(7)) == sorted(order(8))


def test_positions_are_dense_in_each_shard(tmp_path: Path) -> None:
    exclude = write(tmp_path, "ex.txt", ["198.18.0.0/29"])
    targets = write(tmp_path, "t.txt", ["198.18.1.0/28:80", "198.18.2.1:80", "10.0.0.0/30:1"])
    for shard in range(3):
        plan = ScanPlan(targets=("198.18.0.0/26:80",), file=targets, exclude=(exclude,),
                        exempt=LAB, shard=shard, shards=3)
        probes = run(plan)
        assert [p.position for p in probes] == list(range(len(probes)))
        counts = check_plan(plan)
        assert counts is not None and counts.targets == len(probes)


TARGETS = [
    "198.18.0.0/30:80", "198.18.0.4/31:22,80", "192.0.0.0/29:1-3", "8.8.8.0/30:53",
    "10.0.0.1:80", "[2001:db8::/126]:443", "[2001:2::/127]:80,81", "198.51.100.7",
    "203.0.113.0/30", "peer.example:80", "nowhere.example", "198.18.3.3:9", "bad:x",
    "224.0.0.0/31:5", "8.8.8.0/30:50-55", "[2001:db8::/127]",
]
EXCLUSIONS = ["198.18.0.1", "198.18.0.5:80", "192.0.0.0/30:2", "[2001:db8::1]",
              "8.8.8.0/31:53", "8.8.8.3:54", "[2001:2::1]:81", "224.0.0.1:5",
              "8.8.8.0/30:50-53", "8.8.8.2:53-54,2", "[2001:db8::/127]:1"]
PORTS = "1,2"
NAMES = {"peer.example": "203.0.113.99"}


def reference(
    targets: list[str], lines: list[str], exclusions: list[str], blocklist: bool,
    exempt: tuple[str, ...],
) -> Counter[Element]:
    """What a whole scan probes, computed with ipaddress objects, independently."""
    default = parse_ports(PORTS)
    every_port = parse_ports("1-65535")
    excluded = [
        (spec.network, spec.ports.ranges)
        for spec in (parse_target_spec(text, every_port) for text in exclusions)
    ]
    special = [ipaddress.ip_network(e.network) for e in IPV4_SPECIAL + IPV6_SPECIAL]
    spared = [ipaddress.ip_network(n) for n in exempt]
    found: Counter[Element] = Counter()
    for text in [*targets, *lines]:
        try:
            spec = parse_target_spec(text, default)
        except UsageError:
            continue
        for index in range(spec.size):
            host, port = spec.address_and_port(index)
            if spec.name is not None:
                found[(NAMES.get(host, host), port)] += 1
                continue
            address = ipaddress.ip_address(host)
            if any(network is not None and address in network
                   and any(low <= port <= high for low, high in ranges)
                   for network, ranges in excluded):
                continue
            assert spec.network is not None
            if (blocklist and spec.network.num_addresses > 1
                    and any(address in n for n in special if n.version == address.version)
                    and not any(address in n for n in spared if n.version == address.version)):
                continue
            found[(str(address), port)] += 1
    return found


plans = st.fixed_dictionaries({
    "targets": st.lists(st.sampled_from(TARGETS), max_size=4),
    "lines": st.lists(st.sampled_from(TARGETS), max_size=6),
    "exclusions": st.lists(st.sampled_from(EXCLUSIONS), max_size=4),
    "blocklist": st.booleans(),
    "exempt": st.sampled_from([(), LAB]),
    "seed": st.integers(0, 2**64),
    "shards": st.integers(1, 5),
})


@settings(max_examples=150, deadline=None)
@given(plan=plans)
def test_shards_are_disjoint_and_complete_and_counts_match(plan: dict[str, object]) -> None:
    targets: list[str] = plan["targets"]  # type: ignore[assignment]
    lines: list[str] = plan["lines"]  # type: ignore[assignment]
    exclusions: list[str] = plan["exclusions"]  # type: ignore[assignment]
    shards: int = plan["shards"]  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as directory:
        base = ScanPlan(
            targets=tuple(targets),
            file=write(directory, "t.txt", lines),
            ports=PORTS,
            exclude=(write(directory, "ex.txt", exclusions),),
            blocklist=plan["blocklist"],  # type: ignore[arg-type]
            exempt=plan["exempt"],  # type: ignore[arg-type]
            seed=plan["seed"],  # type: ignore[arg-type]
            skip_bad=True,
        )
        together: Counter[Element] = Counter()
        for shard in range(shards):
            part = dataclasses.replace(base, shard=shard, shards=shards)
            tally = PlanTally()
            probes = run(part, resolve=Names(NAMES), tally=tally)
            assert [p.position for p in probes] == list(range(len(probes)))
            counts = check_plan(part)
            assert counts is not None and counts.exact
            assert counts.targets == len(probes) == tally.probes
            assert (counts.excluded, counts.blocklisted) == (tally.excluded, tally.blocklisted)
            assert dict(counts.blocklist_hits) == +tally.blocklist_hits
            assert counts.targets + counts.excluded + counts.blocklisted == counts.elements
            together.update(
                (NAMES.get(p.name, p.name), p.port) if p.address is None and p.name
                else element(p) for p in probes
            )
    expected = reference(targets, lines, exclusions, plan["blocklist"],  # type: ignore[arg-type]
                         plan["exempt"])  # type: ignore[arg-type]
    assert together == expected


def test_a_sharded_count_too_large_to_walk_is_an_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = ScanPlan(targets=("192.0.0.0/23:80",), shards=2)
    exact = check_plan(plan)
    assert exact is not None and exact.exact
    monkeypatch.setattr(scan_plan, "WALK_LIMIT", 10)
    estimate = check_plan(plan)
    assert estimate is not None and not estimate.exact
    assert estimate.elements == exact.elements == 256
    assert estimate.blocklisted == 128
    assert abs(estimate.targets - exact.targets) < 30


def test_a_huge_block_is_counted_without_walking_it() -> None:
    counts = check_plan(ScanPlan(targets=("0.0.0.0/0:1-65535",)))
    assert counts is not None and counts.exact
    assert counts.elements == (1 << 32) * 65535
    special = AddressSet.from_ranges(
        network_range(entry.network)[1:] for entry in IPV4_SPECIAL)
    assert counts.blocklisted == special.size * 65535
    assert counts.targets == ((1 << 32) - special.size) * 65535
    sharded = check_plan(ScanPlan(targets=("0.0.0.0/0:80",), shards=4))
    assert sharded is not None and sharded.elements == 1 << 30 and not sharded.exact


# -- bad lines ---------------------------------------------------------------------------------


def test_a_bad_file_line_is_named_before_anything_is_sent(tmp_path: Path) -> None:
    path = write(tmp_path, "t.txt", ["198.18.0.1:80", "# c", "198.18.0.1/24:80", "x:80:1"])
    with pytest.raises(UsageError, match=rf"^{path}:3: invalid target '198.18.0.1/24:80'"):
        check_plan(ScanPlan(file=path))
    with pytest.raises(UsageError, match=rf"^{path}:3: "):
        run(ScanPlan(file=path))
    bad: list[str] = []
    counts = check_plan(ScanPlan(file=path, skip_bad=True), bad.append)
    assert counts == PlanCounts(1, 0, 0, 2, elements=1)
    assert [m.split(": ")[0] for m in bad] == [f"{path}:3", f"{path}:4"]


def test_a_bad_argument_is_named_by_its_number() -> None:
    with pytest.raises(UsageError, match=r"^argument 2: invalid target 'nonsense:x'"):
        check_plan(ScanPlan(targets=("198.18.0.1:80", "nonsense:x")))
    bad: list[str] = []
    plan = ScanPlan(targets=("198.18.0.1:80", "nonsense:x"), skip_bad=True)
    assert len(run(plan, on_bad=bad)) == 1 and bad[0].startswith("argument 2: ")


def test_a_literal_of_the_other_family_is_a_bad_target(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"argument 1: .*IPv6 address in an IPv4 scan"):
        check_plan(ScanPlan(targets=("[2001:2::1]:80",), version=4))
    with pytest.raises(UsageError, match=r"argument 1: .*IPv4 address in an IPv6 scan"):
        check_plan(ScanPlan(targets=("198.18.0.1:80",), version=6))
    path = write(tmp_path, "t.txt", ["[2001:2::1]:80", "198.18.0.1:80"])
    with pytest.raises(UsageError, match=rf"^{path}:2: "):
        check_plan(ScanPlan(file=path, version=6))
    names = Names({"peer.example": "2001:2::9"})
    probes = run(ScanPlan(targets=("peer.example:80",), version=6), resolve=names)
    assert names.calls == [("peer.example", 6)] and probes[0].version == 6


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (ScanPlan(), "no targets"),
        (ScanPlan(file="/nonexistent/targets.txt"), "cannot read /nonexistent/targets.txt"),
        (ScanPlan(targets=("198.18.0.1",), ports="80,x"), "invalid -p"),
        (ScanPlan(targets=("198.18.0.1:80",), exclude=("/nonexistent/ex",)), "cannot read"),
        (ScanPlan(targets=("198.18.0.1:80",), shard=2, shards=2), "invalid shard"),
        (ScanPlan(targets=("198.18.0.1:80",), exempt=("x",)), "invalid network"),
        (ScanPlan(targets=("198.18.0.1:80",), exclude=("-",)), "cannot be stdin"),
        (ScanPlan(targets=("198.18.0.1:80",), version=5), "invalid IP version"),
    ],
)
def test_bad_plans_are_one_line_usage_errors(plan: ScanPlan, message: str) -> None:
    with pytest.raises(UsageError, match=message) as error:
        check_plan(plan)
    assert "\n" not in str(error.value)


# -- names -------------------------------------------------------------------------------------


def test_a_name_is_resolved_once_per_line_and_cached(tmp_path: Path) -> None:
    names = Names({"peer.example": "198.18.0.40"})
    path = write(tmp_path, "t.txt", ["peer.example:80,81", "peer.example:82"])
    plan = ScanPlan(targets=("peer.example:1-3",), file=path)
    probes = run(plan, resolve=names)
    assert names.calls == [("peer.example", None)]
    assert sorted(p.port for p in probes) == [1, 2, 3, 80, 81, 82]
    assert {p.name for p in probes} == {"peer.example"}
    assert {p.address for p in probes} == {bytes([198, 18, 0, 40])}


def test_a_name_that_does_not_resolve_gives_an_error_probe_per_port() -> None:
    names = Names()
    plan = ScanPlan(targets=("nowhere.example:80,443", "198.18.0.1:80"))
    probes = run(plan, resolve=names)
    failed = [p for p in probes if p.address is None]
    assert sorted(p.port for p in failed) == [80, 443]
    assert all(p.name == "nowhere.example" and "cannot resolve" in (p.error or "")
               for p in failed)
    assert len(names.calls) == 1
    assert [p.position for p in probes] == [0, 1, 2]
    counts = check_plan(plan)
    assert counts is not None and counts.targets == 3


# -- the plan itself ---------------------------------------------------------------------------


def test_a_plan_survives_a_json_round_trip() -> None:
    plan = ScanPlan(
        targets=("198.18.0.0/24:80", "[2001:2::/120]:22,80"),
        file="-",
        ports="22,80",
        exclude=("a.txt", "b.txt"),
        blocklist=False,
        exempt=LAB,
        seed=2**63 + 5,
        shard=2,
        shards=4,
        version=6,
        skip_bad=True,
    )
    assert ScanPlan.from_json(plan.to_json()) == plan
    assert ScanPlan.from_json(ScanPlan().to_json()) == ScanPlan()


# -- the fast path reads what the full parser reads ------------------------------------------

octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["256", "01", "00", "999"]))
ipv4 = st.lists(octet, min_size=4, max_size=4).map(".".join)
ipv6 = st.sampled_from(["2001:2::", "2001:2::1", "::", "::1", "fe80::1%eth0", "2001:2::1:0:0",
                        "::ffff:198.18.0.1", "2001:2:0:0:0:0:0:8", "1.2.3.4", "2001:2::g"])
length = st.one_of(st.none(), st.integers(0, 129).map(str), st.sampled_from(["024", "x", ""]))
ports = st.one_of(st.none(), st.sampled_from(["80", "22,80", "1-3", "0", "", "80-70", "x"]))


@settings(max_examples=400, deadline=None)
@given(family=st.sampled_from([4, 6]), v4=ipv4, v6=ipv6, length=length, ports=ports,
       default=st.booleans())
def test_the_fast_path_agrees_with_the_full_parser(
    family: int, v4: str, v6: str, length: str | None, ports: str | None, default: bool,
) -> None:
    host = (v4 if family == 4 else v6) + ("" if length is None else f"/{length}")
    if family == 6:
        host = f"[{host}]"
    text = host + ("" if ports is None else f":{ports}")
    setup = scan_plan._Setup(ScanPlan(ports="7,9" if default else None), None, PlanTally())

    def read(fast: bool) -> tuple[int, int, int, tuple[tuple[int, int], ...]] | str:
        try:
            spec = setup.parse(text) if fast else setup.prepare(slow(text))
        except UsageError as exc:
            return str(exc)
        return spec.version, spec.first, spec.count, spec.ports.ranges

    def slow(text: str) -> scan_plan._Spec:
        target = parse_target_spec(text, setup.default_ports)
        assert target.network is not None
        network = target.network
        return scan_plan._Spec(network.version, int(network.network_address),
                               network.num_addresses, target.ports)

    fast, full = read(True), read(False)
    if isinstance(full, str):
        assert isinstance(fast, str)  # refused both ways (the messages may differ in detail)
    else:
        assert fast == full
