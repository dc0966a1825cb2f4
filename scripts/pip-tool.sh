#!/usr/bin/env bash
# Sourced by the scripts that install pinned PyPI tools (the test servers,
# the API fuzzer, the guest toolchains of build-guests.sh), so that every
# one installs the same way: `pip install --target` into a folder of its
# own, no venv and no system packages touched, once; running it again only
# finds the folder.
#
#   pip_tool NAME VERSION [TOOLS_DIR]
#       installs NAME==VERSION into TOOLS_DIR/pip/NAME-VERSION and prints
#       that folder; TOOLS_DIR defaults to $TEST_TOOLS_DIR, or else
#       target/test-tools.
#   pip_import DIR MODULE
#       stops the script, naming DIR, unless this python3 imports MODULE
#       from DIR (an install is only useful if it does).

pip_tool() {
    local name=$1 version=$2
    local root dir
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    dir="${3:-${TEST_TOOLS_DIR:-$root/target/test-tools}}/pip/$name-$version"
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
    printf '%s\n' "$dir"
}

pip_import() {
    local dir=$1 module=$2
    PYTHONPATH="$dir" PYTHONDONTWRITEBYTECODE=1 python3 -c "import $module" || {
        echo "${0##*/}: $module in $dir does not import with $(command -v python3); remove the folder and run again" >&2
        exit 1
    }
}
