#!/usr/bin/env bash
# Builds the engine pipeline (the Cargo project beside this script, on Feldera's engine
# `dbsp`) into $1 (default .cache/localkube/bin) as engine-pipeline, and writes
# engine-pipeline.libs: the absolute paths of the shared libraries it loads (what `ldd`
# lists, the dynamic loader included), one a line, for the image's rootfs.
# Rust's build output goes to a per-user cache that every checkout shares
# (CARGO_TARGET_DIR, default ${XDG_CACHE_HOME:-~/.cache}/sluice/pipeline-target), as Go's
# build cache is: dbsp and its 368 dependencies take ~10 min cold, and CI's fresh clone rebuilds
# only this program. Skips the build when the pins (Cargo.toml, Cargo.lock, sources, this
# script) are unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/../../.cache/localkube/bin}" && cd "${1:-$here/../../.cache/localkube/bin}" && pwd)"
pins="$(cat "$0" "$here/Cargo.toml" "$here/Cargo.lock" "$here"/src/*.rs | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.engine-pipeline-pins" 2>/dev/null)" = "$pins" ] && [ -x "$out/engine-pipeline" ]; then
  exit 0
fi
command -v cargo >/dev/null || { echo "cargo is needed to build the engine pipeline" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/pipeline-target}"
echo "building the engine pipeline into $out (Rust build cache: $CARGO_TARGET_DIR; the first build takes ~10 min or more)" >&2
mkdir -p "$CARGO_TARGET_DIR"
# Checkouts share the target directory and its one release/engine-pipeline: hold a lock
# from the build until the copy, so another checkout's build cannot swap the binary between.
exec 9>"$CARGO_TARGET_DIR/.engine-pipeline.lock"
flock 9
# Two jobs at most: the machine has two cores, and dbsp's biggest crates peak at ~2.5 GB.
cargo build --release --locked --jobs 2 --manifest-path "$here/Cargo.toml"
cp "$CARGO_TARGET_DIR/release/engine-pipeline" "$out/engine-pipeline.tmp"
mv -f "$out/engine-pipeline.tmp" "$out/engine-pipeline"
# `ldd` lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and, for the loader,
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file and is left out. The
# loader is listed by the path the binary names (PT_INTERP), which is where the image
# must have it. Some of these paths are symlinks (/lib64/ld-linux-x86-64.so.2, and /lib
# itself on a merged-/usr system): copy them dereferenced (cp -L) to the same paths.
ldd "$out/engine-pipeline" \
  | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' \
  | sort -u > "$out/engine-pipeline.libs"
echo "$pins" > "$out/.engine-pipeline-pins"
