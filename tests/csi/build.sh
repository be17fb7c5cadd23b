#!/usr/bin/env bash
# Builds the CSI stack of the local cluster into $1 (default .cache/localkube/bin),
# from the modules pinned in go.mod: csi-provisioner, csi-resizer, snapshot-controller and
# csi-snapshotter (upstream sidecars), csi-sanity (the CSI conformance tests),
# csi-local (./driver, the project's driver), csi-local-registrar (./registrar: registers
# a driver with the kubelet, in place of upstream's node-driver-registrar, which the Go
# module proxy does not serve) and csi-call (./csicall: one gRPC call from the command
# line, for tests). Copies the VolumeSnapshot CRDs out of
# the pinned external-snapshotter client module into csi-snapshot-crds.yaml.
# Skips the build when the pins (go.mod, go.sum, the Go sources here, this script) are unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/../../.cache/localkube/bin}" && cd "${1:-$here/../../.cache/localkube/bin}" && pwd)"
pins="$(cat "$0" "$here/go.mod" "$here/go.sum" "$here"/driver/*.go "$here"/registrar/*.go "$here"/csicall/*.go | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.csi-pins" 2>/dev/null)" = "$pins" ]; then
  exit 0
fi
echo "building the CSI sidecars, csi-sanity and csi-local into $out" >&2
cd "$here"
GOBIN="$out" go install -trimpath -ldflags "-s -w" tool
go build -trimpath -ldflags "-s -w" -o "$out/csi-local" ./driver
go build -trimpath -ldflags "-s -w" -o "$out/csi-local-registrar" ./registrar
go build -trimpath -ldflags "-s -w" -o "$out/csi-call" ./csicall
crds="$(go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)/config/crd"
# Each file starts with its own "---".
for kind in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
  cat "$crds/snapshot.storage.k8s.io_$kind.yaml"
done > "$out/csi-snapshot-crds.yaml"
echo "$pins" > "$out/.csi-pins"
