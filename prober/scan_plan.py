"""What a scan probes, in which order: targets, exclusions, the blocklist, the permutation,
shards (issue 8).

The sequence, for a plan:

- The command-line targets form one index space (each spec's addresses x ports, ports
  varying fastest, specs one after another), walked in a keyed pseudo-random order
  (``Permutation(size, seed)``), so no network sees a burst.
- Then the targets file, line by line in order (a stream cannot be permuted); a line of many
  elements (a block, a port list) walks its own elements permuted the same way.
- Shards split the global sequence (the arguments' permutation, then the file's elements):
  shard ``i`` of ``n`` takes the elements whose global index is ``i`` modulo ``n``. Indices
  count every element, excluded or blocked ones too, so machines whose exclusions differ
  (the lab is up on one only) still split the rest with no gap and no overlap.
- An element excluded (``--exclude``) or blocklisted (a special-purpose address inside a
  block of many) is skipped and counted; the others get dense positions 0, 1, 2, ... in this
  shard's order (the engine's index into its bitmap of answered probes).

Nothing grows with the number of targets: the permutation is computed per position, a file
is streamed, and only the exclusions (the files the user gave) are held. Pure apart from
reading the targets and exclude files; no sockets.
"""

from __future__ import annotations

import functools
import json
import socket
import struct
import sys
from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Final, NamedTuple

from prober.blocklist import AddressSet, Blocklist, Exclusions
from prober.core.permutation import Permutation
from prober.errors import ResolutionError, UsageError
from prober.targets import PortRanges, parse_plain_ipv4, parse_ports, parse_target_spec


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """Everything that decides the probe sequence; JSON-serializable, so the sender process
    rebuilds exactly the sequence the receiver expects."""

    targets: tuple[str, ...] = ()  # command-line targets (each parse_target_spec syntax)
    file: str | None = None  # a targets file, or "-" for stdin
    ports: str | None = None  # -p: ports for targets written without any
    exclude: tuple[str, ...] = ()  # --exclude files (same syntax; a bare host/block = all ports)
    blocklist: bool = True  # skip special-purpose addresses inside CIDR blocks
    exempt: tuple[str, ...] = ()  # networks the blocklist spares (the lab's, while it is up)
    seed: int = 0  # keys the permutation
    shard: int = 0  # this machine's shard, 0-based
    shards: int = 1
    version: int | None = None  # 4 or 6: the family names resolve to (None: the first)
    skip_bad: bool = False  # report bad lines (on_bad) and go on, instead of UsageError

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ScanPlan:
        fields = json.loads(text)
        for name in ("targets", "exclude", "exempt"):
            fields[name] = tuple(fields[name])
        return cls(**fields)


class PlannedProbe(NamedTuple):
    """One probe of the sequence. ``position`` is dense (0, 1, 2, ...) in this shard's send
    order; ``address`` is packed (4 or 16 bytes), or None when ``name`` did not resolve
    (then ``error`` says why, and ``version`` is the plan's, or 4)."""

    position: int
    version: int
    address: bytes | None
    port: int
    name: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PlanCounts:
    targets: int  # probes this shard will send (after exclusions and the blocklist)
    excluded: int
    blocklisted: int
    bad_lines: int
    # This shard's elements before exclusions and the blocklist: positions stay below it.
    elements: int = 0
    # False when a sharded block too large to walk overlaps the exclusions or the
    # blocklist: then targets, excluded and blocklisted are estimates (1/shards of the whole).
    exact: bool = True
    # Blocklisted elements by entry name, most first (prober.blocklist.explain_hits says more).
    blocklist_hits: tuple[tuple[str, int], ...] = ()


@dataclass(slots=True)
class PlanTally:
    """What iter_probes met so far (pass one in to read it during or after the iteration;
    for stdin, the only count there is)."""

    probes: int = 0
    excluded: int = 0
    blocklisted: int = 0
    bad_lines: int = 0
    blocklist_hits: Counter[str] = field(default_factory=Counter)  # elements by entry name


Resolver = Callable[[str, "int | None"], tuple[int, bytes]]  # (name, version) -> (version, packed)

# Above this many elements to test one by one, a sharded count is estimated, not walked.
WALK_LIMIT: Final = 1 << 18
RESOLVER_CACHE: Final = 4096  # names remembered per run (a file may repeat a name)
_PACK4: Final = struct.Struct("!I").pack
_EXCLUDED: Final = ""  # a verdict: excluded (a blocklisted element's verdict is its entry name)
_new_probe: Final = tuple.__new__


