#!/usr/bin/env bash
# Sourced by the install-*-tools scripts: `pip_tool NAME VERSION` installs
# the pinned PyPI package NAME==VERSION with `pip install --target` into its
# own folder under target/test-tools/pip/ ($TEST_TOOLS_DIR overrides
# target/test-tools), once, and sets $dir to that folder. Running it again
# only finds the folder.

pip_tool() {
    local name=$1 version=$2
    local root tools_dir
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    tools_dir="${TEST_TOOLS_DIR:-$root/target/test-tools}"
    dir="$tools_dir/pip/$name-$version"
    command -v python3 >/dev/null 2>&1 || {
        echo "$name: python3 is required (with pip)" >&2
        exit 1
    }
    if [[ ! -f "$dir/.installed" ]]; then
        echo "==> pip install $name==$version into ${dir#"$root"/}" >&2
        mkdir -p "$(dirname "$dir")"
        rm -rf "$dir.partial"
        python3 -m pip install --quiet --disable-pip-version-check --no-input --no-warn-script-location \
            --root-user-action=ignore --target "$dir.partial" "$name==$version" >&2
        touch "$dir.partial/.installed"
        rm -rf "$dir"
        mv "$dir.partial" "$dir"
    fi
}
