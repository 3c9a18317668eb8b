"""The HTTP endpoint of ``prober monitor``: ``/metrics``, ``/probe`` and ``/``.

- ``/metrics``: every monitored target's series (``prober.monitor.metrics``) and the
  process's own (``process_*``, ``python_info``), gzip-compressed when the scraper asks.
- ``/probe?target=HOST:PORT[&timeout=S]``: blackbox_exporter's multi-target pattern: one SYN
  on request, answered with ``probe_success``, ``probe_duration_seconds``,
  ``probe_tcp_syn_rtt_seconds`` (absent when the probe drew no SYN/ACK or RST, as
  blackbox leaves out what it did not measure) and ``probe_port_state{state}``. The timeout:
  the query's, else the scrape's (``X-Prometheus-Scrape-Timeout-Seconds`` less 0.5 s, at
  most 10 s), else 1 s. A missing or malformed target is HTTP 400 with one line.
- ``/``: a small HTML page with links, as blackbox_exporter shows. Anything else: 404.

Why a WSGI server in threads (wsgiref with prometheus_client's ThreadingWSGIServer) and not
an asyncio server on the engine's loop: rendering 10,000 targets takes ~0.15 s of Python, and
gzip more; on the loop that would hold every probe for as long, more than the 10 % of a 1 s
interval a probe may be late. In a thread the interpreter hands the GIL back to the loop
every few milliseconds (and zlib releases it), so a scrape delays probes by that much at
most. ``/probe`` runs its SYN on the engine's loop (``run_coroutine_threadsafe``) and waits
for it in its request's thread, so a slow probe holds no scrape of ``/metrics``.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from prober.core.syn import PortState, Reason
from prober.errors import ProberError, ResolutionError, UsageError
from prober.targets import parse_port, parse_target

if TYPE_CHECKING:
    from prober.core.syn import SynProbeResult
    from prober.monitor.metrics import MonitorCollector

DEFAULT_LISTEN = "127.0.0.1:9108"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_PROBE_TIMEOUT_S = 1.0
MAX_PROBE_TIMEOUT_S = 10.0
SCRAPE_TIMEOUT_MARGIN_S = 0.5  # blackbox's default offset: answer before Prometheus gives up
MAX_PROBES_IN_FLIGHT = 64  # /probe requests at once; more get 503 (ports and threads are finite)
GZIP_LEVEL = 1  # 10,000 targets are ~20 MB of text: level 1 packs it ~20x at ~0.1 s

# The SYN of /probe: (host, port, timeout) -> its result as soon as known, on the engine's loop.
ProbeFunction = Callable[[str, int, float], Awaitable["SynProbeResult"]]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class ListenFailed(ProberError):
    """The endpoint cannot listen where --listen says (the port is taken, no such address)."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # an address literal or a name, without brackets
    port: int  # 0: any free port (the bound one is Exporter.address's)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self}{path}"


