#!/usr/bin/env bash
# Builds hybridb, ingests a dataset folder (korquad-v1-dev from ../shared by default) into a fresh
# database, and evaluates the dense leg, the BM25 leg and their fusion on its queries.
# Usage: scripts/quickstart.sh [DATASET_DIR] [DB_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:-../shared/datasets/korquad-v1-dev}
db=${2:-target/quickstart-db}
if [ ! -f "$dataset/corpus.jsonl" ]; then
  echo "no dataset at $dataset; falling back to the bundled fixtures/tiny" >&2
  dataset=fixtures/tiny
fi
cargo build --release --locked
bin=target/release/hybridb
rm -rf "$db" "$db-model"
"$bin" ingest --db "$db" --dataset "$dataset"
"$bin" stats --db "$db"
"$bin" eval --db "$db" --queries "$dataset"
# The same text, encoded in-process by the fixture BGE-M3 model (random weights: the point is
# the pipeline, not the scores). Real models: hybridb model fetch, then --model DIR.
scripts/setup-onnxruntime.sh
"$bin" ingest --db "$db-model" --dataset "$dataset" --model fixtures/model/m3 --max-length 128
"$bin" eval --db "$db-model" --queries "$dataset" --model fixtures/model/m3 --max-length 128
