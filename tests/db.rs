//! Library behaviour: persistence, visibility of updates and deletes in every leg, recovery of
//! lagging indexes, locking, validation and snapshots.

mod common;

use std::path::Path;

use hybridb::{
    Database, DenseMode, Document, Error, Fusion, Leg, Metric, Query, Schema, SparseVector,
};
use serde_json::json;

const DIM: usize = 8;

fn schema() -> Schema {
    Schema::new().dense(DIM, Metric::Cosine).sparse().text()
}

fn vec_for(seed: u64) -> Vec<f32> {
    let mut rng = common::Rng::new(seed);
    (0..DIM).map(|_| rng.normal()).collect()
}

fn doc(id: &str, text: &str, seed: u64) -> Document {
    Document::new(id)
        .title(format!("{id} 제목"))
        .text(text)
        .metadata(json!({"source": "test", "n": seed}))
        .dense(vec_for(seed))
}

/// Ids found by each leg for a query built from `text` and the vector of `seed`.
fn ids(db: &Database, leg: Leg, text: &str, seed: u64) -> Vec<String> {
    let q = Query::new()
        .text(text)
        .dense(vec_for(seed))
        .k(20)
        .legs(&[leg]);
    db.search(&q).unwrap().into_iter().map(|h| h.id).collect()
}

fn populate(path: &Path) -> Database {
    let db = Database::open_or_create(path, schema()).unwrap();
    let mut w = db.writer().unwrap();
    w.upsert(doc("a", "서울은 대한민국의 수도이다", 1)).unwrap();
    w.upsert(doc("b", "부산은 항구 도시이다", 2)).unwrap();
    w.upsert(doc("c", "김치는 발효 음식이다", 3)).unwrap();
    w.commit().unwrap();
    db
}

#[test]
fn persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = populate(dir.path());
        assert_eq!(db.len(), 3);
    }
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.len(), 3);
    assert_eq!(db.seq(), 1);
    let got = db.get("b").unwrap().unwrap();
    assert_eq!(got.text, "부산은 항구 도시이다");
    assert_eq!(got.metadata, json!({"source": "test", "n": 2}));
    assert_eq!(ids(&db, Leg::Bm25, "항구 도시", 0)[0], "b");
    assert_eq!(ids(&db, Leg::Dense, "", 3)[0], "c");
    // Opening with a different schema is refused.
    drop(db);
    let other = Schema::new().dense(DIM + 1, Metric::Cosine).text();
    assert!(matches!(
        Database::open_or_create(dir.path(), other),
        Err(Error::InvalidInput(_))
    ));
}

/// Bytes of the store file that no table page uses, and the file's length.
fn store_free(dir: &Path) -> (u64, u64) {
    let path = dir.join("docs.redb");
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    let s = txn.stats().unwrap();
    txn.abort().unwrap();
    drop(db);
    let used = (s.leaf_pages() + s.branch_pages()) * s.page_size() as u64;
    let len = std::fs::metadata(&path).unwrap().len();
    (len - used, len)
}

#[test]
fn closing_compacts_a_store_with_much_free_space() {
    const ROUNDS: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    // Random syllables: text that compresses little, about 1.5 KB per document.
    let text = |i: u64| {
        let mut rng = common::Rng::new(i);
        let syllable = |r: u64| char::from_u32(0xAC00 + (r % 2350) as u32).unwrap();
        (0..500)
            .map(|_| syllable(rng.next_u64()))
            .collect::<String>()
    };
    {
        let db = Database::open_or_create(dir.path(), schema()).unwrap();
        // Rewriting every document frees the pages of the first versions.
        for round in 0..ROUNDS {
            let mut w = db.writer().unwrap();
            for i in 0..400 {
                w.upsert(doc(&format!("d{i}"), &text(i + round), i))
                    .unwrap();
            }
            w.commit().unwrap();
        }
    }
    let (free, len) = store_free(dir.path());
    assert!(free * 8 < len, "{free} of {len} bytes free after closing");
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.len(), 400);
    assert_eq!(db.get("d7").unwrap().unwrap().text, text(7 + ROUNDS - 1));
    assert_eq!(ids(&db, Leg::Dense, "", 7)[0], "d7");
    drop(db);
    let report = Database::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn updates_and_deletes_are_visible_in_every_leg() {
    let dir = tempfile::tempdir().unwrap();
    let db = populate(dir.path());
    let mut w = db.writer().unwrap();
    w.upsert(doc("a", "제주도는 섬이다", 10)).unwrap();
    w.delete("c").unwrap();
    w.delete("missing").unwrap();
    let info = w.commit().unwrap();
    assert_eq!((info.seq, info.upserted, info.removed), (2, 1, 2));
    for (leg, text, seed) in [(Leg::Bm25, "서울 수도", 1), (Leg::Dense, "", 1)] {
        let found = ids(&db, leg, text, seed);
        assert!(!found.contains(&"c".to_string()), "{leg:?}: {found:?}");
    }
    assert!(!ids(&db, Leg::Bm25, "김치 발효", 3).contains(&"c".to_string()));
    assert!(!ids(&db, Leg::Dense, "", 3).contains(&"c".to_string()));
    // The old text of "a" is gone from BM25; the new one is found, as is its new vector.
    assert!(!ids(&db, Leg::Bm25, "서울 수도", 0).contains(&"a".to_string()));
    assert_eq!(ids(&db, Leg::Bm25, "제주도 섬", 0), vec!["a"]);
    assert_eq!(ids(&db, Leg::Dense, "", 10)[0], "a");
    assert_eq!(db.get("c").unwrap(), None);
    assert_eq!(db.len(), 2);
    // The same holds after reopen and after compact.
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(ids(&db, Leg::Bm25, "제주도 섬", 0), vec!["a"]);
    db.compact().unwrap();
    let s = db.stats().unwrap();
    assert_eq!(
        (s.documents, s.hnsw_points, s.deleted_not_compacted),
        (2, 2, 0)
    );
    assert_eq!(ids(&db, Leg::Dense, "", 10)[0], "a");
    assert!(!ids(&db, Leg::Dense, "", 3).contains(&"c".to_string()));
}

