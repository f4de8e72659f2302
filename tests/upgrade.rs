//! A store written by the previous format (2: plain postcard records) opens with this build,
//! keeps every document readable, takes new writes, and is then marked as format 3. The
//! format-2 layout is written here from storage-format.md, independently of the library.

mod common;

use std::path::Path;

use hybridb::{Database, Document, Error, Leg, Metric, Query, Schema, SparseVector};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde_json::json;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DOCS: TableDefinition<u64, &[u8]> = TableDefinition::new("docs");
const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");

/// `DocRecord` of format 2, field for field.
#[derive(Serialize)]
struct RecordV2<'a> {
    id: &'a str,
    title: &'a str,
    text: &'a str,
    metadata: &'a str,
    seq: u64,
    sparse: Option<SparseV2>,
}

#[derive(Serialize)]
struct SparseV2 {
    indices: Vec<u32>,
    values: Vec<f32>,
}

fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn sparse(seed: usize) -> SparseVector {
    let seed = seed as u32;
    SparseVector::new(vec![seed, seed + 7, 250_000 + seed], vec![0.5, 1.5, 0.25]).unwrap()
}

/// Even documents have prose long enough to be compressed, odd ones a few words.
fn text(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("{i}번 문서. ") + &"서울은 한강을 따라 펼쳐진 대한민국의 수도이다. ".repeat(10)
    } else {
        format!("{i}번 짧은 문서")
    }
}

fn doc(i: usize) -> Document {
    Document::new(format!("d{i}"))
        .title(format!("제목 {i}"))
        .text(text(i))
        .metadata(json!({"n": i}))
        .dense(vec![1.0, i as f32, 0.5, -1.0])
        .sparse(sparse(i))
}

fn format_of(path: &Path) -> u32 {
    let db = redb::Database::open(path.join("docs.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let v = meta.get("format").unwrap().unwrap();
    u32::from_le_bytes(v.value().try_into().unwrap())
}

/// Rewrites every record of `path`'s store in format 2 and marks the store as format 2.
fn downgrade(path: &Path, docs: &[Document]) {
    let db = redb::Database::open(path.join("docs.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let ids = txn.open_table(IDS).unwrap();
        let mut table = txn.open_table(DOCS).unwrap();
        for (i, d) in docs.iter().enumerate() {
            let num = ids.get(d.id()).unwrap().unwrap().value();
            let s = d.sparse_vector().unwrap();
            let record = RecordV2 {
                id: d.id(),
                title: &format!("제목 {i}"),
                text: &text(i),
                metadata: &json!({"n": i}).to_string(),
                seq: 1,
                sparse: Some(SparseV2 {
                    indices: s.indices().to_vec(),
                    values: s.values().to_vec(),
                }),
            };
            let bytes = with_crc(postcard::to_allocvec(&record).unwrap());
            table.insert(num, bytes.as_slice()).unwrap();
        }
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("format", 2u32.to_le_bytes().as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_format_2_store_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().dense(4, Metric::Cosine).sparse().text();
    let docs: Vec<Document> = (0..6).map(doc).collect();
    {
        let db = Database::open_or_create(dir.path(), schema).unwrap();
        let mut w = db.writer().unwrap();
        for d in &docs {
            w.upsert(d.clone()).unwrap();
        }
        w.commit().unwrap();
    }
    assert_eq!(format_of(dir.path()), 3);
    downgrade(dir.path(), &docs);
    assert_eq!(format_of(dir.path()), 2);

    let check = |db: &Database| {
        for (i, d) in docs.iter().enumerate() {
            let got = db.get(d.id()).unwrap().expect("document is live");
            assert_eq!(got.title, format!("제목 {i}"));
            assert_eq!(got.text, text(i));
            assert_eq!(got.metadata, json!({"n": i}));
        }
        let hits = db
            .search(&Query::new().sparse(sparse(4)).legs(&[Leg::Sparse]).k(3))
            .unwrap();
        assert_eq!(hits[0].id, "d4");
        assert_eq!(hits[0].document.as_ref().unwrap().text, text(4));
    };
    {
        let db = Database::open(dir.path()).unwrap();
        check(&db);
        let mut w = db.writer().unwrap();
        w.upsert(doc(8)).unwrap();
        w.commit().unwrap();
        assert_eq!(db.get("d8").unwrap().unwrap().text, text(8));
    }
    assert_eq!(format_of(dir.path()), 3);
    let db = Database::open(dir.path()).unwrap();
    check(&db);
    assert_eq!(db.len(), 7);
    drop(db);
    let report = Database::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn a_newer_store_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().dense(4, Metric::Cosine).text();
    drop(Database::open_or_create(dir.path(), schema).unwrap());
    {
        let db = redb::Database::open(dir.path().join("docs.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format", 4u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    match Database::open(dir.path()) {
        Err(Error::Store(msg)) => assert!(msg.contains("format version 4"), "{msg}"),
        other => panic!("expected a format error, got {:?}", other.map(|_| ())),
    }
}

/// The dictionary row in the store's `meta` table, if any.
fn dictionary(path: &Path) -> Option<Vec<u8>> {
    let db = redb::Database::open(path.join("docs.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get("zstd-dict").unwrap().map(|v| v.value().to_vec())
}

/// Prose drawn from a small vocabulary: about 1.2 KB per document, compressible.
fn prose(seed: usize) -> String {
    const WORDS: [&str; 12] = [
        "서울은",
        "한강을",
        "따라",
        "펼쳐진",
        "도시이며",
        "대한민국의",
        "수도이다",
        "역사는",
        "조선",
        "시대부터",
        "이어진다",
        "인구는",
    ];
    let mut rng = common::Rng::new(seed as u64);
    (0..120)
        .map(|_| WORDS[(rng.next_u64() % 12) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_first_commit_with_enough_text_trains_a_dictionary_that_later_opens_use() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().dense(4, Metric::Cosine).sparse().text();
    let prose_doc = |i: usize| doc(i).text(prose(i));
    {
        let db = Database::open_or_create(dir.path(), schema).unwrap();
        // Too little text to train on: compressed without a dictionary.
        let mut w = db.writer().unwrap();
        for i in 0..20 {
            w.upsert(prose_doc(i)).unwrap();
        }
        w.commit().unwrap();
        let mut w = db.writer().unwrap();
        for i in 20..400 {
            w.upsert(prose_doc(i)).unwrap();
        }
        w.commit().unwrap();
        assert_eq!(db.get("d7").unwrap().unwrap().text, prose(7));
        assert_eq!(db.get("d300").unwrap().unwrap().text, prose(300));
    }
    let trained = dictionary(dir.path()).expect("a dictionary");
    {
        let db = Database::open(dir.path()).unwrap();
        let mut w = db.writer().unwrap();
        w.upsert(prose_doc(400)).unwrap();
        w.commit().unwrap();
    }
    assert_eq!(dictionary(dir.path()), Some(trained), "trained once");
    for db in [
        Database::open_read_only(dir.path()).unwrap(),
        Database::open(dir.path()).unwrap(),
    ] {
        for i in [0, 19, 20, 399, 400] {
            assert_eq!(db.get(&format!("d{i}")).unwrap().unwrap().text, prose(i));
        }
        let hits = db
            .search(&Query::new().text(prose(123)).legs(&[Leg::Bm25]).k(1))
            .unwrap();
        assert_eq!(
            hits[0].document.as_ref().unwrap().text,
            hits_text(&hits[0].id)
        );
    }
    let report = Database::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

fn hits_text(id: &str) -> String {
    prose(id[1..].parse().unwrap())
}
