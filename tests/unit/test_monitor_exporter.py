"""`prober monitor`'s metrics and endpoint without root: synthetic samples into the collector,
the text exposition read back with prometheus_client's parser (names, labels, values, as
Prometheus would store them), and the HTTP server on a free loopback port."""

from __future__ import annotations

import asyncio
import gzip
import math
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from prober.core.monitor_stats import TargetStats
from prober.core.syn import PortState, Reason, SynProbeResult
from prober.core.timing import Clock, Rtt
from prober.errors import ResolutionError, UsageError
from prober.monitor.exporter import Exporter, ListenAddress, ListenFailed, parse_listen
from prober.monitor.loop import MonitorSample
from prober.monitor.metrics import RTT_BUCKETS, MonitorCollector, target_name

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]

OPEN = (PortState.OPEN, Reason.SYN_ACK)
CLOSED = (PortState.CLOSED, Reason.RST)
SILENT = (PortState.FILTERED, Reason.NO_RESPONSE)
UNREACHABLE = (PortState.FILTERED, Reason.ICMP_UNREACHABLE)


def sample(host: str, port: int, outcome: tuple[PortState, Reason], rtt_s: float | None = None,
           *, late_s: float = 0.0, round_: int = 1, at: float = 1_796_000_000.0) -> MonitorSample:
    state, reason = outcome
    stats = TargetStats().update(state, reason, rtt_s, at)
    return MonitorSample(
        target=target_name(host, port), host=host, port=port, address=host, round=round_,
        at=at, state=state, reason=reason, rtt_s=rtt_s,
        rtt_clock=None if rtt_s is None else "kernel", late_s=late_s, error=None, stats=stats)


