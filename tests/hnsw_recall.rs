//! The HNSW leg against exact search on clustered synthetic vectors.

mod common;

use hybridb::{Database, DenseMode, Document, Leg, Metric, Query, Schema};
use serde_json::json;

fn recall_at_10(db: &Database, queries: &[Vec<f32>]) -> f64 {
    recall_with(db, queries, Query::new())
}

/// Recall@10 of HNSW against exact search, both under the filters of `template`.
fn recall_with(db: &Database, queries: &[Vec<f32>], template: Query) -> f64 {
    let mut found = 0usize;
    for q in queries {
        let base = template
            .clone()
            .dense(q.clone())
            .k(10)
            .depth(10)
            .legs(&[Leg::Dense])
            .fetch_documents(false);
        let exact = db
            .search(&base.clone().dense_mode(DenseMode::Exact))
            .unwrap();
        let approx = db.search(&base.dense_mode(DenseMode::Approximate)).unwrap();
        assert_eq!(exact.len(), 10);
        found += approx
            .iter()
            .filter(|h| exact.iter().any(|e| e.id == h.id))
            .count();
    }
    found as f64 / (queries.len() * 10) as f64
}

#[test]
fn hnsw_recall_on_12k_clustered_vectors() {
    let (n, dim) = (12_000, 64);
    let data = common::clustered(n, dim, 50, 0.35, 7);
    let queries = common::clustered(200, dim, 50, 0.35, 99);
    let dir = tempfile::tempdir().unwrap();
    let db =
        Database::open_or_create(dir.path(), Schema::new().dense(dim, Metric::Cosine)).unwrap();
    let mut w = db.writer().unwrap();
    for (i, v) in data.into_iter().enumerate() {
        let meta = json!({"half": i % 2, "tenth": i % 10});
        w.upsert(Document::new(format!("d{i}")).metadata(meta).dense(v))
            .unwrap();
    }
    w.commit().unwrap();
    let r = recall_at_10(&db, &queries);
    eprintln!("HNSW Recall@10 vs exact on {n} x {dim}: {r:.4}");
    assert!(r >= 0.95, "recall {r}");
    // With a filter that keeps half the points (searched unfiltered, then filtered) and one that
    // keeps a tenth (the graph's filtered search).
    for (field, keep) in [("half", 0), ("tenth", 3)] {
        let r = recall_with(&db, &queries, Query::new().filter_eq(field, json!(keep)));
        eprintln!("  with filter {field}={keep}: {r:.4}");
        assert!(r >= 0.9, "filtered recall {r}");
    }

    // The dumped graph reloads and answers the same.
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.stats().unwrap().hnsw_points, n as u64);
    let r2 = recall_at_10(&db, &queries);
    assert!(r2 >= 0.95, "recall after reopen {r2}");
}

#[test]
fn dot_metric_hnsw_matches_exact_top1() {
    let dim = 16;
    let mut data = common::clustered(3000, dim, 10, 0.5, 3);
    // Unnormalized: scale rows so inner product differs from cosine.
    for (i, v) in data.iter_mut().enumerate() {
        let s = 0.5 + (i % 7) as f32;
        v.iter_mut().for_each(|x| *x *= s);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), Schema::new().dense(dim, Metric::Dot)).unwrap();
    let mut w = db.writer().unwrap();
    for (i, v) in data.iter().enumerate() {
        w.upsert(Document::new(format!("d{i}")).dense(v.clone()))
            .unwrap();
    }
    w.commit().unwrap();
    let queries = common::clustered(50, dim, 10, 0.5, 4);
    let r = recall_at_10(&db, &queries);
    assert!(r >= 0.9, "dot recall {r}");
    // Exact scores are raw inner products.
    let q = &queries[0];
    let hits = db
        .search(
            &Query::new()
                .dense(q.clone())
                .k(1)
                .dense_mode(DenseMode::Exact),
        )
        .unwrap();
    let best = data
        .iter()
        .map(|v| v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>())
        .fold(f32::MIN, f32::max);
    assert!((hits[0].score - best).abs() < 1e-4);
}
