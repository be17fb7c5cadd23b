#!/usr/bin/env bash
# Builds the local cluster's CNI plugins into $1/cni (default .cache/localkube/bin/cni):
# sluice-pod-net (./podnet, the project's own: an address inside the pod's network
# namespace, nothing on the host) and the upstream host-local (IPAM it delegates to)
# and loopback (containerd's CRI sets up every pod's lo with it), pinned in go.mod.
# Skips the build when the pins (go.mod, go.sum, sources, this script) are unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/../../.cache/localkube/bin}/cni" && cd "${1:-$here/../../.cache/localkube/bin}/cni" && pwd)"
pins="$(cat "$0" "$here/go.mod" "$here/go.sum" "$here"/podnet/*.go | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.pins" 2>/dev/null)" = "$pins" ]; then
  exit 0
fi
echo "building the CNI plugins into $out" >&2
cd "$here"
GOBIN="$out" go install -trimpath -ldflags "-s -w" tool
go build -trimpath -ldflags "-s -w" -o "$out/sluice-pod-net" ./podnet
echo "$pins" > "$out/.pins"
