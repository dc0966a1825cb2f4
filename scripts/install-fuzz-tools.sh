#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned) for the API fuzzing test
# (tests/e2e/fuzz.rs), with `pip install --target` into its own folder under
# target/test-tools/, once: running it again only checks the install.
#
# Usage: scripts/install-fuzz-tools.sh   # prints the install folder
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root="$PWD"

version=4.32.5 # tests/e2e/fuzz.rs SCHEMATHESIS_VERSION names the same release
tools_dir="${TEST_TOOLS_DIR:-$root/target/test-tools}"
dir="$tools_dir/pip/schemathesis-$version"

command -v python3 >/dev/null 2>&1 || {
    echo "install-fuzz-tools: python3 is required (with pip)" >&2
    exit 1
}
if [[ ! -f "$dir/.installed" ]]; then
    echo "==> pip install schemathesis==$version into ${dir#"$root"/}" >&2
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir.partial"
    python3 -m pip install --quiet --disable-pip-version-check --no-input --no-warn-script-location \
        --root-user-action=ignore --target "$dir.partial" "schemathesis==$version" >&2
    touch "$dir.partial/.installed"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
fi
PYTHONPATH="$dir" "$dir/bin/st" --version >/dev/null
echo "$dir"
