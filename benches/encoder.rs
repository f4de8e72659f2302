//! Encoder throughput: tokens per second through `hybridb::Encoder` (tokenization, length-sorted
//! padded batches, ONNX Runtime, the BGE-M3 heads), then the ingest rate of the same texts into
//! a fresh database (encode + upsert + one commit). `benches/encoder.py` is the Python baseline
//! on the same model and texts, and `scripts/bench-encoder.sh` runs both and compares them.
//!
//! `cargo bench --bench encoder -- [--model DIR] [--texts FILE] [--batch 16] [--threads 2]
//! [--max-length 512] [--repeat 3] [--ingest 1]` (defaults: `target/bench-model/m3-heads`,
//! `target/bench-texts.txt`, one text per line). Prints a JSON line for encoding (best of
//! `--repeat` runs after a warm-up), then one for ingest unless `--ingest 0`.

use std::path::PathBuf;
use std::time::Instant;

use hybridb::{Database, Document, Encoder, EncoderOptions, Precision, Schema, TextKind};
use serde_json::json;

mod common;

use common::{arg, arg_str};

/// Texts encoded once before timing (session start-up, thread pools, allocations).
const WARMUP_TEXTS: usize = 64;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = |name: &str, default: &str| arg_str(name).map_or(root.join(default), PathBuf::from);
    let model = path("--model", "target/bench-model/m3-heads");
    let texts_file = path("--texts", "target/bench-texts.txt");
    let (batch, threads) = (arg("--batch", 16), arg("--threads", 2));
    let (max_length, repeat) = (arg("--max-length", 512), arg("--repeat", 3).max(1));
    let ingest = arg("--ingest", 1) != 0;

    let content = std::fs::read_to_string(&texts_file)
        .unwrap_or_else(|e| panic!("{}: {e}", texts_file.display()));
    let texts: Vec<&str> = content.lines().collect();
    let options = EncoderOptions {
        max_length,
        batch_size: batch,
        // Batches of `batch` texts whatever their length, as in the Python baseline.
        max_batch_tokens: batch * max_length,
        intra_threads: threads,
        ..EncoderOptions::default()
    };
    let encoder =
        Encoder::open(&model, options).unwrap_or_else(|e| panic!("{}: {e}", model.display()));

    encoder
        .encode(&texts[..texts.len().min(WARMUP_TEXTS)], TextKind::Passage)
        .unwrap();
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        out = encoder.encode(&texts, TextKind::Passage).unwrap();
        best = best.min(start.elapsed().as_secs_f64());
    }
    let tokens: usize = out.iter().map(|e| e.tokens).sum();
    let dim = encoder.info().colbert_dim.unwrap_or(1);
    println!(
        "{}",
        json!({
            "impl": "rust",
            "texts": texts.len(),
            "tokens": tokens,
            "seconds": (best * 1e4).round() / 1e4,
            "tokens_per_s": (tokens as f64 / best * 10.0).round() / 10.0,
            "sparse_terms": out.iter().map(|e| e.sparse.as_ref().map_or(0, |s| s.indices().len())).sum::<usize>(),
            "colbert_rows": out.iter().map(|e| e.colbert.as_ref().map_or(0, |c| c.len() / dim)).sum::<usize>(),
        })
    );
    if ingest {
        ingest_rate(&encoder, &texts);
    }
}

/// Encodes the texts as documents into a fresh database, upserts them and commits once.
fn ingest_rate(encoder: &Encoder, texts: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let schema = encoder.schema(Schema::new().text(), Precision::F16);
    let db = Database::open_or_create(dir.path(), schema).unwrap();
    let mut docs: Vec<Document> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Document::new(format!("t{i}")).text(*t))
        .collect();
    let start = Instant::now();
    encoder.encode_documents(&mut docs, &mut |_| {}).unwrap();
    let encoded = start.elapsed().as_secs_f64();
    let mut writer = db.writer().unwrap();
    for d in docs {
        writer.upsert(d).unwrap();
    }
    writer.commit().unwrap();
    let total = start.elapsed().as_secs_f64();
    let n = texts.len() as f64;
    println!(
        "{}",
        json!({
            "ingest_docs": texts.len(),
            "encode_commit_seconds": (total * 1e3).round() / 1e3,
            "encode_commit_docs_per_s": (n / total * 10.0).round() / 10.0,
            "commit_seconds": ((total - encoded) * 1e3).round() / 1e3,
            "commit_docs_per_s": (n / (total - encoded)).round(),
        })
    );
}
