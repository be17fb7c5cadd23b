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
    run.add_argument("-v", "--verbose", action="store_true")

    crds = commands.add_parser("crds", help="write the CRD generated from the models")
    crds.add_argument("--output", type=Path, default=Path("crds"))

    args = parser.parse_args(argv)
    if args.command == "crds":
        from sluice.api import crd

        print(crd.write(args.output))
        return 0
    return _run(
        args.namespace, args.all_namespaces or not args.namespace, args.liveness, args.verbose
    )


def _run(namespaces: list[str], clusterwide: bool, liveness: str, verbose: bool) -> int:
    import kopf

    import sluice.handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # kopf logs every handler call at INFO; the controller logs transitions
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,  # no peering objects needed; one replica runs (Deployment: Recreate)
        clusterwide=clusterwide,
        namespaces=namespaces,
        liveness_endpoint=liveness or None,
    )
    return 0
