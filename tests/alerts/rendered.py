"""The chart's alerts and dashboard as they ship: rendered by the project's helm
(`helm template`), the PrometheusRule's spec written out as a Prometheus rule file, and the
PromQL of both with the metric names it reads."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from localkube.cluster import DEFAULT_BIN_DIR, REPO

CHART = REPO / "deploy/helm/sluice"
# What the promtool tests' series carry: the default selector of a release named sluice.
JOB = "sluice-operator-metrics"


def helm_template(*values: str) -> list[dict[str, Any]]:
    """The chart rendered as release `sluice` with these `--set` values."""
    sets = [arg for value in values for arg in ("--set", value)]
    out = subprocess.run(
        [
            str(DEFAULT_BIN_DIR / "helm"),
            "template",
            "sluice",
            str(CHART),
            "-n",
            "sluice-system",
            *sets,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def prometheus_rule(*values: str) -> dict[str, Any]:
    (rule,) = [
        d for d in helm_template("alerts.enabled=true", *values) if d["kind"] == "PrometheusRule"
    ]
    return rule


def write_rule_file(path: Path, *values: str) -> list[dict[str, Any]]:
    """The rendered PrometheusRule's spec (its `groups`) as a rule file; its rules."""
    spec = prometheus_rule(*values)["spec"]
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return [rule for group in spec["groups"] for rule in group["rules"]]


def dashboard(*values: str) -> dict[str, Any]:
    (config_map,) = [
        d
        for d in helm_template("dashboard.enabled=true", *values)
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ]
    (text,) = config_map["data"].values()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets, and its variables'."""
    exprs: list[str] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            panels(panel.get("panels", []))

    panels(board.get("panels", []))
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            exprs.append(str(query))
    return exprs


# PromQL words that are not metric names: functions, aggregations and their keywords.
_KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "absent", "absent_over_time", "rate", "irate",
    "increase", "delta", "idelta", "time", "timestamp", "vector", "scalar", "histogram_quantile",
    "clamp_min", "clamp_max", "label_replace", "label_join", "changes", "resets", "abs",
    "round", "ceil", "floor", "sort", "sort_desc", "max_over_time", "min_over_time",
    "avg_over_time", "sum_over_time", "count_over_time", "last_over_time", "le", "label_values",
    "query_result", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (strings, label matchers, ranges, grouping
    labels, numbers and Grafana's $variables left out)."""
    text = re.sub(r"label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)", r"\1", expr)  # Grafana's
    text = _STRING.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]?\b", "", text)
    return {w for w in _IDENT.findall(text) if w.lower() not in _KEYWORDS}
