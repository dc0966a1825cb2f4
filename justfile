# sandcron tasks. `just --list` shows them.

# Start sandcron on its embedded stores (http://127.0.0.1:8070).
run *ARGS:
    cargo run --release -- dev {{ARGS}}

# Install what the tests need and run every test (what CI runs).
test *ARGS:
    scripts/test.sh {{ARGS}}

# Benchmarks: sandcron beside its peers, as markdown tables (see BENCHMARKS.md);
# the report also goes to target/bench/. `just bench --quick` takes about 15
# minutes; `--only lateness,claims` picks sections.
bench *ARGS:
    scripts/build-guests.sh --run
    scripts/install-mongo-test-server.sh > /dev/null
    scripts/bench-install-peers.sh > /dev/null
    cargo build --release -p sandcron --bin sandcron
    cargo run --release -p sandcron-bench -- {{ARGS}}

# Build the example guests into target/guests/ (installs their toolchains if missing).
guests *ARGS:
    scripts/build-guests.sh {{ARGS}}

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings

ci:
    .ci/run

# Chaos soak: a whole cluster under random faults, then check-history (default 3 minutes; --minutes N).
soak *ARGS:
    cargo build --release -p sandcron
    cargo run --release -p sandcron-tests --bin soak -- {{ARGS}}
