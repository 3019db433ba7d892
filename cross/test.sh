#!/usr/bin/env bash
# Run the packaged artefacts (dist/, from cross/build.sh) the way they run on a NAS or router:
#
#   cross/test.sh [--unit] [x86_64|aarch64|armv7 ...]     (default: all three)
#
# Per target, from the binary inside the .tar.gz (after checking its .sha256), natively for
# x86_64 and under qemu-user (qemu-aarch64-static / qemu-arm-static) for the others:
#   1. `--version` prints "mailcow-ldap-sync <version>"
#   2. `init -c config.json` in an empty directory writes it, mode 0600, equal to the example
#      config shipped in the same archive
#   3. a full pass: tests/support's `demo` starts a real slapd (LDAPS with a generated CA) and
#      the mailcow emulator natively on 127.0.0.1 and runs the binary (through a qemu wrapper)
#      four times: import, nothing changed, one change and one removal with --json, status.
#      The outcome is checked, not only the exit code: the import creates mailboxes and exits
#      3 (one sample user is in a domain mailcow lacks, on purpose), the second pass writes
#      nothing and finds them all unchanged, the third updates one and disables one, status
#      counts the same managed mailboxes. This proves LDAPS (rustls/ring), SQLite and HTTP on
#      the target.
# --unit also runs the library's unit tests for the ARM targets under qemu (cargo zigbuild
#   test; slow: a debug build of all dependencies per target). On armv7 that is the check
#   for 64-bit assumptions (u64 quotas, i64 times) on a 32-bit target.
#
# Exits non-zero on the first failure. Needs what cross/deps.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh

unit=0
targets=()
for a in "$@"; do
    case "$a" in
        --unit) unit=1 ;;
        -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
        *) triple "$a" >/dev/null; targets+=("$a") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(x86_64 aarch64 armv7)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL [$t]: $*" >&2; exit 1; }

# The lines of one section of the demo's output ("=== <title>: ..." up to the next "===").
section() { awk -v s="=== $1" '/^=== /{ on = (index($0, s) == 1) } on' "$2"; }

echo "building the demo (slapd + mailcow emulator launcher, native)" >&2
cargo build --locked -q -p sync-test-support --bin demo
demo="$CARGO_TARGET_DIR/debug/demo"

