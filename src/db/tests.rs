//! Tests that need a search to hold an older snapshot.

use super::Database;
use crate::{DenseMode, Document, Leg, Metric, Query, Schema, SparseVector};

fn vector(i: u64) -> Vec<f32> {
    (0..8)
        .map(|d| ((i * 31 + d * 7) % 17) as f32 - 8.0 + (i as f32) * 0.01)
        .collect()
}

/// A search that took its snapshot before a delete and a compaction still finds the deleted
/// documents on every leg: compaction drops them from the HNSW graph and the sparse postings,
/// but not from what the snapshot shows.
#[test]
fn compaction_does_not_change_an_older_snapshots_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(
        dir.path(),
        Schema::new().dense(8, Metric::Cosine).sparse().text(),
    )
    .unwrap();
    let mut w = db.writer().unwrap();
    for i in 0..60u64 {
        w.upsert(
            Document::new(format!("d{i}"))
                .text(format!("word{i}"))
                .dense(vector(i))
                .sparse(SparseVector::new(vec![7, 100 + i as u32], vec![0.5, 1.0]).unwrap()),
        )
        .unwrap();
    }
    w.commit().unwrap();
    let queries = |i: u64| {
        [
            Query::new()
                .dense(vector(i))
                .legs(&[Leg::Dense])
                .dense_mode(DenseMode::Approximate),
            Query::new().sparse(SparseVector::new(vec![100 + i as u32], vec![1.0]).unwrap()),
            Query::new().text(format!("word{i}")),
        ]
    };
    let old = db.inner.snapshot();
    let before: Vec<_> = (0..60)
        .flat_map(queries)
        .map(|q| db.search_in(&old, &q.k(3)).unwrap())
        .collect();

    let mut w = db.writer().unwrap();
    for i in (0..60u64).step_by(2) {
        w.delete(&format!("d{i}")).unwrap();
    }
    w.commit().unwrap();
    db.compact().unwrap();

    let after: Vec<_> = (0..60)
        .flat_map(queries)
        .map(|q| db.search_in(&old, &q.k(3)).unwrap())
        .collect();
    assert_eq!(before, after);
    // And the current view no longer has them.
    let now = db.search(&queries(0)[1].clone().k(3)).unwrap();
    assert!(now.iter().all(|h| h.id != "d0"), "{now:?}");
}
