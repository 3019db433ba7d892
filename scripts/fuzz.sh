#!/usr/bin/env bash
# A short fuzzing session (fuzz/README.md): every fuzz target for SECONDS each (default 60).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: config ldap_values mailcow_responses
#
# Needs a nightly toolchain and cargo-fuzz, and installs both when missing. The corpus kept in
# the repository (fuzz/corpus/<target>/) is only read; new inputs go to fuzz/work/<target>/ and
# crashes to fuzz/artifacts/<target>/ (both ignored by git). Exits non-zero when a target
# crashed or broke an invariant, naming the input that did it.
#
# Environment: FUZZ_JOBS (parallel processes per target, with libFuzzer's -fork; default 1),
# FUZZ_SANITIZER (default none: the code under test is safe Rust, and without AddressSanitizer
# it runs about twice as fast; "address" is the cargo-fuzz default), FUZZ_SKIP_CHECKS
# (fuzz/README.md: fuzzing past a known bug).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config ldap_values mailcow_responses)
fi
jobs="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

cd fuzz
# Release build with debug assertions (integer overflow checks included).
cargo +nightly fuzz build --sanitizer "$sanitizer" --debug-assertions

failed=()
for target in "${targets[@]}"; do
    if [ ! -d "corpus/$target" ]; then
        echo "unknown target $target (no fuzz/corpus/$target/)" >&2
        exit 2
    fi
    mkdir -p "work/$target" "artifacts/$target"
    extra=()
    if [ -f "dict/$target.dict" ]; then
        extra+=("-dict=dict/$target.dict")
    fi
    if [ "$jobs" -gt 1 ]; then
        extra+=("-fork=$jobs")
    fi
    echo "=== $target: ${seconds}s"
    # The first corpus directory receives new inputs; the kept corpus is read only.
    if cargo +nightly fuzz run --sanitizer "$sanitizer" --debug-assertions "$target" \
        "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${extra[@]}"; then
        echo "=== $target: no crash"
    else
        echo "=== $target: CRASHED (input in fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]}; see fuzz/README.md for how to reproduce and keep the input" >&2
    exit 1
fi
echo "no crash in ${targets[*]} (${seconds}s each)"
