"""The chart's alerts and dashboard against the real thing: every metric their PromQL names
is one a running operator exports (a real scrape of its /metrics), and a real Prometheus
(Debian's server, scraping the test operator, evaluating the rule file helm renders) fires
SluiceClearStuck while a CSI DeleteVolume keeps failing on a clear, and drops it once the
clear completes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alerts.rendered import (
    JOB,
    dashboard,
    dashboard_exprs,
    metric_names,
    prometheus_rule,
    write_rule_file,
)
from kubernetes import client
from localkube.cluster import CSI_CLASS, LocalCluster, free_ports
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import stop_and_clear, wait_error, wait_jsonpath
from .volumes import run_with_data, volume

# Prometheus's own series, which no exporter serves: a target's scrape health, and the
# state of alerts.
BUILT_INS = {"up", "ALERTS", "ALERTS_FOR_STATE"}
_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum", "")}


def exported_names(text: str) -> set[str]:
    """The sample names a /metrics page serves, also of families with no sample yet (a
    labelled counter before its first increment, a gauge of no pipeline): a histogram `h`
    serves h_bucket, h_count and h_sum; a counter's TYPE line already names `x_total`."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.update(name + s for s in _SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def test_every_expression_names_only_metrics_the_operator_exports(
    live_operator: Operator,
) -> None:
    url = f"http://127.0.0.1:{live_operator.metrics_port}/metrics"

    def scrape() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None

    exported = exported_names(wait_for(scrape, what="the operator's /metrics"))
    for family in (
        "sluice_clearing_since_timestamp_seconds",
        "sluice_pipeline_error",
        "sluice_snapshot_oldest_expiry_timestamp_seconds",
        "sluice_clears_failed_total",
        "sluice_clear_duration_seconds_bucket",
    ):
        assert family in exported, family
    rules = prometheus_rule()["spec"]["groups"][0]["rules"]
    sources = {f"alert {r['alert']}": r["expr"] for r in rules}
    sources |= {f"dashboard: {e}": e for e in dashboard_exprs(dashboard())}
    assert len(sources) > 20
    named: set[str] = set()
    for where, expr in sources.items():
        names = metric_names(expr)
        assert names, where
        unknown = names - exported - BUILT_INS
        assert not unknown, f"{where} names {unknown}, which the operator does not export"
        named |= names
    # The check is not vacuous: the new gauges are read, and so is each alert's metric.
    assert {"sluice_clearing_since_timestamp_seconds", "sluice_pipeline_error", "up"} <= named


class Prometheus:
    """Debian's prometheus server on 127.0.0.1, scraping the operator every second and
    evaluating the chart's rules every second."""

    def __init__(self, directory: Path, metrics_port: int, rule_values: list[str]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make promtool` installs Debian's package"
        (self.port,) = free_ports(1)
        write_rule_file(directory / "rules.yaml", *rule_values)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(directory / "rules.yaml")],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=60, what="prometheus ready")
        wait_for(self._scraped, timeout=60, what="prometheus scraping the operator")

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.port}{path}{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def _ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited (see prometheus.log)"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def _scraped(self) -> bool:
        result = self.get("/api/v1/query", query=f'up{{job="{JOB}"}} == 1')["data"]["result"]
        return bool(result)

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts of that name."""
        found = self.get("/api/v1/alerts")["data"]["alerts"]
        return [a for a in found if a["labels"]["alertname"] == name]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def prometheus(live_operator: Operator) -> Iterator[Prometheus]:
    """A stuck clear is one that is still Clearing 5 s after it began."""
    directory = Path(tempfile.mkdtemp(prefix="sluice-prometheus-"))
    server = None
    try:
        server = Prometheus(directory, live_operator.metrics_port, ["alerts.clearStuckSeconds=5"])
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_clear_stuck_on_a_failing_csi_delete_fires_and_resolves_in_prometheus(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    cluster: LocalCluster,
    prometheus: Prometheus,
) -> None:
    pv_name, data = run_with_data(
        api_client, kubectl, cluster, namespace, "orders", storage_class=CSI_CLASS
    )
    ours = {"namespace": namespace, "pipeline": "orders"}

    def stuck(state: str) -> dict[str, Any] | None:
        for alert in prometheus.alerts("SluiceClearStuck"):
            if alert["labels"].items() >= ours.items() and alert["state"] == state:
                return alert
        return None

    assert stuck("firing") is None and stuck("pending") is None
    marker = cluster.csi_dir / "fail-delete" / data.parent.name
    marker.write_text(f"injected: disk {uuid.uuid4().hex[:6]} is read-only")
    try:
        stop_and_clear(kubectl, namespace, "orders")
        wait_error(kubectl, namespace, "orders", "StorageClearFailed")
        firing = wait_for(lambda: stuck("firing"), timeout=60, what="SluiceClearStuck firing")
        # StorageClearFailed is on its way too (pending: it fires after 5 minutes).
        failed = wait_for(
            lambda: [
                a
                for a in prometheus.alerts("SluiceStorageClearFailed")
                if a["labels"].items() >= ours.items()
            ],
            timeout=30,
            what="SluiceStorageClearFailed pending",
        )
        assert [a["state"] for a in failed] == ["pending"], failed
        assert firing["labels"]["severity"] == "warning"
        assert firing["annotations"]["runbook_url"].endswith("#sluiceclearstuck")
        assert f"{namespace}/orders" in firing["annotations"]["summary"]
        # The failure is in Prometheus too, by pipeline and error code.
        errors = prometheus.get(
            "/api/v1/query", query=f'sluice_pipeline_error{{namespace="{namespace}"}}'
        )["data"]["result"]
        assert [e["metric"]["error_code"] for e in errors] == ["StorageClearFailed"], errors
    finally:
        marker.unlink(missing_ok=True)

    # The provisioner's next retry deletes the volume; the clear completes; the alert goes.
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared", timeout=120)
    assert volume(api_client, pv_name) is None
    wait_for(
        lambda: stuck("firing") is None and stuck("pending") is None,
        timeout=30,
        what="SluiceClearStuck resolved",
    )
    since = prometheus.get(
        "/api/v1/query",
        query=f'sluice_clearing_since_timestamp_seconds{{namespace="{namespace}"}}',
    )["data"]["result"]
    assert since == []


def test_every_dashboard_query_runs_in_prometheus(prometheus: Prometheus) -> None:
    """Grafana's variables as Grafana substitutes them; each query valid PromQL for a real
    Prometheus, and the operator's own panels have data."""
    for expr in dashboard_exprs(dashboard()):
        if expr.startswith("label_values("):
            continue  # Grafana's, not PromQL
        query = expr.replace("$__rate_interval", "1m").replace("$job", ".+")
        answer = prometheus.get("/api/v1/query", query=query)
        assert answer["status"] == "success", (expr, answer)
    leaders = prometheus.get("/api/v1/query", query='sum(sluice_leader{job=~".+"})')
    assert leaders["data"]["result"][0]["value"][1] == "1"
