#!/usr/bin/env bash
# Install the system packages the demo and the tests need (a real OpenLDAP slapd and its
# tools, and faketime), only when they are missing. Debian/Ubuntu; run as root or with sudo available.
set -euo pipefail

missing=()
[ -x /usr/sbin/slapd ] || missing+=(slapd)
command -v ldapmodify >/dev/null 2>&1 || missing+=(ldap-utils)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# moves the clock of a pass for the grace-period tests (LD_PRELOAD: glibc builds only)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
