#!/usr/bin/env bash
# The whole test suite: unit tests, the emulator's and the slapd launcher's own tests,
# and the integration tests that run the built binary against a real slapd and the
# mailcow emulator. Installs the system packages it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo test --workspace --locked "$@"
