//! Ingest throughput and query latency per leg and fused, on korquad-v1-dev and on a synthetic
//! clustered set. Run with `cargo bench --bench engine [-- --synthetic N --dim D --queries Q]`.
//! Latencies are single-threaded, one query at a time; exact brute-force dense search is measured
//! in the same run as the baseline the HNSW figures are compared with.

use std::time::Instant;

use hybridb::{
    Database, DenseMode, Document, HnswParams, Leg, Metric, Query, Schema, dataset, npy,
};

mod common;

use common::{Rng, latency};

struct Case<'a> {
    name: &'a str,
    db: &'a Database,
    texts: &'a [String],
    vectors: &'a [Vec<f32>],
}

fn report(case: &Case<'_>, n_queries: usize) {
    let n = n_queries.min(case.texts.len());
    let q = |i: usize| {
        Query::new()
            .text(case.texts[i].clone())
            .dense(case.vectors[i].clone())
            .k(10)
            .fetch_documents(false)
    };
    const BOTH: &[Leg] = &[Leg::Dense, Leg::Bm25];
    let rows: [(&str, &[Leg], DenseMode); 5] = [
        ("dense exact (baseline)", &[Leg::Dense], DenseMode::Exact),
        ("dense hnsw", &[Leg::Dense], DenseMode::Approximate),
        ("dense auto", &[Leg::Dense], DenseMode::Auto),
        ("bm25", &[Leg::Bm25], DenseMode::Auto),
        (
            "hybrid: dense auto + bm25, default fusion",
            BOTH,
            DenseMode::Auto,
        ),
    ];
    let mut exact_p50 = 0.0;
    println!("\n### {}\n", case.name);
    println!("| query | p50 ms | p99 ms | p50 / exact dense p50 |");
    println!("|---|---|---|---|");
    for (name, legs, mode) in rows {
        let (p50, p99) = latency(n, |i| {
            let query = q(i).legs(legs).dense_mode(mode);
            std::hint::black_box(case.db.search(&query).unwrap());
        });
        if exact_p50 == 0.0 {
            exact_p50 = p50;
        }
        println!("| {name} | {p50:.3} | {p99:.3} | {:.2} |", p50 / exact_p50);
    }
    // HNSW recall against exact search on the same queries.
    let mut found = 0;
    for i in 0..n {
        let base = Query::new()
            .dense(case.vectors[i].clone())
            .k(10)
            .fetch_documents(false);
        let exact = case
            .db
            .search(&base.clone().dense_mode(DenseMode::Exact))
            .unwrap();
        let approx = case
            .db
            .search(&base.dense_mode(DenseMode::Approximate))
            .unwrap();
        found += approx
            .iter()
            .filter(|h| exact.iter().any(|e| e.id == h.id))
            .count();
    }
    println!(
        "\nHNSW Recall@10 against exact search: {:.4} ({n} queries)",
        found as f64 / (n * 10) as f64
    );
}

fn ingest(db: &Database, docs: Vec<Document>) -> f64 {
    let n = docs.len();
    let start = Instant::now();
    let mut w = db.writer().unwrap();
    for d in docs {
        w.upsert(d).unwrap();
    }
    w.commit().unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ingest: {n} documents in {secs:.2} s = {:.0} docs/s (one commit: store, vectors, HNSW, BM25)",
        n as f64 / secs
    );
    secs
}

