#!/usr/bin/env bash
# Size and start-up budget of the artefacts in dist/ (from cross/build.sh):
#
#   cross/size.sh            sizes vs budget, and `--version` start time (native x86_64)
#   cross/size.sh --deps     also the cost of each heavy dependency (a non-stripped build of
#                            the x86_64 artefact: cargo bloat per crate, and a link map for
#                            the C parts, which cargo bloat counts as [Unknown]); slow, it
#                            builds the dist profile once more with strip off
#
# Budgets (issue 14.7): x86_64 <= 3.0 MiB, aarch64 <= 2.5 MiB, armv7 <= 2.1 MiB stripped.
# `--version` started natively <= 5 ms. Exits 1 if a budget is exceeded.
# --deps needs cargo-bloat (cargo install --locked cargo-bloat); the start time uses
# hyperfine when installed (apt-get install hyperfine), else a loop timed with date.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh

deps=0
[ "${1:-}" != --deps ] || deps=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
over=0

budget_of() { case "$1" in x86_64) echo 3145728 ;; aarch64) echo 2621440 ;; armv7) echo 2202009 ;; *) echo "" ;; esac; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }

echo "stripped binary sizes (dist/, profile $profile):"
printf '  %-32s %10s %9s %10s  %s\n' target bytes MiB budget verdict
for t in x86_64 aarch64 armv7; do
    tgz=$(artefact "$t")
    if [ ! -f "$tgz" ]; then
        printf '  %-32s %s\n' "$(triple "$t")" "(no $tgz; run cross/build.sh $t)"
        continue
    fi
    mkdir -p "$work/$t"
    tar -xzf "$tgz" -C "$work/$t"
    bin=$(echo "$work/$t"/*/mailcow-ldap-sync)
    file -b "$bin" | grep -q ', stripped' || die "$bin is not stripped"
    size=$(stat -c %s "$bin")
    budget=$(budget_of "$t")
    verdict="-"
    if [ -n "$budget" ]; then
        if [ "$size" -le "$budget" ]; then
            verdict="ok ($(((budget - size) / 1024)) KiB to spare)"
        else
            verdict="OVER by $(((size - budget) / 1024)) KiB"
            over=1
        fi
        budget="$(mib "$budget") MiB"
    fi
    printf '  %-32s %10d %9s %10s  %s\n' "$(triple "$t")" "$size" "$(mib "$size")" "${budget:--}" "$verdict"
    printf '  %-32s %10d (archive)\n' "" "$(stat -c %s "$tgz")"
done

# Start-up: `--version` natively (x86_64 artefact).
if [ -x "$work/x86_64/mailcow-ldap-sync-$version-$(triple x86_64)/mailcow-ldap-sync" ]; then
    bin="$work/x86_64/mailcow-ldap-sync-$version-$(triple x86_64)/mailcow-ldap-sync"
    echo
    echo "start-up: \`mailcow-ldap-sync --version\`, native x86_64 (budget 5 ms):"
    if command -v hyperfine >/dev/null; then
        hyperfine -N --warmup 20 --runs 500 --export-json "$work/hf.json" "$bin --version" 2>&1 \
            | sed -n 's/^ *\(Time\|Range\).*/  &/p' | sed 's/^  *//; s/^/  /'
        mean_us=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["results"][0]["mean"]*1e6))' "$work/hf.json")
    else
        n=500
        start=$(date +%s%N)
        for _ in $(seq $n); do "$bin" --version >/dev/null; done
        mean_us=$((($(date +%s%N) - start) / n / 1000))
        echo "  $n runs (fork+exec from bash included)"
    fi
    echo "  mean: $mean_us µs -> $([ "$mean_us" -le 5000 ] && echo ok || { over=1; echo OVER; })"
fi

if [ $deps = 1 ]; then
    command -v cargo-bloat >/dev/null || die "cargo-bloat missing: cargo install --locked cargo-bloat"
    t=x86_64-unknown-linux-musl
    map="$work/link.map"
    # its own target directory: the changed flags would otherwise replace the artefact build
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/size-deps"
    echo
    echo "cost per dependency: $t, profile $profile, not stripped (cargo bloat --crates):"
    # strip off and a link map: the profile changes, so this rebuilds every crate once.
    env "CARGO_PROFILE_$(tr 'a-z-' 'A-Z_' <<<"$profile")_STRIP=false" \
        CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C link-arg=-Wl,-Map=$map" \
        cargo bloat --locked --profile "$profile" --target "$t" --bin mailcow-ldap-sync --crates -n 20 \
        2>/dev/null | sed 's/^/  /'
    echo
    echo "  [Unknown] above is mostly C and assembly; by input file from the link map"
    echo "  (.text, .rodata, .data; after --gc-sections):"
    python3 - "$map" <<'EOF'
import re, sys, collections
text = open(sys.argv[1], errors="replace").read()
body = text.split("Linker script and memory map", 1)[-1]
sizes = collections.Counter()
# " .text.foo   0xADDR   0xSIZE  /path/lib.a(member.o)"; long section names wrap the rest
# onto the next line.
pat = re.compile(r"^ (\.(?:text|rodata|data)[^\s]*)\s*\n?\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)", re.M)
for m in pat.finditer(body):
    size, src = int(m.group(2), 16), m.group(3)
    if "libsqlite3" in src or "sqlite3.o" in src:
        group = "SQLite (libsqlite3-sys, C)"
    elif "ring" in src:
        group = "ring (C and assembly)"
    elif re.search(r"libc\.a|/musl/|crt1|crti|crtn|rcrt1", src):
        group = "musl libc"
    elif "libunwind" in src or "libgcc" in src or "compiler_builtins" in src:
        group = "compiler runtime"
    elif ".rcgu.o" in src or src.endswith(".rlib") or ".rlib(" in src:
        group = "Rust (all crates, LTO)"
    else:
        group = "other: " + src.rsplit("/", 1)[-1][:40]
    sizes[group] += size
for group, size in sizes.most_common(8):
    print(f"  {size / 1024:9.1f} KiB  {group}")
EOF
fi

if [ $over = 1 ]; then
    echo "cross/size.sh: over budget" >&2
    exit 1
fi
