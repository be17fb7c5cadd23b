"""Rules 14 and 17 against control-plane faults: the API server killed, etcd killed, the API
server frozen, watches that go silent. Each case clears several pipelines across the fault
and checks every clear completes exactly once (one StorageCleared per request), the claim
outside the pipelines is untouched, the operator survives, and nothing is left Clearing.

The slow cases carry the `faults` marker (`make faults` only); the API server restart and
the frozen API server run in `make test` too. A mid-clear fault strikes while one clear is
held open (ha.mid_clear), which checks that it was still Clearing when the fault ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from integration.ha import (
    check_exactly_once,
    foreign_claim,
    mid_clear,
    request_clears,
    run_pipelines,
    wait_cleared,
)

from .conftest import FaultEnv
from .proxy import SilencingProxy

PIPELINES = [f"p{i}" for i in range(6)]


def report(case: str, clears: int, seconds: float, outage: float | None = None) -> None:
    down = f" | outage {outage:.1f}s" if outage is not None else ""
    print(
        f"\nFAULT | {case} | clears {clears} | completed exactly once{down} | "
        f"all Cleared {seconds:.1f}s after"
    )


def tracebacks(log: str) -> int:
    return log.count("Traceback")


def check_log(log: str) -> None:
    """An outage reads as WARNING lines (one per failed attempt, with the retry delay); no
    traceback and nothing at ERROR (those are for bugs)."""
    assert tracebacks(log) == 0, log
    assert '"levelname": "ERROR"' not in log, log
    warnings = [line for line in log.splitlines() if '"levelname": "WARNING"' in line]
    print(f"  operator log: {len(warnings)} WARNING lines, e.g. {warnings[:1]}")


def clear_across(env: FaultEnv, case: str, fault: Callable[[], None]) -> None:
    """Run pipelines with one operator, request clears, inject `fault` mid-clear (it returns
    once the component is back), then check the outcome."""
    operator = env.operator("operator")
    operator.start(namespace=env.namespace)
    try:
        run_pipelines(env.kubectl, env.namespace, PIPELINES)
        foreign = foreign_claim(env.api, env.namespace, looks_like="p0")
        with mid_clear(env.kubectl, env.api, env.namespace, PIPELINES, "r1"):
            began = time.monotonic()
            fault()
            back = time.monotonic()
        wait_cleared(env.kubectl, env.namespace, timeout=300)
        report(case, len(PIPELINES), time.monotonic() - back, back - began)
        check_exactly_once(env.kubectl, env.api, env.namespace, PIPELINES, "r1", foreign)
        assert operator.alive, operator.log()
        check_log(operator.log())
    finally:
        operator.stop()


def test_apiserver_killed_and_restarted_mid_clear(fault_env: FaultEnv) -> None:
    clear_across(
        fault_env,
        "kube-apiserver SIGKILL + restart",
        lambda: fault_env.cluster.restart("kube-apiserver"),
    )


@pytest.mark.faults
def test_etcd_killed_and_restarted_mid_clear(fault_env: FaultEnv) -> None:
    clear_across(fault_env, "etcd SIGKILL + restart", lambda: fault_env.cluster.restart("etcd"))


def test_apiserver_frozen_for_30s_mid_clear(fault_env: FaultEnv) -> None:
    def freeze() -> None:
        fault_env.cluster.freeze("kube-apiserver")
        try:
            time.sleep(30)
        finally:
            fault_env.cluster.resume("kube-apiserver")

    clear_across(fault_env, "kube-apiserver SIGSTOP 30 s", freeze)


@pytest.mark.faults
def test_silent_watches_are_noticed_and_resumed(fault_env: FaultEnv) -> None:
    """Every connection the operator has open (its watches among them) goes silent but stays
    open; clears requested afterwards reach it only once it notices and watches again."""
    env = fault_env
    with SilencingProxy(env.cluster.apiserver_port) as proxy:
        operator = env.operator("operator", kubeconfig=env.kubeconfig_via(proxy.port))
        operator.start(namespace=env.namespace)
        try:
            run_pipelines(env.kubectl, env.namespace, PIPELINES)
            foreign = foreign_claim(env.api, env.namespace, looks_like="p0")
            assert proxy.silence_open_connections() > 0
            silenced = time.monotonic()
            request_clears(env.kubectl, env.namespace, PIPELINES, "r1")
            wait_cleared(env.kubectl, env.namespace, timeout=300)
            report(
                "watches silent (connections held open)",
                len(PIPELINES),
                time.monotonic() - silenced,
            )
            check_exactly_once(env.kubectl, env.api, env.namespace, PIPELINES, "r1", foreign)
            assert operator.alive, operator.log()
            check_log(operator.log())
        finally:
            operator.stop()
