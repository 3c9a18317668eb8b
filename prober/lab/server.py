"""A small TCP server for lab namespaces.

    python -m prober.lab.server --port 80 [--port 8080 ...] [--family 4|6|both] [--backlog N]
                                [--behaviour close|http|rst|half-close|flood]
                                [--max-seconds S]
                                [--tag TEXT]

Listens on every address of the chosen families, prints one ``ready`` line on stdout once all
sockets listen, then serves until SIGTERM/SIGINT or --max-seconds. What it does with an accepted
connection is a named behaviour, so more can be added without touching the loop:

    close       accept and close at once: a completed handshake, then our FIN
    http        read the request head, answer ``HTTP/1.0 200 OK`` with a short body, then close
                first (FIN): the server, not the client, ends up in TIME-WAIT
    rst         the same answer, then close with SO_LINGER {on, 0}: a RST instead of a FIN
    half-close  read until the client's FIN, then keep sending a few chunks with short pauses
                (the half-closed direction still carries data), then close (FIN)
    flood       send FLOOD_BYTES (1 GiB) at once, as fast as the client's window allows, then
                close (FIN): a peer that sends without end, for the client's memory bounds

Only the standard library is imported: the lab starts this file directly (``python -I``).
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence

Behaviour = Callable[[socket.socket], None]

_ACCEPTS_PER_WAKEUP = 64  # bounds one wakeup's work; the rest waits for the next select
# Connections served at once; more wait in the listen backlog. Each handler is a thread
# because some behaviours wait on the client (its request, its FIN) or pause between writes.
MAX_CONCURRENT_CONNECTIONS = 64
_SLOT_WAIT_S = 0.1  # how long the accept loop waits for a free handler before re-checking
CLIENT_TIMEOUT_S = 5.0  # a client that sends nothing holds a handler no longer than this
_REQUEST_HEAD_LIMIT = 8192
HALF_CLOSE_CHUNKS = 3
HALF_CLOSE_PAUSE_S = 0.1
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}
FLOOD_BYTES = 1 << 30
FLOOD_CHUNK = bytes(range(256)) * 256  # 64 KiB; the stream is bytes 0..255 repeated


def close_at_once(connection: socket.socket) -> None:
    """Accept and close: the peer sees a completed handshake, then a FIN."""
    connection.close()


def read_request_head(connection: socket.socket) -> bytes:
    """Read until the blank line that ends an HTTP request head, EOF, the size limit or the
    client timeout, whichever comes first; returns what arrived."""
    received = b""
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while b"\r\n\r\n" not in received and len(received) < _REQUEST_HEAD_LIMIT:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        connection.settimeout(remaining)
        try:
            chunk = connection.recv(_REQUEST_HEAD_LIMIT - len(received))
        except (TimeoutError, ConnectionError):
            break
        if not chunk:
            break
        received += chunk
    return received


def http_response(head: bytes) -> bytes:
    request_line = head.split(b"\r\n", 1)[0][:200].decode("ascii", "replace")
    body = f"prober lab: {request_line or 'no request'}\n".encode()
    return (
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def drain_until_eof(connection: socket.socket) -> None:
    """Read and discard until the client's FIN (or a reset, or the client timeout)."""
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while (remaining := deadline - time.monotonic()) > 0:
        connection.settimeout(remaining)
        try:
            if not connection.recv(65536):
                return
        except (TimeoutError, ConnectionError):
            return


def http_close_first(connection: socket.socket) -> None:
    """Answer one HTTP/1.0 request and close first. The FIN goes out with shutdown(SHUT_WR)
    before we read on: closing with unread bytes queued (a client that sent more than the
    head) would make the kernel send a RST instead of a FIN."""
    with connection:
        head = read_request_head(connection)
        try:
            connection.sendall(http_response(head))
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            return  # the client is gone already
        drain_until_eof(connection)


def http_then_reset(connection: socket.socket) -> None:
    """Answer like `http`, then abort: close with SO_LINGER {on, 0} sends a RST, and the
    connection skips FIN-WAIT and TIME-WAIT on our side."""
    with connection:
        head = read_request_head(connection)
        try:
            connection.sendall(http_response(head))
        except OSError:
            return
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


def send_after_half_close(connection: socket.socket) -> None:
    """Read until the client's FIN, then send HALF_CLOSE_CHUNKS lines HALF_CLOSE_PAUSE_S apart
    into the half-closed connection, then close (FIN)."""
    with connection:
        drain_until_eof(connection)
        try:
            for chunk in range(1, HALF_CLOSE_CHUNKS + 1):
                if chunk > 1:
                    time.sleep(HALF_CLOSE_PAUSE_S)
                connection.sendall(f"chunk {chunk}/{HALF_CLOSE_CHUNKS} after your FIN\n".encode())
        except OSError:
            return


