"""The chart's alerts, as helm renders them: promtool checks the rule file and runs the
unit tests on recorded series (sluice_rules_test.yaml: each alert fires when it should and
stays silent when it should not); values reach the expressions; every alert says who must
act, what happened, and where its runbook is."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from localkube.cluster import REPO

from .rendered import helm_template, prometheus_rule, write_rule_file

HERE = Path(__file__).parent
RUNBOOKS = REPO / "docs/runbooks.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make promtool` installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rendered_rules(tmp_path: Path) -> None:
    rules = write_rule_file(tmp_path / "sluice-rules.yaml")
    assert len(rules) == 7
    checked = promtool("check", "rules", str(tmp_path / "sluice-rules.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_promtool_unit_tests_pass_on_the_rules_as_shipped(tmp_path: Path) -> None:
    write_rule_file(tmp_path / "sluice-rules.yaml")  # the chart's defaults
    tests = sorted(HERE.glob("*_test.yaml"))
    assert tests
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
    ran = promtool("test", "rules", *(str(tmp_path / t.name) for t in tests))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Every alert of the file is exercised by the tests.
    exercised = set(re.findall(r"alertname: (\w+)", "".join(t.read_text() for t in tests)))
    rules = write_rule_file(tmp_path / "again.yaml")
    assert {r["alert"] for r in rules} <= exercised


def test_alerts_and_dashboard_are_off_by_default() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in helm_template()}
    assert not any(kind == "PrometheusRule" for kind, _ in kinds)
    assert ("ConfigMap", "sluice-dashboard") not in kinds


def test_values_reach_the_expressions_and_nothing_is_left_unreplaced() -> None:
    rule = prometheus_rule(
        "alerts.clearStuckSeconds=42",
        "alerts.snapshotOverdueSeconds=43",
        'alerts.selector=namespace="ops"\\,service="op"',
        "alerts.runbookUrl=https://wiki.example/sluice",
        "alerts.labels.release=kube-prometheus-stack",
    )
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (group,) = rule["spec"]["groups"]
    by_name = {r["alert"]: r for r in group["rules"]}
    assert "> 42" in by_name["SluiceClearStuck"]["expr"]
    assert "> 43" in by_name["SluiceSnapshotExpiryOverdue"]["expr"]
    text = str(rule["spec"])
    assert "${" not in text
    assert text.count('namespace="ops",service="op"') >= 8
    for name, r in by_name.items():
        assert r["annotations"]["runbook_url"] == f"https://wiki.example/sluice#{name.lower()}"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    rule = prometheus_rule()
    assert rule["metadata"]["name"] == "sluice-operator"
    runbooks = RUNBOOKS.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbooks, re.M)
    }
    for r in rule["spec"]["groups"][0]["rules"]:
        assert r["labels"]["severity"] in ("critical", "warning"), r
        assert r["annotations"]["summary"] and r["annotations"]["description"], r
        url = r["annotations"]["runbook_url"]
        assert url.startswith("https://github.com/sluice-dev/sluice/blob/main/docs/runbooks.md#")
        assert url.split("#")[1] in anchors, f"no section {r['alert']} in {RUNBOOKS}"


def test_alerts_need_the_metrics() -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        helm_template("alerts.enabled=true", "metrics.enabled=false")
    assert "alerts.enabled needs metrics.enabled" in refused.value.stderr
