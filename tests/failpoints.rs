//! Deterministic crashes at every step of the commit protocol, and of the sparse and HNSW
//! checkpoints: a child process aborts exactly there (feature `failpoints`), and the database
//! must reopen at the last completed commit with every index agreeing with the store.

mod common;

use std::process::Command;

use common::workload::{PER_COMMIT, check_commit_visible, document, schema};
use hybridb::Database;

/// The child: commit 1 and a checkpoint, then commit 2 and another checkpoint; the failpoint
/// named by HYBRIDB_FAILPOINT aborts the process on the way.
#[test]
#[ignore = "run by crash_at_every_step as a child process"]
fn failpoint_child() {
    let Ok(dir) = std::env::var("HYBRIDB_FAILPOINT_DIR") else {
        return;
    };
    let db = Database::open_or_create(&dir, schema()).unwrap();
    for c in 1..=2 {
        let mut w = db.writer().unwrap();
        for j in 0..PER_COMMIT {
            w.upsert(document(c, j)).unwrap();
        }
        w.commit().unwrap();
        db.checkpoint().unwrap();
    }
}

#[test]
fn crash_at_every_step() {
    // (failpoint, hit, commits that must be visible after the crash)
    let cases = [
        ("commit:before-vectors", 2, 1),
        ("commit:before-colbert", 2, 1),
        ("commit:before-store-commit", 2, 1),
        ("commit:after-store-commit", 2, 2),
        ("commit:before-sparse", 2, 2),
        ("commit:before-text", 2, 2),
        ("commit:before-publish", 2, 2),
        ("sparse:before-manifest", 2, 2),
        ("hnsw:before-manifest", 2, 2),
        ("commit:before-store-commit", 1, 0),
        ("commit:after-store-commit", 1, 1),
    ];
    for (point, hit, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "failpoint_child", "--ignored", "--nocapture"])
            .env("HYBRIDB_FAILPOINT_DIR", dir.path())
            .env("HYBRIDB_FAILPOINT", format!("{point}:{hit}"))
            .output()
            .unwrap()
            .status;
        assert!(!status.success(), "{point}:{hit} was never reached");
        let db = Database::open(dir.path())
            .unwrap_or_else(|e| panic!("{point}:{hit}: reopen failed: {e}"));
        assert_eq!(db.seq(), want, "{point}:{hit}");
        assert_eq!(db.len(), want * PER_COMMIT, "{point}:{hit}");
        for c in 1..=want {
            check_commit_visible(&db, c);
        }
        assert!(db.get(&format!("c{}-0", want + 1)).unwrap().is_none());
        // And it keeps working: the next commit lands and is found everywhere.
        let mut w = db.writer().unwrap();
        for j in 0..PER_COMMIT {
            w.upsert(document(want + 1, j)).unwrap();
        }
        w.commit().unwrap();
        check_commit_visible(&db, want + 1);
    }
}
