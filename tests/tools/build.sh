#!/usr/bin/env bash
# Builds the tools the tests and users need beside the control plane into $1 (default
# .cache/localkube/bin), from the Go module proxy at pinned versions:
#   helm     helm.sh/helm/v3 (its own go.mod, as `go install` takes it)
#   kstatus  tests/kstatus: the kstatus judge (sigs.k8s.io/cli-utils), pinned by its go.mod
# Skips the build when the pins (this script, tests/kstatus/ go.mod, go.sum, *.go) are unchanged.
set -euo pipefail
HELM_VERSION=v3.22.0
here="$(cd "$(dirname "$0")" && pwd)"
kstatus="$here/../kstatus"
out="$(mkdir -p "${1:-$here/../../.cache/localkube/bin}" && cd "${1:-$here/../../.cache/localkube/bin}" && pwd)"
pins="$(cat "$0" "$kstatus/go.mod" "$kstatus/go.sum" "$kstatus"/*.go | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.tools-pins" 2>/dev/null)" = "$pins" ] && [ -x "$out/helm" ] && [ -x "$out/kstatus" ]; then
  exit 0
fi
echo "building helm $HELM_VERSION and kstatus into $out" >&2
GOBIN="$out" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
(cd "$kstatus" && GOBIN="$out" go install -trimpath -ldflags "-s -w" .)
echo "$pins" > "$out/.tools-pins"