def parse(text: str) -> Series:
    """Every sample as {(name, sorted labels): value}, as Prometheus would store it."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, tuple(sorted(labels.items())))]


def names(series: Series) -> set[str]:
    return {name for name, _ in series}


V = {"vantage": "lab-1"}


def test_values_of_open_closed_silent_targets() -> None:
    collector = MonitorCollector("lab-1", [("198.18.0.18", 80), ("198.18.0.18", 81),
                                            ("2001:2::18", 82)])
    collector.observe(sample("198.18.0.18", 80, OPEN, 0.0003, late_s=0.002))
    collector.observe(sample("198.18.0.18", 80, OPEN, 0.02))
    collector.observe(sample("198.18.0.18", 81, CLOSED, 0.0001))
    collector.observe(sample("2001:2::18", 82, SILENT))
    got = parse(collector.render())
    web = {"target": "198.18.0.18", "port": "80", **V}
    closed = {"target": "198.18.0.18", "port": "81", **V}
    silent = {"target": "2001:2::18", "port": "82", **V}
    assert value(got, "prober_probe_success", **web) == 1
    assert value(got, "prober_probe_success", **closed) == 0
    assert value(got, "prober_probe_success", **silent) == 0
    assert value(got, "prober_port_state", state="closed", **closed) == 1
    assert [value(got, "prober_port_state", state=s.value, **silent) for s in PortState] == [
        0, 0, 1, 0]
    assert value(got, "prober_last_rtt_seconds", **web) == 0.02
    assert math.isnan(value(got, "prober_last_rtt_seconds", **silent))
    assert value(got, "prober_probes_total", result="syn-ack", **web) == 2
    assert value(got, "prober_probes_total", result="no-response", **silent) == 1
    assert value(got, "prober_probes_total", result="rst", **silent) == 0
    assert value(got, "prober_probe_late_seconds", **closed) == 0.0
    # The histogram: 0.3 ms falls in le=0.0005 and above, 20 ms in le=0.025 and above.
    buckets = {le: value(got, "prober_syn_rtt_seconds_bucket", le=le, **web)
               for le in ("0.00025", "0.0005", "0.01", "0.025", "+Inf")}
    assert buckets == {"0.00025": 0, "0.0005": 1, "0.01": 1, "0.025": 2, "+Inf": 2}
    assert value(got, "prober_syn_rtt_seconds_count", **web) == 2
    assert value(got, "prober_syn_rtt_seconds_sum", **web) == pytest.approx(0.0203)
    assert value(got, "prober_syn_rtt_seconds_count", **silent) == 0
    assert value(got, "prober_targets", **V) == 3
    assert value(got, "prober_kernel_drops_total", **V) == 0


def test_buckets_from_10us_to_10s() -> None:
    assert RTT_BUCKETS[0] == 1e-5 and RTT_BUCKETS[-1] == 10.0 and len(RTT_BUCKETS) == 19
    collector = MonitorCollector("v", [("198.18.0.18", 80)])
    for rtt in (1e-5, 10.0, 11.0):  # on a bound counts in it; beyond the last, in +Inf only
        collector.observe(sample("198.18.0.18", 80, OPEN, rtt))
    got = parse(collector.render())
    labels = {"target": "198.18.0.18", "port": "80", "vantage": "v"}
    assert value(got, "prober_syn_rtt_seconds_bucket", le="1e-05", **labels) == 1
    assert value(got, "prober_syn_rtt_seconds_bucket", le="10.0", **labels) == 2
    assert value(got, "prober_syn_rtt_seconds_bucket", le="+Inf", **labels) == 3


def test_icmp_rtt_is_not_a_tcp_rtt() -> None:
    collector = MonitorCollector("v", [("198.18.0.18", 80)])
    collector.observe(sample("198.18.0.18", 80, UNREACHABLE, 0.001))
    got = parse(collector.render())
    labels = {"target": "198.18.0.18", "port": "80", "vantage": "v"}
    assert math.isnan(value(got, "prober_last_rtt_seconds", **labels))
    assert value(got, "prober_syn_rtt_seconds_count", **labels) == 0
    assert value(got, "prober_probes_total", result="icmp-unreachable", **labels) == 1


def test_fast_rendering_equals_prometheus_client_rendering() -> None:
    collector = MonitorCollector('lab "one"\\', [("198.18.0.18", 80), ("example.test", 443)])
    collector.observe(sample("198.18.0.18", 80, OPEN, 0.0042, late_s=0.01))
    collector.observe(sample("example.test", 443, SILENT))
    collector.kernel_drops, collector.samples_dropped = 3, 4
    registry = CollectorRegistry()
    registry.register(collector)
    ours = parse(collector.render())
    theirs = parse(generate_latest(registry).decode())
    assert ours.keys() == theirs.keys()
    for key, ours_value in ours.items():
        assert ours_value == theirs[key] or (math.isnan(ours_value) and math.isnan(theirs[key]))
    assert value(ours, "prober_samples_dropped_total", vantage='lab "one"\\') == 4


def test_a_target_appears_with_its_first_sample_and_goes_with_a_reload() -> None:
    collector = MonitorCollector("v", [("198.18.0.18", 80), ("198.18.0.18", 81)])
    assert "prober_probe_success" not in names(parse(collector.render()))
    collector.observe(sample("198.18.0.18", 80, OPEN, 0.001))
    collector.observe(sample("198.18.0.18", 81, CLOSED, 0.001))
    assert collector.set_targets([("198.18.0.18", 80), ("198.18.0.19", 80)]) == (1, 1)
    collector.observe(sample("198.18.0.18", 81, CLOSED, 0.001))  # late: ignored
    collector.observe(sample("198.18.0.18", 80, OPEN, 0.001))
    got = parse(collector.render())
    targets = {dict(labels).get("port") for name, labels in got
               if name == "prober_probe_success"}
    assert targets == {"80"}  # 81 removed, .19 has no sample yet
    kept = {"target": "198.18.0.18", "port": "80", "vantage": "v"}
    assert value(got, "prober_probes_total", result="syn-ack", **kept) == 2  # kept its counts
    assert value(got, "prober_targets", vantage="v") == 2


# -- the HTTP endpoint -------------------------------------------------------------------------
def result_of(host: str, port: int, outcome: tuple[PortState, Reason],
              rtt_ns: int | None) -> SynProbeResult:
    state, reason = outcome
    return SynProbeResult(
        probe=1, target=host, port=port, source="198.18.0.1", source_port=40000, state=state,
        reason=reason, rtt=None if rtt_ns is None else Rtt(rtt_ns, Clock.KERNEL),
        sent_ns=None, received_ns=None)


class FakeProbes:
    """/probe's SYN on a real event loop in a thread, answered from a table."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def __call__(self, host: str, port: int, timeout: float) -> SynProbeResult:
        self.calls.append((host, port, timeout))
        if host == "gone.test":
            raise ResolutionError("gone.test does not resolve")
        if host == "198.18.9.9":
            raise UsageError("no route to 198.18.9.9: Network is unreachable")
        if port == 81:
            return result_of(host, port, CLOSED, 50_000)
        if port == 82:
            return result_of(host, port, SILENT, None)
        return result_of(host, port, OPEN, 250_000)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def endpoint() -> Iterator[tuple[Exporter, FakeProbes]]:
    collector = MonitorCollector("v", [("198.18.0.18", 80)])
    collector.observe(sample("198.18.0.18", 80, OPEN, 0.001))
    exporter = Exporter(ListenAddress("127.0.0.1", 0), collector)
    probes = FakeProbes()
    exporter.start(probes.loop, probes)
    try:
        yield exporter, probes
    finally:
        exporter.close()
        probes.close()


