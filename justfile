# sandcron tasks. `just --list` shows them.

# Start sandcron on its embedded stores (http://127.0.0.1:8070).
run *ARGS:
    cargo run --release -- dev {{ARGS}}

# Install what the tests need and run every test (what CI runs).
test *ARGS:
    scripts/test.sh {{ARGS}}

# Benchmarks: print comparison tables (see BENCHMARKS.md). `just bench --quick` is shorter.
bench *ARGS:
    scripts/build-guests.sh
    cargo bench -p sandcron --bench executors -- {{ARGS}}
    cargo bench -p sandcron --bench scheduler -- {{ARGS}}

# Build the example guests into target/guests/ (installs their toolchains if missing).
guests *ARGS:
    scripts/build-guests.sh {{ARGS}}

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings

ci:
    .ci/run
