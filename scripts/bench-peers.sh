#!/usr/bin/env bash
# hybridb against the embedded peers (LanceDB, Milvus Lite, Chroma) on the same datasets, the
# same vectors and the same machine, in one run; writes a Markdown table of the results.
#
#   scripts/bench-peers.sh                      # korquad, 100k x 384, 100k x 1024
#   SCALES=korquad,10k-384 QUERIES=100 scripts/bench-peers.sh
#   SCALES=1m-384 SYSTEMS=hybridb,lancedb scripts/bench-peers.sh
#
# SCALES: korquad and/or synthetic sets named <docs>-<dim> (10k, 100k, 1m). SYSTEMS: any of
# hybridb, hybridb-words (hybridb with the whitespace-word BM25 analyzer instead of Hangul
# bigrams), hybridb-dense-bm25 (hybridb without the sparse vectors and leg), lancedb, milvus (newest Milvus Lite), milvus25 (Milvus Lite 2.5, the C++ engine),
# chroma. QUERIES: timed queries per query type and system, spread evenly over the query file
# (default 1000: every query of a synthetic set); MILVUS_QUERIES for Milvus Lite 3.x, whose
# query time grows linearly with N (default 200). OUT: results directory.
# Each system runs in its own process, one after another, so peak RAM is its own.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scales="${SCALES:-korquad,100k-384,100k-1024}"
systems="${SYSTEMS:-hybridb,lancedb,milvus,milvus25,chroma}"
queries="${QUERIES:-1000}"
milvus_queries="${MILVUS_QUERIES:-200}"
out="${OUT:-$root/target/peers}"
data="$out/data"
results="$out/results"
work="$out/work"
mkdir -p "$data" "$results" "$work"

bash scripts/peers/setup.sh --milvus25
py="$root/.venv-peers/bin/python"
cargo bench --bench peers --no-run

count() {  # 100k -> 100000, 1m -> 1000000
  local n="${1%[km]}"
  case "$1" in *k) echo $((n * 1000)) ;; *m) echo $((n * 1000000)) ;; *) echo "$1" ;; esac
}

for scale in ${scales//,/ }; do
  if [[ "$scale" == korquad ]]; then
    dir="$root/../shared/datasets/korquad-v1-dev"
    if [[ ! -f "$dir/corpus.jsonl" ]]; then
      echo "skipping korquad: $dir is absent" >&2
      continue
    fi
    exact="$data/korquad-v1-dev.exact10.jsonl"
    "$py" scripts/peers/exact.py "$dir" --out "$exact"
  else
    docs="$(count "${scale%-*}")"
    dim="${scale#*-}"
    dir="$data/syn-$scale"
    if [[ ! -f "$dir/dataset.json" ]]; then
      "$py" scripts/peers/gen_synthetic.py --docs "$docs" --dim "$dim" --queries 1000 \
        --out "$dir"
    fi
    exact="$dir/queries.exact10.jsonl"
    "$py" scripts/peers/exact.py "$dir"
  fi
  for system in ${systems//,/ }; do
    result="$results/$scale.$system.json"
    rm -rf "$work/$system"
    echo "== $scale: $system" >&2
    case "$system" in
      hybridb | hybridb-words | hybridb-dense-bm25)
        analyzer=hangul-bigram
        [[ "$system" == hybridb-words ]] && analyzer=default
        legs=()
        [[ "$system" == hybridb-dense-bm25 ]] && legs=(--no-sparse)
        cargo bench --bench peers -- --data "$dir" --exact "$exact" --queries "$queries" \
          --work "$work/$system" --out "$result" --analyzer "$analyzer" "${legs[@]}" >/dev/null
        rm -rf "$work/$system" ;;
      milvus25)
        "$root/.venv-peers-milvus25/bin/python" scripts/peers/run_peer.py --system milvus \
          --data "$dir" --exact "$exact" --queries "$queries" --work "$work/$system" \
          --out "$result" ;;
      milvus)
        "$py" scripts/peers/run_peer.py --system milvus --data "$dir" --exact "$exact" \
          --queries "$milvus_queries" --work "$work/$system" --out "$result" ;;
      *)
        "$py" scripts/peers/run_peer.py --system "$system" --data "$dir" --exact "$exact" \
          --queries "$queries" --work "$work/$system" --out "$result" ;;
    esac
  done
done
"$py" scripts/peers/report.py "$results" --out "$out/TABLE.md"
echo "table: $out/TABLE.md" >&2