def check_plan(plan: ScanPlan, on_bad: Callable[[str], None] | None = None) -> PlanCounts | None:
    """The first pass: parse every target (arguments, the file, the exclude files) without
    sending or storing anything, and count this shard's probes.

    Counts are arithmetic where they can be (a /8 is not walked to be counted); elements are
    tested one by one only where exclusions or the blocklist meet a block in a sharded scan
    (beyond WALK_LIMIT of them the counts are estimates: ``exact`` False). Names are not
    resolved here: a name whose address is excluded is counted as a target, and skipped
    (tallied as excluded) by iter_probes.

    Args:
        plan: the scan's inputs.
        on_bad: gets ``"SOURCE:LINE: ..."`` for each bad line when ``plan.skip_bad``.

    Returns:
        The counts, or None when the targets come from stdin (it cannot be read twice: its
        lines are checked as they are sent). Arguments and exclude files are checked anyway.

    Raises:
        UsageError: a bad line (``SOURCE:LINE: ...``) unless ``plan.skip_bad``; a bad ``-p``,
            an unreadable file, no targets at all.
    """
    tally = PlanTally()
    setup = _Setup(plan, on_bad, tally)
    if not plan.targets and plan.file is None:
        raise UsageError("no targets: give targets as arguments or a targets file")
    counter = _Counter(setup)
    counter.add_arguments()
    if plan.file == "-":
        return None
    if plan.file is not None:
        with _TargetsFile(plan.file) as lines:
            counter.add_file(lines, plan.file)
    return PlanCounts(
        targets=counter.elements - counter.excluded - counter.blocklisted,
        excluded=counter.excluded,
        blocklisted=counter.blocklisted,
        bad_lines=tally.bad_lines,
        elements=counter.elements,
        exact=counter.exact,
        blocklist_hits=tuple(counter.hits.most_common()),
    )


def iter_probes(
    plan: ScanPlan,
    resolve: Resolver,
    on_bad: Callable[[str], None] | None = None,
    *,
    stdin: Iterable[str] | None = None,
    tally: PlanTally | None = None,
) -> Iterator[PlannedProbe]:
    """The probe sequence of this shard. Streams: memory does not grow with the targets.

    Args:
        plan: the scan's inputs.
        resolve: ``(name, version) -> (version, packed address)``, called once per target
            line or argument that is a name (and cached); ResolutionError gives each of its
            ports a probe with ``address`` None and the message in ``error``.
        on_bad: gets ``"SOURCE:LINE: ..."`` for each bad line met when ``plan.skip_bad``
            (all of them: a caller that ran check_plan on a file passes it for stdin only).
        stdin: the lines of ``-f -`` (default ``sys.stdin``).
        tally: filled with what was skipped, as the iteration goes.

    Raises:
        UsageError: a bad line unless ``plan.skip_bad`` (for stdin: when it is reached).
    """
    tally = PlanTally() if tally is None else tally
    setup = _Setup(plan, on_bad, tally)
    walker = _Walker(setup, _CachedResolver(resolve, plan.version), tally)
    yield from walker.arguments()
    if plan.file == "-":
        yield from walker.file(sys.stdin if stdin is None else stdin, "<stdin>")
    elif plan.file is not None:
        with _TargetsFile(plan.file) as lines:
            yield from walker.file(lines, plan.file)


class _Spec:
    """One argument or line as integers: addresses ``[first, first + count)`` on ``ports``
    (or a name on them), with the exclusions and blocklist entries that meet it."""

    __slots__ = (
        "blocked",
        "by_interval",
        "count",
        "excluded",
        "filtered",
        "first",
        "name",
        "nports",
        "offset",
        "port_base",
        "port_table",
        "ports",
        "resolved",
        "version",
    )

    def __init__(
        self, version: int, first: int, count: int, ports: PortRanges, name: str | None = None
    ) -> None:
        self.version = version
        self.first = first
        self.count = count
        self.ports = ports
        self.name = name
        self.nports = ports.size
        self.offset = 0  # its first index in the arguments' space
        self.port_base = ports.ranges[0][0]
        self.port_table = _port_table(ports.ranges)
        self.excluded: AddressSet | None = None
        self.by_interval: dict[int, AddressSet] | None = None
        self.blocked: AddressSet | None = None
        self.filtered = False
        self.resolved: tuple[int, bytes] | str | None = None  # a name's address, or why not

    @property
    def size(self) -> int:
        return self.count * self.nports

    def port(self, index: int) -> int:
        return self.port_base + index if self.port_table is None else self.port_table[index]

    def verdict(self, address: int, port: int, port_interval: memoryview) -> str | None:
        """None: probe it; ``_EXCLUDED``; or the blocklist entry's name."""
        if self.excluded is not None and address in self.excluded:
            return _EXCLUDED
        if self.by_interval is not None:
            within = self.by_interval.get(port_interval[port])
            if within is not None and address in within:
                return _EXCLUDED
        if self.blocked is not None:
            return self.blocked.label_of(address)
        return None


