//! hybridb's side of the comparison with the embedded peers (scripts/peers/): one dataset in the
//! shared layout, through the library API, written as one JSON result in the schema that
//! `scripts/peers/report.py` reads. It times the same queries as `run_peer.py`; the hybrid
//! query fuses the top 10 of each leg by RRF, as LanceDB's does.
//!
//! `cargo bench --bench peers -- --data DIR --out FILE [--exact FILE] [--queries Q]
//! [--batch N] [--work DIR] [--m M --efc EF --ef EF] [--analyzer default|hangul-bigram]
//! [--no-sparse] [--sweep]` (with the `default` analyzer, the result's system is
//! `hybridb-words`; with `--no-sparse`, which leaves out the sparse vectors and leg,
//! `hybridb-dense-bm25`; `--sweep` prints the hit@10 of hybrid variants over every query
//! instead of timing)

use std::path::{Path, PathBuf};
use std::time::Instant;

use hybridb::{
    Analyzer, Database, Fusion, HnswParams, Leg, Metric, Query, Schema, SparseVector, dataset, npy,
};
use serde_json::{Value, json};

mod common;

use common::{arg, arg_str};

/// `VmRSS` or `VmHWM` of this process in bytes.
fn memory(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

struct Queries {
    texts: Vec<String>,
    relevant: Vec<Vec<String>>,
    dense: Vec<Vec<f32>>,
    sparse: Vec<Option<SparseVector>>,
    exact: Vec<Vec<usize>>,
}

fn load_queries(data: &Path, exact: &Path) -> Queries {
    let records = dataset::read_queries(&data.join("queries.jsonl")).expect("queries.jsonl");
    let m = npy::read_f32_matrix(&data.join("queries.dense.npy")).expect("queries.dense.npy");
    let dense = (0..m.rows).map(|i| m.row(i).unwrap().to_vec()).collect();
    let sparse_path = data.join("queries.sparse.jsonl");
    let sparse = if sparse_path.exists() {
        dataset::read_sparse_jsonl(&sparse_path)
            .expect("queries.sparse.jsonl")
            .map(|r| {
                let r = r.expect("a sparse line");
                SparseVector::new(r.indices, r.values).ok()
            })
            .collect()
    } else {
        vec![None; records.len()]
    };
    let exact = std::fs::read_to_string(exact)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/peers/exact.py)", exact.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("an exact10 line"))
        .collect();
    Queries {
        texts: records.iter().map(|q| q.text.clone()).collect(),
        relevant: records.into_iter().map(|q| q.relevant).collect(),
        dense,
        sparse,
        exact,
    }
}

/// The timed queries and the warm-up ones, as `run_peer.py` picks them: `n` spread evenly over
/// the `total` (numpy's `unique(linspace(0, total - 1, n).astype(int))`), and 20 of the rest.
fn pick_queries(n: usize, total: usize) -> (Vec<usize>, Vec<usize>) {
    let n = n.min(total);
    let mut timed: Vec<usize> = match n {
        0 => Vec::new(),
        1 => vec![0],
        _ => {
            let step = (total - 1) as f64 / (n - 1) as f64;
            (0..n)
                .map(|i| {
                    if i + 1 == n {
                        total - 1
                    } else {
                        (i as f64 * step) as usize
                    }
                })
                .collect()
        }
    };
    timed.dedup();
    let rest: Vec<usize> = (0..total)
        .filter(|i| timed.binary_search(i).is_err())
        .collect();
    let warm = if rest.is_empty() { &timed } else { &rest };
    let warm = warm.iter().copied().take(20).collect();
    (timed, warm)
}

