#!/usr/bin/env bash
# Installs aiosmtpd (PyPI, pinned), the SMTP server the email-alert tests
# deliver to (tests/src/smtp.rs starts it with STARTTLS and a maildir), with
# `pip install --target` into its own folder under target/test-tools/, once:
# running it again only checks the install.
#
# Usage: scripts/install-smtp-test-server.sh   # prints the install folder
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root="$PWD"

version=1.4.6 # tests/src/smtp.rs AIOSMTPD_VERSION names the same release
tools_dir="${TEST_TOOLS_DIR:-$root/target/test-tools}"
dir="$tools_dir/pip/aiosmtpd-$version"

command -v python3 >/dev/null 2>&1 || {
    echo "install-smtp-test-server: python3 is required (with pip)" >&2
    exit 1
}
if [[ ! -f "$dir/.installed" ]]; then
    echo "==> pip install aiosmtpd==$version into ${dir#"$root"/}" >&2
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir.partial"
    python3 -m pip install --quiet --disable-pip-version-check --no-input --no-warn-script-location \
        --root-user-action=ignore --target "$dir.partial" "aiosmtpd==$version" >&2
    touch "$dir.partial/.installed"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
fi
PYTHONPATH="$dir" PYTHONDONTWRITEBYTECODE=1 python3 -c 'import aiosmtpd.main' ||
    {
        echo "install-smtp-test-server: aiosmtpd in $dir does not import; remove the folder and run again" >&2
        exit 1
    }
printf '%s\n' "$dir"