@functools.lru_cache(maxsize=256)
def _port_table(ranges: tuple[tuple[int, int], ...]) -> tuple[int, ...] | None:
    """The ports of a list, for lookup by index (one range is arithmetic: None)."""
    if len(ranges) == 1:
        return None
    return tuple(port for low, high in ranges for port in range(low, high + 1))


# Lines of a file repeat their port lists and sizes: parse and key each once.
_parse_ports: Final = functools.lru_cache(maxsize=256)(parse_ports)
_permutation: Final = functools.lru_cache(maxsize=256)(Permutation)


class _Setup:
    """What both passes build first: -p, the exclusions, the blocklist, the arguments."""

    def __init__(
        self, plan: ScanPlan, on_bad: Callable[[str], None] | None, tally: PlanTally
    ) -> None:
        if not (plan.shards >= 1 and 0 <= plan.shard < plan.shards):
            raise UsageError(f"invalid shard {plan.shard + 1}/{plan.shards}")
        if plan.version not in (None, 4, 6):
            raise UsageError(f"invalid IP version {plan.version}: expected 4 or 6")
        self.plan = plan
        self.on_bad = on_bad
        self.tally = tally
        self.seed = str(plan.seed).encode()
        self.default_ports: PortRanges | None = None
        if plan.ports is not None:
            try:
                self.default_ports = parse_ports(plan.ports)
            except UsageError as exc:
                raise UsageError(f"invalid -p {plan.ports!r}: {exc}") from None
        self.blocklist = Blocklist(plan.exempt) if plan.blocklist else None
        self.exclusions = Exclusions(self._exclusion_entries())
        self.port_interval = self.exclusions.port_interval
        self.arguments: list[_Spec] = []
        offset = 0
        for number, text in enumerate(plan.targets, start=1):
            spec = self.parse_or_report(text, f"argument {number}")
            if spec is not None:
                spec.offset = offset
                offset += spec.size
                self.arguments.append(spec)
        self.arguments_size = offset

    def bad(self, message: str) -> None:
        """A bad line: raise, or report and count it (--skip-bad)."""
        if not self.plan.skip_bad:
            raise UsageError(message)
        self.tally.bad_lines += 1
        if self.on_bad is not None:
            self.on_bad(message)

    def parse_or_report(self, text: str, source: str) -> _Spec | None:
        try:
            return self.prepare(self.parse(text))
        except UsageError as exc:
            self.bad(f"{source}: {exc}")
            return None

    def parse(self, text: str) -> _Spec:
        """One target as a _Spec (the fast path for plain IPv4 first).

        Raises:
            UsageError: a bad target, or one of the family the plan does not scan.
        """
        fast = self.parse_plain(text)
        if fast is not None:
            return fast
        target = parse_target_spec(text, self.default_ports)
        if target.network is None:
            assert target.name is not None
            return _Spec(self.plan.version or 4, 0, 1, target.ports, target.name)
        network = target.network
        self.check_version(network.version, text)
        return _Spec(
            network.version,
            int(network.network_address),
            network.num_addresses,
            target.ports,
        )

    def parse_plain(self, text: str) -> _Spec | None:
        """The fast path: ``A.B.C.D[/LEN][:PORTS]`` and ``[V6[/LEN]][:PORTS]`` read without
        ipaddress (~10 us a line). None for anything else or anything doubtful, which
        parse_target_spec then reads, or explains."""
        if text.startswith("["):
            close = text.find("]")
            host, rest = text[1:close], text[close + 1 :]
            if close < 0 or (rest and (rest[0] != ":" or len(rest) == 1)):
                return None
            address_text, slash, length_text = host.partition("/")
            try:
                address = int.from_bytes(socket.inet_pton(socket.AF_INET6, address_text), "big")
            except OSError:
                return None
            version, bits, ports_text, colon = 6, 128, rest[1:], bool(rest)
        else:
            host, colon_text, ports_text = text.partition(":")
            address_text, slash, length_text = host.partition("/")
            plain = parse_plain_ipv4(address_text)
            if plain is None or plain[1]:
                return None
            version, bits, address, colon = 4, 32, plain[0], bool(colon_text)
        count = 1
        if slash:
            if not (length_text.isascii() and length_text.isdigit()) or (
                length_text[0] == "0" and len(length_text) > 1
            ):
                return None
            length = int(length_text)
            if length > bits or address & ((1 << (bits - length)) - 1):
                return None  # host bits set: parse_target_spec says so
            count = 1 << (bits - length)
        ports = self.default_ports
        if colon:
            if not ports_text:
                return None
            try:
                ports = _parse_ports(ports_text)
            except UsageError as exc:
                raise UsageError(f"invalid target {text!r}: {exc}") from None
        if ports is None:
            return None
        self.check_version(version, text)
        return _Spec(version, address, count, ports)

    def check_version(self, version: int, text: str) -> None:
        wanted = self.plan.version
        if wanted is not None and version != wanted:
            raise UsageError(
                f"invalid target {text!r}: an IPv{version} address in an IPv{wanted} scan"
            )

    def prepare(self, spec: _Spec) -> _Spec:
        """Attach the exclusions and blocklist entries inside the spec's block."""
        if spec.name is not None:
            return spec  # checked by address once resolved
        low, high = spec.first, spec.first + spec.count
        exclusions = self.exclusions
        every = exclusions.all_ports[spec.version]
        if every:
            excluded = every.clip(low, high)
            if excluded:
                spec.excluded = excluded
        if exclusions.bounds:
            by_interval: dict[int, AddressSet] = {}
            for k in exclusions.intervals_of(spec.ports.ranges):
                within = exclusions.by_interval[k][spec.version].clip(low, high)
                if within:
                    by_interval[k] = within
            if by_interval:
                spec.by_interval = by_interval
        if self.blocklist is not None and spec.count > 1:  # one address is always probed
            blocked = self.blocklist.within(spec.version, low, high)
            if blocked:
                spec.blocked = blocked
        spec.filtered = (
            spec.excluded is not None or spec.by_interval is not None or spec.blocked is not None
        )
        return spec

    def _exclusion_entries(
        self,
    ) -> Iterator[tuple[int, int, int, tuple[tuple[int, int], ...] | None]]:
        for path in self.plan.exclude:
            if path == "-":
                raise UsageError("an exclude file cannot be stdin ('-'): give a path")
            with _TargetsFile(path) as lines:
                for number, line in enumerate(lines, start=1):
                    text = line.partition("#")[0].strip()
                    if not text:
                        continue
                    try:
                        entry = self._exclusion(text)
                    except UsageError as exc:
                        self.bad(f"{path}:{number}: {exc}")
                        continue
                    yield entry

    def _exclusion(self, text: str) -> tuple[int, int, int, tuple[tuple[int, int], ...] | None]:
        fast = parse_plain_ipv4(text)
        if fast is not None:
            address, port = fast
            return 4, address, address + 1, ((port, port),) if port else None
        target = parse_target_spec(text, _EVERY_PORT)
        if target.network is None:
            raise UsageError(
                f"invalid exclusion {text!r}: exclusions are addresses or blocks, "
                "not host names"
            )
        first = int(target.network.network_address)
        ports = target.ports
        return (
            target.network.version,
            first,
            first + target.network.num_addresses,
            None if ports is _EVERY_PORT else ports.ranges,
        )


