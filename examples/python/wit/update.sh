#!/usr/bin/env bash
# Re-vendors the WASI 0.2 WIT files (and licence) from the wasmtime-wasi crate
# into deps/, using only cargo: a throwaway crate that depends on the exact
# wasmtime-wasi version is fetched, and the files are copied out of cargo's
# registry cache.
#
# Usage: examples/python/wit/update.sh [VERSION]   (default 48.0.8)
set -euo pipefail
version="${1:-48.0.8}"
here="$(cd "$(dirname "$0")" && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/src"
: >"$scratch/src/lib.rs"
cat >"$scratch/Cargo.toml" <<TOML
[package]
name = "wit-fetch"
version = "0.0.0"
edition = "2024"

[dependencies]
wasmtime-wasi = "=$version"

[workspace]
TOML
cargo fetch --quiet --manifest-path "$scratch/Cargo.toml"
crate_dir="$(cargo metadata --format-version 1 --manifest-path "$scratch/Cargo.toml" |
    python3 -c 'import json, os, sys
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == "wasmtime-wasi"))')"

rm -f "$here"/deps/*.wit
cp "$crate_dir"/src/p2/wit/deps/*.wit "$here/deps/"
cp "$crate_dir/LICENSE" "$here/deps/LICENSE"
echo "vendored WASI WIT from wasmtime-wasi $version ($crate_dir):"
grep -h '^package ' "$here"/deps/*.wit
echo "if the WASI version changed, update it in world.wit and deps/README.md"
