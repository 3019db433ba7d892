#!/usr/bin/env bash
# Bytes mailcow sends for a routine pass, with and without gzip: on a WAN link they are most
# of an unchanged pass's time.
#
#   bench/wire-bytes.sh [--tool PATH] [--runner CMD] [--import-tool PATH] [N ...]
#                                                    (default: 2000 10000 users)
#
# For each N: slapd + the mailcow emulator with N users, imported once (`bench serve`); then
# one unchanged pass with the emulator answering `Accept-Encoding: gzip` as mailcow's nginx
# does (gzip_comp_level 6, gzip_min_length 256, application/json), and one with gzip switched
# off in the emulator (POST /__emulator/gzip/off). The emulator counts the bytes of each answer
# it writes (head and body, plain HTTP over loopback, so before any TLS; the requests the
# tool sends are a few hundred bytes and not counted). Also the tool's CPU (user + sys) and
# peak RSS (/usr/bin/time -v): the cost of decoding. Not its wall time: over loopback that is
# mostly the emulator compressing (nginx does that in C, once per request). One table row per
# N and mode; nothing fails when a figure is bad. The tool must be built with the `gzip`
# feature (`cargo build --features gzip`, `CROSS_FEATURES=gzip cross/build.sh`) or it does not
# ask for gzip, and both rows are plain. `--runner qemu-arm-static` runs an armv7 artefact
# under qemu-user (its CPU is then qemu's: emulated, not what a real ARM core takes); the
# import is then made by a native build (`--import-tool PATH`, default: `--tool`).
# PROFILE picks the cargo profile of the builds (default `dist` when Cargo.toml has it);
# bytes on the wire do not depend on it.
set -euo pipefail
cd "$(dirname "$0")/.."

tool="" runner="" import_tool="" sizes=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tool) tool=$2; shift 2 ;;
        --runner) runner=$2; shift 2 ;;
        --import-tool) import_tool=$2; shift 2 ;;
        [0-9]*) sizes+=("$1"); shift ;;
        *) echo "usage: $0 [--tool PATH] [--runner CMD] [--import-tool PATH] [N ...]" >&2; exit 2 ;;
    esac
done
[ ${#sizes[@]} -gt 0 ] || sizes=(2000 10000)

for tool_pkg in curl:curl /usr/bin/time:time; do
    command -v "${tool_pkg%%:*}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${tool_pkg##*:}" >/dev/null; }
done
scripts/deps.sh >/dev/null

profile=${PROFILE:-release}
[ -n "${PROFILE:-}" ] || ! grep -q '^\[profile\.dist\]' Cargo.toml || profile=dist
target_dir=${CARGO_TARGET_DIR:-target}
pdir=$profile
[ "$profile" != dev ] || pdir=debug
if [ -z "$tool" ]; then
    cargo build --locked --profile "$profile" -p mailcow-ldap-sync --bin mailcow-ldap-sync --features gzip >&2
    tool="$target_dir/$pdir/mailcow-ldap-sync"
fi
cargo build --locked --profile "$profile" -p sync-test-support --bin bench >&2
bench="$target_dir/$pdir/bench"

dir=$(mktemp -d /tmp/wire-bytes.XXXXXX)
trap 'rm -f "$dir"/*/hold; wait; rm -rf "$dir"' EXIT

stat_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

echo "| users | mailcow's answers | bytes from mailcow | of it the mailbox list | gzip answers | ratio | the tool's CPU | peak RSS |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
for n in "${sizes[@]}"; do
    served="$dir/$n"
    "$bench" serve --tool "${import_tool:-$tool}" --users "$n" --dir "$served" >"$dir/serve-$n.out" 2>"$dir/serve-$n.err" &
    for _ in $(seq 1200); do
        [ -e "$served/hold" ] && grep -q '^emulator: ' "$dir/serve-$n.out" && break
        sleep 0.5
    done
    config=$(sed -n 's/^config: //p' "$dir/serve-$n.out")
    emu=$(sed -n 's/^emulator: \([^ ]*\).*/\1/p' "$dir/serve-$n.out")
    [ -n "$config" ] && [ -n "$emu" ] || { cat "$dir/serve-$n.err" >&2; echo "bench serve did not come up" >&2; exit 1; }
    plain=""
    for mode in gzip plain; do
        if [ $mode = gzip ]; then
            curl -fsS -X POST "$emu/__emulator/gzip/on" >/dev/null
        else
            curl -fsS -X POST "$emu/__emulator/gzip/off" >/dev/null
        fi
        curl -fsS -X POST "$emu/__emulator/reset-stats" >/dev/null
        /usr/bin/time -v -o "$dir/time" $runner "$tool" -c "$config" -q >/dev/null 2>"$dir/pass.err" \
            || { cat "$dir/pass.err" >&2; echo "the pass failed" >&2; exit 1; }
        curl -fsS "$emu/__emulator/stats" >"$dir/stats.json"
        bytes=$(stat_of bytes_sent <"$dir/stats.json")
        gz=$(stat_of gzip_responses <"$dir/stats.json")
        requests=$(stat_of requests <"$dir/stats.json")
        writes=$(stat_of writes <"$dir/stats.json")
        [ "$writes" = 0 ] || echo "warning: the unchanged pass wrote $writes times" >&2
        # the mailbox list alone: one curl of it, as the tool asks (gzip or not)
        enc=()
        [ $mode = plain ] || enc=(-H "Accept-Encoding: gzip")
        key=$(sed -n 's/.*"mailcow_api_key": *"\([^"]*\)".*/\1/p' "$config")
        list=$(curl -fsS "${enc[@]}" -H "X-API-Key: $key" -o /dev/null -w '%{size_download}' "$emu/api/v1/get/mailbox/reduced")
        cpu=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 } END { printf "%.0f ms", s * 1000 }' "$dir/time")
        rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$dir/time")
        ratio="-"
        [ $mode = gzip ] && gzip_bytes=$bytes
        [ $mode = plain ] && ratio=$(awk -v g="$gzip_bytes" -v p="$bytes" 'BEGIN { printf "%.1f×", p / g }')
        printf '| %d | %s (%d requests) | %d | %d | %d | %s | %s | %.1f MiB |\n' "$n" \
            "$([ $mode = gzip ] && echo "gzip, as mailcow's nginx" || echo "plain (gzip off)")" "$requests" \
            "$bytes" "$list" "$gz" "$ratio" "$cpu" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
    done
    rm -f "$served/hold"
    wait
done