_EVERY_PORT: Final = PortRanges(((1, 65535),))


class _TargetsFile:
    """Open a targets or exclude file for streaming; a one-line error when it cannot be."""

    def __init__(self, path: str) -> None:
        try:
            # Undecodable bytes become U+FFFD: that line is then reported as bad.
            self.handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None

    def __enter__(self) -> Iterator[str]:
        return self.handle

    def __exit__(self, *exc_info: object) -> None:
        self.handle.close()


class _CachedResolver:
    """``resolve`` once per name per run (a bounded LRU), failures remembered too."""

    def __init__(self, resolve: Resolver, version: int | None) -> None:
        self.resolve = resolve
        self.version = version
        self.cache: OrderedDict[str, tuple[int, bytes] | str] = OrderedDict()

    def __call__(self, name: str) -> tuple[int, bytes] | str:
        cached = self.cache.get(name)
        if cached is not None:
            self.cache.move_to_end(name)
            return cached
        result: tuple[int, bytes] | str
        try:
            result = self.resolve(name, self.version)
        except ResolutionError as exc:
            result = str(exc)
        self.cache[name] = result
        if len(self.cache) > RESOLVER_CACHE:
            self.cache.popitem(last=False)
        return result


class _Walker:
    """The second pass: yields this shard's probes."""

    def __init__(self, setup: _Setup, resolve: _CachedResolver, tally: PlanTally) -> None:
        self.setup = setup
        self.resolve = resolve
        self.tally = tally
        self.position = 0

    def arguments(self) -> Iterator[PlannedProbe]:
        setup = self.setup
        specs = setup.arguments
        if not specs:
            return
        offsets = [spec.offset for spec in specs]
        permutation = Permutation(setup.arguments_size, setup.seed)
        plan = setup.plan
        for index in permutation.positions(plan.shard, plan.shards):
            spec = specs[bisect_right(offsets, index) - 1]
            probe = self.element(spec, index - spec.offset)
            if probe is not None:
                yield probe

    def file(self, lines: Iterable[str], source: str) -> Iterator[PlannedProbe]:
        setup = self.setup
        tally = self.tally
        plan = setup.plan
        shard, shards = plan.shard, plan.shards
        exclusions = setup.exclusions if setup.exclusions else None
        wanted = plan.version
        index = setup.arguments_size  # the global index of the line's first element
        for number, line in enumerate(lines, start=1):
            text = (line.partition("#")[0] if "#" in line else line).strip()
            if not text:
                continue
            fast = parse_plain_ipv4(text)
            if fast is not None and fast[1] and wanted != 6:
                # The fast path: one address on one port.
                address, port = fast
                mine = index % shards == shard
                index += 1
                if not mine:
                    continue
                if exclusions is not None and exclusions.contains(4, address, port):
                    tally.excluded += 1
                    continue
                tally.probes += 1
                self.position += 1
                yield _new_probe(
                    PlannedProbe, (self.position - 1, 4, _PACK4(address), port, None, None)
                )
                continue
            spec = setup.parse_or_report(text, f"{source}:{number}")
            if spec is None:
                continue
            size = spec.size
            first_index, index = index, index + size
            start = (shard - first_index) % shards
            if start >= size:
                continue
            if size == 1:
                probe = self.element(spec, 0)
                if probe is not None:
                    yield probe
                continue
            for local in _permutation(size, setup.seed).positions(start, shards):
                probe = self.element(spec, local)
                if probe is not None:
                    yield probe

    def element(self, spec: _Spec, local: int) -> PlannedProbe | None:
        """Element ``local`` of ``spec`` as a probe, or None when it is skipped."""
        address_index, port_index = divmod(local, spec.nports)
        port = (
            spec.port_base + port_index if spec.port_table is None else spec.port_table[port_index]
        )
        tally = self.tally
        if spec.name is not None:
            return self.named(spec, port)
        address = spec.first + address_index
        if spec.filtered:
            verdict = spec.verdict(address, port, self.setup.port_interval)
            if verdict is not None:
                if verdict == _EXCLUDED:
                    tally.excluded += 1
                else:
                    tally.blocklisted += 1
                    tally.blocklist_hits[verdict] += 1
                return None
        tally.probes += 1
        self.position += 1
        version = spec.version
        packed = _PACK4(address) if version == 4 else address.to_bytes(16, "big")
        return _new_probe(PlannedProbe, (self.position - 1, version, packed, port, None, None))

    def named(self, spec: _Spec, port: int) -> PlannedProbe | None:
        assert spec.name is not None
        if spec.resolved is None:
            spec.resolved = self.resolve(spec.name)
        resolved = spec.resolved
        tally = self.tally
        if isinstance(resolved, str):
            tally.probes += 1
            self.position += 1
            return PlannedProbe(
                self.position - 1, spec.version, None, port, spec.name, resolved
            )
        version, packed = resolved
        exclusions = self.setup.exclusions
        if exclusions and exclusions.contains(version, int.from_bytes(packed, "big"), port):
            tally.excluded += 1  # exclusion is by address, also for a name's
            return None
        tally.probes += 1
        self.position += 1
        return PlannedProbe(self.position - 1, version, packed, port, spec.name)


