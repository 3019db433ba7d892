#!/usr/bin/env bash
# Build the static release artefacts and package them:
#
#   cross/build.sh [x86_64|aarch64|armv7 ...]      (default: all three)
#
# writes dist/mailcow-ldap-sync-<version>-<target>.tar.gz (one directory with the binary,
# README.md, config.json (the example config), LICENSE, THIRD-PARTY-NOTICES.txt and
# systemd/ (service and timer)) and a .sha256 beside each, checks with `file` that each
# binary is statically linked, stripped and of the right architecture, then makes the
# .ipk and .apk packages from the archives (cross/package.sh).
#
#   x86_64   x86_64-unknown-linux-musl        stable, musl-gcc (Debian musl-tools)
#   aarch64  aarch64-unknown-linux-musl       stable, cargo zigbuild (zig as cc and linker)
#   armv7    armv7-unknown-linux-musleabihf   nightly, -Zbuild-std (no rust-std is served
#            for this target), cargo zigbuild, -C link-self-contained=no (zig brings crt1.o)
#
# Install the tools with cross/deps.sh. Environment:
#   CARGO_TARGET_DIR  where cargo builds (default: target/)
#   PROFILE           cargo profile (default: dist, see [profile.dist] in Cargo.toml)
#   CROSS_FEATURES    cargo features of the binary (default none; `gzip`: Cargo.toml)
#   LIBSQLITE3_FLAGS  SQLite compile options (default in cross/common.sh: SQLite parts the
#                     tool never uses left out, ~380 KiB; "" for libsqlite3-sys's defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh
[ -n "$version" ] || die "no version in Cargo.toml"
# Reproducible archives: file times from the last commit, not from now.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)}"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64 aarch64 armv7)

# What `file` must say about each binary.
arch_of() {
    case "$1" in
        x86_64) echo "ELF 64-bit LSB .*x86-64" ;;
        aarch64) echo "ELF 64-bit LSB .*ARM aarch64" ;;
        armv7) echo "ELF 32-bit LSB .*ARM, EABI5" ;;
    esac
}

build() {
    # every target: nightly -Zbuild-std and cargo zigbuild (cross/common.sh, cargo_for)
    command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild missing (cross/deps.sh)"
    if ! nightly_ready; then
        [ "$1" != armv7 ] || die "the nightly toolchain with rust-src is missing (cross/deps.sh armv7)"
        echo "cross/build.sh: WARNING: no nightly toolchain with rust-src here: $1 is built with stable's prebuilt std, larger than the size budget (cross/deps.sh installs nightly where it can be fetched)" >&2
        [ "$1" != x86_64 ] || command -v musl-gcc >/dev/null || die "musl-gcc missing: apt-get install musl-tools"
    fi
    cargo_for "$1" build --profile "$profile" -p mailcow-ldap-sync --bin mailcow-ldap-sync \
        ${features:+--features "$features"}
}

verify() {
    local t=$1 bin=$2 desc
    desc=$(file -b "$bin")
    grep -Eq "$(arch_of "$t")" <<<"$desc" || die "$bin: wrong architecture: $desc"
    grep -Eq "statically linked|static-pie linked" <<<"$desc" || die "$bin: not statically linked: $desc"
    ! grep -q "interpreter" <<<"$desc" || die "$bin: has an ELF interpreter: $desc"
    grep -q ", stripped" <<<"$desc" || die "$bin: not stripped: $desc"
    if [ "$t" = armv7 ] && command -v readelf >/dev/null; then
        # hard-float ABI (musleabihf): arguments in VFP registers
        readelf -A "$bin" | grep -q "Tag_ABI_VFP_args: VFP registers" || die "$bin: not hard-float"
    fi
    echo "  file: $desc"
}

package() {
    local t=$1 tr name stage bin
    tr=$(triple "$t")
    name="mailcow-ldap-sync-$version-$tr"
    bin="$CARGO_TARGET_DIR/$tr/$profile/mailcow-ldap-sync"
    [ -x "$bin" ] || die "$bin was not built"
    verify "$t" "$bin"
    # The example config must be the template compiled into this binary (`init` writes that
    # one): catches sources edited while the build ran.
    python3 -c 'import sys; sys.exit(open(sys.argv[2], "rb").read() not in open(sys.argv[1], "rb").read())' \
        "$bin" src/config.template.json || die "$bin was built from another src/config.template.json; build again"
    stage=$(mktemp -d)
    mkdir "$stage/$name"
    install -m 0755 "$bin" "$stage/$name/mailcow-ldap-sync"
    install -m 0644 README.md "$stage/$name/README.md"
    # the example config; mode 0600 because a filled-in copy holds the bind password and API key
    install -m 0600 src/config.template.json "$stage/$name/config.json"
    # licences: the project's, and those of the code linked in (written now, from Cargo.lock)
    install -m 0644 LICENSE "$stage/$name/LICENSE"
    cross/notices.sh -o "$stage/$name/THIRD-PARTY-NOTICES.txt" >/dev/null
    install -d -m 0755 "$stage/$name/systemd"
    install -m 0644 cross/systemd/mailcow-ldap-sync.service cross/systemd/mailcow-ldap-sync.timer "$stage/$name/systemd/"
    mkdir -p dist
    tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        -cf - "$name" | gzip -n -9 >"dist/$name.tar.gz.tmp"
    mv "dist/$name.tar.gz.tmp" "dist/$name.tar.gz"
    (cd dist && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
    rm -rf "$stage"
    awk -v f="dist/$name.tar.gz" -v b="$(stat -c %s "$bin")" -v a="$(stat -c %s "dist/$name.tar.gz")" \
        'BEGIN { printf "  %s: binary %d bytes (%.2f MiB), archive %d bytes\n", f, b, b / 1048576, a }'
}

for t in "${targets[@]}"; do triple "$t" >/dev/null; done
for t in "${targets[@]}"; do
    echo "== $t ($(triple "$t")), profile $profile" >&2
    start=$(date +%s)
    build "$t"
    echo "  built in $(($(date +%s) - start)) s"
    package "$t"
done
# .ipk and .apk packages from the archives just written
cross/package.sh "${targets[@]}"