def close_on_eof(connection: socket.socket) -> None:
    """Read until the client's FIN, then close: the client closes first, the server's FIN
    follows as soon as its application sees EOF."""
    with connection:
        drain_until_eof(connection)


def flood(connection: socket.socket) -> None:
    """Send FLOOD_BYTES, then close. A client that stops reading for CLIENT_TIMEOUT_S (or
    resets) ends it early."""
    with connection:
        connection.settimeout(CLIENT_TIMEOUT_S)
        try:
            for _ in range(FLOOD_BYTES // len(FLOOD_CHUNK)):
                connection.sendall(FLOOD_CHUNK)
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            return
        drain_until_eof(connection)


BEHAVIOURS: dict[str, Behaviour] = {
    "close": close_at_once,
    "eof": close_on_eof,
    "http": http_close_first,
    "rst": http_then_reset,
    "half-close": send_after_half_close,
    "flood": flood,
}


def open_listeners(ports: Sequence[int], family: str, backlog: int) -> list[socket.socket]:
    listeners: list[socket.socket] = []
    try:
        for port in ports:
            if family in ("6", "both"):
                listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                listeners.append(listener)
                # v6-only even alone: "6" must not answer IPv4, and "both" binds 0.0.0.0 too.
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("::", port))
                listener.listen(backlog)
            if family in ("4", "both"):
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("0.0.0.0", port))
                listener.listen(backlog)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    for listener in listeners:
        listener.setblocking(False)
    return listeners


def serve(
    listeners: Sequence[socket.socket], behaviour: Behaviour, max_seconds: float | None
) -> None:
    """Accept until a stop signal or `max_seconds`, handing each connection to `behaviour` in
    a thread of its own (at most MAX_CONCURRENT_CONNECTIONS at once)."""
    slots = threading.BoundedSemaphore(MAX_CONCURRENT_CONNECTIONS)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    # Signals wake select() through this pipe, so stopping is immediate.
    wake_reader, wake_writer = socket.socketpair()
    wake_reader.setblocking(False)
    wake_writer.setblocking(False)
    previous_wakeup_fd = signal.set_wakeup_fd(wake_writer.fileno())
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous_handlers = {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(wake_reader, selectors.EVENT_READ)
            for listener in listeners:
                selector.register(listener, selectors.EVENT_READ)
            while not stop_requested:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    break
                for key, _ in selector.select(timeout):
                    if key.fileobj is wake_reader:
                        wake_reader.recv(4096)
                        continue
                    assert isinstance(key.fileobj, socket.socket)
                    _accept_some(key.fileobj, behaviour, slots)
    finally:
        signal.set_wakeup_fd(previous_wakeup_fd)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        wake_reader.close()
        wake_writer.close()


def _accept_some(
    listener: socket.socket, behaviour: Behaviour, slots: threading.BoundedSemaphore
) -> None:
    for _ in range(_ACCEPTS_PER_WAKEUP):
        # No free handler: leave the connection in the backlog; select() wakes us again.
        if not slots.acquire(timeout=_SLOT_WAIT_S):
            return
        try:
            connection, _peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            slots.release()
            return
        except ConnectionAbortedError:
            slots.release()
            continue  # reset while queued: nothing to serve
        connection.setblocking(True)
        threading.Thread(
            target=_handle, args=(connection, behaviour, slots), daemon=True
        ).start()


def _handle(
    connection: socket.socket, behaviour: Behaviour, slots: threading.BoundedSemaphore
) -> None:
    try:
        behaviour(connection)
    except OSError:
        connection.close()  # a client that vanished mid-way is not the server's problem
    finally:
        slots.release()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m prober.lab.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, action="append", required=True,
                        help="TCP port to listen on (repeatable)")
    parser.add_argument("--family", choices=("4", "6", "both"), default="both")
    parser.add_argument("--backlog", type=int, default=128)
    parser.add_argument("--behaviour", choices=sorted(BEHAVIOURS), default="close")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="exit after this long even if nobody stops the server")
    parser.add_argument("--tag", default="",
                        help="free text for the command line, so a lab can recognise its servers")
    arguments = parser.parse_args(argv)
    for port in arguments.port:
        if not 0 < port < 65536:
            parser.error(f"port {port} outside 1..65535")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        listeners = open_listeners(arguments.port, arguments.family, arguments.backlog)
    except OSError as exc:
        # One line: the builder quotes the end of this log in its error.
        print(f"prober.lab.server: cannot listen on ports {arguments.port}: {exc}",
              file=sys.stderr)
        return 1
    try:
        print("ready", flush=True)
        # "ready" is all the builder reads from stdout (its log); nothing later belongs there.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        serve(listeners, BEHAVIOURS[arguments.behaviour], arguments.max_seconds)
    finally:
        for listener in listeners:
            listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
