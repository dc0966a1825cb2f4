#!/usr/bin/env bash
# Installs the peers the benchmark compares sandcron with, from PyPI, pinned,
# into a virtual environment under target/bench-tools/ (nothing outside
# target/ is touched): APScheduler, the in-process Python scheduler of the
# fire-lateness row. The MongoDB-wire test server (nx-27017) and the wasmtime
# CLI come from the test and guest install scripts; etcd is Debian's.
#
# Idempotent: a second run only checks the install.
#
# Usage: scripts/bench-install-peers.sh
#   prints the venv's python on stdout.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root="$PWD"

apscheduler_version=3.11.3 # bench/src/lateness.rs reports the version it finds
venv="$root/target/bench-tools/venv-apscheduler-$apscheduler_version"

die() {
    echo "bench-install-peers: $*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is required (with venv): install Python 3"

if [[ ! -f "$venv/.installed" ]]; then
    echo "==> venv + pip install apscheduler==$apscheduler_version into ${venv#"$root"/}" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "apscheduler==$apscheduler_version" >&2
    touch "$venv/.installed"
fi

"$venv/bin/python" -c 'import apscheduler' || die "apscheduler in $venv does not import; remove the folder and run again"
echo "$venv/bin/python"
