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

nx_version=0.8.1 # tests/src/mongo.rs NX27017_VERSION names the same release
tools_dir="${TEST_TOOLS_DIR:-$root/target/test-tools}"
dir="$tools_dir/pip/nx-27017-$nx_version"

die() {
    echo "install-mongo-test-server: $*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is required (with pip): install Python 3"

if [[ ! -f "$dir/.installed" ]]; then
    echo "==> pip install nx-27017==$nx_version into ${dir#"$root"/}" >&2
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir.partial"
    python3 -m pip install --quiet --disable-pip-version-check --no-input --no-warn-script-location \
        --root-user-action=ignore \
        --target "$dir.partial" "nx-27017==$nx_version" >&2
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    touch "$dir/.installed"
fi

# The install is only useful if this python3 can import it.
PYTHONPATH="$dir" PYTHONDONTWRITEBYTECODE=1 python3 -c 'import nx_27017.nx_27017' ||
    die "nx-27017 in $dir does not import with $(command -v python3); remove the folder and run again"

cat >&2 <<EOF
nx-27017 $nx_version is installed in ${dir#"$root"/}
The tests find it there (or via SANDCRON_NX27017=$dir).
To run one by hand (Ctrl-C stops it):
  PYTHONPATH=$dir python3 -c 'import sys; from nx_27017.nx_27017 import main; sys.exit(main())' \\
      --data-dir /tmp/nx-data --port 27018 --log-file /tmp/nx.log --pid-file /tmp/nx.pid
and connect to mongodb://127.0.0.1:27018/?directConnection=true
EOF
printf '%s\n' "$dir"
