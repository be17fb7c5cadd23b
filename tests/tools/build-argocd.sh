#!/usr/bin/env bash
# Builds Argo CD (the multi-call binary of github.com/argoproj/argo-cd/v3, pinned by
# tests/tools/argocd/go.mod) into $1 (default .cache/localkube/bin) for the GitOps tests:
#   argocd                         the CLI; the same binary under the names below is that role
#   argocd-server, argocd-repo-server, argocd-application-controller   symlinks to it
#   argocd-files/bin/git-verify-wrapper.sh   argo-cd's hack/ script, from the module cache: the
#                                  repo-server runs it on every manifest generation and fails
#                                  with only "permission denied" when it is not on its PATH
#   argocd-files/crds/             Argo CD's CRDs from the same module (manifests/crds)
# argo-cd v3.6 needs Go 1.27: GOTOOLCHAIN is set for this build only (the go command fetches
# that toolchain from the module proxy once). Cold: ~10 min and ~2.3 GB on 2 cores.
# Skips the build when the pins (this script, go.mod, go.sum, tools.go) are unchanged.
set -euo pipefail
export GOTOOLCHAIN=go1.27.3
here="$(cd "$(dirname "$0")" && pwd)"
mod="$here/argocd"
out="$(mkdir -p "${1:-$here/../../.cache/localkube/bin}" && cd "${1:-$here/../../.cache/localkube/bin}" && pwd)"
pins="$(cat "$0" "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.argocd-pins" 2>/dev/null)" = "$pins" ] && [ -x "$out/argocd" ] \
  && [ -x "$out/argocd-files/bin/git-verify-wrapper.sh" ]; then
  exit 0
fi
cd "$mod"
version="$(go list -m -f '{{.Version}}' github.com/argoproj/argo-cd/v3)"
echo "building Argo CD $version into $out (cold: ~10 min and ~2.3 GB on 2 idle cores)" >&2
# The version the release build stamps (else `argocd version` says v99.99.99).
CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X github.com/argoproj/argo-cd/v3/common.version=${version#v}" \
  -o "$out/argocd.new" github.com/argoproj/argo-cd/v3/cmd
mv "$out/argocd.new" "$out/argocd"
for role in argocd-server argocd-repo-server argocd-application-controller; do
  ln -sfn argocd "$out/$role"
done
src="$(go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)"
rm -rf "$out/argocd-files"
mkdir -p "$out/argocd-files/bin" "$out/argocd-files/crds"
install -m 0755 "$src/hack/git-verify-wrapper.sh" "$out/argocd-files/bin/"
install -m 0644 "$src"/manifests/crds/*-crd.yaml "$out/argocd-files/crds/"
echo "$pins" > "$out/.argocd-pins"
