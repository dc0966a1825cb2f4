#!/usr/bin/env bash
# Installs the system packages and tools the test suites need. Sourced by
# scripts/test.sh; safe to run again (it installs only what is missing).
set -euo pipefail

# Root or passwordless sudo runs apt; nothing is installed by hand.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

apt_packages=()
need_package() { dpkg -s "$1" >/dev/null 2>&1 || apt_packages+=("$1"); }
# gcc builds the bundled SQLite; pkg-config and ca-certificates are cheap insurance.
need_package gcc
need_package ca-certificates

if ((${#apt_packages[@]})); then
    echo "==> apt-get install ${apt_packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

# rustfmt and clippy come with the toolchain but may be missing from a minimal profile.
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        rustup component add "$component"
    fi
done
