"""`sluice run` (the operator) and `sluice crds` (write the generated CRD)."""

from __future__ import annotations

import argparse
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
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("-v", "--verbose", action="store_true")

    crds = commands.add_parser("crds", help="write the CRD generated from the models")
    crds.add_argument("--output", type=Path, default=Path("crds"))

    args = parser.parse_args(argv)
    if args.command == "crds":
        from sluice.api import crd

        print(crd.write(args.output))
        return 0
    _configure_logging(args.log_format, args.verbose)
    return _run(
        args.namespace, args.all_namespaces or not args.namespace, args.liveness, args.metrics_port
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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:  # kopf logs every handler call at INFO; the controller logs transitions
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def _run(namespaces: list[str], clusterwide: bool, liveness: str, metrics_port: int) -> int:
    import kopf
    from prometheus_client import start_http_server

    import sluice.handlers  # noqa: F401  (registers the handlers)

    if metrics_port:
        start_http_server(metrics_port)
    kopf.run(
        standalone=True,  # no peering objects needed; one replica runs (Deployment: Recreate)
        clusterwide=clusterwide,
        namespaces=namespaces,
        liveness_endpoint=liveness or None,
    )
    return 0
