#!/usr/bin/env bash
# Install what the Samba AD tests need, only when something is missing: a real Samba Active
# Directory domain controller, its LDB tools, the OpenLDAP client tools and openssl.
# Debian/Ubuntu; run as root or with sudo available. ≈ 15 s and 21 packages on Debian 12.
# `samba-vfs-modules` is needed even for an LDAP-only DC: provisioning fails without
# acl_xattr.so. `samba-ad-dc` and `winbind` are not needed. Installing does not start any
# Samba service; the tests start their own DCs (tests/support/src/samba.rs).
set -euo pipefail

packages=(samba samba-common-bin samba-dsdb-modules samba-vfs-modules samba-ad-provision ldb-tools ldap-utils openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