class _Counter:
    """The first pass's arithmetic: elements, excluded and blocklisted in this shard."""

    def __init__(self, setup: _Setup) -> None:
        self.setup = setup
        self.elements = 0
        self.excluded = 0
        self.blocklisted = 0
        self.hits: Counter[str] = Counter()
        self.exact = True

    def add_arguments(self) -> None:
        setup = self.setup
        plan = setup.plan
        size = setup.arguments_size
        self.elements += len(range(plan.shard, size, plan.shards))
        filtered = [spec for spec in setup.arguments if spec.filtered]
        if not filtered:
            return
        if plan.shards == 1:
            for spec in filtered:
                self.add_whole(spec, 1)
            return
        permutation = Permutation(size, setup.seed)
        for spec in filtered:
            offset = spec.offset

            def mine(local: int, offset: int = offset) -> bool:
                return permutation.position_of(offset + local) % plan.shards == plan.shard

            self.add_sharded(spec, mine)

    def add_file(self, lines: Iterable[str], source: str) -> None:
        setup = self.setup
        plan = setup.plan
        shard, shards = plan.shard, plan.shards
        exclusions = setup.exclusions if setup.exclusions else None
        wanted = plan.version
        index = setup.arguments_size
        for number, line in enumerate(lines, start=1):
            text = (line.partition("#")[0] if "#" in line else line).strip()
            if not text:
                continue
            fast = parse_plain_ipv4(text)
            if fast is not None and fast[1] and wanted != 6:
                address, port = fast
                ours = index % shards == shard
                index += 1
                if ours:
                    self.elements += 1
                    if exclusions is not None and exclusions.contains(4, address, port):
                        self.excluded += 1
                continue
            spec = setup.parse_or_report(text, f"{source}:{number}")
            if spec is None:
                continue
            size = spec.size
            first_index, index = index, index + size
            start = (shard - first_index) % shards
            self.elements += len(range(start, size, shards))
            if not spec.filtered or start >= size:
                continue
            if shards == 1:
                self.add_whole(spec, 1)
            elif size == 1:
                self.add_sharded(spec, lambda local: True)
            else:
                permutation = _permutation(size, setup.seed)

                def mine(local: int, start: int = start, p: Permutation = permutation) -> bool:
                    return p.position_of(local) % shards == start

                self.add_sharded(spec, mine)

    def add_whole(self, spec: _Spec, shards: int) -> None:
        """Every element of ``spec`` (shards 1), or an estimate of 1/shards of them."""
        excluded, blocked = _whole_counts(spec, self.setup.exclusions)
        self.excluded += excluded // shards
        self.blocklisted += sum(blocked.values()) // shards
        for name, count in blocked.items():
            if count // shards:
                self.hits[name] += count // shards

    def add_sharded(self, spec: _Spec, mine: Callable[[int], bool]) -> None:
        """Test the elements of ``spec`` that exclusions or the blocklist meet, counting
        those ``mine`` says are this shard's (estimated if there are too many)."""
        touched = AddressSet()
        for part in (spec.excluded, spec.blocked, *(spec.by_interval or {}).values()):
            if part is not None:
                touched = touched | part
        if touched.size * spec.nports > WALK_LIMIT:
            self.exact = False
            self.add_whole(spec, self.setup.plan.shards)
            return
        port_interval = self.setup.port_interval
        nports = spec.nports
        for low, high in touched.ranges():
            for address in range(low, high):
                base = (address - spec.first) * nports
                for port_index in range(nports):
                    verdict = spec.verdict(address, spec.port(port_index), port_interval)
                    if verdict is None or not mine(base + port_index):
                        continue
                    if verdict == _EXCLUDED:
                        self.excluded += 1
                    else:
                        self.blocklisted += 1
                        self.hits[verdict] += 1


def _whole_counts(spec: _Spec, exclusions: Exclusions) -> tuple[int, Counter[str]]:
    """(excluded, blocklisted by entry name) elements of a whole spec, by range arithmetic."""
    nports = spec.nports
    every = spec.excluded or AddressSet()
    excluded = every.size * nports
    blocked_set = (spec.blocked or AddressSet()) - every
    blocked = Counter({name: size * nports for name, size in blocked_set.sizes_by_label().items()})
    if spec.by_interval is not None:
        per_interval = exclusions.intervals_of(spec.ports.ranges)
        for k, within in spec.by_interval.items():
            ports_in = per_interval[k]
            only_here = within - every
            excluded += only_here.size * ports_in
            for name, size in (blocked_set & only_here).sizes_by_label().items():
                blocked[name] -= size * ports_in
    return excluded, +blocked
