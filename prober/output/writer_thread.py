"""Writing a scan's records from a thread, so a slow reader never blocks the event loop.

A pipe whose reader lags (``prober scan ... | slow``) makes a write block. Done in the event
loop, that would stop the capture from being read and the kernel would drop answers; and a
buffered ``sys.stdout`` write cut short by a signal can lose the part already copied (seen on
Python 3.11 with a full pipe and Ctrl-C: a record cut in half and the next glued to it). So
records are handed to a thread that writes them with ``os.write``, resuming after every
partial write, and the scan reads ``backlog`` to slow down while too much is waiting
(prober/cli.py: the sender pauses; nothing is dropped).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TextIO


class WriterThread:
    """Writes byte strings to ``fd`` in order, in a daemon thread.

    ``on_closed`` is called (from the thread) once if the reader has gone (EPIPE); later
    writes are discarded. ``error`` holds any other write error, after which writes are
    discarded too.
    """

    def __init__(self, fd: int, on_closed: Callable[[], None] | None = None) -> None:
        self._fd = fd
        self._on_closed = on_closed
        self._queue: deque[bytes] = deque()
        self._lock = threading.Condition()
        self._backlog = 0
        self._closing = False
        self.closed = False  # the reader left
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="prober-writer", daemon=True)
        self._thread.start()

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def backlog(self) -> int:
        """Bytes handed over and not yet written."""
        return self._backlog

    def write(self, data: bytes) -> None:
        if not data or self.closed or self.error is not None:
            return
        with self._lock:
            self._queue.append(data)
            self._backlog += len(data)
            self._lock.notify()

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued, then end the thread (waits up to ``timeout``)."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait()
                if not self._queue:
                    return
                data = self._queue.popleft()
            self._write_all(data)
            with self._lock:
                self._backlog -= len(data)

    def _write_all(self, data: bytes) -> None:
        if self.closed or self.error is not None:
            return
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BrokenPipeError:
            self.closed = True
            if self._on_closed is not None:
                self._on_closed()
        except OSError as exc:
            self.error = exc
        finally:
            view.release()


class InlineWriter:
    """WriterThread's interface over a text stream without a descriptor (a test's captured
    stdout): written at once, in the caller's thread."""

    def __init__(self, stream: TextIO, on_closed: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._on_closed = on_closed
        self.closed = False
        self.error: OSError | None = None
        self.fd = -1
        self.backlog = 0

    def write(self, data: bytes) -> None:
        if self.closed or self.error is not None:
            return
        try:
            self._stream.write(data.decode())
            self._stream.flush()
        except BrokenPipeError:
            self.closed = True
            if self._on_closed is not None:
                self._on_closed()
        except OSError as exc:
            self.error = exc

    def close(self, timeout: float | None = None) -> None:
        pass
