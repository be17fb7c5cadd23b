#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet
# and kwok (plus kwok's default stages) from the modules pinned in go.mod into
# $1 (default .cache/localkube/bin).
# Skips the build when the pins (go.mod, go.sum, this script) are unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/../../.cache/localkube/bin}" && cd "${1:-$here/../../.cache/localkube/bin}" && pwd)"
pins="$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.pins" 2>/dev/null)" = "$pins" ]; then
  exit 0
fi
k8s="$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod")"
minor="$(echo "$k8s" | cut -d. -f2)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
echo "building Kubernetes $k8s, etcd and kwok into $out (first build takes a while)" >&2
cd "$here"
GOBIN="$out" go install -trimpath -ldflags "$ldflags" tool
mv -f "$out/server" "$out/etcd"   # go.etcd.io/etcd/server/v3 installs as "server"
# kwok's own default stages (what kwokctl passes), from the pinned module, in the
# order their kustomizations list them: node-initialize marks the node Ready,
# node-heartbeat-with-lease keeps it so, pod-ready/-complete/-delete run pods.
kwok_stages="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
separator=""
for set in node/fast node/heartbeat-with-lease pod/fast; do
  for file in $(awk '$1 == "-" {print $2}' "$kwok_stages/$set/kustomization.yaml"); do
    printf '%s' "$separator"
    cat "$kwok_stages/$set/$file"
    separator=$'---\n'
  done
done > "$out/kwok-stages.yaml"
echo "$pins" > "$out/.pins"