def parse_listen(text: str) -> ListenAddress:
    """``HOST:PORT`` or ``[V6]:PORT`` to listen on (port 0: any free port).

    Raises:
        UsageError: with a one-line explanation of what is wrong.
    """
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(
                f"invalid --listen {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise UsageError(f"invalid --listen {text!r}: put an IPv6 address in brackets, e.g. "
                         "[::1]:9108")
    if not sep or not host:
        raise UsageError(f"invalid --listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if port_text == "0":
        return ListenAddress(host, 0)
    try:
        return ListenAddress(host, parse_port(port_text))
    except UsageError as exc:
        raise UsageError(f"invalid --listen {text!r}: {exc}") from None


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: stderr carries prober's own lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ProbeGauges:
    """The one-shot metrics of ``/probe``, as a collector for ``generate_latest``."""

    def __init__(self, result: SynProbeResult | None, duration: float) -> None:
        self.result = result  # None: the name did not resolve, or no route to the address
        self.duration = duration

    def collect(self) -> Iterator[Metric]:
        best = self.result
        state = PortState.UNKNOWN if best is None else best.state
        yield GaugeMetricFamily("probe_success", "1 if the port answered SYN/ACK (open).",
                                value=int(state is PortState.OPEN))
        yield GaugeMetricFamily("probe_duration_seconds", "Seconds the probe took, with the "
                                "name's resolution.", value=self.duration)
        if best is not None and best.rtt is not None and best.reason in (Reason.SYN_ACK,
                                                                          Reason.RST):
            yield GaugeMetricFamily("probe_tcp_syn_rtt_seconds",
                                    "RTT of the SYN/ACK or RST.", value=best.rtt.ns / 1e9)
        states = GaugeMetricFamily("probe_port_state", "1 for the port's state, 0 for the "
                                   "others.", labels=["state"])
        for each in PortState:
            states.add_metric([each.value], int(each is state))
        yield states


class Exporter:
    """The HTTP endpoint: bound when made (so a taken port fails at once), serving from
    ``start`` until ``close``.

    Args:
        listen: where to listen.
        collector: the monitored targets' metrics.

    Raises:
        ListenFailed: the address does not resolve or cannot be bound.
    """

    def __init__(self, listen: ListenAddress, collector: MonitorCollector) -> None:
        self.collector = collector
        self._extra = CollectorRegistry()
        ProcessCollector(registry=self._extra)
        PlatformCollector(registry=self._extra)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe: ProbeFunction | None = None
        self._probes = threading.BoundedSemaphore(MAX_PROBES_IN_FLIGHT)
        self._thread: threading.Thread | None = None
        try:
            infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ListenFailed(f"cannot listen on {listen}: {exc.strerror}") from None
        family, _, _, _, sockaddr = infos[0]

        class Server(ThreadingWSGIServer):
            address_family = family

            def server_bind(self) -> None:
                # HTTPServer's would look the host's FQDN up (a reverse DNS query, which a
                # host without DNS makes wait for its timeout) only to name itself.
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = str(sockaddr[0]), self.server_address[1]
                self.setup_environ()

        try:
            self._server = Server((str(sockaddr[0]), int(sockaddr[1])), _QuietHandler)
        except OSError as exc:
            raise ListenFailed(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self._server.set_app(self)
        bound = self._server.server_address
        self.address = ListenAddress(str(bound[0]), int(bound[1]))

    def start(self, loop: asyncio.AbstractEventLoop | None = None,
              probe: ProbeFunction | None = None) -> None:
        """Serve requests from a thread; ``/probe`` sends its SYNs with ``probe`` on
        ``loop`` (without them, ``/probe`` answers 503)."""
        self._loop, self._probe = loop, probe
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.2},
                                            name="prober-exporter", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop serving and close the listening socket."""
        self._probe = None
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    # -- the WSGI application -------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "HEAD":  # the same headers, no body (wsgiref would send one)
            self._route(environ, start_response)
            return []
        if method != "GET":
            return _answer(start_response, "405 Method Not Allowed", "only GET is served\n")
        return self._route(environ, start_response)

    def _route(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/probe":
            return self._probe_once(environ, start_response)
        if path == "/":
            return _answer(start_response, "200 OK", _INDEX, "text/html; charset=utf-8")
        return _answer(start_response, "404 Not Found",
                       f"not found: {path} (try /metrics or /probe?target=HOST:PORT)\n")

    def _metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # In pieces (render_chunks): no one join, encode or compression of the whole text
        # holds the GIL long (zlib lets it go while it works).
        chunks = [chunk.encode() for chunk in self.collector.render_chunks()]
        chunks.append(generate_latest(self._extra))
        headers = [("Content-Type", CONTENT_TYPE)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip
            chunks = [packer.compress(chunk) for chunk in chunks] + [packer.flush()]
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(sum(len(chunk) for chunk in chunks))))
        start_response("200 OK", headers)
        return chunks

    def _probe_once(self, environ: dict[str, Any],
                    start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            host, port, timeout = _probe_request(
                query, environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"))
        except UsageError as exc:
            return _answer(start_response, "400 Bad Request", f"{exc}\n")
        loop, probe = self._loop, self._probe
        if loop is None or probe is None:
            return _answer(start_response, "503 Service Unavailable", "not probing (yet)\n")
        if not self._probes.acquire(blocking=False):
            return _answer(start_response, "503 Service Unavailable",
                           f"more than {MAX_PROBES_IN_FLIGHT} probes in flight\n")
        started = time.monotonic()
        result: SynProbeResult | None = None
        try:
            future = asyncio.run_coroutine_threadsafe(_awaited(probe(host, port, timeout)), loop)
            result = future.result(timeout + MAX_PROBE_TIMEOUT_S)
        except (ResolutionError, UsageError):
            # The target is well formed (checked above): a name that does not resolve, or an
            # address without a route (our interface is down), is the target's state, as
            # blackbox has it: probe_success 0 in a scrape that worked, not a bad request.
            result = None
        except (ProberError, RuntimeError, TimeoutError) as exc:
            return _answer(start_response, "503 Service Unavailable", f"probe failed: {exc}\n")
        finally:
            self._probes.release()
        body = generate_latest(_ProbeGauges(result, time.monotonic() - started))
        start_response("200 OK", [("Content-Type", CONTENT_TYPE),
                                  ("Content-Length", str(len(body)))])
        return [body]


async def _awaited(awaitable: Awaitable[SynProbeResult]) -> SynProbeResult:
    return await awaitable


def _probe_request(query: dict[str, list[str]],
                   scrape_timeout: str | None) -> tuple[str, int, float]:
    """(host, port, timeout) of a ``/probe`` query.

    Raises:
        UsageError: the target is missing or malformed, or the timeout is not a number in
            (0, 10].
    """
    targets = query.get("target")
    if not targets or not targets[0]:
        raise UsageError("missing target: use /probe?target=HOST:PORT")
    target = parse_target(targets[0])
    timeout = DEFAULT_PROBE_TIMEOUT_S
    if "timeout" in query:
        text = query["timeout"][0]
        try:
            timeout = float(text)
        except ValueError:
            raise UsageError(f"invalid timeout {text!r}: expected seconds, e.g. 1.5") from None
        if not 0 < timeout <= MAX_PROBE_TIMEOUT_S:
            raise UsageError(f"invalid timeout {text!r}: expected more than 0 and at most "
                             f"{MAX_PROBE_TIMEOUT_S:g} seconds")
    elif scrape_timeout is not None:
        try:
            timeout = float(scrape_timeout) - SCRAPE_TIMEOUT_MARGIN_S
        except ValueError:
            timeout = DEFAULT_PROBE_TIMEOUT_S
        if not timeout > 0:  # also NaN
            timeout = DEFAULT_PROBE_TIMEOUT_S
        timeout = min(timeout, MAX_PROBE_TIMEOUT_S)
    return target.host, target.port, timeout


def _answer(start_response: StartResponse, status: str, text: str,
            content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


_INDEX = f"""<!doctype html>
<html><head><title>prober monitor</title></head>
<body><h1>prober monitor</h1>
<p><a href="/metrics">Metrics</a>: every monitored target's state and RTT.</p>
<p><a href="/probe?target={html.escape('198.18.0.18:80')}">Probe</a>:
<code>/probe?target=HOST:PORT</code> sends one SYN now (blackbox_exporter's multi-target
pattern).</p>
</body></html>
"""

__all__ = ["DEFAULT_LISTEN", "Exporter", "ListenAddress", "ListenFailed", "parse_listen"]
