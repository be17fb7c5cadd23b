"""The chart's Grafana dashboard: a ConfigMap Grafana's sidecar loads, with valid JSON whose
every panel queries Prometheus. (That each metric it names is one the operator exports is
checked against a real scrape: tests/integration/test_alerts.py.)"""

from __future__ import annotations

from .rendered import dashboard, dashboard_exprs, helm_template, metric_names


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar() -> None:
    (config_map,) = [
        d
        for d in helm_template(
            "dashboard.enabled=true",
            "dashboard.namespace=monitoring",
            "dashboard.annotations.grafana_folder=Sluice",
        )
        if d["kind"] == "ConfigMap"
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Sluice"}
    assert list(config_map["data"]) == ["sluice.json"]


def test_every_panel_queries_prometheus_through_the_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "sluice-operator"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert all('job=~"$job"' in t["expr"] or "ALERTS" in t["expr"] for t in panel["targets"])
    names = set().union(*(metric_names(e) for e in dashboard_exprs(board)))
    assert "sluice_clearing_since_timestamp_seconds" in names and "up" in names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le) "
        '(rate(sluice_clear_duration_seconds_bucket{job=~"$job"}[$__rate_interval]))) / 2^20 '
        "and on() count(up{job=\"a\", x='b'} == 1) > 0 or vector(0)"
    )
    assert metric_names(expr) == {"sluice_clear_duration_seconds_bucket", "up"}
    assert metric_names("label_values(sluice_leader, job)") == {"sluice_leader"}
    assert metric_names(
        "time() - max by (namespace, pipeline) (sluice_clearing_since_timestamp_seconds) > 600"
    ) == {"sluice_clearing_since_timestamp_seconds"}
    assert metric_names('ALERTS{alertname=~"Sluice.*", alertstate="firing"}') == {"ALERTS"}
