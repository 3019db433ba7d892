#!/usr/bin/env bash
# Check the packages cross/package.sh wrote into dist/ (run by cross/ci.sh after the build):
#
#   cross/pkgtest.sh
#
# For every .ipk and .apk in dist/ it unpacks the package and checks
#   - the control data: name, version (<version>-<release>, apk: -r<release>), architecture
#     (the one in the file name, and of the binary's CPU family: `file` on the binary),
#     dependencies (ipk: ca-bundle; apk: ca-certificates-bundle), ipk: conffiles lists the
#     config; apk: a datahash
#   - the file list, exactly, with owner root and the modes (binary 0755, config 0600, the
#     rest 0644, the Alpine periodic script 0755), and the .ipk's outer members
#   - the contents: the binary prints its version (natively, or under qemu-user when the
#     package is for aarch64/armv7 and qemu is there), the config is the template the binary
#     writes, keep.d names the state file of the shipped config, the notices are the ones in
#     the repository
# and that every archive in dist/ has its packages (all opkg arches of its target and one
# Alpine .apk). Exits non-zero on the first failure. Needs tar, gzip, file, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh
export LC_ALL=C

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "cross/pkgtest.sh: $*" >&2; exit 1; }
n=0

# the architecture family of a package arch: x86_64, aarch64 or armv7
family() {
    case "$1" in
        x86_64) echo x86_64 ;;
        aarch64 | aarch64_*) echo aarch64 ;;
        armv7 | arm_cortex-a*_*vfp* | arm_cortex-a9_neon) echo armv7 ;;
        *) echo unknown ;;
    esac
}
file_re() {
    case "$1" in
        x86_64) echo "ELF 64-bit LSB .*x86-64.*static" ;;
        aarch64) echo "ELF 64-bit LSB .*ARM aarch64.*static" ;;
        armv7) echo "ELF 32-bit LSB .*ARM, EABI5.*static" ;;
    esac
}
# the state file the shipped config uses, resolved against the config's directory
state_path=$(python3 -c 'import json, os, sys; s = json.load(open(sys.argv[1]))["state_file"]; print(os.path.normpath(os.path.join("/etc/mailcow-ldap-sync", s)))' src/config.template.json)

# check_files <listing from tar -tv> <expected "mode path" lines>
check_files() {
    local got want
    got=$(awk '$1 !~ /^d/ { p = $6; sub(/^\.\//, "", p); print $1, $2, p }' "$1" | sort)
    want=$(sort <<<"$2")
    [ "$got" = "$want" ] || fail "$pkg: file list or modes differ:
$(diff <(echo "$want") <(echo "$got") | sed 's/^/    /')"
    # directories: root-owned, 0755
    if awk '$1 ~ /^d/ && ($1 != "drwxr-xr-x" || $2 != "root/root")' "$1" | grep -q .; then
        fail "$pkg: a directory is not root/root 0755: $(awk '$1 ~ /^d/ && ($1 != "drwxr-xr-x" || $2 != "root/root")' "$1")"
    fi
}

# check_contents <unpacked data dir> <arch family>
check_contents() {
    local root=$1 fam=$2 bin desc out r
    bin=$root/usr/bin/mailcow-ldap-sync
    desc=$(file -b "$bin")
    grep -Eq "$(file_re "$fam")" <<<"$desc" || fail "$pkg: binary is not a static $fam binary: $desc"
    r=$(runner "$fam")
    if [ -z "$r" ] || command -v "$r" >/dev/null; then
        out=$($r "$bin" --version) || fail "$pkg: --version failed"
        [ "$out" = "mailcow-ldap-sync $version" ] || fail "$pkg: --version printed '$out'"
        ran="--version ok${r:+ (under $r)}"
    else
        ran="--version not run ($r missing)"
    fi
    cmp -s "$root/etc/mailcow-ldap-sync/config.json" src/config.template.json || fail "$pkg: config.json is not the template"
    cmp -s "$root/usr/share/doc/mailcow-ldap-sync/LICENSE" LICENSE || fail "$pkg: LICENSE differs"
    cmp -s "$root/usr/share/doc/mailcow-ldap-sync/THIRD-PARTY-NOTICES.txt" THIRD-PARTY-NOTICES.txt \
        || fail "$pkg: THIRD-PARTY-NOTICES.txt differs from the repository's (cross/notices.sh --check)"
    cmp -s "$root/usr/share/doc/mailcow-ldap-sync/README.md" README.md || fail "$pkg: README.md differs"
}

