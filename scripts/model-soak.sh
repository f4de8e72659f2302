#!/usr/bin/env bash
# Model soak: runs the model-based test (tests/model.rs) over many seeds, with more steps and
# child-process kills, closing and verifying the database every 50 actions.
# Usage: scripts/model-soak.sh [SEEDS] [STEPS]   (default 20 seeds of 5000 steps)
# Environment: MODEL_SEED_BASE (first seed; random by default), MODEL_CRASHES (kills per run,
# default 15), MODEL_VERIFY_EVERY (default 50), MODEL_POOL, MODEL_TRACE=1.
# The dev profile keeps overflow checks and debug assertions on.
# A failing run prints its seed, the command that replays it and its last steps, and the soak
# stops there.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-20}
steps=${2:-5000}
base=${MODEL_SEED_BASE:-$(( (RANDOM << 15) | RANDOM ))}
export MODEL_STEPS=$steps
export MODEL_CRASHES=${MODEL_CRASHES:-15}
export MODEL_VERIFY_EVERY=${MODEL_VERIFY_EVERY:-50}
export RUST_BACKTRACE=${RUST_BACKTRACE:-0}
cargo test --locked --features failpoints --test model --no-run
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for i in $(seq 0 $((seeds - 1))); do
  seed=$((base + i))
  echo "seed $seed ($((i + 1))/$seeds)"
  if MODEL_SEED=$seed cargo test --locked --features failpoints --test model -- \
      --nocapture model_ >"$log" 2>&1; then
    grep -E "steps in" "$log" || true
  else
    grep -vE "^\s*(Compiling|Finished|Running)" "$log" | tail -n 150
    echo "---"
    grep -E -A1 "panicked at|FAILED with" "$log" || true
    echo "soak failed at MODEL_SEED=$seed MODEL_STEPS=$steps (replay command above)"
    exit 1
  fi
done
echo "soak passed: seeds $base..$((base + seeds - 1)), $steps steps each"
