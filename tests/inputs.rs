//! Inputs at the edges of what the library takes: extreme but finite vectors, out-of-range
//! query parameters, and a stored schema that fails validation.

mod common;

use std::path::Path;
use std::process::Command;

use hybridb::{Database, DenseMode, Document, Error, Metric, Query, Schema};
use redb::TableDefinition;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Cosine scores of `query` against each row, exact, by id.
fn cosine_scores(rows: &[(&str, Vec<f32>)], query: Vec<f32>) -> Vec<(String, f32)> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), Schema::new().dense(4, Metric::Cosine)).unwrap();
    let mut w = db.writer().unwrap();
    for (id, v) in rows {
        w.upsert(Document::new(*id).dense(v.clone())).unwrap();
    }
    w.commit().unwrap();
    let mut out = Vec::new();
    for mode in [DenseMode::Exact, DenseMode::Approximate] {
        let q = Query::new()
            .dense(query.clone())
            .k(rows.len())
            .dense_mode(mode);
        let hits = db.search(&q).unwrap();
        let got: Vec<(String, f32)> = hits.into_iter().map(|h| (h.id, h.score)).collect();
        if mode == DenseMode::Exact {
            out = got;
        } else {
            assert_eq!(got, out, "HNSW and exact search agree on four rows");
        }
    }
    out
}

#[test]
fn cosine_normalizes_extreme_finite_vectors() {
    // A 1e20 component overflowed the f32 norm (the row was stored as zeros); a row of 1e-30
    // underflowed it (the row was left unscaled).
    let rows = [
        ("big", vec![1e20, 1.0, 0.0, 0.0]),
        ("tiny", vec![0.0, 1e-30, 1e-30, 0.0]),
        ("max", vec![0.0, 0.0, 0.0, f32::MAX]),
        ("subnormal", vec![0.0, 0.0, 0.0, -1e-45]),
    ];
    let scores = cosine_scores(&rows, vec![1.0, 0.0, 0.0, 0.0]);
    assert_eq!(scores[0].0, "big");
    assert!((scores[0].1 - 1.0).abs() < 1e-6, "{scores:?}");
    let scores = cosine_scores(&rows, vec![0.0, 2.0, 2.0, 0.0]);
    assert_eq!(scores[0].0, "tiny");
    assert!((scores[0].1 - 1.0).abs() < 1e-6, "{scores:?}");
    // A query of 3e38 values overflowed to a zero vector: every row scored 0.
    let scores = cosine_scores(&rows, vec![0.0, 0.0, 0.0, 3e38]);
    assert!((score_of(&scores, "max") - 1.0).abs() < 1e-6, "{scores:?}");
    assert!(
        (score_of(&scores, "subnormal") + 1.0).abs() < 1e-6,
        "{scores:?}"
    );
    let scores = cosine_scores(&rows, vec![3e38; 4]);
    assert!(
        (score_of(&scores, "tiny") - 0.5f32.sqrt()).abs() < 1e-6,
        "{scores:?}"
    );
    assert!((score_of(&scores, "max") - 0.5).abs() < 1e-6, "{scores:?}");
}

fn score_of(scores: &[(String, f32)], id: &str) -> f32 {
    scores.iter().find(|s| s.0 == id).unwrap().1
}

fn small_db(dir: &Path) -> Database {
    let db = Database::open_or_create(dir, Schema::new().dense(4, Metric::Cosine).text()).unwrap();
    let mut w = db.writer().unwrap();
    for i in 0..5u8 {
        let v = vec![1.0, f32::from(i), 0.5, -1.0];
        w.upsert(Document::new(format!("d{i}")).text("서울 부산").dense(v))
            .unwrap();
    }
    w.commit().unwrap();
    db
}

#[test]
fn query_parameters_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let db = small_db(dir.path());
    let base = || Query::new().text("서울").dense(vec![1.0, 0.0, 0.0, 0.0]);
    let too_big = [
        ("k", base().k(usize::MAX)),
        ("k", base().k(1_000_000_000)),
        ("k", base().k(Query::MAX_K + 1)),
        ("depth", base().depth(usize::MAX)),
        ("depth", base().depth(Query::MAX_DEPTH + 1)),
        (
            "ef",
            base().ef(usize::MAX).dense_mode(DenseMode::Approximate),
        ),
        ("ef", base().ef(Query::MAX_EF + 1)),
    ];
    for (field, q) in too_big {
        match db.search(&q) {
            Err(Error::InvalidInput(m)) => {
                assert!(m.starts_with(&format!("{field} is ")), "{m}");
                assert!(m.contains("above the limit of 100000"), "{m}");
            }
            other => panic!("{field}: expected InvalidInput, got {other:?}"),
        }
    }
    // The limits themselves are accepted, without allocating for them up front.
    let q = base()
        .k(Query::MAX_K)
        .depth(Query::MAX_DEPTH)
        .ef(Query::MAX_EF)
        .dense_mode(DenseMode::Approximate);
    assert_eq!(db.search(&q).unwrap().len(), 5);
    let q = Query::new()
        .dense(vec![1.0, 0.0, 0.0, 0.0])
        .k(Query::MAX_K)
        .dense_mode(DenseMode::Exact);
    assert_eq!(db.search(&q).unwrap().len(), 5);
}

#[test]
fn run_refuses_a_huge_k_before_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let data = common::fixtures().join("tiny");
    let bin = env!("CARGO_BIN_EXE_hybridb");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = Command::new(bin)
        .args(["ingest", "--db", &s(&db), "--dataset", &s(&data)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(bin)
        .args(["run", "--db", &s(&db), "--queries", &s(&data)])
        .args(["--k", "1000000000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(err.contains("k is 1000000000, above the limit"), "{err}");
}

#[test]
fn an_invalid_stored_schema_is_corruption() {
    let bad = [
        Schema::new().dense(0, Metric::Cosine).text(),
        Schema::new()
            .dense(4, Metric::Cosine)
            .hnsw(hybridb::HnswParams {
                m: 0,
                ..Default::default()
            }),
        Schema::new().colbert(0, hybridb::Precision::F16),
    ];
    for schema in bad {
        let dir = tempfile::tempdir().unwrap();
        drop(small_db(dir.path()));
        {
            let store = redb::Database::open(dir.path().join("docs.redb")).unwrap();
            let txn = store.begin_write().unwrap();
            let mut bytes = postcard::to_allocvec(&schema).unwrap();
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            txn.open_table(META)
                .unwrap()
                .insert("schema", bytes.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        for read_only in [false, true] {
            let opened = if read_only {
                Database::open_read_only(dir.path())
            } else {
                Database::open(dir.path())
            };
            match opened {
                Err(Error::Corrupted { path, reason }) => {
                    assert!(path.ends_with("docs.redb"), "{}", path.display());
                    assert!(reason.contains("schema"), "{reason}");
                }
                other => panic!(
                    "{schema:?}: expected Corrupted, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
    }
}

/// HNSW parameters a search would allocate by are bounded like a query's `ef`.
#[test]
fn schema_hnsw_parameters_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let huge = hybridb::HnswParams {
        ef_search: Query::MAX_EF + 1,
        ..Default::default()
    };
    let schema = |hnsw| Schema::new().dense(4, Metric::Cosine).hnsw(hnsw);
    let err = Database::open_or_create(dir.path(), schema(huge))
        .err()
        .unwrap();
    assert!(err.to_string().contains("ef_search"), "{err}");
    let most = hybridb::HnswParams {
        ef_search: Query::MAX_EF,
        ..huge
    };
    assert!(Database::open_or_create(dir.path(), schema(most)).is_ok());
}
