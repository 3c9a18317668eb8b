"""What the sender process tells the receiver, over a pipe.

Each message is a frame: kind (1 byte), payload length (4 bytes), payload. The frequent ones
(a probe with no answer after its last attempt, one cut short by a stop) are packed binary;
the rare ones (bad lines, names that did not resolve, sends that failed, the end) are JSON.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

_FRAME: Final = struct.Struct("!BI")
# position, port, attempts sent, version, source and target address (4 or 16 bytes each),
# then the name (UTF-8, possibly empty)
_UNANSWERED: Final = struct.Struct("!QHBB")


class EventKind(IntEnum):
    UNANSWERED = 1  # silence after the last attempt and its wait
    INTERRUPTED = 2  # sent, still waiting when the scan was stopped
    NOTE = 3  # JSON: {"note": "bad-line"|"unresolved"|"send-failed"|"fatal"|"done", ...}


@dataclass(frozen=True, slots=True)
class Unanswered:
    kind: EventKind
    position: int
    version: int
    source: bytes
    address: bytes
    port: int
    attempts: int
    name: str | None


def encode_unanswered(
    kind: EventKind,
    position: int,
    version: int,
    source: bytes,
    address: bytes,
    port: int,
    attempts: int,
    name: str | None,
) -> bytes:
    payload = _UNANSWERED.pack(position, port, attempts, version) + source + address
    if name:
        payload += name.encode()
    return _FRAME.pack(kind, len(payload)) + payload


def encode_note(note: str, **fields: Any) -> bytes:
    payload = json.dumps({"note": note, **fields}).encode()
    return _FRAME.pack(EventKind.NOTE, len(payload)) + payload


class EventReader:
    """Reassembles frames from a non-blocking pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self.closed = False

    def read(self) -> Iterator[Unanswered | dict[str, Any]]:
        """Every whole frame that has arrived (reads until the pipe would block)."""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= _FRAME.size:
            kind, length = _FRAME.unpack_from(buffer, offset)
            end = offset + _FRAME.size + length
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + _FRAME.size : end])
            offset = end
            if kind == EventKind.NOTE:
                yield json.loads(payload)
            else:
                yield _decode_unanswered(EventKind(kind), payload)
        del buffer[:offset]


def _decode_unanswered(kind: EventKind, payload: bytes) -> Unanswered:
    position, port, attempts, version = _UNANSWERED.unpack_from(payload)
    width = 4 if version == 4 else 16
    start = _UNANSWERED.size
    source = payload[start : start + width]
    address = payload[start + width : start + 2 * width]
    name = payload[start + 2 * width :].decode() or None
    return Unanswered(kind, position, version, source, address, port, attempts, name)
