#!/usr/bin/env bash
# Crash soak: 200 SIGKILL cycles of a committing child process (tests/crash.rs), each followed
# by a reopen that checks every completed commit in every leg. Usage: scripts/crash-soak.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
HYBRIDB_CRASH_CYCLES=${1:-200} cargo test --release --locked --test crash -- crash_cycles --nocapture
