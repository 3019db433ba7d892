#!/usr/bin/env bash
# A real demo pass on this machine: builds the tool, starts a throwaway slapd with sample
# users and the mailcow API emulator, and runs three passes (import, unchanged, a change)
# showing the summary, the request counts and the JSON report. Installs slapd if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --locked --bin mailcow-ldap-sync
cargo run --locked -q -p sync-test-support --bin demo -- target/debug/mailcow-ldap-sync
