//! The sparse leg and ColBERT reranking through the database: exactness against brute force,
//! MaxSim and rerank scores against hand-computed values, persistence, deletes and catch-up.

mod common;

use std::path::Path;

use hybridb::{
    Database, Document, Leg, Metric, Precision, Query, Rerank, RerankFusion, Schema, SparseVector,
};

fn random_sparse(rng: &mut common::Rng, terms: usize, vocab: u32) -> SparseVector {
    let mut ids: Vec<u32> = (0..terms)
        .map(|_| {
            // Zipf-like: small ids are frequent.
            let u = rng.f32().max(1e-6);
            ((u * u * u) * vocab as f32) as u32
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let values = ids.iter().map(|_| 0.01 + rng.f32()).collect();
    SparseVector::new(ids, values).unwrap()
}

fn sparse_ids(db: &Database, q: &SparseVector, k: usize) -> Vec<(String, f32)> {
    db.search(&Query::new().sparse(q.clone()).k(k).legs(&[Leg::Sparse]))
        .unwrap()
        .into_iter()
        .map(|h| (h.id, h.score))
        .collect()
}

#[test]
fn sparse_leg_is_exact_with_updates_deletes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::Rng::new(11);
    let mut docs: Vec<(String, SparseVector)> = (0..3000)
        .map(|i| (format!("s{i}"), random_sparse(&mut rng, 60, 5000)))
        .collect();
    let queries: Vec<SparseVector> = (0..40).map(|_| random_sparse(&mut rng, 20, 5000)).collect();
    {
        let db = Database::open_or_create(dir.path(), Schema::new().sparse()).unwrap();
        for chunk in docs.chunks(1000) {
            let mut w = db.writer().unwrap();
            for (id, v) in chunk {
                w.upsert(Document::new(id).sparse(v.clone())).unwrap();
            }
            w.commit().unwrap();
            db.checkpoint().unwrap();
        }
        // Replace and delete some documents.
        let mut w = db.writer().unwrap();
        for i in (0..3000).step_by(7) {
            docs[i].1 = random_sparse(&mut rng, 60, 5000);
            w.upsert(Document::new(&docs[i].0).sparse(docs[i].1.clone()))
                .unwrap();
        }
        for i in (3..3000).step_by(11) {
            w.delete(&docs[i].0).unwrap();
        }
        w.commit().unwrap();
    }
    let live: Vec<&(String, SparseVector)> = docs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 3 || (i - 3) % 11 != 0)
        .map(|(_, d)| d)
        .collect();
    for reopen in [false, true] {
        let db = Database::open(dir.path()).unwrap();
        if reopen {
            db.compact().unwrap();
        }
        for q in &queries {
            let got = sparse_ids(&db, q, 10);
            let mut want: Vec<(String, f32)> = live
                .iter()
                .map(|(id, v)| (id.clone(), q.dot(v)))
                .filter(|(_, s)| *s > 0.0)
                .collect();
            // Ties: the brute force orders equal scores by write order, as document numbers do.
            want.sort_by(|a, b| b.1.total_cmp(&a.1));
            want.truncate(10);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.1, w.1, "scores must be bit-identical");
            }
        }
    }
}

fn colbert_schema() -> Schema {
    Schema::new()
        .dense(2, Metric::Cosine)
        .sparse()
        .text()
        .colbert(2, Precision::F32)
}

/// Two 2-d documents with known token vectors.
fn colbert_db(path: &Path) -> Database {
    let db = Database::open_or_create(path, colbert_schema()).unwrap();
    let mut w = db.writer().unwrap();
    // a: tokens (1,0) and (0,1); b: one token (0.6, 0.8); c: no tokens.
    w.upsert(
        Document::new("a")
            .text("공통 단어 가")
            .dense(vec![1.0, 0.0])
            .sparse(SparseVector::new(vec![1, 5], vec![1.0, 2.0]).unwrap())
            .colbert(vec![1.0, 0.0, 0.0, 1.0]),
    )
    .unwrap();
    w.upsert(
        Document::new("b")
            .text("공통 단어 나")
            .dense(vec![0.0, 1.0])
            .sparse(SparseVector::new(vec![5], vec![0.5]).unwrap())
            .colbert(vec![0.6, 0.8]),
    )
    .unwrap();
    w.upsert(
        Document::new("c")
            .text("공통 단어 다")
            .dense(vec![1.0, 1.0]),
    )
    .unwrap();
    w.commit().unwrap();
    db
}

