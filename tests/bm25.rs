//! BM25 scores as a function of the live documents: bit-identical across ingests, commit
//! batchings and deletes, and deleted documents merged away past a share of a segment.

mod common;

use std::path::Path;

use hybridb::{Database, Document, Leg, Query, Schema};

/// A word of a Zipf-like vocabulary: small numbers are frequent.
fn word(rng: &mut common::Rng) -> String {
    let u = rng.f32();
    format!("w{}", (2000f32.powf(u * u)) as u32)
}

/// `n` documents `(id, title, text)` of 3 to 300 words, so that long ones have lossy fieldnorms.
fn corpus(n: usize, seed: u64) -> Vec<(String, String, String)> {
    let mut rng = common::Rng::new(seed);
    (0..n)
        .map(|i| {
            let len = 3 + (rng.f32() * rng.f32() * 300.0) as usize;
            let title: Vec<String> = (0..2).map(|_| word(&mut rng)).collect();
            let text: Vec<String> = (0..len).map(|_| word(&mut rng)).collect();
            (format!("d{i}"), title.join(" "), text.join(" "))
        })
        .collect()
}

fn queries() -> Vec<String> {
    let mut rng = common::Rng::new(99);
    (0..40)
        .map(|i| {
            let terms: Vec<String> = (0..1 + i % 6).map(|_| word(&mut rng)).collect();
            terms.join(" ")
        })
        .collect()
}

fn upsert_all(db: &Database, docs: &[(String, String, String)]) {
    let mut w = db.writer().unwrap();
    for (id, title, text) in docs {
        w.upsert(Document::new(id).title(title).text(text)).unwrap();
    }
    w.commit().unwrap();
}

fn delete_all<'a>(db: &Database, ids: impl IntoIterator<Item = &'a String>) {
    let mut w = db.writer().unwrap();
    for id in ids {
        w.delete(id).unwrap();
    }
    w.commit().unwrap();
}

/// Every query's BM25 top 50 as `(id, score bits)`.
fn answers(db: &Database) -> Vec<Vec<(String, u32)>> {
    queries()
        .iter()
        .map(|q| {
            let query = Query::new().text(q).legs(&[Leg::Bm25]).k(50);
            let hits = db.search(&query).unwrap();
            hits.into_iter()
                .map(|h| (h.id, h.score.to_bits()))
                .collect()
        })
        .collect()
}

fn assert_same(a: &[Vec<(String, u32)>], b: &[Vec<(String, u32)>], what: &str) {
    for (q, (a, b)) in queries().iter().zip(a.iter().zip(b)) {
        assert_eq!(a, b, "{what}: query {q:?}");
    }
}

/// The database holding only `docs`, ingested in one commit.
fn fresh(dir: &Path, docs: &[(String, String, String)]) -> Database {
    let db = Database::open_or_create(dir, Schema::new().text()).unwrap();
    upsert_all(&db, docs);
    db
}

#[test]
fn the_same_live_documents_give_bit_identical_bm25_answers() {
    let docs = corpus(3000, 7);
    let junk = corpus(600, 8);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let open = |i: usize| Database::open_or_create(dirs[i].path(), Schema::new().text()).unwrap();
    // The same documents in the same commits, twice: several segments per commit and
    // background merges lay documents out differently each time.
    let same_commits = |db: &Database| {
        for chunk in docs.chunks(250) {
            upsert_all(db, chunk);
        }
    };
    let (a, b) = (open(0), open(1));
    same_commits(&a);
    same_commits(&b);
    let want = answers(&a);
    assert!(want.iter().filter(|hits| hits.len() == 50).count() > 30);
    assert_same(&want, &answers(&b), "same commits");
    // After a checkpoint (merges settled) and a reopen.
    b.checkpoint().unwrap();
    assert_same(&want, &answers(&b), "after checkpoint");
    drop(b);
    assert_same(&want, &answers(&open(1)), "after reopen");
    // Other batchings, with documents that come and go in between (renamed, so that the kept
    // documents are numbered in the same order).
    let c = open(2);
    let junk: Vec<_> = junk
        .into_iter()
        .map(|(id, title, text)| (format!("x{id}"), title, text))
        .collect();
    for (chunk, extra) in docs.chunks(1000).zip(junk.chunks(200)) {
        upsert_all(&c, extra);
        upsert_all(&c, chunk);
        c.checkpoint().unwrap();
    }
    delete_all(&c, junk.iter().map(|d| &d.0));
    assert_same(&want, &answers(&c), "other batching, deletes");
    c.compact().unwrap();
    assert_same(&want, &answers(&c), "after compact");
    // One commit.
    let d = open(3);
    upsert_all(&d, &docs);
    assert_same(&want, &answers(&d), "one commit");
}

/// Files of tantivy delete bitsets in `text/`.
fn delete_files(db: &Path) -> usize {
    std::fs::read_dir(db.join("text"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "del")
        })
        .count()
}

#[test]
fn deleted_documents_do_not_weigh_and_are_merged_away_past_a_fifth_of_a_segment() {
    let docs = corpus(2000, 21);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), Schema::new().text()).unwrap();
    upsert_all(&db, &docs);
    db.checkpoint().unwrap();
    assert_eq!(delete_files(dir.path()), 0);
    let remaining = |every: usize| -> Vec<_> {
        (0..docs.len())
            .filter(|i| i % every != 0)
            .map(|i| docs[i].clone())
            .collect()
    };
    // A tenth deleted: below the share, the deletes stay in place...
    let kept = remaining(10);
    delete_all(&db, (0..docs.len()).step_by(10).map(|i| &docs[i].0));
    db.checkpoint().unwrap();
    assert!(delete_files(dir.path()) > 0, "merged below the share");
    // ...but do not weigh on the scores.
    let other = tempfile::tempdir().unwrap();
    assert_same(
        &answers(&fresh(other.path(), &kept)),
        &answers(&db),
        "a tenth deleted",
    );
    // Half deleted: merged away in the background, settled by the checkpoint.
    let kept = remaining(2);
    delete_all(&db, (0..docs.len()).step_by(2).map(|i| &docs[i].0));
    db.checkpoint().unwrap();
    assert_eq!(delete_files(dir.path()), 0, "deletes left past the share");
    let other = tempfile::tempdir().unwrap();
    assert_same(
        &answers(&fresh(other.path(), &kept)),
        &answers(&db),
        "half deleted",
    );
}