#[test]
fn lagging_indexes_catch_up_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let lagging = tempfile::tempdir().unwrap();
    drop(populate(dir.path()));
    // Keep the indexes as they were after commit 1.
    common::copy_dir(&dir.path().join("text"), &lagging.path().join("text"));
    common::copy_dir(&dir.path().join("dense"), &lagging.path().join("dense"));
    {
        let db = Database::open(dir.path()).unwrap();
        let mut w = db.writer().unwrap();
        w.upsert(doc("d", "한라산은 제주도에 있다", 4)).unwrap();
        w.delete("a").unwrap();
        w.commit().unwrap();
    }
    // Put the old index files back, as if the process died right after the store committed,
    // and leave an unfinished commit's rows past the end of the vector file.
    std::fs::remove_dir_all(dir.path().join("text")).unwrap();
    common::copy_dir(&lagging.path().join("text"), &dir.path().join("text"));
    let vectors = std::fs::read(dir.path().join("dense/vectors.bin")).unwrap();
    let checksums = std::fs::read(dir.path().join("dense/vectors.crc")).unwrap();
    std::fs::remove_dir_all(dir.path().join("dense")).unwrap();
    common::copy_dir(&lagging.path().join("dense"), &dir.path().join("dense"));
    std::fs::write(dir.path().join("dense/vectors.crc"), &checksums).unwrap();
    let mut with_garbage = vectors.clone();
    with_garbage.extend_from_slice(&[0xAB; DIM * 4 * 2]);
    std::fs::write(dir.path().join("dense/vectors.bin"), &with_garbage).unwrap();

    let db = Database::open(dir.path()).unwrap();
    assert_eq!(ids(&db, Leg::Bm25, "한라산 제주도", 0), vec!["d"]);
    assert!(!ids(&db, Leg::Bm25, "서울 수도", 0).contains(&"a".to_string()));
    assert_eq!(ids(&db, Leg::Dense, "", 4)[0], "d");
    assert!(!ids(&db, Leg::Dense, "", 1).contains(&"a".to_string()));
    let s = db.stats().unwrap();
    assert_eq!((s.documents, s.text_documents), (3, 3));
    // The unfinished commit's rows were cut off.
    assert_eq!(
        std::fs::metadata(dir.path().join("dense/vectors.bin"))
            .unwrap()
            .len(),
        vectors.len() as u64
    );
    // HNSW answers agree with exact search after the catch-up.
    let q = Query::new().dense(vec_for(4)).k(3).legs(&[Leg::Dense]);
    let exact = db.search(&q.clone().dense_mode(DenseMode::Exact)).unwrap();
    let approx = db.search(&q.dense_mode(DenseMode::Approximate)).unwrap();
    assert_eq!(exact, approx);
}

