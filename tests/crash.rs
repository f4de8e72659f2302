//! Crash safety under SIGKILL: a child process commits batches in a loop and is killed at
//! random moments (often inside a commit); after each kill the database must open, hold exactly
//! the commits that completed, and find every committed document in every leg. At the end its
//! answers must equal those of a database rebuilt from the same documents.
//!
//! `cargo test --test crash` runs 20 cycles; `HYBRIDB_CRASH_CYCLES=200` (scripts/crash-soak.sh)
//! runs the soak.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::workload::{PER_COMMIT, check_commit_visible, document, schema};
use hybridb::{Database, DenseMode, Leg, Query, SparseVector};

/// The child: commits batch after batch until killed, reporting each completed commit.
#[test]
#[ignore = "run by crash_cycles as a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("HYBRIDB_CRASH_DIR") else {
        return;
    };
    let db = Database::open_or_create(&dir, schema()).unwrap();
    for _ in 0..100_000 {
        let c = db.seq() + 1;
        let mut w = db.writer().unwrap();
        for j in 0..PER_COMMIT {
            w.upsert(document(c, j)).unwrap();
        }
        w.commit().unwrap();
        println!("committed {c}");
    }
}

fn run_cycles(dir: &Path, cycles: usize) -> u64 {
    let mut rng = common::Rng::new(2024);
    let mut reported = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_writer", "--ignored", "--nocapture"])
            .env("HYBRIDB_CRASH_DIR", dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("committed ")?.parse::<u64>().ok())
                .last()
        });
        std::thread::sleep(Duration::from_millis(100 + (rng.next_u64() % 400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last_seen = reader.join().unwrap().unwrap_or(0);
        reported = reported.max(last_seen);

        let db = Database::open(dir).unwrap_or_else(|e| panic!("cycle {cycle}: open failed: {e}"));
        let seq = db.seq();
        // Every reported commit survived; at most one more (done, but not yet reported) did.
        assert!(
            seq >= reported && seq <= reported + 1,
            "cycle {cycle}: seq {seq}, reported {reported}"
        );
        assert_eq!(
            db.len(),
            seq * PER_COMMIT,
            "cycle {cycle}: a partial commit is visible"
        );
        assert!(db.get(&format!("c{}-0", seq + 1)).unwrap().is_none());
        // The newest commits in full, and a sample of older ones.
        for c in seq.saturating_sub(2).max(1)..=seq {
            check_commit_visible(&db, c);
        }
        if seq > 0 {
            check_commit_visible(&db, 1 + rng.next_u64() % seq);
        }
        reported = seq;
    }
    reported
}

#[test]
fn crash_cycles() {
    let cycles = std::env::var("HYBRIDB_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let commits = run_cycles(dir.path(), cycles);
    assert!(commits > 0, "the child never committed");
    eprintln!("{cycles} kill cycles, {commits} commits survived");

    // Answers equal those of a database rebuilt from the committed documents.
    let db = Database::open(dir.path()).unwrap();
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Database::open_or_create(fresh_dir.path(), schema()).unwrap();
    let mut w = fresh.writer().unwrap();
    for c in 1..=commits {
        for j in 0..PER_COMMIT {
            w.upsert(document(c, j)).unwrap();
        }
    }
    w.commit().unwrap();
    let mut rng = common::Rng::new(9);
    for _ in 0..20 {
        let c = 1 + rng.next_u64() % commits;
        let d = document(c, rng.next_u64() % PER_COMMIT);
        let q = Query::new()
            .text(format!("c{c}x1 반복"))
            .dense(d.dense_vector().unwrap().to_vec())
            .sparse(
                SparseVector::new(vec![1, (c * PER_COMMIT) as u32 + 100], vec![1.0, 1.0]).unwrap(),
            )
            .dense_mode(DenseMode::Exact)
            .k(10)
            .fetch_documents(false);
        for legs in [
            &[Leg::Dense][..],
            &[Leg::Sparse],
            &[Leg::Bm25],
            &[Leg::Dense, Leg::Sparse, Leg::Bm25],
        ] {
            let a = db.search(&q.clone().legs(legs)).unwrap();
            let b = fresh.search(&q.clone().legs(legs)).unwrap();
            let ids = |h: &[hybridb::Hit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&a), ids(&b), "{legs:?}");
        }
    }
}
