#!/usr/bin/env bash
# The CI part of the static builds (issue 6), for .ci/run or a CI job of its own:
#
#   cross/ci.sh
#
# 1. `cargo tree -i openssl-sys` and `-i aws-lc-rs` (and aws-lc-sys) must find nothing: both
#    must fail with "did not match any packages"; anything else fails this script
# 2. the x86_64 musl artefact: built and checked (statically linked, x86-64, stripped) by
#    cross/build.sh, then run by cross/test.sh: --version, init, the full pass against a
#    real slapd and the mailcow emulator
# 3. the same for aarch64 under qemu-aarch64-static (CROSS_CI_AARCH64=0 skips it)
# 4. THIRD-PARTY-NOTICES.txt matches the dependency tree (cross/notices.sh --check), and
#    the .ipk/.apk packages cross/build.sh made from those archives pass cross/pkgtest.sh
#    (control data, file list, modes, --version of the packaged binary)
#
# Installs what it needs (cross/deps.sh: musl-tools, qemu-user-static, file, slapd, pip
# ziglang, cargo-zigbuild). Timings on 2 cores: cross/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
t0=$(date +%s)
stamp() { echo "cross/ci.sh: $* ($(($(date +%s) - t0)) s)" >&2; }

targets=(x86_64)
[ "${CROSS_CI_AARCH64:-1}" = 0 ] || targets+=(aarch64)

cross/deps.sh "${targets[@]}"
stamp "tools ready"

for crate in openssl-sys aws-lc-rs aws-lc-sys; do
    if out=$(cargo tree --locked --workspace --target all -e normal,build,dev -i "$crate" 2>&1); then
        echo "cross/ci.sh: $crate is in the dependency tree:" >&2
        echo "$out" >&2
        exit 1
    fi
    if ! grep -q "did not match any packages" <<<"$out"; then
        echo "cross/ci.sh: \`cargo tree -i $crate\` failed for another reason:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "cargo tree -i $crate: not in the tree"
done

cross/notices.sh --check
cross/build.sh "${targets[@]}"
stamp "built ${targets[*]}"
cross/test.sh "${targets[@]}"
cross/pkgtest.sh
stamp "done"