#[test]
fn a_missing_or_corrupt_graph_is_rebuilt_from_the_vector_rows() {
    let dir = tempfile::tempdir().unwrap();
    drop(populate(dir.path()));
    let manifest = dir.path().join("dense/hnsw.manifest");
    let mut m = std::fs::read(&manifest).unwrap();
    m[20] ^= 0xFF;
    std::fs::write(&manifest, m).unwrap();
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.stats().unwrap().hnsw_points, 3);
    let q = Query::new()
        .dense(vec_for(2))
        .k(1)
        .legs(&[Leg::Dense])
        .dense_mode(DenseMode::Approximate);
    assert_eq!(db.search(&q).unwrap()[0].id, "b");
}

#[test]
fn corrupt_vector_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(populate(dir.path()));
    let p = dir.path().join("dense/vectors.bin");
    let mut v = std::fs::read(&p).unwrap();
    v[3] ^= 1;
    std::fs::write(&p, &v).unwrap();
    match Database::open(dir.path()) {
        Err(Error::Corrupted { path, .. }) => assert!(path.ends_with("vectors.bin")),
        other => panic!("expected Corrupted, got {:?}", other.err()),
    }
    // A vector file shorter than the committed rows is corruption too.
    v[3] ^= 1;
    v.truncate(v.len() - 4);
    std::fs::write(&p, &v).unwrap();
    assert!(matches!(
        Database::open(dir.path()),
        Err(Error::Corrupted { .. })
    ));
}

#[test]
fn second_open_is_locked_and_one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = populate(dir.path());
    assert!(matches!(Database::open(dir.path()), Err(Error::Locked(_))));
    let w = db.writer().unwrap();
    assert!(matches!(db.writer(), Err(Error::WriterBusy)));
    drop(w);
    assert!(db.writer().is_ok());
    drop(db);
    assert!(Database::open(dir.path()).is_ok());
}

/// A writer can be handed to another thread (bindings and async runtimes need that), and
/// maintenance does not wait for an open writer that has not started committing.
#[test]
fn a_writer_is_send_and_commits_from_another_thread() {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let dir = tempfile::tempdir().unwrap();
    let db = populate(dir.path());
    let mut w = send(db.writer().unwrap());
    w.upsert(doc("d", "대전은 과학 도시이다", 4)).unwrap();
    db.checkpoint().unwrap();
    let info = std::thread::scope(|s| s.spawn(move || w.commit().unwrap()).join().unwrap());
    assert_eq!((info.seq, info.upserted), (2, 1));
    assert_eq!(ids(&db, Leg::Bm25, "대전", 4), ["d"]);
    // The slot is free again once the writer is gone, even if it never committed.
    let w = db.writer().unwrap();
    std::thread::scope(|s| s.spawn(move || drop(w)).join().unwrap());
    assert!(db.writer().is_ok());
}

/// A ColBERT value the collection's precision cannot hold is refused by `upsert`, before it
/// could fail the whole batch at commit.
#[test]
fn colbert_values_beyond_the_stored_precision_are_refused_at_upsert() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().text().colbert(2, hybridb::Precision::F16);
    let db = Database::open_or_create(dir.path(), schema).unwrap();
    let mut w = db.writer().unwrap();
    let err = w
        .upsert(Document::new("big").colbert(vec![1.0, 7e4]))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
    assert!(err.to_string().contains("f16"), "{err}");
    w.upsert(Document::new("ok").colbert(vec![1.0, 6e4]))
        .unwrap();
    assert_eq!(w.commit().unwrap().upserted, 1);
}

#[test]
fn bad_documents_are_rejected_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), schema()).unwrap();
    let mut w = db.writer().unwrap();
    let err = w
        .upsert(Document::new("x").dense(vec![1.0; DIM + 1]))
        .unwrap_err();
    assert!(err.to_string().contains("dimension 9"), "{err}");
    let mut nan = vec![1.0; DIM];
    nan[2] = f32::NAN;
    assert!(w.upsert(Document::new("x").dense(nan)).is_err());
    let mut inf = vec![1.0; DIM];
    inf[0] = f32::INFINITY;
    assert!(w.upsert(Document::new("x").dense(inf)).is_err());
    assert!(SparseVector::new(vec![3, 1], vec![0.1, 0.2]).is_err());
    assert!(SparseVector::new(vec![1, 3], vec![0.1]).is_err());
    assert!(w.upsert(Document::new("")).is_err());
    assert!(
        w.upsert(Document::new("x").metadata(json!([1, 2])))
            .is_err()
    );
    // An empty text is fine; a repeated id is an update.
    w.upsert(Document::new("e").text("")).unwrap();
    w.upsert(Document::new("r").text("첫 번째")).unwrap();
    w.commit().unwrap();
    let mut w = db.writer().unwrap();
    w.upsert(Document::new("r").text("두 번째")).unwrap();
    w.commit().unwrap();
    assert_eq!(db.len(), 2);
    assert_eq!(db.get("r").unwrap().unwrap().text, "두 번째");
    // A query vector of the wrong dimension is an error, not a panic.
    assert!(db.search(&Query::new().dense(vec![0.0; 3])).is_err());
    assert!(db.search(&Query::new()).is_err());
    assert!(db.search(&Query::new().text("x").k(0)).is_err());
}

