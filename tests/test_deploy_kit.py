"""The operators' kit in deploy/: Prometheus alert rules and their promtool tests, the scrape config,
the Grafana dashboard. Every metric they name must be one the daemon exports; promtool (Debian's
``prometheus`` package) checks the rest when it is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.core.detection import DetectionConfig
from monitor.core.ward import Ward
from monitor.metrics import Metrics, WardCollector
from protocol.alarm import PRIORITY

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
RULES = PROM / "ecg-monitor-rules.yml"
RULE_TESTS = PROM / "ecg-monitor-rules.test.yml"
SCRAPE = PROM / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "ecg-monitor-dashboard.json"
MONITORING = DEPLOY / "monitoring.md"

#: Metric names in PromQL: the daemon's own, and Prometheus's ``up`` (always with a selector here).
NAME_RE = re.compile(r"\becg_[a-z0-9_]+|\bup(?=\{)")

#: Sample names of a family whose labelled children do not exist yet (prometheus_client's naming).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}

#: Alerts the operators asked for, and metrics each one's expression must use.
REQUIRED_ALERTS = {
    "ECGMonitorDown": {"up"},
    "ECGIngestStopped": {"ecg_frames_ingested_total", "ecg_active_streams"},
    "ECGClassifierStalled": {"ecg_worker_heartbeat_age_seconds", "ecg_windows_due"},
    "ECGWindowsShed": {"ecg_windows_shed_total"},
    "ECGJournalErrors": {"ecg_journal_errors_total"},
    "ECGTransportDisconnected": {"ecg_transport_connected"},
    "ECGEventLoopLagHigh": {"ecg_event_loop_lag_seconds"},
    "ECGAlarmsDropped": {"ecg_alarms_dropped_total"},
    "ECGAlarmsDeadLettered": {"ecg_alarms_dead_letter_total"},
    "ECGModelIntegrityFailure": {"ecg_model_integrity_failures_total"},
    "ECGModelNotInUse": {"ecg_model_info"},
}

#: Dashboard panels the operators asked for: each tuple of words must all be in one panel's title.
REQUIRED_PANELS = [
    ("active", "pending", "streams"),
    ("frame rate", "transport"),
    ("reject", "reason"),
    ("windows", "classified", "due", "shed", "superseded", "stale"),
    ("inference latency",),
    ("batch size",),
    ("alarm latency",),
    ("event-loop lag",),
    ("heartbeat",),
    ("alarm rate", "event", "state"),
    ("priority",),
    ("dropped", "dead-letter"),
    ("journal errors",),
    ("transport", "connection"),
    ("model",),
    ("rules-only",),
]

#: Metrics the dashboard must show somewhere.
REQUIRED_DASHBOARD_METRICS = {
    "up",
    "ecg_active_streams",
    "ecg_pending_streams",
    "ecg_frames_ingested_total",
    "ecg_frames_rejected_total",
    "ecg_inference_batch_size_sum",
    "ecg_windows_due",
    "ecg_windows_shed_total",
    "ecg_windows_superseded_total",
    "ecg_windows_stale_total",
    "ecg_inference_latency_seconds_bucket",
    "ecg_inference_batch_size_bucket",
    "ecg_alarm_latency_seconds_bucket",
    "ecg_event_loop_lag_seconds",
    "ecg_worker_heartbeat_age_seconds",
    "ecg_alarms_total",
    "ecg_alarms_dropped_total",
    "ecg_alarms_dead_letter_total",
    "ecg_journal_errors_total",
    "ecg_transport_connected",
    "ecg_model_info",
    "ecg_rules_only_windows_total",
}

DS = "${DS_PROMETHEUS}"


# -- what the daemon exports ----------------------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name the daemon's registry can export: built as ``Monitor`` builds it."""
    registry = CollectorRegistry()
    Metrics(registry)
    registry.register(WardCollector(Ward(DetectionConfig())))
    names = {"up"}  # added by Prometheus to every target
    for family in registry.collect():
        names.update(s.name for s in family.samples)
        if not family.samples:  # labelled, no child yet: name the samples it will have
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_exported_names_cover_the_metric_kinds() -> None:
    names = exported_names()
    for name in (
        "ecg_frames_ingested_total",  # labelled counter, no child yet
        "ecg_alarm_latency_seconds_bucket",  # labelled histogram
        "ecg_inference_latency_seconds_count",
        "ecg_model_info",
        "ecg_windows_shed_total",  # WardCollector
        "ecg_active_streams",
    ):
        assert name in names
    assert "ecg_frames_ingested" not in names


