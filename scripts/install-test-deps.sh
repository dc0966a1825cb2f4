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
# gcc builds the bundled SQLite; ca-certificates for the package registries.
need_package gcc
need_package ca-certificates
# No protoc: the vendored etcd-client carries its gRPC bindings ready-made
# (vendor/README.md), and the tests check the build never needs one.
# A real etcd 3.4 for the coordination tests (the harness runs its own on
# free loopback ports; the package's system service is not used), and
# openssl to make the certificates of the TLS test.
need_package etcd-server
need_package openssl
# The web console's browser tests: Debian's chromium, driven by npm
# playwright-core (scripts/test.sh runs `npm ci` in tests/browser). A node
# from elsewhere (NodeSource's nodejs bundles npm and conflicts with Debian's
# npm package) is used as it is; Debian's are installed only when missing.
need_package chromium
command -v node >/dev/null 2>&1 || need_package nodejs
command -v npm >/dev/null 2>&1 || need_package npm
# The deployment kit's tests (tests/e2e/deploy.rs): `nginx -t` on
# deploy/nginx/sandcron.conf (the package's own service is not used; see
# below), `systemd-analyze verify` and `security` on deploy/systemd/ (no
# running systemd needed), and python3 for the memory-deny-write-execute
# wrapper (it also runs nx-27017).
need_package nginx
need_package systemd
need_package python3

if ((${#apt_packages[@]})); then
    echo "==> apt-get install ${apt_packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
    # On a machine running systemd, Debian starts the nginx it just installed
    # (default site on port 80). The tests only run `nginx -t` with their own
    # files, so switch off the service installed here, and only that one.
    if [[ " ${apt_packages[*]} " == *" nginx "* && -d /run/systemd/system ]]; then
        as_root systemctl disable --now nginx.service >/dev/null 2>&1 || true
    fi
fi

# rustfmt and clippy come with the toolchain but may be missing from a minimal profile.
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        rustup component add "$component"
    fi
done

# `just` runs the project's recipes (`just bench`, `just soak`); Debian 12
# does not package it, crates.io does.
if ! command -v just >/dev/null 2>&1; then
    echo "==> cargo install just"
    cargo install just --locked --quiet
fi