#[test]
fn colbert_rerank_matches_hand_computed_scores() {
    let dir = tempfile::tempdir().unwrap();
    let db = colbert_db(dir.path());
    // Query tokens q1 = (1,0), q2 = (0.6,0.8).
    // MaxSim(a) = (max(1, 0) + max(0.6, 0.8)) / 2 = (1 + 0.8) / 2 = 0.9
    // MaxSim(b) = (0.6 + 1.0) / 2 = 0.8; c has no tokens.
    let q = Query::new()
        .text("공통 단어")
        .dense(vec![1.0, 0.0])
        .sparse(SparseVector::new(vec![5], vec![1.0]).unwrap())
        .colbert(vec![1.0, 0.0, 0.6, 0.8])
        .k(3);
    let hits = db.search(&q.clone()).unwrap();
    let score = |id: &str| hits.iter().find(|h| h.id == id).unwrap();
    let colbert = |id: &str| {
        score(id)
            .legs
            .iter()
            .find(|l| l.leg == Leg::Colbert)
            .map(|l| l.score)
    };
    assert!((colbert("a").unwrap() - 0.9).abs() < 1e-6);
    assert!((colbert("b").unwrap() - 0.8).abs() < 1e-6);
    assert_eq!(colbert("c"), None);
    // Default weighted: 0.4 dense + 0.2 sparse + 0.4 colbert.
    // a: 0.4·1 + 0.2·2 + 0.4·0.9 = 1.16; b: 0.4·0 + 0.2·0.5 + 0.4·0.8 = 0.42;
    // c: 0.4·cos((1,1),(1,0)) = 0.4·0.70711 = 0.28284.
    let want = [("a", 1.16), ("b", 0.42), ("c", 0.282_843)];
    for (h, (id, s)) in hits.iter().zip(want) {
        assert_eq!(h.id, id);
        assert!((h.score - s).abs() < 1e-5, "{id}: {} vs {s}", h.score);
    }
    // RRF over the legs and the ColBERT rank (k = 60).
    let rrf = db
        .search(&q.rerank(Rerank {
            top: 3,
            fusion: RerankFusion::Rrf { k: 60.0 },
        }))
        .unwrap();
    let a = rrf.iter().find(|h| h.id == "a").unwrap();
    let ranks: Vec<usize> = a.legs.iter().map(|l| l.rank).collect();
    let want: f32 = ranks.iter().map(|&r| 1.0 / (60.0 + r as f32)).sum();
    assert!((a.score - want).abs() < 1e-6);
    assert!(a.legs.iter().any(|l| l.leg == Leg::Colbert && l.rank == 1));
}

#[test]
fn colbert_and_sparse_survive_reopen_deletes_and_lagging_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    drop(colbert_db(dir.path()));
    common::copy_dir(&dir.path().join("sparse"), &saved.path().join("sparse"));
    {
        let db = Database::open(dir.path()).unwrap();
        let mut w = db.writer().unwrap();
        w.delete("a").unwrap();
        w.upsert(
            Document::new("d")
                .dense(vec![0.0, 1.0])
                .sparse(SparseVector::new(vec![9], vec![3.0]).unwrap())
                .colbert(vec![0.0, 1.0]),
        )
        .unwrap();
        w.commit().unwrap();
    }
    // The sparse index as it was before the second commit; garbage past the token store's end.
    std::fs::remove_dir_all(dir.path().join("sparse")).unwrap();
    common::copy_dir(&saved.path().join("sparse"), &dir.path().join("sparse"));
    for name in ["tokens.bin", "docs.bin"] {
        let p = dir.path().join("colbert").join(name);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(&[0x5A; 24]);
        std::fs::write(&p, bytes).unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    let q9 = SparseVector::new(vec![1, 5, 9], vec![1.0, 1.0, 1.0]).unwrap();
    let found = sparse_ids(&db, &q9, 10);
    let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["d", "b"], "a is deleted, d is caught up");
    let hits = db
        .search(
            &Query::new()
                .dense(vec![0.0, 1.0])
                .colbert(vec![0.0, 1.0])
                .k(3),
        )
        .unwrap();
    let d = hits.iter().find(|h| h.id == "d").unwrap();
    let col = d.legs.iter().find(|l| l.leg == Leg::Colbert).unwrap();
    assert!((col.score - 1.0).abs() < 1e-6);
    assert!(hits.iter().all(|h| h.id != "a"));
}

#[test]
fn bad_sparse_and_colbert_input_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), colbert_schema()).unwrap();
    let mut w = db.writer().unwrap();
    assert!(
        w.upsert(Document::new("x").colbert(vec![1.0, 0.0, 1.0]))
            .is_err()
    );
    assert!(
        w.upsert(Document::new("x").colbert(vec![f32::NAN, 0.0]))
            .is_err()
    );
    assert!(w.upsert(Document::new("x").colbert(vec![])).is_err());
    drop(w);
    let q = Query::new().text("x").colbert(vec![1.0, 0.0, 1.0]);
    assert!(db.search(&q).is_err());
    let no_colbert = tempfile::tempdir().unwrap();
    let db2 = Database::open_or_create(no_colbert.path(), Schema::new().text()).unwrap();
    let mut w = db2.writer().unwrap();
    assert!(w.upsert(Document::new("x").colbert(vec![1.0])).is_err());
    assert!(
        w.upsert(Document::new("x").sparse(SparseVector::new(vec![1], vec![1.0]).unwrap()))
            .is_err()
    );
}
