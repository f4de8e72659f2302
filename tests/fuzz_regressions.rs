//! Replays every input under `fixtures/fuzz/<target>/` through the reader that target fuzzes
//! (`hybridb::fuzzing`, the functions the `fuzz/` targets call): crashes kept by
//! `scripts/fuzz.sh` and hand-made hostile files. A reader may reject an input, never panic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hybridb::fuzzing;

/// Far above what any input here needs; a reader this slow has a complexity bug.
const SLOW: Duration = Duration::from_secs(20);

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn replay_fuzz_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fuzz");
    let (mut replayed, mut failures) = (0, Vec::new());
    for dir in sorted_entries(&root).into_iter().filter(|p| p.is_dir()) {
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            fuzzing::TARGETS.contains(&target.as_str()),
            "{}: no fuzz target named {target:?}",
            dir.display()
        );
        for input in sorted_entries(&dir) {
            let bytes = std::fs::read(&input).unwrap();
            let start = Instant::now();
            let outcome = std::panic::catch_unwind(|| fuzzing::run(&target, &bytes));
            let took = start.elapsed();
            if outcome.is_err() {
                failures.push(format!("{}: panicked", input.display()));
            } else if took > SLOW {
                failures.push(format!("{}: took {took:?}", input.display()));
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs under {}", root.display());
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Used by `scripts/fuzz.sh`: writes seed corpora to `$HYBRIDB_FUZZ_CORPUS/<target>/`.
#[test]
#[ignore = "run by scripts/fuzz.sh with HYBRIDB_FUZZ_CORPUS set"]
fn write_seed_corpora() {
    let out = std::env::var_os("HYBRIDB_FUZZ_CORPUS").expect("set HYBRIDB_FUZZ_CORPUS");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    fuzzing::write_seed_corpora(&fixtures, Path::new(&out)).unwrap();
}

/// Finite vectors whose inner product is inf - inf (NaN) under the Dot metric: the graph's inserts
/// and searches must treat the distance as farthest, not panic (a fuzz input once made them).
#[test]
fn dot_metric_overflow_reaches_hnsw() {
    use hybridb::{Database, DenseMode, Document, HnswParams, Metric, Query, Schema};
    let dir = tempfile::tempdir().unwrap();
    let params = HnswParams {
        m: 8,
        ef_construction: 16,
        ef_search: 16,
        exact_below: 0,
    };
    let schema = Schema::new().dense(4, Metric::Dot).hnsw(params);
    let db = Database::open_or_create(dir.path(), schema).unwrap();
    let mut w = db.writer().unwrap();
    for (i, v) in [
        [1e30, 1e30, 0.0, 0.0],
        [1e30, -1e30, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
    ]
    .into_iter()
    .enumerate()
    {
        w.upsert(Document::new(format!("d{i}")).dense(v.to_vec()))
            .unwrap();
    }
    w.commit().unwrap();
    let q = Query::new()
        .dense(vec![1e30, -1e30, 0.0, 0.0])
        .dense_mode(DenseMode::Approximate)
        .k(3);
    let hits = db.search(&q).unwrap();
    assert_eq!(hits.len(), 3);
}