def get(exporter: Exporter, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(exporter.address.url(path), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_metrics_over_http(endpoint: tuple[Exporter, FakeProbes]) -> None:
    exporter, _ = endpoint
    status, headers, body = get(exporter, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = parse(body.decode())
    assert value(got, "prober_probe_success", target="198.18.0.18", port="80", vantage="v") == 1
    assert "process_resident_memory_bytes" in names(got)
    status, headers, body = get(exporter, "/metrics", **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert parse(gzip.decompress(body).decode()) .keys() == got.keys()


@pytest.mark.parametrize(("target", "success", "state", "rtt"), [
    ("198.18.0.18:80", 1, "open", 0.00025),
    ("198.18.0.18:81", 0, "closed", 0.00005),
    ("[2001:2::18]:82", 0, "filtered", None),
    ("gone.test:80", 0, "unknown", None),
    ("198.18.9.9:80", 0, "unknown", None),  # no route (our interface is down): was a 400
])
def test_probe_answers_like_blackbox(endpoint: tuple[Exporter, FakeProbes], target: str,
                                     success: int, state: str, rtt: float | None) -> None:
    exporter, _ = endpoint
    status, _, body = get(exporter, f"/probe?target={target}")
    assert status == 200
    got = parse(body.decode())
    assert value(got, "probe_success") == success
    assert value(got, "probe_duration_seconds") >= 0
    assert value(got, "probe_port_state", state=state) == 1
    assert sum(value(got, "probe_port_state", state=s.value) for s in PortState) == 1
    if rtt is None:
        assert "probe_tcp_syn_rtt_seconds" not in names(got)
    else:
        assert value(got, "probe_tcp_syn_rtt_seconds") == rtt


def test_probe_timeout_from_query_or_scrape(endpoint: tuple[Exporter, FakeProbes]) -> None:
    exporter, probes = endpoint
    get(exporter, "/probe?target=198.18.0.18:80")
    get(exporter, "/probe?target=198.18.0.18:80&timeout=2.5")
    get(exporter, "/probe?target=198.18.0.18:80",
        **{"X-Prometheus-Scrape-Timeout-Seconds": "4"})
    get(exporter, "/probe?target=198.18.0.18:80",
        **{"X-Prometheus-Scrape-Timeout-Seconds": "60"})
    assert [timeout for _, _, timeout in probes.calls] == [1.0, 2.5, 3.5, 10.0]


@pytest.mark.parametrize(("path", "status", "text"), [
    ("/probe", 400, "missing target"),
    ("/probe?target=", 400, "missing target"),
    ("/probe?target=198.18.0.18", 400, "a port is required"),
    ("/probe?target=198.18.0.18:80&timeout=soon", 400, "invalid timeout 'soon'"),
    ("/probe?target=198.18.0.18:80&timeout=0", 400, "invalid timeout"),
    ("/nope", 404, "not found: /nope"),
])
def test_bad_requests_get_one_line(endpoint: tuple[Exporter, FakeProbes], path: str,
                                   status: int, text: str) -> None:
    exporter, probes = endpoint
    got, _, body = get(exporter, path)
    assert got == status and text in body.decode()
    assert body.decode().count("\n") == 1
    assert not probes.calls


def test_index_links(endpoint: tuple[Exporter, FakeProbes]) -> None:
    status, headers, body = get(endpoint[0], "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="/metrics"' in body and b"/probe?target=" in body


def test_a_taken_port_fails_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenFailed, match=rf"cannot listen on 127.0.0.1:{port}: "
                           "Address already in use"):
            Exporter(ListenAddress("127.0.0.1", port), MonitorCollector("v"))


def test_ipv6_loopback() -> None:
    exporter = Exporter(parse_listen("[::1]:0"), MonitorCollector("v"))
    try:
        exporter.start()
        assert exporter.address.url("/metrics").startswith("http://[::1]:")
        status, _, body = get(exporter, "/metrics")
        assert status == 200 and b"prober_targets" in body
        status, _, body = get(exporter, "/probe?target=198.18.0.18:80")
        assert status == 503  # no prober attached
    finally:
        exporter.close()


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9108", ListenAddress("127.0.0.1", 9108)),
    ("[::1]:9108", ListenAddress("::1", 9108)),
    ("localhost:0", ListenAddress("localhost", 0)),
    ("0.0.0.0:80", ListenAddress("0.0.0.0", 80)),
])
def test_parse_listen(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("9108", "expected HOST:PORT"),
    (":9108", "expected HOST:PORT"),
    ("127.0.0.1:http", "invalid port"),
    ("127.0.0.1:70000", "invalid port"),
    ("::1:9108", "brackets"),
    ("[nope]:9108", "not an IPv6 address"),
])
def test_parse_listen_refuses(text: str, why: str) -> None:
    from prober.errors import UsageError

    with pytest.raises(UsageError, match=why):
        parse_listen(text)




def test_head_and_other_methods(endpoint: tuple[Exporter, FakeProbes]) -> None:
    exporter, _ = endpoint
    request = urllib.request.Request(exporter.address.url("/metrics"), method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.read() == b""
        assert int(response.headers["Content-Length"]) > 0
    request = urllib.request.Request(exporter.address.url("/metrics"), data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 405