# -- reading the files (no YAML library: a line parser for the shapes these files use) -----------


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return str(json.loads(value))
    return value


def parse_rules(text: str) -> list[dict[str, Any]]:
    """The alerting rules: name, expr (one-line scalar or ``|``/``>`` block), for, labels, annotations."""
    rules: list[dict[str, Any]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)- alert:\s*(\S+)\s*$", line)
        if m:
            rules.append({"alert": m.group(2), "fields": {}})
            i += 1
            continue
        m = re.match(r"^(\s*)([a-z_]+):\s*(.*)$", line)
        if rules and m and not line.lstrip().startswith("#"):
            indent, key, value = len(m.group(1)), m.group(2), m.group(3).strip()
            if value[:1] in ("|", ">"):
                block = []
                while i + 1 < len(lines) and (not lines[i + 1].strip() or _indent(lines[i + 1]) > indent):
                    i += 1
                    block.append(lines[i].strip())
                value = ("\n" if value[0] == "|" else " ").join(block).strip()
            else:
                value = _unquote(value)
            rules[-1]["fields"][key] = value
        i += 1
    return rules


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rule_exprs() -> dict[str, str]:
    return {r["alert"]: r["fields"]["expr"] for r in parse_rules(RULES.read_text())}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, including those inside collapsed rows."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t.get("expr", "") for p in dashboard_panels(dash) for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        exprs.append(q.get("query", "") if isinstance(q, dict) else str(q or ""))
    return [e for e in exprs if e]


def names_in(exprs: list[str]) -> set[str]:
    return {name for e in exprs for name in NAME_RE.findall(e)}


# -- every metric name is real --------------------------------------------------------------------


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_referenced_is_exported(source: str) -> None:
    exprs = list(rule_exprs().values()) if source == "rules" else dashboard_exprs(load_dashboard())
    used = names_in(exprs)
    # An empty or unparsed file must not pass: both files use many metrics.
    assert len(exprs) >= 10, f"only {len(exprs)} expressions found in the {source}"
    assert len(used) >= 10, f"only {sorted(used)} found in the {source}"
    unknown = used - exported_names()
    assert not unknown, f"the {source} use metrics the daemon does not export: {sorted(unknown)}"


def test_name_extraction_sees_through_promql() -> None:
    expr = 'sum by (instance) (rate(ecg_frames_ingested_total{job="ecg-monitor"}[5m])) or up{job="ecg-monitor"}'
    assert names_in([expr]) == {"ecg_frames_ingested_total", "up"}
    assert names_in(['ecg_bogus_total{job="ecg-monitor"}']) - exported_names() == {"ecg_bogus_total"}


# -- alert rules ----------------------------------------------------------------------------------


def test_rules_are_complete_and_annotated() -> None:
    text = RULES.read_text()
    assert re.search(r"^\s*- name: ecg-monitor\s*$", text, re.M)
    rules = parse_rules(text)
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    missing = set(REQUIRED_ALERTS) - set(names)
    assert not missing, f"missing alerts: {sorted(missing)}"
    for r in rules:
        f, name = r["fields"], r["alert"]
        assert f.get("expr"), name
        assert re.fullmatch(r"\d+[smh]", f.get("for", "")), f"{name}: needs for:"
        assert f.get("severity") in ("critical", "warning"), name
        for key in ("summary", "description", "runbook"):
            assert len(f.get(key, "")) > 10, f"{name}: needs a {key} annotation"
        assert 'job="ecg-monitor"' in f["expr"], f"{name}: select the ecg-monitor job"
    exprs = {r["alert"]: r["fields"]["expr"] for r in rules}
    for name, metrics in REQUIRED_ALERTS.items():
        assert metrics <= names_in([exprs[name]]), f"{name} should use {sorted(metrics)}"


def test_every_alert_has_a_firing_promtool_test_and_healthy_cases_exist() -> None:
    tests = RULE_TESTS.read_text()
    assert re.search(r"^rule_files:\s*\n\s*-\s*ecg-monitor-rules\.yml\s*$", tests, re.M)
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\s*\n\s+- exp_labels:", tests))
    quiet = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", tests))
    alerts = set(rule_exprs())
    assert alerts - firing == set(), f"alerts never shown firing: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"alerts never shown quiet: {sorted(alerts - quiet)}"


