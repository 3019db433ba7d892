#!/usr/bin/env bash
# The whole test suite: unit tests, the emulator's and the slapd launcher's own tests,
# and the integration tests that run the built binary against a real slapd and the
# mailcow emulator, or a real Samba AD domain controller. Installs the system packages it
# needs first (slapd, ldap-utils, openssl; samba and its LDB tools).
#
# Ends with one line counting every test of every test binary: "tests: N passed, M failed"
# (also written to target/test-summary.txt, for .ci/run to repeat as its last line).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/deps-samba.sh
mkdir -p target
log=target/test-output.txt
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
summary=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log")
echo "$summary" | tee target/test-summary.txt
exit "$status"