/// p50 and p99 (ms) of `run` over the `timed` queries after the `warm` ones, and the hits.
fn timed(
    timed: &[usize],
    warm: &[usize],
    mut run: impl FnMut(usize) -> Vec<String>,
) -> (Value, Vec<Vec<String>>) {
    for &i in warm {
        run(i);
    }
    let mut times = Vec::with_capacity(timed.len());
    let mut hits = Vec::with_capacity(timed.len());
    for &i in timed {
        let start = Instant::now();
        let ids = run(i);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        hits.push(ids);
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (json!({"p50": at(0.5), "p99": at(0.99)}), hits)
}

/// Per query, 1 when a relevant id is among its hits.
fn hit_list(hits: &[Vec<String>], relevant: &[Vec<String>]) -> Vec<u8> {
    hits.iter()
        .zip(relevant)
        .map(|(h, r)| u8::from(h.iter().any(|id| r.contains(id))))
        .collect()
}

/// Share of queries with a relevant id among their hits.
fn hit_rate(hits: &[Vec<String>], relevant: &[Vec<String>]) -> f64 {
    let found: usize = hit_list(hits, relevant).iter().map(|&h| h as usize).sum();
    found as f64 / hits.len().max(1) as f64
}

fn main() {
    let data = PathBuf::from(arg_str("--data").expect("--data DIR"));
    let out = PathBuf::from(arg_str("--out").expect("--out FILE"));
    let exact_path =
        arg_str("--exact").map_or_else(|| data.join("queries.exact10.jsonl"), PathBuf::from);
    let batch = arg("--batch", 100_000);
    let analyzer: Analyzer = arg_str("--analyzer")
        .map_or(Ok(Analyzer::HangulBigram), |a| a.parse())
        .expect("--analyzer default|hangul-bigram");
    let d = HnswParams::default();
    let params = HnswParams {
        m: arg("--m", d.m),
        ef_construction: arg("--efc", d.ef_construction),
        ef_search: arg("--ef", d.ef_search),
        ..d
    };

    // Without the sparse leg, hybridb stores and searches what LanceDB's hybrid does.
    let no_sparse = std::env::args().any(|a| a == "--no-sparse");
    let dir = DatasetDir(&data);
    let set = dataset::DatasetDir::new(&data);
    let docs = if no_sparse {
        dataset::read_documents(&set.corpus(), set.corpus_dense().as_deref(), None)
    } else {
        set.documents()
    }
    .expect("the corpus");
    let queries = load_queries(&data, &exact_path);
    let n_queries = arg("--queries", 500).min(queries.texts.len());
    let ids: Vec<String> = docs.iter().map(|d| d.id().to_string()).collect();
    let dim = docs[0].dense_vector().map_or(0, <[f32]>::len);
    let has_sparse = docs[0].sparse_vector().is_some();
    let raw_bytes: u64 = docs.len() as u64 * dim as u64 * 4 + dir.text_bytes();
    // The sparse vectors as given: a u32 id and an f32 weight per term.
    let raw_sparse_bytes: u64 = docs
        .iter()
        .filter_map(|d| d.sparse_vector())
        .map(|s| s.indices().len() as u64 * 8)
        .sum();
    let baseline_rss = memory("VmRSS:");

    let work = arg_str("--work").map_or_else(|| tempfile::tempdir().unwrap().keep(), PathBuf::from);
    let db_dir = work.join("hybridb");
    if db_dir.exists() {
        std::fs::remove_dir_all(&db_dir).unwrap();
    }
    let mut schema = Schema::new()
        .dense(dim, Metric::Cosine)
        .hnsw(params)
        .text_with(analyzer);
    if has_sparse {
        schema = schema.sparse();
    }
    let n_docs = docs.len();
    let db = Database::open_or_create(&db_dir, schema).unwrap();
    let start = Instant::now();
    let mut docs = docs.into_iter().peekable();
    while docs.peek().is_some() {
        let mut w = db.writer().unwrap();
        for doc in docs.by_ref().take(batch) {
            w.upsert(doc).unwrap();
        }
        w.commit().unwrap();
        eprintln!("hybridb: {} documents committed", db.len());
    }
    let ingest_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    db.checkpoint().unwrap();
    let index_build_s = start.elapsed().as_secs_f64();
    drop(db);
    let disk_bytes = du(&db_dir);
    let parts: Vec<String> = ["docs.redb", "dense", "text", "sparse"]
        .iter()
        .map(|p| format!("{p} {:.1} MiB", du(&db_dir.join(p)) as f64 / 1048576.0))
        .collect();

    let start = Instant::now();
    let db = Database::open(&db_dir).unwrap();
    let open_s = start.elapsed().as_secs_f64();
    let search = |q: Query| -> Vec<String> {
        db.search(&q.k(10))
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect()
    };
    if std::env::args().any(|a| a == "--sweep") {
        sweep(&db, &queries, has_sparse);
        drop(db);
        if arg_str("--work").is_none() {
            let _ = std::fs::remove_dir_all(&work);
        }
        return;
    }
    let (picked, warm) = pick_queries(n_queries, queries.texts.len());
    let n = picked.len();
    let (dense_lat, dense_hits) = timed(&picked, &warm, |i| {
        search(
            Query::new()
                .dense(queries.dense[i].clone())
                .legs(&[Leg::Dense]),
        )
    });
    let (text_lat, text_hits) = timed(&picked, &warm, |i| {
        search(
            Query::new()
                .text(queries.texts[i].clone())
                .legs(&[Leg::Bm25]),
        )
    });
    let mut legs = vec![Leg::Dense, Leg::Bm25];
    if has_sparse {
        legs.push(Leg::Sparse);
    }
    let hybrid = |i: usize, depth: Option<usize>| {
        let mut q = Query::new()
            .dense(queries.dense[i].clone())
            .text(queries.texts[i].clone())
            .legs(&legs)
            .fusion(Fusion::RRF_60);
        if let Some(s) = queries.sparse[i].as_ref().filter(|_| has_sparse) {
            q = q.sparse(s.clone());
        }
        if let Some(d) = depth {
            q = q.depth(d);
        }
        search(q)
    };
    // Each leg gives its top 10, as in LanceDB's hybrid query; then the library's default
    // depth (100 per leg), for the notes.
    let (hybrid_lat, hybrid_hits) = timed(&picked, &warm, |i| hybrid(i, Some(10)));
    let (deep_lat, deep_hits) = timed(&picked, &warm, |i| hybrid(i, None));
    let mut found = 0;
    for (hits, &i) in dense_hits.iter().zip(&picked) {
        found += queries.exact[i]
            .iter()
            .take(10)
            .filter(|&&row| hits.contains(&ids[row]))
            .count();
    }
    let relevant: Vec<Vec<String>> = picked
        .iter()
        .map(|&i| queries.relevant[i].clone())
        .collect();
    let relevant = &relevant[..];
    let result = json!({
        // Another analyzer than the default, or no sparse leg, is reported as a system of its own.
        "system": match (analyzer, no_sparse) {
            (_, true) => "hybridb-dense-bm25",
            (Analyzer::HangulBigram, false) => "hybridb",
            (_, false) => "hybridb-words",
        },
        "version": env!("CARGO_PKG_VERSION"),
        "api": "rust library",
        "dataset": dir.name(),
        "docs": n_docs,
        "dim": dim,
        "queries": n,
        "ingest_s": ingest_s,
        "index_build_s": index_build_s,
        "docs_per_s": n_docs as f64 / (ingest_s + index_build_s),
        "disk_bytes": disk_bytes,
        "raw_bytes": raw_bytes,
        "raw_sparse_bytes": raw_sparse_bytes,
        "peak_rss_bytes": memory("VmHWM:"),
        "baseline_rss_bytes": baseline_rss,
        "latency_ms": {"dense": dense_lat, "text": text_lat, "hybrid": hybrid_lat},
        "recall": {
            "dense_vs_exact": found as f64 / (n * 10) as f64,
            "dense_qrels": hit_rate(&dense_hits, relevant),
            "text_qrels": hit_rate(&text_hits, relevant),
            "hybrid_qrels": hit_rate(&hybrid_hits, relevant),
        },
        "hit_per_query": {
            "rows": picked,
            "dense": hit_list(&dense_hits, relevant),
            "text": hit_list(&text_hits, relevant),
            "hybrid": hit_list(&hybrid_hits, relevant),
        },
        "index": format!(
            "HNSW M={} ef_construction={} ef_search={}, walked by 8-bit codes; BM25 {} analyzer (tantivy); {}hybrid = RRF k=60 over the top 10 of dense + BM25{}",
            params.m, params.ef_construction, params.ef_search, analyzer.as_str(),
            if has_sparse { "sparse inverted index; " } else { "" },
            if has_sparse { " + sparse" } else { "" },
        ),
        "notes": [
            format!("one commit per {batch} documents; index_build_s is the checkpoint (graph file written)"),
            format!("disk: {}", parts.join(", ")),
            format!("open after close: {open_s:.3} s"),
            "documents fetched with every hit (id, title, text, metadata)".to_string(),
            format!(
                "hybrid at the default depth (100 per leg): p50 {:.3} ms, p99 {:.3} ms, hit@10 {:.4}",
                deep_lat["p50"].as_f64().unwrap_or(f64::NAN),
                deep_lat["p99"].as_f64().unwrap_or(f64::NAN),
                hit_rate(&deep_hits, relevant),
            ),
        ],
    });
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    if arg_str("--work").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// The dataset directory's name (from dataset.json) and its text size.
struct DatasetDir<'a>(&'a Path);

impl DatasetDir<'_> {
    fn name(&self) -> String {
        std::fs::read_to_string(self.0.join("dataset.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| self.0.file_name().unwrap().to_string_lossy().into_owned())
    }

    /// UTF-8 bytes of every document's title and text.
    fn text_bytes(&self) -> u64 {
        dataset::read_docs_jsonl(&self.0.join("corpus.jsonl"))
            .expect("corpus.jsonl")
            .filter_map(|d| d.ok())
            .map(|d| (d.doc.title.len() + d.doc.text.len()) as u64)
            .sum()
    }
}

/// hit@10 of hybrid variants over every query (no timing): which legs, fusion, weights, depth.
fn sweep(db: &Database, queries: &Queries, has_sparse: bool) {
    let mut leg_sets = vec![vec![Leg::Dense, Leg::Bm25]];
    if has_sparse {
        leg_sets.push(vec![Leg::Dense, Leg::Bm25, Leg::Sparse]);
        leg_sets.push(vec![Leg::Dense, Leg::Sparse]);
    }
    let fusions: [(&str, Fusion, f32); 4] = [
        ("rrf60", Fusion::RRF_60, 1.0),
        ("rrf60 lex/2", Fusion::RRF_60, 0.5),
        ("weighted", Fusion::Weighted, 1.0),
        ("weighted lex/2", Fusion::Weighted, 0.5),
    ];
    for legs in &leg_sets {
        for (name, fusion, lex) in fusions {
            for depth in [10, 20, 50, 100] {
                let hits: Vec<Vec<String>> = (0..queries.texts.len())
                    .map(|i| {
                        let mut q = Query::new()
                            .dense(queries.dense[i].clone())
                            .text(queries.texts[i].clone())
                            .legs(legs)
                            .fusion(fusion)
                            .depth(depth)
                            .k(10);
                        if legs.contains(&Leg::Sparse) {
                            q = q.sparse(queries.sparse[i].clone().unwrap());
                            if legs.contains(&Leg::Bm25) {
                                q = q.weight(Leg::Bm25, lex).weight(Leg::Sparse, lex);
                            }
                        }
                        db.search(&q).unwrap().into_iter().map(|h| h.id).collect()
                    })
                    .collect();
                println!(
                    "{:<22} {:<16} depth {:>3}: hit@10 {:.4}",
                    format!("{legs:?}"),
                    name,
                    depth,
                    hit_rate(&hits, &queries.relevant)
                );
            }
        }
    }
}
