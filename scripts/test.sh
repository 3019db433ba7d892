#!/usr/bin/env bash
# The whole test suite: unit tests, the emulator's and the slapd launcher's own tests,
# and the integration tests that run the built binary against a real slapd and the
# mailcow emulator, or a real Samba AD domain controller. Installs the system packages it
# needs first (slapd, ldap-utils, openssl; samba and its LDB tools).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/deps-samba.sh
cargo test --workspace --locked "$@"
