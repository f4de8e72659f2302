//! Criterion micro-benchmarks of the query hot paths, through the public API, on one synthetic
//! collection (20k documents × 384-d in 100 clusters, ~12 Hangul words and a 30k-term sparse
//! vector each): the dense walk against exact search in the same run, BM25, the sparse leg, RRF
//! and weighted fusion of the three legs, and fetching the stored documents of the hits.
//!
//! `cargo bench --bench hot [-- FILTER]`; `HOT_DOCS=N` changes the collection size.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hybridb::{Database, DenseMode, Document, Fusion, Leg, Metric, Query, Schema, SparseVector};

mod common;

use common::Rng;

const DIM: usize = 384;
const QUERIES: usize = 64;

struct Collection {
    _dir: tempfile::TempDir,
    db: Database,
    dense: Vec<Vec<f32>>,
    texts: Vec<String>,
    sparse: Vec<SparseVector>,
}

fn word(rng: &mut Rng) -> String {
    let n = 2 + (rng.next() % 2) as u32;
    (0..n)
        .map(|_| char::from_u32(0xAC00 + (rng.next() % 600) as u32 * 17).unwrap_or('가'))
        .collect()
}

fn sparse_of(words: &[String]) -> SparseVector {
    let mut terms: Vec<(u32, f32)> = words
        .iter()
        .map(|w| {
            let h = w
                .chars()
                .fold(7u32, |h, c| h.wrapping_mul(31).wrapping_add(c as u32));
            (h % 30_000, 0.2 + (h % 7) as f32 / 10.0)
        })
        .collect();
    terms.sort_unstable_by_key(|t| t.0);
    terms.dedup_by_key(|t| t.0);
    let (ids, values) = terms.into_iter().unzip();
    SparseVector::new(ids, values).expect("ascending ids")
}

fn collection() -> Collection {
    let n: usize = std::env::var("HOT_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(3);
    let centres: Vec<Vec<f32>> = (0..100)
        .map(|_| (0..DIM).map(|_| rng.normal()).collect())
        .collect();
    let vocab: Vec<String> = (0..3000).map(|_| word(&mut rng)).collect();
    let make = |rng: &mut Rng, i: usize, noise: f32, words: usize| {
        let mut v: Vec<f32> = centres[i % centres.len()]
            .iter()
            .map(|x| x + noise * rng.normal())
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        let w: Vec<String> = (0..words)
            .map(|_| {
                let u = rng.unit();
                vocab[(u * u * vocab.len() as f32) as usize].clone()
            })
            .collect();
        (v, w)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = Schema::new().dense(DIM, Metric::Cosine).sparse().text();
    let db = Database::open_or_create(dir.path(), schema).expect("create");
    let mut w = db.writer().expect("writer");
    for i in 0..n {
        let (v, words) = make(&mut rng, i, 0.8, 12);
        let doc = Document::new(format!("d{i}"))
            .text(words.join(" "))
            .dense(v)
            .sparse(sparse_of(&words));
        w.upsert(doc).expect("upsert");
    }
    w.commit().expect("commit");
    db.checkpoint().expect("checkpoint");
    let (mut dense, mut texts, mut sparse) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..QUERIES {
        let (v, words) = make(&mut rng, i * 13, 1.2, 3);
        dense.push(v);
        sparse.push(sparse_of(&words));
        texts.push(words.join(" "));
    }
    Collection {
        _dir: dir,
        db,
        dense,
        texts,
        sparse,
    }
}

/// Runs `query(i)` for the next query of the set on every iteration.
fn each_query(c: &Collection, b: &mut criterion::Bencher<'_>, query: impl Fn(usize) -> Query) {
    let mut i = 0;
    b.iter(|| {
        i = (i + 1) % QUERIES;
        black_box(c.db.search(&query(i)).expect("search"))
    });
}

fn hot_paths(cr: &mut Criterion) {
    let c = collection();
    let dense = |i: usize| {
        Query::new()
            .dense(c.dense[i].clone())
            .legs(&[Leg::Dense])
            .k(10)
            .fetch_documents(false)
    };
    let hybrid = |i: usize| {
        Query::new()
            .dense(c.dense[i].clone())
            .text(c.texts[i].clone())
            .sparse(c.sparse[i].clone())
            .k(10)
            .depth(10)
            .fetch_documents(false)
    };
    let mut g = cr.benchmark_group("dense");
    g.bench_function("exact scan (baseline)", |b| {
        each_query(&c, b, |i| dense(i).dense_mode(DenseMode::Exact))
    });
    g.bench_function("hnsw", |b| {
        each_query(&c, b, |i| dense(i).dense_mode(DenseMode::Approximate))
    });
    g.finish();

    let mut g = cr.benchmark_group("lexical");
    g.bench_function("bm25", |b| {
        each_query(&c, b, |i| {
            Query::new()
                .text(c.texts[i].clone())
                .legs(&[Leg::Bm25])
                .k(10)
                .fetch_documents(false)
        })
    });
    g.bench_function("sparse", |b| {
        each_query(&c, b, |i| {
            Query::new()
                .sparse(c.sparse[i].clone())
                .legs(&[Leg::Sparse])
                .k(10)
                .fetch_documents(false)
        })
    });
    g.finish();

    let mut g = cr.benchmark_group("hybrid");
    g.bench_function("rrf, 3 legs", |b| {
        each_query(&c, b, |i| hybrid(i).fusion(Fusion::RRF_60))
    });
    g.bench_function("weighted, 3 legs", |b| {
        each_query(&c, b, |i| hybrid(i).fusion(Fusion::Weighted))
    });
    g.bench_function("rrf, 3 legs, documents fetched", |b| {
        each_query(&c, b, |i| {
            hybrid(i).fusion(Fusion::RRF_60).fetch_documents(true)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = hot_paths
}
criterion_main!(benches);