def test_monitoring_doc_lists_every_alert() -> None:
    doc = MONITORING.read_text()
    missing = [a for a in rule_exprs() if f"`{a}`" not in doc]
    assert not missing, f"deploy/monitoring.md does not list {missing}"


# -- dashboard ------------------------------------------------------------------------------------


def test_dashboard_shape_and_datasource() -> None:
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    assert any(i["name"] == "DS_PROMETHEUS" and i["pluginId"] == "prometheus" for i in dash["__inputs"])
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert variables["instance"]["datasource"]["uid"] == DS
    panels = dashboard_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == DS, p["title"]
        targets = p.get("targets", [])
        assert targets, f"panel {p['title']!r} has no target"
        for t in targets:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"]["uid"] == DS, p["title"]
            assert 'instance=~"$instance"' in t["expr"], f"{p['title']}: {t['expr']} ignores $instance"


def test_dashboard_has_the_panels_operators_need() -> None:
    dash = load_dashboard()
    titles = [p["title"].lower() for p in dashboard_panels(dash) if p["type"] != "row"]
    for words in REQUIRED_PANELS:
        assert any(all(w in t for w in words) for t in titles), f"no panel titled with {words}"
    missing = REQUIRED_DASHBOARD_METRICS - names_in(dashboard_exprs(dash))
    assert not missing, f"the dashboard does not show {sorted(missing)}"


def test_dashboard_alarm_priorities_match_the_protocol() -> None:
    """Priority is no label: per-priority series select events, as protocol.alarm.PRIORITY maps them."""
    dash = load_dashboard()
    per_priority: dict[str, set[str]] = {}
    for p in dashboard_panels(dash):
        for t in p.get("targets", []):
            m = re.search(r'event=~?"([A-Z_|]+)"', t["expr"])
            if "ecg_alarms_total" in t["expr"] and m and t.get("legendFormat") in PRIORITY.values():
                per_priority[t["legendFormat"]] = set(m.group(1).split("|"))
    expected = {prio: {e for e, p in PRIORITY.items() if p == prio} for prio in set(PRIORITY.values())}
    assert per_priority == expected


# -- promtool -------------------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
if PROMTOOL is None and os.environ.get("ECG_REQUIRE_TOOLS"):
    raise RuntimeError("promtool is required here (ECG_REQUIRE_TOOLS is set, as .ci/run does) but not on PATH")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian: apt-get install prometheus); promtool checks skipped"
)


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=PROM, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


@needs_promtool
def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", RULES.name)
    assert f"{len(rule_exprs())} rules found" in out


@needs_promtool
def test_promtool_test_rules() -> None:
    promtool("test", "rules", RULE_TESTS.name)


@needs_promtool
def test_promtool_check_config() -> None:
    out = promtool("check", "config", SCRAPE.name)
    assert "1 rule files found" in out


@needs_promtool
def test_promtool_check_config_tls_variant(tmp_path: Path) -> None:
    """The commented HTTPS job, uncommented in place of the plain one, is a valid config too."""
    lines = SCRAPE.read_text().splitlines()
    plain = next(k for k, line in enumerate(lines) if line.strip() == "- job_name: ecg-monitor")
    tls = next(k for k, line in enumerate(lines) if line.strip() == "# - job_name: ecg-monitor")
    job = [re.sub(r"^  # ?", "  ", line) if line.startswith("  #") else line for line in lines[tls:]]
    text = "\n".join(lines[:plain] + job) + "\n"
    assert "scheme: https" in text and "cert_file:" in text
    for path in set(re.findall(r"(/etc/prometheus/\S+)", text)):
        (tmp_path / Path(path).name).write_text("")
        text = text.replace(path, str(tmp_path / Path(path).name))
    text = text.replace("- ecg-monitor-rules.yml", f"- {RULES}")
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    promtool("check", "config", str(config))


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording rule for promtool."""
    dash = load_dashboard()
    exprs = [t["expr"] for p in dashboard_panels(dash) for t in p.get("targets", [])]
    body = ["groups:", "  - name: dashboard", "    rules:"]
    for k, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$instance", ".*")
        body += [f"      - record: dashboard:query_{k}", f"        expr: {json.dumps(e)}"]
    f = tmp_path / "dashboard-queries.yml"
    f.write_text("\n".join(body) + "\n")
    out = promtool("check", "rules", str(f))
    assert f"{len(exprs)} rules found" in out
