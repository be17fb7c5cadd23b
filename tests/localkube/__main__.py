"""``python -m localkube up|down|kubeconfig|status``.

LOCALKUBE_STATE_DIR and LOCALKUBE_BIN_DIR override the default directories.
"""

from __future__ import annotations

import argparse
import sys
import time

from localkube.cluster import ClusterError, LocalCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localkube", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "kubeconfig", "status"])
    args = parser.parse_args(argv)
    cluster = LocalCluster()
    try:
        if args.command == "up":
            start = time.monotonic()
            cluster.up()
            elapsed = time.monotonic() - start
            print(f"localkube ready in {elapsed:.1f}s: {cluster.kubeconfig}", file=sys.stderr)
        elif args.command == "down":
            cluster.down()
        elif args.command == "kubeconfig":
            print(cluster.kubeconfig)
        else:
            running = cluster.is_running()
            print("running" if running else "stopped")
            return 0 if running else 1
    except ClusterError as err:
        print(f"localkube {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
