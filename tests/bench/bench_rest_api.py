"""`make bench`: requests per second of `sluice api` from a load generator on loopback.

GET /v0/pipelines/{name} and POST .../clear on a stopped, already-Cleared pipeline (a read
of the resource, no write), each the median of 3 runs, with token checks (TokenReview +
SubjectAccessReview, cached 10 s), the same reading every pipeline from the API server
(--no-cache: how it was before the watch-fed cache), without token checks
(--authentication none), and with uncached checks (--auth-cache-ttl 0, a review pair per
request). Then one profiled
run shows where the event loop's time goes. Prints figures; asserts only that every
answer was the expected status (shared, noisy machines).
"""

from __future__ import annotations

import asyncio
import io
import pstats
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from integration.pipelines import apply, manifest, wait_settled
from integration.test_rest_api import ApiServer, token_for
from localkube.cluster import REPO
from localkube.fixtures import Kubectl
from sluice_fixtures import Operator

RUNS = 3
SECONDS = 5
CONCURRENCY = 32
HEY = REPO / ".cache/localkube/bin/hey"


def hey(url: str, method: str, token: str, expected: int) -> float:
    out = subprocess.run(
        [
            *(str(HEY), "-z", f"{SECONDS}s", "-c", str(CONCURRENCY), "-m", method),
            *("-H", f"Authorization: Bearer {token}", url),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=SECONDS + 60,
    ).stdout
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    assert set(codes) == {str(expected)}, out
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


async def _python_load(url: str, method: str, token: str, expected: int) -> float:
    """The fallback when hey could not be built: an aiohttp client loop."""
    done = 0
    deadline = time.monotonic() + SECONDS
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.request(method, url, headers=headers) as response:
                    await response.read()
                    assert response.status == expected, await response.text()
                    done += 1

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done / (time.monotonic() - start)


def load(url: str, method: str, token: str, expected: int) -> float:
    if HEY.exists():
        return hey(url, method, token, expected)
    return asyncio.run(_python_load(url, method, token, expected))


def test_rest_api_requests_per_second(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    live_operator: Operator,
    tmp_path: Path,
) -> None:
    apply(kubectl, manifest("orders", namespace, "Stopped"))
    wait_settled(kubectl, namespace, "orders")
    token = token_for(kubectl, namespace, "bench", ["get", "list", "patch"])
    endpoints = [
        ("GET /v0/pipelines/orders", "GET", "/v0/pipelines/orders", 200),
        ("POST /v0/pipelines/orders/clear", "POST", "/v0/pipelines/orders/clear", 202),
    ]
    modes = [
        ("token checks", ()),
        # Before issue 10: every GET read the pipeline from the API server.
        ("token checks, no cache", ("--no-cache",)),
        ("no token checks", ("--authentication", "none")),
        # Every request reviewed: what the 10 s cache saves.
        ("uncached checks", ("--auth-cache-ttl", "0")),
    ]
    table: dict[tuple[str, str], list[float]] = {}
    for mode, extra in modes:
        server = ApiServer(kubeconfig, namespace, tmp_path / f"api-{len(table)}.log", *extra)
        try:
            for label, method, path, expected in endpoints:
                load(server.url + path, method, token, expected)  # warm-up (caches, pools)
                table[(label, mode)] = [
                    load(server.url + path, method, token, expected) for _ in range(RUNS)
                ]
        finally:
            server.stop()

    generator = f"hey -c {CONCURRENCY}" if HEY.exists() else f"aiohttp x{CONCURRENCY}"
    print(f"\nsluice api on loopback, {generator}, {SECONDS} s runs, median of {RUNS} (req/s)")
    print(
        f"  {'endpoint':<34} {'token checks':>13} {'no cache':>9} {'ratio':>6}"
        f" {'no token checks':>16} {'uncached checks':>16}"
    )
    for label, *_ in endpoints:
        on = statistics.median(table[(label, "token checks")])
        before = statistics.median(table[(label, "token checks, no cache")])
        off = statistics.median(table[(label, "no token checks")])
        uncached = statistics.median(table[(label, "uncached checks")])
        print(
            f"  {label:<34} {on:>13.0f} {before:>9.0f} {on / before:>6.2f}"
            f" {off:>16.0f} {uncached:>16.0f}"
        )
    for (label, mode), runs in table.items():
        print(f"    {label} [{mode}]: " + ", ".join(f"{r:.0f}" for r in runs))

    profile(kubeconfig, namespace, token, tmp_path)


def profile(kubeconfig: Path, namespace: str, token: str, tmp_path: Path) -> None:
    """One GET run without token checks against a server under cProfile. It sees the
    event-loop thread; the blocking Kubernetes calls run in worker threads, so their time
    shows up here only as waiting (select/epoll)."""
    out = tmp_path / "api.prof"
    launcher = (sys.executable, "-m", "cProfile", "-o", str(out), "-m", "sluice")
    server = ApiServer(
        kubeconfig,
        namespace,
        tmp_path / "api-profiled.log",
        "--authentication",
        "none",
        launcher=launcher,
    )
    try:
        load(f"{server.url}/v0/pipelines/orders", "GET", token, 200)
    finally:
        server.stop()  # SIGTERM: run_app returns, and cProfile writes its file
    if not out.exists():
        print("  (no profile written)")
        return
    text = io.StringIO()
    pstats.Stats(str(out), stream=text).sort_stats("tottime").print_stats(12)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    print("\nevent-loop thread profile, one GET run without token checks, by own time:")
    print("\n".join("  " + line[:160] for line in lines[-13:]))
