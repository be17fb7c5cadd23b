"""pytest plugin: the CRD installed once, and the operator running as a real process."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from localkube.cluster import REPO, free_ports
from localkube.fixtures import Kubectl

CRD_DIR = REPO / "crds"


class Operator:
    """`sluice run` as a child process, so tests can kill and restart it."""

    def __init__(self, kubeconfig: Path, log_dir: Path, source: Path | None = None) -> None:
        """`source`: another release's operator/ folder to run instead of this checkout's
        (put first on PYTHONPATH), e.g. the previous release in the upgrade test."""
        self.kubeconfig = kubeconfig
        self.source = source
        (self.metrics_port,) = free_ports(1)
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.liveness_port: int | None = None  # set by tests that pass --liveness

    def start(
        self,
        failpoints: str = "",
        kubeconfig: Path | None = None,
        namespace: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        """Start watching all namespaces, or only `namespace` (so that a failpoint fires for
        the test's own pipeline, not for one in a namespace an earlier test is deleting);
        `extra` flags go last (e.g. --leader-elect, or a --liveness endpoint)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.kubeconfig),
            "SLUICE_FAILPOINTS": failpoints,
        }
        if self.source is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.source), env.get("PYTHONPATH", "")])
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "sluice", "run", "--liveness", ""),
                *(("--namespace", namespace) if namespace else ("--all-namespaces",)),
                *("--metrics-port", str(self.metrics_port), "--log-format", "json"),
                # e.g. "--kube-api-qps 0" for `make bench` runs that compare settings
                *shlex.split(os.environ.get("SLUICE_OPERATOR_ARGS", "")),
                *extra,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def samples(self) -> dict[str, float]:
        """Every sample of the operator's /metrics, keyed `name` or `name{labels}`."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def metric(self, name: str) -> float | None:
        """A sample without labels from the operator's /metrics, or None if absent."""
        return self.samples().get(name)

    def total(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 if none)."""
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        return sum(
            value
            for key, value in self.samples().items()
            if key.split("{", 1)[0] == name and all(w in key for w in wanted)
        )

    def writes(self) -> float:
        """The writes this operator has sent to the API server (its own request counter)."""
        return sum(
            self.total("sluice_kube_requests_total", method=verb)
            for verb in ("POST", "PUT", "PATCH", "DELETE")
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """`name`'s samples summed by the value of one label, e.g. requests by code."""
        out: dict[str, float] = {}
        for key, value in self.samples().items():
            match = re.search(f'[{{,]{label}="([^"]*)"', key)
            if key.split("{", 1)[0] == name and match:
                out[match[1]] = out.get(match[1], 0.0) + value
        return out

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        path = self.log_dir / f"operator-{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    kubectl("wait", "--for=condition=Established", "crd/pipelines.sluice.dev", "--timeout=30s")


@pytest.fixture(scope="session")
def operator(
    crd: None, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    running = Operator(kubeconfig, tmp_path_factory.mktemp("operator"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def live_operator(operator: Operator) -> Iterator[Operator]:
    """The shared operator, (re)started normally before and after a test that stops it."""
    if not operator.alive:
        operator.start()
    yield operator
    if not operator.alive:
        operator.start()


# How much of the operator's log a failing test's report carries.
LOG_TAIL_LINES = 120


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test that used the operator shows the end of its log (CI keeps only the
    test output): what the operator decided is the first thing to look at."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    running = getattr(item, "funcargs", {}).get("operator")
    if isinstance(running, Operator):
        tail = running.log().splitlines()[-LOG_TAIL_LINES:]
        report.sections.append((f"operator log (start {running.starts})", "\n".join(tail)))