common_files="-rwxr-xr-x root/root usr/bin/mailcow-ldap-sync
-rw------- root/root etc/mailcow-ldap-sync/config.json
-rw-r--r-- root/root usr/share/doc/mailcow-ldap-sync/README.md
-rw-r--r-- root/root usr/share/doc/mailcow-ldap-sync/LICENSE
-rw-r--r-- root/root usr/share/doc/mailcow-ldap-sync/THIRD-PARTY-NOTICES.txt"

shopt -s nullglob
for pkg in dist/*.ipk; do
    base=$(basename "$pkg" .ipk)
    arch=${base#mailcow-ldap-sync_"$version"-"${PKG_RELEASE:-1}"_}
    [ "$arch" != "$base" ] || fail "$pkg: not named mailcow-ldap-sync_$version-${PKG_RELEASE:-1}_<arch>.ipk"
    fam=$(family "$arch")
    [ "$fam" != unknown ] || fail "$pkg: architecture $arch is none cross/ builds"
    d=$work/$base
    mkdir -p "$d/outer" "$d/control" "$d/data"
    tar -tzf "$pkg" | sort >"$d/members"
    [ "$(cat "$d/members")" = "$(printf './control.tar.gz\n./data.tar.gz\n./debian-binary')" ] \
        || fail "$pkg: outer members are $(tr '\n' ' ' <"$d/members")"
    tar -xzf "$pkg" -C "$d/outer"
    [ "$(cat "$d/outer/debian-binary")" = "2.0" ] || fail "$pkg: debian-binary is not 2.0"
    tar -xzf "$d/outer/control.tar.gz" -C "$d/control"
    field() { sed -n "s/^$1: //p" "$d/control/control"; }
    [ "$(field Package)" = mailcow-ldap-sync ] || fail "$pkg: Package: $(field Package)"
    [ "$(field Version)" = "$version-${PKG_RELEASE:-1}" ] || fail "$pkg: Version: $(field Version)"
    [ "$(field Architecture)" = "$arch" ] || fail "$pkg: Architecture: $(field Architecture), file name says $arch"
    [ "$(field Depends)" = ca-bundle ] || fail "$pkg: Depends: $(field Depends)"
    [ "$(field License)" = MIT ] || fail "$pkg: License: $(field License)"
    [ "$(cat "$d/control/conffiles")" = /etc/mailcow-ldap-sync/config.json ] || fail "$pkg: conffiles: $(cat "$d/control/conffiles")"
    tar -tvzf "$d/outer/data.tar.gz" >"$d/list"
    check_files "$d/list" "$common_files
-rw-r--r-- root/root usr/share/mailcow-ldap-sync/crontab.example
-rw-r--r-- root/root lib/upgrade/keep.d/mailcow-ldap-sync"
    tar -xzf "$d/outer/data.tar.gz" -C "$d/data"
    check_contents "$d/data" "$fam"
    grep -v '^#' "$d/data/lib/upgrade/keep.d/mailcow-ldap-sync" | grep -qx "$state_path" \
        || fail "$pkg: keep.d does not list the state file $state_path"
    grep -q '^\*/5 .* /usr/bin/mailcow-ldap-sync -q ' "$d/data/usr/share/mailcow-ldap-sync/crontab.example" \
        || fail "$pkg: crontab.example has no cron line for /usr/bin/mailcow-ldap-sync"
    echo "  ok $pkg ($(stat -c %s "$pkg") bytes): $(field Package) $(field Version) $(field Architecture), Depends: $(field Depends), 7 files, $ran"
    n=$((n + 1))
