#!/usr/bin/env bash
# The whole product on this machine: builds the broker and email-reports binaries (release),
# then `email-reports dev` starts a local 3-broker cluster and one service instance on it and
# prints the webhook and report URLs. Ctrl-C stops everything; data stays under ./dev-email.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p broker -p email-reports
exec target/release/email-reports dev --broker-bin target/release/broker "$@"
