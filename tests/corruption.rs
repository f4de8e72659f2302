//! Damage every file of a database (truncation and bit flips) and check that opening and
//! querying it either fails with an error naming the damage or answers exactly as before:
//! never a panic, never a wrong answer.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::workload::{PER_COMMIT, document, schema, tokens};
use hybridb::{Database, DenseMode, Error, Leg, Query, SparseVector};

const COMMITS: u64 = 3;

fn build(dir: &Path) {
    let db = Database::open_or_create(dir, schema()).unwrap();
    for c in 1..=COMMITS {
        let mut w = db.writer().unwrap();
        for j in 0..PER_COMMIT {
            w.upsert(document(c, j)).unwrap();
        }
        w.commit().unwrap();
    }
    db.checkpoint().unwrap();
}

/// Everything the database answers about its documents, as text: each stored document, and
/// the top hits of every leg for each document's own query.
fn answers(db: &Database) -> hybridb::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut hits = |q: Query| -> hybridb::Result<()> {
        for h in db.search(&q.k(3).fetch_documents(false))? {
            let legs: Vec<String> = h
                .legs
                .iter()
                .map(|l| format!("{}#{}:{:.4}", l.leg.as_str(), l.rank, l.score))
                .collect();
            out.push(format!("{} {:.4} {legs:?}", h.id, h.score));
        }
        Ok(())
    };
    for c in 1..=COMMITS {
        for j in 0..PER_COMMIT {
            let d = document(c, j);
            let v = d.dense_vector().unwrap().to_vec();
            for mode in [DenseMode::Exact, DenseMode::Approximate] {
                hits(
                    Query::new()
                        .dense(v.clone())
                        .legs(&[Leg::Dense])
                        .dense_mode(mode),
                )?;
            }
            let unique = (c * PER_COMMIT + j) as u32 + 100;
            hits(Query::new().sparse(SparseVector::new(vec![unique], vec![1.0])?))?;
            hits(Query::new().text(format!("c{c}x{j}")).legs(&[Leg::Bm25]))?;
            hits(Query::new().text(format!("c{c}x{j}")).colbert(tokens(c, j)))?;
        }
    }
    for c in 1..=COMMITS {
        for j in 0..PER_COMMIT {
            let d = db.get(&format!("c{c}-{j}"))?;
            out.push(format!("{d:?}"));
        }
    }
    Ok(out)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.file_name().unwrap() != "LOCK" {
            out.push(p);
        }
    }
    out.sort();
    out
}

enum Damage {
    Truncate(u64),
    Flip(u64),
}

fn damages(len: u64) -> Vec<Damage> {
    let mut d = vec![Damage::Truncate(0), Damage::Truncate(len / 2)];
    if len > 0 {
        d.push(Damage::Truncate(len - 1));
        for at in [0, len / 3, len / 2, 2 * len / 3, len - 1] {
            d.push(Damage::Flip(at));
        }
    }
    d
}

fn apply(path: &Path, d: &Damage) -> String {
    match *d {
        Damage::Truncate(n) => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(n)
                .unwrap();
            format!("truncated to {n}")
        }
        Damage::Flip(at) => {
            let mut b = std::fs::read(path).unwrap();
            b[at as usize] ^= 0x10;
            std::fs::write(path, b).unwrap();
            format!("bit flipped at {at}")
        }
    }
}

