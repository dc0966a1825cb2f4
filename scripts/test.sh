#!/usr/bin/env bash
# Installs what the tests need (idempotent, non-interactive) and runs every
# test: formatting, lints, unit, conformance and end-to-end suites.
#
# Usage: scripts/test.sh            # everything (this is what CI runs)
#        scripts/test.sh -- FILTER  # extra arguments go to the test runner
set -euo pipefail
cd "$(dirname "$0")/.."

# No incremental compilation data unless asked for: a full run builds the
# workspace once, and its incremental caches were 1.8 GB of the 7.8 GB a cold
# run wrote under target/ (a CI machine ran out of disk). `CARGO_INCREMENTAL=1
# scripts/test.sh` keeps them for quick re-runs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# A cold run now peaks at about 4 GB under target/, plus ~0.7 GB of crates
# and ~0.5 GB of test data in /tmp; say so before starting rather than fail
# half-way with a full disk.
mkdir -p target
free_mb=$(df --output=avail -BM target | tail -1 | tr -dc 0-9)
if ((free_mb < 6144)); then
    echo "warning: ${free_mb} MB free where target/ is; a cold run needs about 5 GB" >&2
fi

extra=()
if [[ "${1:-}" == "--" ]]; then
    shift
    extra=("$@")
fi

# shellcheck source=scripts/install-test-deps.sh
source scripts/install-test-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> README's first command (no protoc needed)"
# The release build it makes (~1.6 GB) is used by nothing after it; a run
# that found no release build (a fresh clone, CI) removes it again, one that
# found one (yours) keeps it.
had_release=0
[[ -d target/release ]] && had_release=1
scripts/check-first-command.sh
((had_release)) || rm -rf target/release

echo "==> MongoDB-wire test server"
scripts/install-mongo-test-server.sh >/dev/null

echo "==> API fuzzer (schemathesis)"
scripts/install-fuzz-tools.sh >/dev/null

echo "==> SMTP test server (aiosmtpd)"
scripts/install-smtp-test-server.sh >/dev/null

echo "==> guests"
scripts/build-guests.sh

echo "==> example guest lints"
for guest in examples/rust-module:wasm32-wasip1 examples/rust-component:wasm32-wasip2 \
    examples/rust-http:wasm32-wasip2 tests/guests/net-probe:wasm32-wasip2; do
    dir=${guest%%:*}
    target=${guest#*:}
    cargo fmt --check --manifest-path "$dir/Cargo.toml"
    CARGO_TARGET_DIR=target/guests-build cargo clippy --quiet --locked --manifest-path "$dir/Cargo.toml" \
        --target "$target" -- -D warnings
done

echo "==> browser test dependencies"
# npm ci only when tests/browser/node_modules does not match the lock file.
browser=tests/browser
if ! cmp -s "$browser/package-lock.json" "$browser/node_modules/.installed-lock.json"; then
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$browser/package-lock.json" "$browser/node_modules/.installed-lock.json"
fi

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "${extra[@]}"
else
    echo "(cargo-nextest not found; using cargo test)"
    cargo test --workspace --locked --no-fail-fast "${extra[@]}"
fi
