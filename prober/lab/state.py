"""What a topology created, kept in a JSON state file so it can be torn down without the process
that created it (killed, crashed, or a `prober lab up` that has long exited).

Resources are recorded before the command that creates them runs: a state file may list things
that were never created, never the reverse. Teardown therefore treats "already gone" as success.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from .addresses import AddressPool, pool_named
from .errors import LabError

STATE_VERSION = 1
DEFAULT_STATE_DIR = Path("/run/prober/lab")  # tmpfs: cleared at boot, like the namespaces
STATE_DIR_ENV = "PROBER_LAB_STATE_DIR"
_LOCK_TIMEOUT_S = 30.0


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


# --- resources -----------------------------------------------------------------------------
# `namespace` is None for the root namespace. Things inside a lab namespace (addresses,
# routes, neighbours, sysctls, nft tables, ns-to-ns veths) disappear with it and are recorded
# for `status`, not undone one by one.


@dataclass(frozen=True)
class Namespace:
    kind: ClassVar[str] = "netns"
    name: str


@dataclass(frozen=True)
class Veth:
    kind: ClassVar[str] = "veth"
    namespace: str | None
    name: str
    peer_namespace: str | None
    peer_name: str
    mac: str
    peer_mac: str


@dataclass(frozen=True)
class Address:
    kind: ClassVar[str] = "address"
    namespace: str | None
    device: str
    address: str  # with prefix length, e.g. "198.19.7.1/28"


@dataclass(frozen=True)
class Route:
    kind: ClassVar[str] = "route"
    namespace: str | None
    prefix: str
    via: str
    device: str


@dataclass(frozen=True)
class LocalRoute:
    """``ip route add local PREFIX dev lo`` in a lab namespace: it answers every address of
    PREFIX (the built-in lab's `lossy` and `many` blocks)."""

    kind: ClassVar[str] = "local-route"
    namespace: str
    prefix: str


@dataclass(frozen=True)
class Neighbour:
    kind: ClassVar[str] = "neighbour"
    namespace: str | None
    device: str
    address: str
    lladdr: str


@dataclass(frozen=True)
class Sysctl:
    kind: ClassVar[str] = "sysctl"
    namespace: str | None
    key: str
    value: str


@dataclass(frozen=True)
class NftRuleset:
    kind: ClassVar[str] = "nft"
    namespace: str
    ruleset: str


@dataclass(frozen=True)
class Process:
    kind: ClassVar[str] = "process"
    namespace: str | None
    argv: tuple[str, ...]  # the command line after `ip netns exec NS`, as /proc shows it
    pid: int | None  # None: recorded, not yet (or never) started
    start_time: int | None  # /proc/PID/stat field 22: tells a reused PID apart
    log_path: str | None


@dataclass(frozen=True)
class HostsLine:
    kind: ClassVar[str] = "hosts"
    path: str
    line: str


Resource = (
    Namespace
    | Veth
    | Address
    | Route
    | LocalRoute
    | Neighbour
    | Sysctl
    | NftRuleset
    | Process
    | HostsLine
)
_RESOURCE_TYPES: dict[str, type[Resource]] = {
    cls.kind: cls
    for cls in (Namespace, Veth, Address, Route, LocalRoute, Neighbour, Sysctl, NftRuleset,
                Process, HostsLine)
}


def resource_to_json(resource: Resource) -> dict[str, Any]:
    return {"kind": resource.kind, **asdict(resource)}


@functools.lru_cache(maxsize=4096)
def _resource_text(resource: Resource) -> str:
    return json.dumps(resource_to_json(resource))


_RESOURCES_PLACEHOLDER = "\0resources\0"


def resource_from_json(data: Mapping[str, Any]) -> Resource:
    kind = data.get("kind")
    cls = _RESOURCE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise LabError(f"state file names an unknown resource kind {kind!r}")
    values: dict[str, Any] = {}
    for spec in fields(cls):
        value = data.get(spec.name)
        values[spec.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


# --- owner ---------------------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) is parenthesised and may contain spaces: split after its last ")".
    after_comm = stat[stat.rindex(")") + 2 :].split()
    if after_comm[0] == "Z":  # a zombie is dead; only its exit status is left to collect
        return None
    return int(after_comm[19])


@dataclass(frozen=True)
class Owner:
    """The process whose death makes a test topology stale."""

    pid: int
    start_time: int

    @classmethod
    def current(cls) -> Owner:
        start_time = process_start_time(os.getpid())
        assert start_time is not None  # we are running
        return cls(pid=os.getpid(), start_time=start_time)

    def is_alive(self) -> bool:
        return process_start_time(self.pid) == self.start_time


# --- state ---------------------------------------------------------------------------------


@dataclass
class LabState:
    pool: AddressPool
    index: int
    owner: Owner | None  # None: persistent, never swept as stale
    created_at: float = field(default_factory=time.time)
    resources: list[Resource] = field(default_factory=list)
    # What the builder wants readers of the file to know beyond the resources (the built-in
    # lab keeps its options and peer table here, for `prober lab status`). JSON values only.
    description: dict[str, Any] | None = None

    @property
    def prefix(self) -> str:
        return self.pool.prefix(self.index)

    def to_json(self) -> dict[str, Any]:
        return self._document([resource_to_json(resource) for resource in self.resources])

    def _document(self, resources: object) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "pool": self.pool.name,
            "index": self.index,
            "prefix": self.prefix,
            "owner": None if self.owner is None else asdict(self.owner),
            "created_at": self.created_at,
            "resources": resources,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabState:
        if data.get("version") != STATE_VERSION:
            raise LabError(f"unsupported lab state version {data.get('version')!r}")
        owner = data.get("owner")
        return cls(
            pool=pool_named(str(data["pool"])),
            index=int(data["index"]),
            owner=None if owner is None else Owner(int(owner["pid"]), int(owner["start_time"])),
            created_at=float(data["created_at"]),
            resources=[resource_from_json(item) for item in data["resources"]],
            description=_description(data.get("description")),
        )

    def save(self, path: Path) -> None:
        # Write-then-rename so a kill at any instant leaves the old or the new file, whole.
        # No fsync: the file must survive the process, not the machine (a reboot clears the
        # namespaces it describes anyway).
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(self.to_text())
        os.replace(temporary, path)

    def to_text(self) -> str:
        """The file's text: one resource per line. A builder saves after every resource, so
        each resource's JSON is made once and kept (`_resource_text`): re-encoding them all
        on every save made building the built-in lab (300 resources) quadratic."""
        head = json.dumps(self._document(_RESOURCES_PLACEHOLDER), indent=1)
        resources = ",\n".join(f"  {_resource_text(resource)}" for resource in self.resources)
        listed = f"[\n{resources}\n ]" if resources else "[]"
        return head.replace(json.dumps(_RESOURCES_PLACEHOLDER), listed, 1) + "\n"

    @classmethod
    def load(cls, path: Path) -> LabState:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise LabError(f"lab state file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise LabError(f"lab state file {path} does not hold an object")
        return cls.from_json(data)


def _description(value: object) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise LabError(f"lab state description is {type(value).__name__}, not an object")


def state_path(state_dir: Path, prefix: str) -> Path:
    return state_dir / f"{prefix}.json"


def remove_orphaned_temporaries(state_dir: Path, state_name: str) -> None:
    """Delete half-written saves (see `LabState.save`) whose writer was killed mid-save;
    `state_name` may be a glob, e.g. ``pt??.json``."""
    for temporary in state_dir.glob(f".{state_name}.*.tmp"):
        pid = temporary.name.rsplit(".", 2)[-2]
        if pid.isdigit() and process_start_time(int(pid)) is None:
            temporary.unlink(missing_ok=True)


def state_paths(state_dir: Path, pool: AddressPool) -> list[Path]:
    if not state_dir.is_dir():
        return []
    return sorted(state_dir.glob(f"{pool.code}[0-9a-f][0-9a-f].json"))


def make_state_dir(state_dir: Path) -> None:
    # World-readable (not writable): `prober lab status` reads the state without root. The
    # files hold nothing secret, only names, addresses and PIDs that `ip` and `ps` show anyway.
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float, timed_out: Callable[[], Exception]) -> Iterator[None]:
    """An exclusive flock on ``path`` for the block, waiting at most ``timeout_s``; raises
    ``timed_out()`` after that. The kernel drops the lock when its holder dies."""
    with open(path, "a+") as lock_file:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise timed_out() from exc
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextlib.contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[None]:
    """Serialises index allocation and stale sweeps between processes sharing `state_dir`."""
    make_state_dir(state_dir)
    path = state_dir / ".lock"
    with file_lock(
        path,
        _LOCK_TIMEOUT_S,
        lambda: LabError(f"lab state lock {path} still held after {_LOCK_TIMEOUT_S:.0f} s"),
    ):
        yield

