#!/usr/bin/env bash
# Re-vendors the WASI 0.2 WIT files (and licence) that the examples share into
# deps/ from the crates wasmtime itself builds its bindings from, using only
# cargo: a throwaway crate that depends on the exact wasmtime-wasi and
# wasmtime-wasi-http versions is fetched, and the files are copied out of
# cargo's registry cache. wasi:http comes from wasmtime-wasi-http
# (`wit/deps/http.wit`), the rest from wasmtime-wasi (`src/p2/wit/deps/`); the
# two ship the same copies of the shared packages. deps/config and
# deps/keyvalue are links to host/wit, the WIT the host implements itself;
# this script leaves them alone.
#
# A maintainer's tool, run by hand: `cargo fetch` downloads the crates from
# crates.io, so it needs the network. scripts/build-guests.sh never runs it;
# builds use the files committed in deps/.
#
# Usage: examples/wit/update.sh [VERSION]   (default 48.0.8)
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
wasmtime-wasi-http = "=$version"

[workspace]
TOML
cargo fetch --quiet --manifest-path "$scratch/Cargo.toml"
crate_dir() {
    cargo metadata --format-version 1 --manifest-path "$scratch/Cargo.toml" |
        python3 -c 'import json, os, sys
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == sys.argv[1]))' "$1"
}
wasi="$(crate_dir wasmtime-wasi)"
http="$(crate_dir wasmtime-wasi-http)"

rm -f "$here"/deps/*.wit
cp "$wasi"/src/p2/wit/deps/*.wit "$here/deps/"
cp "$http/wit/deps/http.wit" "$here/deps/"
cp "$wasi/LICENSE" "$here/deps/LICENSE"
echo "vendored WASI WIT from wasmtime-wasi and wasmtime-wasi-http $version:"
grep -h '^package ' "$here"/deps/*.wit
echo "if the WASI version changed, update it in each example's wit/world.wit and in deps/README.md"
