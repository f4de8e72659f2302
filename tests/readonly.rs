//! Read-only opens from other processes, beside a live writer.

mod common;

use std::process::Command;

use common::workload::{PER_COMMIT, check_commit_visible, document, schema};
use hybridb::{Database, Error};

fn commit(db: &Database, c: u64) {
    let mut w = db.writer().unwrap();
    for j in 0..PER_COMMIT {
        w.upsert(document(c, j)).unwrap();
    }
    w.commit().unwrap();
}

/// The child: opens the database read-only `HYBRIDB_RO_OPENS` times and checks that each
/// handle holds whole commits, every one found by every leg.
#[test]
#[ignore = "run by readers_in_other_processes_see_whole_commits as a child process"]
fn read_only_child() {
    let Ok(dir) = std::env::var("HYBRIDB_RO_DIR") else {
        return;
    };
    let opens: usize = std::env::var("HYBRIDB_RO_OPENS").unwrap().parse().unwrap();
    let mut seen = Vec::new();
    for _ in 0..opens {
        let db = Database::open_read_only(&dir).unwrap();
        let seq = db.seq();
        assert_eq!(db.len(), seq * PER_COMMIT, "commit {seq} is whole");
        for c in 1..=seq {
            check_commit_visible(&db, c);
        }
        assert!(db.get(&format!("c{}-0", seq + 1)).unwrap().is_none());
        assert!(matches!(db.writer(), Err(Error::ReadOnly)));
        assert!(matches!(db.checkpoint(), Err(Error::ReadOnly)));
        seen.push(seq);
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    println!("seen {seen:?}");
}

fn child(dir: &std::path::Path, opens: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "read_only_child", "--ignored", "--nocapture"])
        .env("HYBRIDB_RO_DIR", dir)
        .env("HYBRIDB_RO_OPENS", opens.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn readers_in_other_processes_see_whole_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), schema()).unwrap();
    commit(&db, 1);
    commit(&db, 2);

    // A reader process beside this open writer sees the last commit.
    let out = child(dir.path(), 1).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("seen [2]"), "{stdout}");

    // Readers opening while commits land: each open holds whole commits only.
    let reader = child(dir.path(), 20);
    for c in 3..=12 {
        commit(&db, c);
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    let out = reader.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{}",
        stdout
            .lines()
            .find(|l| l.starts_with("seen"))
            .unwrap_or_default()
    );
    db.checkpoint().unwrap();
}

#[test]
fn read_only_open_reports_a_lagging_index() {
    let dir = tempfile::tempdir().unwrap();
    let stale = tempfile::tempdir().unwrap();
    {
        let db = Database::open_or_create(dir.path(), schema()).unwrap();
        commit(&db, 1);
    }
    common::copy_dir(&dir.path().join("text"), &stale.path().join("text"));
    {
        let db = Database::open(dir.path()).unwrap();
        commit(&db, 2);
    }
    // As if the writer died between its store commit and its text commit.
    std::fs::remove_dir_all(dir.path().join("text")).unwrap();
    common::copy_dir(&stale.path().join("text"), &dir.path().join("text"));
    // The read-only open answers from what is committed and says which index is behind.
    let ro = Database::open_read_only(dir.path()).unwrap();
    let lagging = ro.stats().unwrap().lagging;
    assert_eq!(lagging.len(), 1, "{lagging:?}");
    assert_eq!((lagging[0].index, lagging[0].seq), ("text", 1));
    assert!(ro.get("c2-0").unwrap().is_some());
    let e = ro
        .search(
            &hybridb::Query::new()
                .text("c2x0")
                .legs(&[hybridb::Leg::Bm25]),
        )
        .expect_err("the text index is behind");
    assert!(
        e.to_string().contains("reopen the database read-write"),
        "{e}"
    );
    drop(ro);
    // A read-write open recovers it, and read-only opens work again.
    drop(Database::open(dir.path()).unwrap());
    let db = Database::open_read_only(dir.path()).unwrap();
    assert_eq!(db.seq(), 2);
    check_commit_visible(&db, 2);
}

/// The writer's close would compact the store, but redb refuses while this reader holds a
/// transaction, so the file is left as it is; the next close compacts it.
#[test]
fn a_read_only_handle_in_this_process_outlives_the_writers_close() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_or_create(dir.path(), schema()).unwrap();
    // Rewriting the same documents leaves free pages: closing would compact the store.
    for _ in 0..4 {
        for c in 1..=8 {
            commit(&db, c);
        }
    }
    let reader = Database::open_read_only(dir.path()).unwrap();
    drop(db);
    assert_eq!(reader.len(), 8 * PER_COMMIT);
    for c in 1..=8 {
        check_commit_visible(&reader, c);
    }
    drop(reader);
    let db = Database::open(dir.path()).unwrap();
    for c in 1..=8 {
        check_commit_visible(&db, c);
    }
}
