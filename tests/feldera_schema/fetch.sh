#!/usr/bin/env bash
# Feldera's OpenAPI document, from the `feldera-rest-api` crate at the version pinned in
# Cargo.toml beside this script, fetched with cargo (crates.io) and copied to $1/openapi.json.
# Skips when $1/.pin already names that version. Cargo.lock pins the crate's dependencies:
# `cargo metadata` downloads them too (about 300 small crates, once per CARGO_HOME).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$1"
version="$(sed -n 's/^feldera-rest-api = "=\(.*\)"$/\1/p' "$here/Cargo.toml")"
if [[ -f "$dest/.pin" && "$(cat "$dest/.pin")" == "$version" && -f "$dest/openapi.json" ]]; then
  exit 0
fi
command -v cargo >/dev/null || { echo "cargo is needed to fetch Feldera's OpenAPI document" >&2; exit 1; }
mkdir -p "$dest"
echo "fetching feldera-rest-api $version with cargo" >&2
# The crate's manifest path, from cargo itself (not a guess at CARGO_HOME's layout).
manifest="$(cargo metadata --format-version 1 --locked --manifest-path "$here/Cargo.toml" \
  | python3 -c '
import json, sys
meta = json.load(sys.stdin)
(path,) = [p["manifest_path"] for p in meta["packages"]
           if p["name"] == "feldera-rest-api" and p["version"] == sys.argv[1]]
print(path)' "$version")"
document="$(dirname "$manifest")/openapi.json"
[[ -f "$document" ]] || { echo "feldera-rest-api $version ships no openapi.json" >&2; exit 1; }
cp "$document" "$dest/openapi.json.tmp"
mv "$dest/openapi.json.tmp" "$dest/openapi.json"
echo "$version" > "$dest/.pin"
