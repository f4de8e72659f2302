//! The sparse leg against a brute-force scan, and the cost of a ColBERT rerank, measured in one
//! run: `cargo bench --bench legs [-- --docs N --queries Q] [--sparse-data DIR]`. Latencies are
//! single queries, p50 / p99 in milliseconds. `--sparse-data` takes the sparse leg's documents
//! and queries from a dataset directory (`corpus.sparse.jsonl`, `queries.sparse.jsonl`) instead
//! of the synthetic ones.

use std::time::Instant;

use hybridb::{
    Database, Document, Leg, Precision, Query, Rerank, RerankFusion, Schema, SparseVector,
};

mod common;

use common::{Rng, latency};

trait SparseGen {
    fn sparse(&mut self, terms: usize) -> SparseVector;
}

impl SparseGen for Rng {
    /// Zipf-like term ids over a 30k vocabulary, ascending and unique, positive weights.
    fn sparse(&mut self, terms: usize) -> SparseVector {
        let mut ids: Vec<u32> = (0..terms)
            .map(|_| {
                let u = self.unit().max(1e-6);
                (u * u * u * 30_000.0) as u32
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let values = ids.iter().map(|_| 0.01 + self.unit()).collect();
        SparseVector::new(ids, values).expect("ascending ids")
    }
}

/// The sparse vectors of a dataset directory's corpus and queries.
fn dataset_sparse(dir: &str) -> (Vec<SparseVector>, Vec<SparseVector>) {
    let set = hybridb::dataset::DatasetDir::new(dir);
    let read = |path: Option<std::path::PathBuf>| -> Vec<SparseVector> {
        let path = path.expect("corpus.sparse.jsonl and queries.sparse.jsonl");
        hybridb::dataset::read_sparse_jsonl(&path)
            .expect("a sparse file")
            .map(|r| {
                let r = r.expect("a sparse record");
                SparseVector::new(r.indices, r.values).expect("ascending ids")
            })
            .collect()
    };
    (read(set.corpus_sparse()), read(set.queries_sparse()))
}

fn sparse(n: usize, n_queries: usize) {
    let (docs, queries) = match common::arg_str("--sparse-data") {
        Some(dir) => dataset_sparse(&dir),
        None => {
            let mut rng = Rng(7);
            let docs: Vec<SparseVector> = (0..n).map(|_| rng.sparse(100)).collect();
            let queries: Vec<SparseVector> = (0..n_queries).map(|_| rng.sparse(30)).collect();
            (docs, queries)
        }
    };
    let (n, n_queries) = (docs.len(), n_queries.min(queries.len()));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path(), Schema::new().sparse()).expect("create");
    let start = Instant::now();
    let mut w = db.writer().expect("writer");
    for (i, v) in docs.iter().enumerate() {
        w.upsert(Document::new(format!("d{i}")).sparse(v.clone()))
            .expect("upsert");
    }
    w.commit().expect("commit");
    db.checkpoint().expect("flush");
    let postings: usize = docs.iter().map(|d| d.indices().len()).sum();
    println!("\n## sparse leg: {n} documents, {postings} postings, {n_queries} queries, k = 10\n");
    println!("ingest + flush: {:.2} s", start.elapsed().as_secs_f64());
    let (b50, b99) = latency(n_queries, |i| {
        let q = &queries[i];
        let mut top: Vec<(f32, usize)> = docs
            .iter()
            .enumerate()
            .map(|(d, v)| (q.dot(v), d))
            .collect();
        top.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
        std::hint::black_box(&top[..10]);
    });
    let (s50, s99) = latency(n_queries, |i| {
        let q = Query::new()
            .sparse(queries[i].clone())
            .legs(&[Leg::Sparse])
            .k(10)
            .depth(10);
        std::hint::black_box(db.search(&q.fetch_documents(false)).expect("search"));
    });
    println!("| search | p50 ms | p99 ms |\n|---|---|---|");
    println!("| brute-force scan (baseline) | {b50:.3} | {b99:.3} |");
    println!("| sparse leg (pruned, exact) | {s50:.3} | {s99:.3} |");
    println!("\nsparse leg p50 is {:.1}x faster than the scan", b50 / s50);
}

fn colbert(precision: Precision, n_queries: usize) {
    let (docs, tokens, dim, q_tokens) = (100usize, 300usize, 1024usize, 32usize);
    let mut rng = Rng(11);
    let mut unit_rows = |rows: usize| -> Vec<f32> {
        let mut v: Vec<f32> = (0..rows * dim).map(|_| rng.unit() - 0.5).collect();
        for r in v.chunks_mut(dim) {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= n);
        }
        v
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = Schema::new().text().colbert(dim, precision);
    let db = Database::open_or_create(dir.path(), schema).expect("create");
    let mut w = db.writer().expect("writer");
    for i in 0..docs {
        w.upsert(
            Document::new(format!("c{i}"))
                .text("공통 문서")
                .colbert(unit_rows(tokens)),
        )
        .expect("upsert");
    }
    w.commit().expect("commit");
    let queries: Vec<Vec<f32>> = (0..n_queries).map(|_| unit_rows(q_tokens)).collect();
    let base = Query::new().text("공통").k(10).fetch_documents(false);
    let (p50, p99) = latency(n_queries, |_| {
        std::hint::black_box(db.search(&base).expect("search"));
    });
    let (r50, r99) = latency(n_queries, |i| {
        let q = base
            .clone()
            .colbert(queries[i].clone())
            .rerank(Rerank::default());
        std::hint::black_box(db.search(&q).expect("search"));
    });
    println!(
        "| {} | {p50:.3} / {p99:.3} | {r50:.3} / {r99:.3} | {:.3} |",
        precision.as_str(),
        r50 - p50
    );
}

/// Agreement of each precision with f32 MaxSim on anisotropic synthetic token vectors (each
/// document mixes a few of 40 topic directions and a direction shared by all tokens, as real
/// ColBERT vectors do): Recall@10 of the reranked top 10 against the f32 top 10, and the mean
/// absolute MaxSim error, over the same 100 candidates per query.
fn agreement(n_queries: usize) {
    let (docs, tokens, dim, q_tokens) = (300usize, 100usize, 1024usize, 32usize);
    let mut rng = Rng(5);

    let topics: Vec<Vec<f32>> = (0..41)
        .map(|_| (0..dim).map(|_| rng.normal()).collect())
        .collect();
    let token = |rng: &mut Rng, topic: usize| -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|j| 0.6 * topics[topic][j] + 0.5 * topics[40][j] + 0.8 * rng.normal())
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    };
    let doc_topics: Vec<[usize; 3]> = (0..docs)
        .map(|_| [0, 1, 2].map(|_| (rng.next() % 40) as usize))
        .collect();
    let corpus: Vec<Vec<f32>> = doc_topics
        .iter()
        .map(|t| {
            (0..tokens)
                .flat_map(|i| token(&mut rng, t[i % 3]))
                .collect()
        })
        .collect();
    let queries: Vec<Vec<f32>> = (0..n_queries)
        .map(|i| {
            let t = doc_topics[(i * 7) % docs];
            (0..q_tokens)
                .flat_map(|j| token(&mut rng, t[j % 3]))
                .collect()
        })
        .collect();
    let rerank = Rerank {
        top: 100,
        fusion: RerankFusion::Weighted {
            dense: 0.0,
            sparse: 0.0,
            colbert: 1.0,
        },
    };
    let run = |precision: Precision| -> Vec<Vec<(String, f32)>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open_or_create(dir.path(), Schema::new().text().colbert(dim, precision))
            .expect("create");
        let mut w = db.writer().expect("writer");
        for (i, t) in corpus.iter().enumerate() {
            w.upsert(
                Document::new(format!("a{i:03}"))
                    .text("공통")
                    .colbert(t.clone()),
            )
            .expect("upsert");
        }
        w.commit().expect("commit");
        queries
            .iter()
            .map(|q| {
                let query = Query::new()
                    .text("공통")
                    .colbert(q.clone())
                    .rerank(rerank)
                    .k(100);
                db.search(&query.fetch_documents(false))
                    .expect("search")
                    .into_iter()
                    .map(|h| (h.id, h.score))
                    .collect()
            })
            .collect()
    };
    let reference = run(Precision::F32);
    println!(
        "\n## ColBERT precision agreement with f32 ({docs} documents x {tokens} tokens, {dim}-d, {n_queries} queries, 100 candidates)\n"
    );
    println!("| precision | Recall@10 vs f32 top 10 | mean abs MaxSim error |\n|---|---|---|");
    for p in [Precision::F16, Precision::Int8, Precision::Binary] {
        let got = run(p);
        let (mut hit, mut err, mut n) = (0usize, 0f64, 0usize);
        for (r, g) in reference.iter().zip(&got) {
            hit += g[..10]
                .iter()
                .filter(|(id, _)| r[..10].iter().any(|(rid, _)| rid == id))
                .count();
            for (id, s) in g {
                if let Some((_, rs)) = r.iter().find(|(rid, _)| rid == id) {
                    err += (s - rs).abs() as f64;
                    n += 1;
                }
            }
        }
        println!(
            "| {} | {:.4} | {:.2e} |",
            p.as_str(),
            hit as f64 / (reference.len() * 10) as f64,
            err / n.max(1) as f64
        );
    }
}

fn main() {
    let arg = common::arg;
    let n_queries = arg("--queries", 200);
    sparse(arg("--docs", 100_000), n_queries);
    println!(
        "\n## ColBERT rerank: top 100 of 100 documents x 300 tokens, 1024-d, 32 query tokens\n"
    );
    println!(
        "| precision | BM25 only p50 / p99 ms | BM25 + rerank p50 / p99 ms | rerank p50 cost ms |"
    );
    println!("|---|---|---|---|");
    for p in [
        Precision::F32,
        Precision::F16,
        Precision::Int8,
        Precision::Binary,
    ] {
        colbert(p, n_queries.min(100));
    }
    agreement(n_queries.min(50));
}
