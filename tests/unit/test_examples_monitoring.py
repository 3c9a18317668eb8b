"""The monitoring examples (issue 10): the Prometheus config is one Prometheus accepts, with
both scrape jobs; the Grafana dashboard is JSON that Grafana can load, and every PromQL
expression in it names only metrics and labels that `prober monitor` exposes;
library_monitor.py refuses bad arguments in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROMETHEUS_YML = EXAMPLES / "prometheus" / "prometheus.yml"
DASHBOARD = EXAMPLES / "grafana" / "prober-dashboard.json"

# What `prober monitor` exposes on /metrics (docs/monitor.md): each name as it appears in a
# scrape, with the labels its series carry. A histogram is its _bucket, _count and _sum.
TARGET_LABELS = frozenset({"vantage", "target", "port"})
EXPOSED: dict[str, frozenset[str]] = {
    "prober_probe_success": TARGET_LABELS,
    "prober_syn_rtt_seconds_bucket": TARGET_LABELS | {"le"},
    "prober_syn_rtt_seconds_count": TARGET_LABELS,
    "prober_syn_rtt_seconds_sum": TARGET_LABELS,
    "prober_last_rtt_seconds": TARGET_LABELS,
    "prober_probes_total": TARGET_LABELS | {"result"},
    "prober_port_state": TARGET_LABELS | {"state"},
    "prober_probe_late_seconds": TARGET_LABELS,
    "prober_kernel_drops_total": frozenset({"vantage"}),
    "prober_samples_dropped_total": frozenset({"vantage"}),
    "prober_rounds_skipped_total": frozenset({"vantage"}),
    "prober_targets": frozenset({"vantage"}),
}
# Metrics each panel the issue asks for needs.
REQUIRED = {"prober_probe_success", "prober_syn_rtt_seconds_bucket", "prober_last_rtt_seconds",
            "prober_port_state", "prober_probes_total", "prober_kernel_drops_total"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset"}
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations or keywords, outside strings, label matchers, ranges and grouping lists."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end():].lstrip()
        before = text[:match.start()]
        if rest.startswith("(") or match[0] in _KEYWORDS or re.search(r"[\d.]$", before):
            continue  # a function or aggregation; a keyword; an exponent in a number
        names.add(match[0])
    return names


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by (...) / without (...) lists and in label matchers."""
    labels = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    return labels


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' queries and the query variables'."""
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)", text)
            assert inner, text
            exprs.append(inner[1])
    return exprs


def test_metric_names_parser() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, vantage) (rate(prober_syn_rtt_seconds_bucket'
            '{vantage=~"$vantage", target="a b"}[$__rate_interval]))) > 1e-3')
    assert metric_names(expr) == {"prober_syn_rtt_seconds_bucket"}
    assert grouping_labels(expr) == {"le", "vantage", "target"}
    assert metric_names("prober_port_state{state=\"open\"} == 1 or up") == {
        "prober_port_state", "up"}


def test_dashboard_loads_and_names_only_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for expr in dashboard_expressions(dashboard):
        names = metric_names(expr)
        assert names, expr
        assert names <= set(EXPOSED), (expr, names - set(EXPOSED))
        allowed = set().union(*(EXPOSED[name] for name in names))
        assert grouping_labels(expr) <= allowed, (expr, grouping_labels(expr) - allowed)
        used |= names
    assert used >= REQUIRED
    exprs = " ".join(dashboard_expressions(dashboard))
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs


def test_dashboard_datasource_vantage_and_target_are_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"vantage", "target"} <= set(variables)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'vantage=~"$vantage"' in target["expr"], target["expr"]


def test_prometheus_config_has_both_jobs() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["metrics_path"]: job for job in config["scrape_configs"]}
    metrics = jobs["/metrics"]
    assert len(metrics["static_configs"][0]["targets"]) >= 2  # several vantages
    probe = jobs["/probe"]
    relabel = [(tuple(r.get("source_labels", ())), r["target_label"], r.get("replacement"))
               for r in probe["relabel_configs"]]
    assert relabel[0][:2] == (("__address__",), "__param_target")
    assert relabel[1][:2] == (("__param_target",), "instance")
    assert relabel[2][1] == "__address__" and relabel[2][2]  # the prober's address


def test_promtool_accepts_the_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:  # CI installs it (.ci/install: Debian's prometheus); there it must run
        assert os.environ.get("CI") != "true", "promtool is missing: run .ci/install"
        pytest.skip("promtool comes with Debian's prometheus (.ci/install)")
    done = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("args", [
    [], ["198.18.0.18"], ["198.18.0.18:0"], ["198.18.0.18:http"], ["2001:2::1:2:80"],
    ["198.18.0.18:80", "--rounds", "0"], ["198.18.0.18:80", "--interval", "nan"],
    ["198.18.0.18:80", "--interval", "0"], ["198.18.0.18:80", "--bogus"],
])
def test_library_monitor_refuses_bad_arguments_in_one_line(args: list[str]) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "library_monitor.py"), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("library_monitor.py: error: "), done.stderr


def test_exposed_is_what_the_exporter_renders() -> None:
    """EXPOSED above is the exporter's own list: names and labels of one target's series."""
    from prometheus_client.parser import text_string_to_metric_families

    from prober.core.monitor_stats import TargetStats
    from prober.core.syn import PortState, Reason
    from prober.monitor.loop import MonitorSample
    from prober.monitor.metrics import MonitorCollector

    collector = MonitorCollector("v1", [("198.18.0.18", 80)])
    stats = TargetStats().update(PortState.OPEN, Reason.SYN_ACK, 0.0001, 1.0)
    collector.observe(MonitorSample(
        target="198.18.0.18:80", host="198.18.0.18", port=80, address="198.18.0.18", round=1,
        at=1.0, state=PortState.OPEN, reason=Reason.SYN_ACK, rtt_s=0.0001, rtt_clock="kernel",
        late_s=0.0, error=None, stats=stats))
    rendered: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(collector.render()):
        for sample in family.samples:
            if sample.name.startswith("prober_") and not sample.name.endswith("_created"):
                rendered.setdefault(sample.name, set()).update(sample.labels)
    assert rendered == {name: set(labels) for name, labels in EXPOSED.items()}