fn korquad(root: &std::path::Path, n_queries: usize) {
    let docs = dataset::DatasetDir::new(root).documents().unwrap();
    let queries = dataset::read_queries(&root.join("queries.jsonl")).unwrap();
    let qdense = npy::read_f32_matrix(&root.join("queries.dense.npy")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new()
        .dense(qdense.dim, Metric::Cosine)
        .hnsw(hnsw_params())
        .sparse()
        .text();
    let db = Database::open_or_create(dir.path(), schema).unwrap();
    println!(
        "\n## korquad-v1-dev ({} documents, {}-d, {} queries)\n",
        docs.len(),
        qdense.dim,
        queries.len()
    );
    ingest(&db, docs);
    let texts: Vec<String> = queries.iter().map(|q| q.text.clone()).collect();
    let vectors: Vec<Vec<f32>> = (0..qdense.rows)
        .map(|i| qdense.row(i).unwrap().to_vec())
        .collect();
    report(
        &Case {
            name: "korquad-v1-dev",
            db: &db,
            texts: &texts,
            vectors: &vectors,
        },
        n_queries,
    );
}

fn synthetic(n: usize, dim: usize, n_queries: usize) {
    let mut rng = Rng(42);
    let clusters = 200;
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| rng.normal()).collect())
        .collect();
    let syllables: Vec<char> = (0..400)
        .map(|i| char::from_u32(0xAC00 + i * 27).unwrap())
        .collect();
    let make = |rng: &mut Rng, i: usize| {
        let c = &centres[i % clusters];
        let mut v: Vec<f32> = c.iter().map(|x| x + 0.4 * rng.normal()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        let words: Vec<String> = (0..12)
            .map(|_| {
                (0..3)
                    .map(|_| syllables[(rng.next() % 400) as usize])
                    .collect()
            })
            .collect();
        (v, words.join(" "))
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(
        dir.path(),
        Schema::new()
            .dense(dim, Metric::Cosine)
            .hnsw(hnsw_params())
            .text(),
    )
    .unwrap();
    println!(
        "\n## synthetic: {n} documents x {dim}-d, 200 clusters, 12 three-syllable words each\n"
    );
    let docs = (0..n)
        .map(|i| {
            let (v, text) = make(&mut rng, i);
            Document::new(format!("s{i}")).text(text).dense(v)
        })
        .collect();
    ingest(&db, docs);
    let (vectors, texts): (Vec<_>, Vec<_>) = (0..n_queries).map(|i| make(&mut rng, i * 7)).unzip();
    report(
        &Case {
            name: "synthetic",
            db: &db,
            texts: &texts,
            vectors: &vectors,
        },
        n_queries,
    );
    let size = db.stats().unwrap().disk_bytes;
    println!("\ndisk: {:.1} MiB", size as f64 / (1 << 20) as f64);
    // Opening checks every file (store pages, vector row checksums, text index checksums).
    db.checkpoint().unwrap();
    drop(db);
    let t = std::time::Instant::now();
    let db = Database::open(dir.path()).unwrap();
    let open = t.elapsed().as_secs_f64();
    drop(db);
    let t = std::time::Instant::now();
    let report = Database::verify(dir.path()).unwrap();
    let verify = t.elapsed().as_secs_f64();
    assert!(report.is_ok(), "{:?}", report.problems);
    println!(
        "open with checks: {open:.2} s ({:.0} MiB/s of disk); verify: {verify:.2} s",
        size as f64 / (1 << 20) as f64 / open
    );
}

/// The defaults, or `--m`, `--efc` and `--ef` from the command line.
fn hnsw_params() -> HnswParams {
    let d = HnswParams::default();
    HnswParams {
        m: common::arg("--m", d.m),
        ef_construction: common::arg("--efc", d.ef_construction),
        ef_search: common::arg("--ef", d.ef_search),
        ..d
    }
}

fn main() {
    let arg = common::arg;
    let n = arg("--synthetic", 100_000);
    let dim = arg("--dim", 384);
    let n_queries = arg("--queries", 1000);
    println!(
        "# hybridb engine benchmark ({} threads available)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/korquad-v1-dev");
    if root.join("corpus.jsonl").exists() {
        korquad(&root, n_queries);
    } else {
        println!("\nskipping korquad-v1-dev: {} is absent", root.display());
    }
    if n > 0 {
        synthetic(n, dim, n_queries);
    }
}