#[test]
fn every_file_damaged_is_detected_or_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    build(&pristine);
    let want = answers(&Database::open(&pristine).unwrap()).unwrap();

    let mut failures = Vec::new();
    let mut report = Vec::new();
    for file in files(&pristine) {
        let rel = file.strip_prefix(&pristine).unwrap().to_path_buf();
        let len = std::fs::metadata(&file).unwrap().len();
        let mut cases = damages(len);
        if rel == Path::new("docs.redb") {
            // Inside a stored document's text, where only a record checksum can tell.
            let bytes = std::fs::read(&file).unwrap();
            let at = bytes
                .windows(4)
                .position(|w| w == b"c2x3")
                .expect("text in the store");
            cases.push(Damage::Flip(at as u64 + 1));
        }
        for (i, d) in cases.iter().enumerate() {
            let dir = tmp.path().join(format!("case-{i}"));
            let _ = std::fs::remove_dir_all(&dir);
            common::copy_dir(&pristine, &dir);
            let what = format!("{}: {}", rel.display(), apply(&dir.join(&rel), d));
            if rel == Path::new("docs.redb") {
                // Read-only first: a read-write open may repair what it finds.
                let got = catch_unwind(AssertUnwindSafe(|| {
                    let db = Database::open_read_only(&dir)?;
                    answers(&db)
                }));
                match got {
                    Err(_) => failures.push(format!("{what}: read-only: panicked")),
                    Ok(Ok(a)) if a != want => {
                        failures.push(format!("{what}: read-only: wrong answers"))
                    }
                    Ok(Ok(_)) | Ok(Err(Error::Corrupted { .. })) => {}
                    Ok(Err(e)) => failures.push(format!("{what}: read-only: {e}")),
                }
            }
            let got = catch_unwind(AssertUnwindSafe(|| {
                let db = Database::open(&dir)?;
                answers(&db)
            }));
            match got {
                Err(_) => failures.push(format!("{what}: panicked")),
                Ok(Ok(a)) if a != want => failures.push(format!("{what}: wrong answers")),
                Ok(Ok(_)) => report.push(format!("{what}: harmless")),
                Ok(Err(Error::Corrupted { path, reason })) => {
                    report.push(format!("{what}: Corrupted {} ({reason})", path.display()))
                }
                Ok(Err(e)) => failures.push(format!("{what}: not reported as Corrupted: {e}")),
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn verify_reports_and_repair_rebuilds() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    build(&db);
    let want = answers(&Database::open(&db).unwrap()).unwrap();
    let report = Database::verify(&db).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.documents, COMMITS * PER_COMMIT);
    assert_eq!(report.checked.len(), 6, "{:?}", report.checked);

    // Damage in derived data: reported as repairable, and repair restores the same answers.
    for victim in ["text", "sparse"] {
        let file = files(&db.join(victim))
            .into_iter()
            .find(|f| {
                let n = f.file_name().unwrap().to_string_lossy();
                n.ends_with(".idx") || n.ends_with(".spx")
            })
            .unwrap();
        flip(&file, 20);
        let report = Database::verify(&db).unwrap();
        assert_eq!(report.problems.len(), 1, "{victim}: {:?}", report.problems);
        let p = &report.problems[0];
        assert!(p.repairable && p.path.starts_with(db.join(victim)), "{p:?}");
        let r = Database::repair(&db).unwrap();
        assert_eq!(r.documents, COMMITS * PER_COMMIT);
        assert!(Database::verify(&db).unwrap().is_ok());
        assert_eq!(answers(&Database::open(&db).unwrap()).unwrap(), want);
    }

    // An index that opens fine but disagrees with the store: the text index of a database
    // with fewer documents at the same commit.
    let other = tmp.path().join("other");
    let small = Database::open_or_create(&other, schema()).unwrap();
    for c in 1..=COMMITS {
        let mut w = small.writer().unwrap();
        for j in 0..PER_COMMIT - 1 {
            w.upsert(document(c, j)).unwrap();
        }
        w.commit().unwrap();
    }
    drop(small);
    std::fs::remove_dir_all(db.join("text")).unwrap();
    common::copy_dir(&other.join("text"), &db.join("text"));
    let report = Database::verify(&db).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0]
            .message
            .contains("3 live documents missing"),
        "{:?}",
        report.problems
    );
    Database::repair(&db).unwrap();
    assert!(Database::verify(&db).unwrap().is_ok());
    assert_eq!(answers(&Database::open(&db).unwrap()).unwrap(), want);

    // Damage in primary data: reported as not repairable, and repair says which file.
    flip(&db.join("dense/vectors.bin"), 64 + 4 * 3);
    let report = Database::verify(&db).unwrap();
    let p = &report.problems[0];
    assert!(
        !p.repairable && p.path.ends_with("dense/vectors.bin"),
        "{p:?}"
    );
    match Database::repair(&db) {
        Err(Error::Corrupted { path, .. }) => assert!(path.ends_with("dense/vectors.bin")),
        other => panic!("repair of primary damage: {other:?}"),
    }
}
