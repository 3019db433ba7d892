#!/usr/bin/env bash
# What routine passes write to the state database: on a router's flash, every byte counts.
#
#   bench/state-writes.sh [--tool PATH] [--users N] [--passes P] [--history H]
#
# Sets up slapd + the mailcow emulator with N users (default 1000) and imports them
# (`bench serve`), gives the state a history of H earlier runs (default 1000, as a year of a
# 5-minute cron has many more), then runs P unchanged passes (default 100) under strace and sums the bytes
# written to the state file and its rollback journal, and counts the syncs (fsync/fdatasync).
# It prints one table row; nothing fails when a figure is bad. Installs strace if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

tool="" users=1000 passes=100 history=1000
while [ $# -gt 0 ]; do
    case "$1" in
        --tool) tool=$2; shift 2 ;;
        --users) users=$2; shift 2 ;;
        --passes) passes=$2; shift 2 ;;
        --history) history=$2; shift 2 ;;
        *) echo "usage: $0 [--tool PATH] [--users N] [--passes P] [--history H]" >&2; exit 2 ;;
    esac
done

for tool_pkg in strace:strace sqlite3:sqlite3; do
    command -v "${tool_pkg%%:*}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${tool_pkg##*:}" >/dev/null; }
done
scripts/deps.sh >/dev/null

profile=release
grep -q '^\[profile\.dist\]' Cargo.toml && profile=dist
target_dir=${CARGO_TARGET_DIR:-target}
if [ -z "$tool" ]; then
    cargo build --locked --profile "$profile" -p mailcow-ldap-sync --bin mailcow-ldap-sync >&2
    tool="$target_dir/$profile/mailcow-ldap-sync"
fi
cargo build --locked --profile "$profile" -p sync-test-support --bin bench >&2
bench="$target_dir/$profile/bench"

dir=$(mktemp -d /tmp/state-writes.XXXXXX)
# `bench serve` owns its directory (it starts it afresh): a subdirectory of ours.
served="$dir/served"
trap 'rm -f "$served/hold"; wait; rm -rf "$dir"' EXIT
"$bench" serve --tool "$tool" --users "$users" --dir "$served" >"$dir/serve.out" 2>"$dir/serve.err" &
for _ in $(seq 600); do
    [ -e "$served/hold" ] && grep -q '^config: ' "$dir/serve.out" && break
    sleep 0.5
done
config=$(sed -n 's/^config: //p' "$dir/serve.out")
[ -n "$config" ] || { cat "$dir/serve.err" >&2; echo "bench serve did not come up" >&2; exit 1; }
state=$(sed -n 's/.*"state_file": *"\([^"]*\)".*/\1/p' "$config")
case "$state" in /*) ;; *) state="$(dirname "$config")/$state" ;; esac
sqlite3 "$state" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $history)
    INSERT INTO run (started, finished, exit_code) SELECT i, i, 0 FROM n;"
before_size=$(stat -c %s "$state")

log="$dir/strace.log"
: >"$log"
for _ in $(seq "$passes"); do
    strace -f -qq -y -e trace=write,pwrite64,pwritev,pwritev2,fsync,fdatasync -o "$dir/one.log" \
        "$tool" -c "$config" -q >/dev/null 2>>"$dir/passes.err" || { tail "$dir/passes.err" >&2; exit 1; }
    cat "$dir/one.log" >>"$log"
done

# Bytes each write to the state file or its journal returned, and the syncs of either.
awk -v db="$state" '
    index($0, "<" db ">") || index($0, "<" db "-journal>") {
        if ($0 ~ /(fsync|fdatasync)\(/) { syncs++; next }
        n = $NF; if (n ~ /^[0-9]+$/) { bytes += n; if (index($0, "-journal>")) journal += n }
    }
    END { printf "%d %d %d\n", bytes, journal, syncs }' "$log" >"$dir/sum"
read -r bytes journal syncs <"$dir/sum"
after_size=$(stat -c %s "$state")
runs=$(sqlite3 "$state" 'SELECT count(*) FROM run' 2>/dev/null || echo "?")

echo "| users | passes | bytes written (state + journal) | of it journal | per pass | syncs per pass | state file before → after | run rows |"
echo "|---:|---:|---:|---:|---:|---:|---|---:|"
printf '| %d | %d | %d | %d | %d | %s | %d → %d bytes | %s |\n' "$users" "$passes" "$bytes" "$journal" \
    $((bytes / passes)) "$(awk -v s="$syncs" -v p="$passes" 'BEGIN { printf "%.1f", s / p }')" \
    "$before_size" "$after_size" "$runs"
