#!/usr/bin/env bash
# Builds the real node's images as OCI archives into $1/images (default
# .cache/localkube/bin/images); the launcher imports every *.oci.tar there into the node's
# containerd (no registry can be reached). Always: the sandbox image (pause.c) and the
# probe the node's tests run (probe.c), static binaries; pause also goes to $1/pause, the
# process that holds the node's mount namespace. Once tests/pipeline/build.sh
# exists: the engine pipeline's two images from its binary and the libraries it lists.
# Skips what is up to date (pins: sources and this script; the engine pipeline's own
# build decides for itself).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/../../.cache/localkube/bin}/images" && cd "${1:-$here/../../.cache/localkube/bin}/images" && pwd)"
bin="$(dirname "$out")"
python="${PYTHON:-python3}"
export PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}"
pins="$(cat "$0" "$here"/*.c "$here"/*.py | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.pins" 2>/dev/null)" != "$pins" ] || [ ! -x "$bin/pause" ]; then
  echo "building the pause and probe images into $out" >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  for prog in pause probe; do
    gcc -static -O2 -Wall -Wextra -Werror -o "$work/$prog" "$here/$prog.c"
    "$python" -m images "$prog" "$work/$prog" "$out"
  done
  install -m 0755 "$work/pause" "$bin/pause"
  echo "$pins" > "$out/.pins"
fi
pipeline_build="$here/../pipeline/build.sh"
if [ -x "$pipeline_build" ]; then
  # Where that build puts the binary and its .libs by default (the bin dir).
  pipeline_out="$bin"
  "$pipeline_build" "$pipeline_out"
  stamp="$(cat "$pipeline_out/engine-pipeline" "$pipeline_out/engine-pipeline.libs" "$here"/*.py | sha256sum | cut -c1-16)"
  if [ "$(cat "$out/.engine-pipeline-pins" 2>/dev/null)" != "$stamp" ]; then
    "$python" -m images engine-pipeline "$pipeline_out/engine-pipeline" "$pipeline_out/engine-pipeline.libs" "$out"
    echo "$stamp" > "$out/.engine-pipeline-pins"
  fi
fi
