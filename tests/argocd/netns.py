"""Run one command in a network namespace of its own, reaching chosen loopback ports outside.

Argo CD's application-controller binds its metrics listener on 0.0.0.0 (the address is
hard-coded in controller/appcontroller.go: only the port is a flag). Started through this
module it runs in a new network namespace whose only interface is its own loopback, so that
listener is reachable from nowhere else; the ports it needs (the API server, redis, the
repo-server) are relayed from the namespace's 127.0.0.1 to the same ports on the host's
127.0.0.1, and nothing else is.

    python -m argocd.netns --forward 6443,6379 -- argocd-application-controller ...

Needs CAP_SYS_ADMIN (unshare/setns), as `unshare -n` does. Exits with the command's code;
SIGTERM/SIGINT are passed on to it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes."""
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [])
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


def _serve(listener: socket.socket, port: int, host_ns: int) -> None:
    while True:
        conn, _ = listener.accept()

        def relay(conn: socket.socket = conn) -> None:
            # This thread moves to the host's namespace: the socket it creates lives there
            # (a socket belongs to the namespace of the thread that created it).
            _check(_libc.setns(host_ns, CLONE_NEWNET), "setns")
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                conn.close()
                return
            upstream.settimeout(None)
            _pump(conn, upstream)

        threading.Thread(target=relay, daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--forward", default="", help="comma-separated host loopback ports")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    # Before any thread exists: every thread and child started after this shares it.
    _check(_libc.unshare(CLONE_NEWNET), "unshare")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for port in [int(p) for p in args.forward.split(",") if p]:
        listener = socket.create_server(("127.0.0.1", port), backlog=64)
        threading.Thread(target=_serve, args=(listener, port, host_ns), daemon=True).start()
    child = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
