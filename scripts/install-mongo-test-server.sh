#!/usr/bin/env bash
# Installs the MongoDB wire-protocol test server nx-27017 (PyPI, pinned) for
# the log-store tests. No MongoDB server is installable from the registries
# this project uses; nx-27017 speaks the wire protocol on top of SQLite. See
# DESIGN §10 for what it can and cannot do.
#
# Installs with `pip install --target` into its own folder under
# target/test-tools/ (no venv, no system packages touched), once: running it
# again does nothing but check the install. The test harness
# (tests/src/mongo.rs) looks there by default; SANDCRON_NX27017 overrides it.
#
# Usage: scripts/install-mongo-test-server.sh
#   prints the install folder on stdout (for SANDCRON_NX27017) and how to
#   run the server by hand on stderr.
#
# $TEST_TOOLS_DIR, when set, is used instead of target/test-tools (e.g. a
# cache that outlives fresh clones).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root="$PWD"
# shellcheck source=scripts/pip-tool.sh
source scripts/pip-tool.sh

nx_version=0.8.1 # tests/src/mongo.rs NX27017_VERSION names the same release
dir="$(pip_tool nx-27017 "$nx_version")"
pip_import "$dir" nx_27017.nx_27017

cat >&2 <<EOF
nx-27017 $nx_version is installed in ${dir#"$root"/}
The tests find it there (or via SANDCRON_NX27017=$dir).
To run one by hand (Ctrl-C stops it):
  PYTHONPATH=$dir python3 -c 'import sys; from nx_27017.nx_27017 import main; sys.exit(main())' \\
      --data-dir /tmp/nx-data --port 27018 --log-file /tmp/nx.log --pid-file /tmp/nx.pid
and connect to mongodb://127.0.0.1:27018/?directConnection=true
EOF
printf '%s\n' "$dir"
