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
# shellcheck source=scripts/pip-tool.sh
source scripts/pip-tool.sh

dir="$(pip_tool aiosmtpd 1.4.6)" # tests/src/smtp.rs AIOSMTPD_VERSION names the same release
pip_import "$dir" aiosmtpd.main
printf '%s\n' "$dir"
