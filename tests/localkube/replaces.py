"""Regenerate the staging-module ``replace`` block of ``go.mod``.

``k8s.io/kubernetes`` points its staging modules (k8s.io/api, client-go, ...)
at ``./staging/src/...`` with ``replace`` lines, which Go ignores for a
dependency. A module that builds Kubernetes must repeat them, pointing at the
published ``v0.X.Y`` of each. The list is read from the pinned release's own
go.mod so it can never drift from the release.

Usage: ``python -m localkube.replaces [--check]``
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

GO_MOD = Path(__file__).with_name("go.mod")
_BLOCK = re.compile(r"\nreplace \(\n.*?\n\)\n", re.S)


def kubernetes_version(go_mod: str) -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v1\.\d+\.\d+)(?:\s*//.*)?$", go_mod, re.M)
    if not match:
        raise SystemExit("go.mod does not require k8s.io/kubernetes v1.x.y")
    return match.group(1)


def staging_modules(release_go_mod: str) -> list[str]:
    return re.findall(r"^\s*(\S+) => \./staging/src/\S+\s*$", release_go_mod, re.M)


def replace_block(modules: list[str], k8s_version: str) -> str:
    staging_version = "v0." + k8s_version.removeprefix("v1.")
    lines = "".join(f"\t{m} => {m} {staging_version}\n" for m in modules)
    return f"\nreplace (\n{lines})\n"


def release_go_mod(k8s_version: str) -> str:
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{k8s_version}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=GO_MOD.parent,
    ).stdout
    return Path(json.loads(out)["GoMod"]).read_text()


def render(go_mod: str) -> str:
    version = kubernetes_version(go_mod)
    block = replace_block(staging_modules(release_go_mod(version)), version)
    return _BLOCK.sub("", go_mod).rstrip("\n") + "\n" + block


def main() -> int:
    current = GO_MOD.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if current != wanted:
            print("go.mod replace block is stale: run python -m localkube.replaces")
            return 1
        return 0
    GO_MOD.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
