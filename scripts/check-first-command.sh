#!/usr/bin/env bash
# Checks the README's promise that its first command starts sandcron on a
# machine that has only the Rust toolchain. Run by scripts/test.sh (so by CI).
#
#   1. No crate in the build graph compiles protobuf definitions (prost-build,
#      tonic-build, a vendored protoc): the build needs no system `protoc`.
#   2. The README's first command, exactly as written there (read from the
#      first ```sh block), with `--listen 127.0.0.1:0 --data <temp dir>`
#      appended, run with `protoc` removed from PATH and PROTOC pointing at a
#      file that does not exist, builds and starts `sandcron dev`, which then
#      answers /healthz. SIGTERM must stop it cleanly.
#
# Usage: scripts/check-first-command.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "check-first-command: $*" >&2
    exit 1
}

echo "--> the build graph has no protobuf compiler"
graph=$(cargo tree --workspace --locked --edges normal,build --target all --prefix none --format '{p}')
if offenders=$(grep -E '^(prost-build|tonic-build|tonic-prost-build|protoc-[a-z-]+|protobuf-src) ' <<<"$graph"); then
    fail "these crates compile .proto files at build time and need a protoc:
$offenders
vendor/README.md says how etcd-client's bindings are generated ahead of time instead"
fi

# The first line of the first ```sh block, without its trailing comment.
command=$(awk '/^```sh$/ { inside = 1; next } inside { print; exit }' README.md | sed 's/[[:space:]]*#.*$//')
[[ -n "$command" ]] || fail "README.md has no \`\`\`sh block to take the first command from"
echo "--> README's first command: $command"

# PATH without any directory that holds a protoc; PROTOC at a missing file.
clean_path=""
IFS=: read -ra path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
    [[ -n "$dir" && ! -x "$dir/protoc" ]] && clean_path="${clean_path:+$clean_path:}$dir"
done
workdir=$(mktemp -d -t sandcron-first-command.XXXXXX)
log="$workdir/output.log"
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

: >"$log"
# Its own process group (job control on while it starts: a background job
# then leads its group, pgid = pid), so that cargo and sandcron stop together.
set -m
env PATH="$clean_path" PROTOC="$workdir/no-such-protoc" \
    bash -c "$command --listen 127.0.0.1:0 --data '$workdir/data'" >"$log" 2>&1 &
pid=$!
set +m

# The build comes first: on a cold machine it takes minutes.
deadline=$((SECONDS + 45 * 60))
url=""
while [[ -z "$url" ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 40 "$log" >&2
        fail "the command exited before sandcron listened (output above)"
    fi
    ((SECONDS < deadline)) || { tail -n 40 "$log" >&2; fail "sandcron did not listen within 45 minutes"; }
    url=$(sed -n 's/^sandcron dev listening on \(http:[^ ]*\).*/\1/p' "$log" | head -n 1)
    [[ -n "$url" ]] || sleep 1
done
echo "--> listening on $url"

health=$(python3 - "$url/healthz" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as reply:
            print(reply.status)
            break
    except OSError as err:
        if time.monotonic() > deadline:
            print(f"no answer: {err}")
            break
        time.sleep(0.2)
EOF
)
[[ "$health" == "200" ]] || { tail -n 40 "$log" >&2; fail "/healthz answered: $health"; }
echo "--> /healthz: 200"

kill -TERM -- "-$pid"
deadline=$((SECONDS + 60))
while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "sandcron did not stop within 60 s of SIGTERM"
    sleep 0.2
done
status=0
wait "$pid" || status=$?
pid=""
# cargo run passes on the program's own exit status.
[[ $status -eq 0 ]] || { tail -n 20 "$log" >&2; fail "sandcron exited with status $status after SIGTERM"; }
echo "--> stopped cleanly"
