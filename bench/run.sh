#!/usr/bin/env bash
# The benchmarks of issue 7 in one command: builds the tool and the bench harness (release, or
# the `dist` profile when Cargo.toml has one), installs what is missing (slapd, ldap-utils,
# curl, GNU time, sqlite3, hyperfine), and prints the tables: import / import --json / unchanged /
# daily full / 1 %-changed pass per size with wall, CPU, peak RSS and requests by kind, the floor
# (paged ldapsearch + one curl of get/mailbox/all) and ours/floor, bytes per user, the emulator
# alone, import concurrency and `--version` time. See bench/README.md.
#
#   bench/run.sh                      # 1000 and 10000 users (≈ 40 s after the build)
#   bench/run.sh 100000               # the big one (≈ 2 min; import against the emulator without delay)
#   bench/run.sh 1000 10000 100000    # the whole table
#   bench/run.sh 10k --reps 9 --no-conc --no-version
#   bench/run.sh incr 10k 100k        # incremental passes (issue 16): --full / unchanged / 1 % changed
#   bench/run.sh incr 10k 100k --sessionlog 5000
#
# Sizes accept a `k` suffix and come first. Other arguments go to the harness (`bench run --help`):
#   --reps R            repetitions of the unchanged and 1 %-changed passes (default 5; 3 at ≥ 50k)
#   --import-reps R     repetitions of the initial import (default 3; 1 at ≥ 50k)
#   --conc-users N      users of the concurrency import (default 500)
#   --conc-delay-ms MS  emulator delay per request there (default 20; real add/mailbox ≈ 120)
#   --conc 1,2,4,8      sync.concurrency values to try
#   --no-conc / --no-version
# CARGO_TARGET_DIR is honoured (the default is cargo's `target/`).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=run
if [ "${1:-}" = incr ]; then
    mode=incr
    shift
fi
sizes=()
extra=()
for a in "$@"; do
    if [[ $a =~ ^[0-9]+[kK]?$ ]] && { [ ${#extra[@]} -eq 0 ] || [[ ${extra[-1]} != --* ]]; }; then
        sizes+=("$a")
    else
        extra+=("$a")
    fi
done
if [ ${#sizes[@]} -eq 0 ]; then
    if [ $mode = incr ]; then sizes=(10000 100000); else sizes=(1000 10000); fi
fi

# System packages, only when missing.
missing=()
[ -x /usr/sbin/slapd ] || missing+=(slapd)
command -v ldapsearch >/dev/null 2>&1 || missing+=(ldap-utils)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/bin/curl ] || missing+=(curl)
[ -x /usr/bin/time ] || missing+=(time)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
command -v hyperfine >/dev/null 2>&1 || missing+=(hyperfine)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The shipped profile: `dist` if the manifest defines one, else `release`.
if grep -q '^\[profile\.dist\]' Cargo.toml; then
    profile=dist
else
    profile=release
fi
target_dir=${CARGO_TARGET_DIR:-target}
echo "building the tool and the harness (profile $profile, target dir $target_dir) ..." >&2
cargo build --locked --profile "$profile" -p mailcow-ldap-sync --bin mailcow-ldap-sync >&2
cargo build --locked --profile "$profile" -p sync-test-support --bin bench >&2

tool="$target_dir/$profile/mailcow-ldap-sync"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    rev="$rev (with uncommitted changes)"
fi
echo "commit: $rev; profile: $profile; sizes: ${sizes[*]}" >&2
sizes_csv=$(IFS=,; echo "${sizes[*]}")
echo "source: commit $rev, profile $profile"
exec "$target_dir/$profile/bench" $mode --tool "$tool" --sizes "$sizes_csv" "${extra[@]}"
