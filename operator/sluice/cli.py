"""`sluice run` (the operator), `sluice api` (the REST API) and `sluice crds` (write the
generated CRD)."""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="liveness probe endpoint (kopf's), or '' to disable",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="serve Prometheus metrics on this port (0: off)",
    )
    run.add_argument(
        "--workers", type=int, default=16, help="pipelines reconciled concurrently (default 16)"
    )
    run.add_argument(
        "--kube-api-qps",
        type=float,
        default=100.0,
        help="client-side limit: API requests per second, sustained (default 100; 0: no limit)",
    )
    run.add_argument(
        "--kube-api-burst",
        type=int,
        default=200,
        help="client-side limit: requests allowed at once above the rate (default 200)",
    )
    run.add_argument(
        "--volume-recheck-seconds",
        type=float,
        default=30.0,
        help="while a clear waits for a watched PersistentVolume to go, look again this "
        "often anyway (its watch events are what normally wake it; default 30)",
    )
    run.add_argument(
        "--volume-usage-seconds",
        type=float,
        default=60.0,
        help="storage autoscaling: read the volume usage of autoscaled pipelines from their "
        "nodes' kubelets this often (default 60; the kubelet itself refreshes it every "
        "minute by default)",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="run as one of several replicas: only the holder of a Lease reconciles",
    )
    run.add_argument(
        "--leader-election-namespace",
        help="the Lease's namespace (default: in a pod, its own; else the kubeconfig "
        "context's; else 'default')",
    )
    run.add_argument("--leader-election-id", default="sluice-operator", help="the Lease's name")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("-v", "--verbose", action="store_true")

    crds = commands.add_parser("crds", help="write the CRD generated from the models")
    crds.add_argument("--output", type=Path, default=Path("crds"))

    rest = commands.add_parser(
        "api", help="serve Feldera's pipeline REST API, backed by Pipeline resources"
    )
    rest.add_argument(
        "-n",
        "--namespace",
        help="serve the pipelines of this namespace (default: in a pod, its own; else the "
        "kubeconfig context's; else 'default')",
    )
    rest.add_argument("--bind", default="127.0.0.1:8080", help="HOST:PORT to listen on")
    rest.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG)")
    rest.add_argument(
        "--authentication",
        choices=["kubernetes", "none"],
        default="kubernetes",
        help="kubernetes: Bearer tokens checked with TokenReview and SubjectAccessReview; "
        "none: no checks at all, for local measurement (loopback --bind only)",
    )
    rest.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    rest.add_argument("--tls-key", help="the certificate's private key (PEM)")
    rest.add_argument(
        "--auth-cache-ttl",
        type=float,
        default=10.0,
        help="seconds a TokenReview/SubjectAccessReview result is reused (0: never)",
    )
    rest.add_argument(
        "--no-cache",
        action="store_true",
        help="read pipelines from the API server on every request instead of from a "
        "watch-fed cache (for comparison)",
    )
    rest.add_argument("--access-log", action="store_true", help="log every request")
    rest.add_argument("--log-format", choices=["text", "json"], default="text")
    rest.add_argument("-v", "--verbose", action="store_true")

    args = parser.parse_args(argv)
    if args.command == "crds":
        from sluice.api import crd

        print(crd.write(args.output))
        return 0
    _configure_logging(args.log_format, args.verbose)
    if args.command == "api":
        from sluice.restapi.server import serve

        return serve(
            args.bind,
            args.namespace,
            args.kubeconfig,
            args.authentication,
            args.tls_cert,
            args.tls_key,
            args.auth_cache_ttl,
            args.access_log,
            not args.no_cache,
        )
    from sluice import handlers

    handlers.OPTIONS = handlers.RunOptions(
        namespaces=tuple(args.namespace),
        workers=max(1, args.workers),
        kube_api_qps=args.kube_api_qps,
        kube_api_burst=args.kube_api_burst,
        volume_recheck_seconds=args.volume_recheck_seconds,
        volume_usage_seconds=max(1.0, args.volume_usage_seconds),
    )
    election = (
        (args.leader_election_namespace, args.leader_election_id) if args.leader_elect else None
    )
    return _run(
        args.namespace,
        args.all_namespaces or not args.namespace,
        args.liveness,
        args.metrics_port,
        election,
    )


def _configure_logging(fmt: str, verbose: bool) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        # Controller records carry `namespace` and `pipeline` extras; kopf's carry `k8s_ref`.
        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", timestamp=True)
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    from sluice.transient import ConciseKopfRetries

    handler.addFilter(ConciseKopfRetries())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    # urllib3 warns on each of its own quick retries; the failure that remains is logged once.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    if not verbose:  # kopf logs every handler call at INFO; the controller logs transitions
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def _run(
    namespaces: list[str],
    clusterwide: bool,
    liveness: str,
    metrics_port: int,
    election: tuple[str | None, str] | None,
) -> int:
    """Run kopf; with `election` (Lease namespace or None, Lease name), only once elected."""
    import asyncio

    import kopf
    from prometheus_client import start_http_server

    import sluice.handlers  # noqa: F401  (registers the handlers)
    from sluice import leader, metrics

    if metrics_port:
        start_http_server(metrics_port)
    operate = functools.partial(
        kopf.operator,
        standalone=True,  # kopf's own peering is not used: the Lease decides who runs
        clusterwide=clusterwide,
        namespaces=namespaces,
        liveness_endpoint=liveness or None,
    )

    async def main() -> None:
        metrics.TASKS.loop = asyncio.get_running_loop()
        if election is None:
            metrics.LEADER.set(1)
            await operate()
            return
        from sluice.restapi.store import connect

        api_client, own_namespace = connect(None)
        lease_namespace, lease_name = election
        lock = leader.LeaseLock(
            api_client,
            lease_namespace or own_namespace,
            lease_name,
            leader.identity(),
            leader.Timings(),
        )
        elector = leader.Elector(lock)
        await leader.run_when_leader(
            elector, liveness, lambda stop: operate(stop_flag=stop, memo=kopf.Memo(stopping=stop))
        )

    asyncio.run(main())
    return 0
