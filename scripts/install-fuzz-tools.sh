#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned) for the API fuzzing test
# (tests/e2e/fuzz.rs), with `pip install --target` into its own folder under
# target/test-tools/, once: running it again only checks the install.
#
# Usage: scripts/install-fuzz-tools.sh   # prints the install folder
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pip-tool.sh
source scripts/pip-tool.sh

dir="$(pip_tool schemathesis 4.32.5)" # tests/e2e/fuzz.rs SCHEMATHESIS_VERSION names the same release
PYTHONPATH="$dir" "$dir/bin/st" --version >/dev/null
echo "$dir"
