#!/usr/bin/env bash
# Fuzzes every reader (fuzz/fuzz_targets/*, via src/fuzzing.rs) for SECONDS seconds each, one
# target at a time, starting from seeds written from fixtures/ and small databases built from
# fixtures/tiny. Crash, timeout and out-of-memory inputs are copied to fixtures/fuzz/<target>/,
# which tests/fuzz_regressions.rs replays in every `cargo test`.
#
# Usage: scripts/fuzz.sh [SECONDS [TARGET...]]   (default 30 s, every target)
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, sanitizer coverage);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Set FUZZ_SANITIZER=none to build
# without AddressSanitizer (faster runs, fewer memory errors detected).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
# The readers get their input through scratch files (src/fuzzing.rs): keep them in memory.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ]; then export TMPDIR=/dev/shm; fi

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

seeds=target/fuzz-seeds
rm -rf "$seeds"
HYBRIDB_FUZZ_CORPUS="$PWD/$seeds" cargo test --locked --test fuzz_regressions -- \
    --ignored write_seed_corpora --quiet

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
cargo fuzz build --sanitizer "$sanitizer" --codegen-units 16

failed=()
for t in "${targets[@]}"; do
    echo "== $t: ${secs}s"
    mkdir -p "fuzz/corpus/$t" "$seeds/$t"
    rm -rf "fuzz/artifacts/$t"
    # Leak checks are off: the HNSW loader leaks its small loader object by design.
    if ! cargo fuzz run --sanitizer "$sanitizer" --codegen-units 16 "$t" \
        "fuzz/corpus/$t" "$seeds/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
        -detect_leaks=0 -print_final_stats=1; then
        failed+=("$t")
    fi
    for f in fuzz/artifacts/"$t"/{crash,oom,timeout,leak}-*; do
        [ -f "$f" ] || continue
        mkdir -p "fixtures/fuzz/$t"
        cp "$f" "fixtures/fuzz/$t/$(basename "$f")"
        echo "kept fixtures/fuzz/$t/$(basename "$f")"
    done
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs kept under fixtures/fuzz/; replay with" \
        "cargo test --test fuzz_regressions, or cargo fuzz run <target> <file>)"
    exit 1
fi
echo "no crashes in: ${targets[*]}"