done

for pkg in dist/*.apk; do
    base=$(basename "$pkg" .apk)
    arch=${base##*-alpine-}
    [ "$arch" != "$base" ] || fail "$pkg: not named ...-alpine-<arch>.apk"
    case "$arch" in x86_64 | aarch64 | armv7) ;; *) fail "$pkg: $arch is not an Alpine arch cross/ builds" ;; esac
    fam=$(family "$arch")
    d=$work/$base
    mkdir -p "$d/data"
    # a v2 apk is gzip streams one after another (control, data), read by tar as one archive
    tar -tvzf "$pkg" --ignore-zeros --warning=no-unknown-keyword >"$d/list"
    [ "$(awk 'NR == 1 { print $6 }' "$d/list")" = .PKGINFO ] || fail "$pkg: .PKGINFO is not the first member"
    tar -xzf "$pkg" --ignore-zeros --warning=no-unknown-keyword -C "$d/data"
    info() { sed -n "s/^$1 = //p" "$d/data/.PKGINFO"; }
    [ "$(info pkgname)" = mailcow-ldap-sync ] || fail "$pkg: pkgname $(info pkgname)"
    [ "$(info pkgver)" = "$version-r${PKG_RELEASE:-1}" ] || fail "$pkg: pkgver $(info pkgver)"
    [ "$(info arch)" = "$arch" ] || fail "$pkg: arch $(info arch), file name says $arch"
    [ "$(info depend)" = ca-certificates-bundle ] || fail "$pkg: depend $(info depend)"
    [ "$(info license)" = MIT ] || fail "$pkg: license $(info license)"
    grep -Eq '^datahash = [0-9a-f]{64}$' "$d/data/.PKGINFO" || fail "$pkg: no datahash"
    grep -v ' \.PKGINFO$' "$d/list" >"$d/list.data"
    check_files "$d/list.data" "$common_files
-rwxr-xr-x root/root usr/share/mailcow-ldap-sync/periodic-15min.example"
    check_contents "$d/data" "$fam"
    grep -q '^exec /usr/bin/mailcow-ldap-sync -q ' "$d/data/usr/share/mailcow-ldap-sync/periodic-15min.example" \
        || fail "$pkg: periodic-15min.example does not run /usr/bin/mailcow-ldap-sync"
    echo "  ok $pkg ($(stat -c %s "$pkg") bytes): $(info pkgname) $(info pkgver) $(info arch), depend: $(info depend), 6 files, $ran"
    n=$((n + 1))
done

# every archive has its packages
for t in x86_64 aarch64 armv7; do
    [ -f "$(artefact "$t")" ] || continue
    a=$(artefact "$t")
    case "$t" in
        x86_64) want="x86_64" ;;
        aarch64) want="aarch64_generic aarch64_cortex-a53 aarch64_cortex-a72 aarch64_cortex-a76" ;;
        armv7) want="arm_cortex-a5_vfpv4 arm_cortex-a7_neon-vfpv4 arm_cortex-a7_vfpv4 arm_cortex-a8_vfpv3 arm_cortex-a9_neon arm_cortex-a9_vfpv3-d16 arm_cortex-a15_neon-vfpv4" ;;
    esac
    for arch in $want; do
        [ -f "dist/mailcow-ldap-sync_${version}-${PKG_RELEASE:-1}_$arch.ipk" ] || fail "$a has no .ipk for $arch"
    done
    [ -f "dist/mailcow-ldap-sync-${version}-r${PKG_RELEASE:-1}-alpine-$t.apk" ] || fail "$a has no Alpine .apk"
done
[ $n -gt 0 ] || fail "no packages in dist/ (cross/build.sh makes them)"
echo "cross/pkgtest.sh: $n packages ok"