#[test]
fn document_ids_follow_the_id_rule() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), schema()).unwrap();
    let mut w = db.writer().unwrap();
    let long = "x".repeat(hybridb::MAX_ID_BYTES + 1);
    for bad in [
        "",
        "a b",
        "tab\there",
        "end\n",
        "nul\0",
        "\u{1b}[31mred",
        "nbsp\u{a0}",
        &long,
    ] {
        match w.upsert(Document::new(bad).text("t")) {
            Err(Error::InvalidInput(m)) => {
                // Named, with control characters escaped, and cut short when long.
                assert!(!m.chars().any(char::is_control), "{m:?}");
                assert!(m.len() < 300, "{m}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let err = w.upsert(Document::new("a\u{1b}b")).unwrap_err().to_string();
    assert!(err.contains(r#""a\u{1b}b""#), "{err}");
    let longest = "가".repeat(hybridb::MAX_ID_BYTES / 3);
    for good in ["a", "문서-1", "x/y:z#1", &longest] {
        w.upsert(Document::new(good).text("t")).unwrap();
    }
    assert_eq!(w.len(), 4);
    w.commit().unwrap();
    assert_eq!(db.len(), 4);
}

#[test]
fn metadata_filters_restrict_every_leg() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), schema()).unwrap();
    let mut w = db.writer().unwrap();
    for i in 0..20u64 {
        let d = Document::new(format!("d{i}"))
            .text("공통 단어 문서")
            .metadata(json!({"parity": if i % 2 == 0 { "even" } else { "odd" }, "i": i, "nested": {"big": i > 15}}))
            .dense(vec_for(i));
        w.upsert(d).unwrap();
    }
    w.commit().unwrap();
    let base = Query::new().text("공통 단어").dense(vec_for(3)).k(20);
    let hits = db
        .search(&base.clone().filter_eq("parity", json!("even")))
        .unwrap();
    assert_eq!(hits.len(), 10);
    assert!(
        hits.iter()
            .all(|h| h.document.as_ref().unwrap().metadata["parity"] == "even")
    );
    let hits = db
        .search(
            &base
                .clone()
                .filter_eq("nested.big", json!(true))
                .filter_eq("parity", json!("odd")),
        )
        .unwrap();
    let mut got: Vec<String> = hits.into_iter().map(|h| h.id).collect();
    got.sort();
    assert_eq!(got, vec!["d17", "d19"]);
    let hits = db.search(&base.clone().filter_eq("i", json!(7))).unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        vec!["d7"]
    );
    assert!(
        db.search(&base.filter_eq("i", json!(100)))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn readers_see_whole_commits_while_a_writer_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), schema()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut checks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Every commit adds a batch of 5 documents sharing one word.
                let hits = db
                    .search(&Query::new().text("묶음").k(1000).fetch_documents(false))
                    .unwrap();
                assert_eq!(hits.len() % 5, 0, "saw a partial commit: {}", hits.len());
                checks += 1;
            }
            checks
        });
        for batch in 0..20 {
            let mut w = db.writer().unwrap();
            for j in 0..5 {
                w.upsert(
                    Document::new(format!("b{batch}-{j}"))
                        .text("묶음 문서")
                        .dense(vec_for(j)),
                )
                .unwrap();
            }
            w.commit().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    assert_eq!(db.len(), 100);
}

#[test]
fn hits_carry_per_leg_ranks_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let db = populate(dir.path());
    let q = Query::new().text("부산 항구").dense(vec_for(2)).k(3);
    let hits = db.search(&q.clone().fusion(Fusion::RRF_60)).unwrap();
    let b = hits.iter().find(|h| h.id == "b").unwrap();
    assert_eq!(hits[0].id, "b");
    assert_eq!(b.legs.len(), 2);
    assert!(b.legs.iter().all(|l| l.rank == 1));
    // RRF with k = 60 and two first places: 2 / 61.
    assert!((b.score - 2.0 / 61.0).abs() < 1e-6);
    let dense = b.legs.iter().find(|l| l.leg == Leg::Dense).unwrap();
    assert!(
        (dense.score - 1.0).abs() < 1e-5,
        "cosine with itself: {}",
        dense.score
    );
}
