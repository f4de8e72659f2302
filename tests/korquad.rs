//! Retrieval quality on ../shared/datasets/korquad-v1-dev with its e5 vectors, against the bars
//! of the engine: dense HNSW within 0.003 of exact, BM25 Recall@10 ≥ 0.99, and default fusion
//! Recall@5 ≥ 0.986, Recall@10 ≥ 0.993 and not below the best single leg.

mod common;

use std::collections::HashMap;

use hybridb::dataset::{self, QueryRecord};
use hybridb::eval::{self, Metrics};
use hybridb::{Database, DenseMode, Fusion, Leg, Metric, Query, Schema, SparseVector, npy};
use rayon::prelude::*;

fn evaluate(
    db: &Database,
    queries: &[QueryRecord],
    qdense: &npy::Matrix,
    qsparse: &[SparseVector],
    base: &Query,
) -> Metrics {
    let runs: HashMap<String, Vec<String>> = queries
        .par_iter()
        .enumerate()
        .map(|(i, q)| {
            let query = base
                .clone()
                .text(q.text.clone())
                .dense(qdense.row(i).unwrap().to_vec())
                .sparse(qsparse[i].clone())
                .k(100)
                .fetch_documents(false);
            let hits = db.search(&query).unwrap();
            (q.id.clone(), hits.into_iter().map(|h| h.id).collect())
        })
        .collect();
    eval::evaluate(queries, &runs)
}

#[test]
fn korquad_quality_bars() {
    let Some(root) = common::shared_dataset("korquad-v1-dev") else {
        return;
    };
    let docs = dataset::DatasetDir::new(&root).documents().unwrap();
    let queries = dataset::read_queries(&root.join("queries.jsonl")).unwrap();
    let qdense = npy::read_f32_matrix(&root.join("queries.dense.npy")).unwrap();
    let qsparse: Vec<SparseVector> = dataset::read_sparse_jsonl(&root.join("queries.sparse.jsonl"))
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            SparseVector::new(r.indices, r.values).unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new()
        .dense(qdense.dim, Metric::Cosine)
        .sparse()
        .text();
    let db = Database::open_or_create(dir.path(), schema).unwrap();
    let mut w = db.writer().unwrap();
    for doc in docs {
        w.upsert(doc).unwrap();
    }
    w.commit().unwrap();

    let dense_q = Query::new().legs(&[Leg::Dense]);
    let exact = evaluate(
        &db,
        &queries,
        &qdense,
        &qsparse,
        &dense_q.clone().dense_mode(DenseMode::Exact),
    );
    let hnsw = evaluate(
        &db,
        &queries,
        &qdense,
        &qsparse,
        &dense_q.dense_mode(DenseMode::Approximate),
    );
    let bm25 = evaluate(
        &db,
        &queries,
        &qdense,
        &qsparse,
        &Query::new().legs(&[Leg::Bm25]),
    );
    let two = [Leg::Dense, Leg::Bm25];
    let fused = evaluate(&db, &queries, &qdense, &qsparse, &Query::new().legs(&two));
    let sparse = evaluate(
        &db,
        &queries,
        &qdense,
        &qsparse,
        &Query::new().legs(&[Leg::Sparse]),
    );
    let three = evaluate(
        &db,
        &queries,
        &qdense,
        &qsparse,
        &Query::new().legs(&[Leg::Dense, Leg::Sparse, Leg::Bm25]),
    );
    let rrf = evaluate(
        &db,
        &queries,
        &qdense,
        &qsparse,
        &Query::new().legs(&two).fusion(Fusion::RRF_60),
    );
    for (name, m) in [
        ("dense exact", &exact),
        ("dense hnsw", &hnsw),
        ("bm25", &bm25),
        ("sparse", &sparse),
        ("rrf k=60", &rrf),
        ("default", &fused),
        ("d+s+bm25", &three),
    ] {
        eprintln!(
            "{name:<12} R@1 {:.4} R@5 {:.4} R@10 {:.4} R@100 {:.4} MRR@10 {:.4} nDCG@10 {:.4}",
            m.recall[0], m.recall[1], m.recall[2], m.recall[4], m.mrr10, m.ndcg10
        );
    }
    assert_eq!(exact.queries, 3316);
    assert!(
        (exact.recall[2] - 0.9704).abs() < 0.002,
        "exact dense differs from the reference"
    );
    assert!(hnsw.recall[2] >= exact.recall[2] - 0.003);
    assert!(bm25.recall[2] >= 0.99, "bm25 R@10 {}", bm25.recall[2]);
    assert!(fused.recall[1] >= 0.986, "fused R@5 {}", fused.recall[1]);
    assert!(fused.recall[2] >= 0.993, "fused R@10 {}", fused.recall[2]);
    assert!(fused.recall[2] >= bm25.recall[2].max(hnsw.recall[2]));
    // The sparse leg is exact: the reference figure of exact sparse search.
    assert!(
        (sparse.recall[2] - 0.8353).abs() < 0.001,
        "sparse R@10 {}",
        sparse.recall[2]
    );
    let best = bm25.recall[2].max(exact.recall[2]).max(sparse.recall[2]);
    assert!(
        three.recall[2] >= best,
        "dense+sparse+bm25 R@10 {}",
        three.recall[2]
    );
}
