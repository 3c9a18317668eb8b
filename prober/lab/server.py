"""A small TCP server for lab namespaces.

    python -m prober.lab.server --port 80 [--port 8080 ...] [--family 4|6|both] [--backlog N]
                                [--behaviour close] [--max-seconds S] [--tag TEXT]

Listens on every address of the chosen families, prints one ``ready`` line on stdout once all
sockets listen, then serves until SIGTERM/SIGINT or --max-seconds. What it does with an accepted
connection is a named behaviour, so more can be added without touching the loop.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence

Behaviour = Callable[[socket.socket], None]

_ACCEPTS_PER_WAKEUP = 64  # bounds one wakeup's work; the rest waits for the next select


def close_at_once(connection: socket.socket) -> None:
    """Accept and close: the peer sees a completed handshake, then a FIN."""
    connection.close()


BEHAVIOURS: dict[str, Behaviour] = {
    "close": close_at_once,
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
    """Accept until a stop signal or `max_seconds`, handing each connection to `behaviour`."""
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
                    _accept_some(key.fileobj, behaviour)
    finally:
        signal.set_wakeup_fd(previous_wakeup_fd)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        wake_reader.close()
        wake_writer.close()


def _accept_some(listener: socket.socket, behaviour: Behaviour) -> None:
    for _ in range(_ACCEPTS_PER_WAKEUP):
        try:
            connection, _peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionAbortedError:
            continue  # reset while queued: nothing to serve
        connection.setblocking(True)
        behaviour(connection)


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
        # The builder stops reading after "ready" and may exit; later output must not SIGPIPE us.
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