for t in "${targets[@]}"; do
    qemu=$(runner "$t")
    [ -z "$qemu" ] || command -v "$qemu" >/dev/null || fail "$qemu missing (apt-get install qemu-user-static)"
    tgz=$(artefact "$t")
    [ -f "$tgz" ] || fail "$tgz missing: run cross/build.sh $t first"
    (cd dist && sha256sum --quiet -c "${tgz##*/}.sha256") || fail "checksum mismatch for $tgz"
    mkdir -p "$work/$t"
    tar -xzf "$tgz" -C "$work/$t"
    name=$(basename "$tgz" .tar.gz)
    bin="$work/$t/$name/mailcow-ldap-sync"
    for f in mailcow-ldap-sync README.md config.json; do
        [ -f "$work/$t/$name/$f" ] || fail "$f missing in $tgz"
    done
    run() { ${qemu:+"$qemu"} "$bin" "$@"; }
    echo "== $t ($(triple "$t"))${qemu:+ under $qemu}"

    # 1. --version
    out=$(run --version) || fail "--version exited $?"
    [ "$out" = "mailcow-ldap-sync $version" ] || fail "--version printed '$out'"
    echo "  --version: $out"

    # 2. init
    mkdir "$work/$t/init"
    # With -c: without it, and no ./config.json, init writes /etc/mailcow-ldap-sync/config.json.
    (cd "$work/$t/init" && run init -c config.json >"$work/$t/init.out" 2>&1) || fail "init exited $?: $(cat "$work/$t/init.out")"
    cfg="$work/$t/init/config.json"
    [ -f "$cfg" ] || fail "init wrote no config.json"
    [ "$(stat -c %a "$cfg")" = 600 ] || fail "config.json has mode $(stat -c %a "$cfg"), not 600"
    cmp -s "$cfg" "$work/$t/$name/config.json" || fail "init's config.json differs from the shipped example"
    echo "  init: config.json written, mode 0600, same as the shipped example"

    # 3. full pass against a real slapd and the emulator
    tool="$bin"
    if [ -n "$qemu" ]; then
        tool="$work/$t/mailcow-ldap-sync-$t"
        printf '#!/bin/sh\nexec %s %s "$@"\n' "$qemu" "$bin" >"$tool"
        chmod +x "$tool"
    fi
    log="$work/$t/demo.log"
    start=$(date +%s%N)
    "$demo" "$tool" >"$log" 2>&1 || { cat "$log" >&2; fail "demo exited $?"; }
    ms=$((($(date +%s%N) - start) / 1000000))
    if [ "${VERBOSE:-0}" = 1 ]; then sed 's/^/    | /' "$log"; fi

    s1=$(section "first pass" "$log")
    s2=$(section "second pass" "$log")
    s3=$(section "third pass" "$log")
    s4=$(section "status" "$log")
    [ -n "$s1" ] && [ -n "$s2" ] && [ -n "$s3" ] && [ -n "$s4" ] || { cat "$log" >&2; fail "demo output lacks a pass"; }
    summary() { grep -E '^mailcow-ldap-sync: [0-9]+ created' <<<"$1" || true; }
    sum1=$(summary "$s1") sum2=$(summary "$s2") sum3=$(summary "$s3")
    created=$(sed -nE 's/^mailcow-ldap-sync: ([0-9]+) created.*/\1/p' <<<"$sum1")
    [ -n "$created" ] && [ "$created" -gt 0 ] || { cat "$log" >&2; fail "first pass created nothing: '$sum1'"; }
    grep -q -- '--> exit code 3;' <<<"$s1" || { cat "$log" >&2; fail "first pass: expected exit code 3"; }
    [ "$(grep -c '^applied create ' <<<"$s1")" = "$created" ] || fail "first pass: 'applied create' lines != $created"
    grep -q "^mailcow-ldap-sync: 0 created, 0 updated, 0 disabled, 0 deleted, $created unchanged," <<<"$sum2" \
        || { cat "$log" >&2; fail "second pass not unchanged: '$sum2'"; }
    grep -q -- '--> exit code 3; requests to mailcow: [0-9]* (0 writes)' <<<"$s2" || fail "second pass wrote to mailcow"
    grep -q "^mailcow-ldap-sync: 0 created, 1 updated, 1 disabled, 0 deleted," <<<"$sum3" \
        || { cat "$log" >&2; fail "third pass: '$sum3'"; }
    grep -q '"exit_code": 3' <<<"$s3" || fail "third pass: no JSON report with exit_code 3"
    # the update, the disable, and the disable's offboarding (sync.offboard's default)
    [ "$(grep -c '"status": "applied"' <<<"$s3")" = 3 ] || fail "third pass: JSON report does not have 3 applied changes"
    grep -q "^managed mailboxes: $created " <<<"$s4" || { cat "$log" >&2; fail "status does not count $created managed mailboxes"; }
    grep -q -- '--> exit code 0;' <<<"$s4" || fail "status did not exit 0"
    ldap=$(section "check" "$log" | grep -o '^\[ ok \] LDAP ldaps://[^:]*' || true)
    echo "  pass 1: $sum1"
    echo "  pass 2: $sum2"
    echo "  pass 3: $sum3 (JSON report: 3 applied)"
    echo "  status: $(grep '^managed mailboxes' <<<"$s4")"
    echo "  demo with this binary: $ms ms${ldap:+ (check: $ldap ok)}"
done

if [ $unit = 1 ]; then
    for t in "${targets[@]}"; do
        [ "$t" != x86_64 ] || continue
        var="CARGO_TARGET_$(triple "$t" | tr 'a-z-' 'A-Z_')_RUNNER"
        echo "== unit tests on $t under $(runner "$t")"
        start=$(date +%s)
        # a subshell so the runner variable stays local; the last lines show the test summary
        if ! (export "$var=$(runner "$t")"; cargo_for "$t" test -p mailcow-ldap-sync --lib -q 2>&1 | tail -n 4); then
            fail "unit tests failed"
        fi
        echo "  unit tests on $t: passed in $(($(date +%s) - start)) s"
    done
fi
echo "cross/test.sh: all passed (${targets[*]})"
