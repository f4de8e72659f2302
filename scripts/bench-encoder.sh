#!/usr/bin/env bash
# Encoder throughput, Rust (benches/encoder.rs) against Python onnxruntime + tokenizers + numpy
# (benches/encoder.py), in one run on the same model, texts, batch size, threads and max_length.
# Usage: scripts/bench-encoder.sh   (environment: THREADS=2 BATCH=16 MAX_LENGTH=512 REPEAT=3 TEXTS=2000;
# REPEAT is the number of rounds, each timing both sides once)
# Writes, if missing: .venv-fixtures (fixtures/model/requirements.txt), the random-weight bench
# model target/bench-model/{m3,m3-heads} (hidden 384, 6 layers: fixtures/model/make_model.py
# --bench-model) and target/bench-texts-N.txt (korquad-v1-dev paragraphs, sentences and questions
# from ../shared/datasets mixed with English fixture sentences; synthetic only without korquad).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2} BATCH=${BATCH:-16} MAX_LENGTH=${MAX_LENGTH:-512} REPEAT=${REPEAT:-3}
N_TEXTS=${TEXTS:-2000}
PY=.venv-fixtures/bin/python
MODEL=target/bench-model/m3-heads
TEXT_FILE=target/bench-texts-$N_TEXTS.txt

if [[ ! -x $PY ]]; then
    python3 -m venv .venv-fixtures
    .venv-fixtures/bin/pip install --quiet -r fixtures/model/requirements.txt
fi
[[ -f $MODEL/model.onnx ]] || $PY fixtures/model/make_model.py --bench-model target/bench-model
if [[ ! -f $TEXT_FILE ]]; then
    $PY - "$TEXT_FILE" "$N_TEXTS" ../shared/datasets/korquad-v1-dev <<'PY'
import json, pathlib, random, sys
sys.path.insert(0, "fixtures/model")
import make_model  # the fixture corpus: English, Korean and mixed sentences
out, n, kq = pathlib.Path(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
rng, lines = random.Random(7), make_model.corpus()
def fixture(k):
    return " ".join(rng.choice(lines) for _ in range(k))
def jsonl(name):
    return [json.loads(l)["text"] for l in (kq / name).open(encoding="utf-8")]
if (kq / "corpus.jsonl").is_file() and (kq / "queries.jsonl").is_file():
    paras, questions = jsonl("corpus.jsonl"), jsonl("queries.jsonl")
    def text(i):
        p, r = rng.choice(paras), i % 10
        if r < 2:  # a whole paragraph, often past 512 tokens
            return p
        if r < 4:  # one to three sentences
            s = p.split(". ")
            j = rng.randrange(len(s))
            return ". ".join(s[j:j + rng.randint(1, 3)])
        if r < 7:
            return rng.choice(questions)
        if r < 9:
            return fixture(rng.randint(1, 12))
        return fixture(rng.randint(1, 3)) + " " + p[:rng.randint(50, 400)]
else:
    def text(i):
        return fixture(rng.choice([1, 2, 4, 8, 16, 32]))
texts = [" ".join(text(i).split()) for i in range(n)]  # one line each, whatever the separators
out.write_text("\n".join(texts) + "\n", encoding="utf-8")
PY
fi

# Every thread pool gets THREADS: ONNX Runtime intra-op (set by both benches), the tokenizers'
# rayon pool and numpy's BLAS (the Python heads).
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
# Built once, before anything is timed; the binary is run directly so that nothing rebuilds
# between rounds.
BIN=$(cargo bench --bench encoder --no-run --message-format=json-render-diagnostics | $PY -c '
import json, sys
print([m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "encoder" and m["executable"]][-1])')
ARGS=(--model "$MODEL" --texts "$TEXT_FILE" --batch "$BATCH" --threads "$THREADS"
      --max-length "$MAX_LENGTH" --repeat 1)
echo "model $MODEL, $TEXT_FILE, batch $BATCH, threads $THREADS, max_length $MAX_LENGTH, $REPEAT rounds" >&2
# Rounds alternate the two sides, so that load from elsewhere on the machine falls on both;
# each side reports its best round. The Rust ingest figures come from the last round.
OUT=target/bench-encoder.jsonl
: > "$OUT"
for round in $(seq "$REPEAT"); do
    $PY benches/encoder.py "${ARGS[@]}" | tee -a "$OUT" >&2
    "$BIN" "${ARGS[@]}" --ingest "$((round == REPEAT))" | tee -a "$OUT" >&2
done

$PY - "$OUT" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
best = {}
for r in lines:
    if "impl" in r and (r["impl"] not in best or r["seconds"] < best[r["impl"]]["seconds"]):
        best[r["impl"]] = r
py, rs = best["python"], best["rust"]
ingest = [r for r in lines if "ingest_docs" in r][-1]
print("\n| side | texts | tokens | best s | tokens/s | sparse terms | colbert rows |")
print("|---|---|---|---|---|---|---|")
for r in (py, rs):
    print(f"| {r['impl']} | {r['texts']} | {r['tokens']} | {r['seconds']:.2f} | {r['tokens_per_s']:,.0f} "
          f"| {r['sparse_terms']} | {r['colbert_rows']} |")
print(f"\nRust / Python tokens/s: {rs['tokens_per_s'] / py['tokens_per_s']:.3f}")
if (py["texts"], py["tokens"], py["colbert_rows"]) != (rs["texts"], rs["tokens"], rs["colbert_rows"]):
    print("WARNING: the two sides did not encode the same tokens")
print(f"Rust ingest of {ingest['ingest_docs']} texts (encode_documents + upsert + one commit): "
      f"{ingest['encode_commit_seconds']:.2f} s = {ingest['encode_commit_docs_per_s']:,.1f} docs/s; "
      f"upsert + commit alone {ingest['commit_seconds']:.3f} s = {ingest['commit_docs_per_s']:,.0f} docs/s")
PY
