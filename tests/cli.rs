//! The `hybridb` binary end to end on the fixtures.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn hybridb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hybridb"))
        .args(args)
        .output()
        .expect("run hybridb")
}

fn ok(args: &[&str]) -> String {
    let out = hybridb(args);
    assert!(
        out.status.success(),
        "hybridb {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ingest_run_eval_search_delete_compact() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let data = common::fixtures().join("tiny");
    let out = ok(&["ingest", "--db", s(&db), "--dataset", s(&data)]);
    assert!(out.contains("12 documents written"), "{out}");

    // A TREC run: "qid Q0 docid rank score tag", ranks from 1, k lines per query at most.
    let run = ok(&[
        "run",
        "--db",
        s(&db),
        "--queries",
        s(&data),
        "--k",
        "5",
        "--tag",
        "t1",
    ]);
    let lines: Vec<Vec<&str>> = run.lines().map(|l| l.split(' ').collect()).collect();
    assert!(
        lines
            .iter()
            .all(|l| l.len() == 6 && l[1] == "Q0" && l[5] == "t1")
    );
    let q1: Vec<&Vec<&str>> = lines.iter().filter(|l| l[0] == "q1").collect();
    assert_eq!(q1.len(), 5);
    assert_eq!(
        q1.iter().map(|l| l[3]).collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(q1[0][2], "seoul");
    let run_file = tmp.path().join("run.txt");
    std::fs::write(&run_file, &run).unwrap();

    // eval of the run file and of the database (per leg and fused) as JSON.
    let ev: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--queries",
        s(&data),
        "--run",
        s(&run_file),
        "--json",
    ]))
    .unwrap();
    let m = ev.as_object().unwrap().values().next().unwrap();
    assert_eq!(m["queries"], 8);
    assert!(m["recall"][2].as_f64().unwrap() >= 0.99, "{m}");
    let ev: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--queries",
        s(&data),
        "--db",
        s(&db),
        "--json",
    ]))
    .unwrap();
    for key in ["dense", "bm25", "fused (weighted)"] {
        assert!(ev.get(key).is_some(), "{ev}");
    }
    assert!(ev["bm25"]["recall"][0].as_f64().unwrap() >= 0.85, "{ev}");

    // Three candidate legs and a ColBERT rerank (the fixture ships sparse and token vectors).
    let ev: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--queries",
        s(&data),
        "--db",
        s(&db),
        "--legs",
        "dense,sparse,bm25",
        "--rerank",
        "colbert",
        "--rerank-top",
        "10",
        "--json",
    ]))
    .unwrap();
    for key in [
        "dense",
        "sparse",
        "bm25",
        "fused (weighted)",
        "+ colbert rerank (weighted)",
    ] {
        assert_eq!(ev[key]["queries"], 8, "{key}: {ev}");
    }
    let reranked = ok(&[
        "run",
        "--db",
        s(&db),
        "--queries",
        s(&data),
        "--legs",
        "dense,sparse,bm25",
        "--rerank",
        "colbert",
        "--rerank-fusion",
        "rrf",
        "--k",
        "3",
    ]);
    assert_eq!(reranked.lines().filter(|l| l.starts_with("q1 ")).count(), 3);

    // One leg: that leg's own ranking and scores.
    let bm25 = ok(&[
        "run",
        "--db",
        s(&db),
        "--queries",
        s(&data),
        "--legs",
        "bm25",
        "--k",
        "3",
    ]);
    let first = bm25.lines().next().unwrap();
    let score: f32 = first.split(' ').nth(4).unwrap().parse().unwrap();
    assert!(score > 1.0, "a BM25 score, not an RRF one: {first}");

    // search: text + vector from a .npy row, with a metadata filter, as JSON.
    let hits: serde_json::Value = serde_json::from_str(&ok(&[
        "search",
        "--db",
        s(&db),
        "김치 발효",
        "--vector-file",
        s(&data.join("queries.dense.npy")),
        "--row",
        "2",
        "--filter",
        "topic=food",
        "--json",
    ]))
    .unwrap();
    let hits = hits.as_array().unwrap();
    assert_eq!(hits[0]["id"], "kimchi");
    assert!(
        hits.iter()
            .all(|h| h["document"]["metadata"]["topic"] == "food")
    );

    let out = ok(&["delete", "--db", s(&db), "kimchi"]);
    assert!(out.contains("1 removed"), "{out}");
    let out = ok(&["search", "--db", s(&db), "김치 발효", "--json"]);
    assert!(!out.contains("\"kimchi\""));
    ok(&["compact", "--db", s(&db)]);
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["stats", "--db", s(&db), "--json"])).unwrap();
    assert_eq!(stats["documents"], 11);
    assert_eq!(stats["hnsw_points"], 11);
}

#[test]
fn a_malformed_line_names_file_line_and_field_and_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let bad = common::fixtures().join("bad-line.jsonl");
    let out = hybridb(&["ingest", "--db", s(&db), "--jsonl", s(&bad)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-line.jsonl:3") && err.contains("title"),
        "{err}"
    );
    // Nothing was written: the database does not exist.
    assert!(!db.join("docs.redb").exists());
}

#[test]
fn a_second_writer_process_gets_a_lock_error() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("db");
    let db = hybridb::Database::open_or_create(&db_path, hybridb::Schema::new().text()).unwrap();
    let out = hybridb(&["stats", "--db", s(&db_path)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked"), "{err}");
    drop(db);
    ok(&["stats", "--db", s(&db_path)]);
}

#[test]
fn import_squad_dedups_contexts() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("mini");
    let out = ok(&[
        "import-squad",
        s(&common::fixtures().join("squad-mini.json")),
        "--out",
        s(&out_dir),
    ]);
    assert!(out.contains("3 documents"), "{out}");
    let queries = hybridb::dataset::read_queries(&out_dir.join("queries.jsonl")).unwrap();
    assert_eq!(queries.len(), 5);
    let m1 = queries.iter().find(|q| q.id == "m1").unwrap();
    let m5 = queries.iter().find(|q| q.id == "m5").unwrap();
    assert_eq!(
        m1.relevant, m5.relevant,
        "the repeated context is one document"
    );
    // The imported folder ingests and evaluates with BM25 alone.
    let db = tmp.path().join("db");
    ok(&["ingest", "--db", s(&db), "--dataset", s(&out_dir)]);
    let ev: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--queries",
        s(&out_dir),
        "--db",
        s(&db),
        "--json",
    ]))
    .unwrap();
    assert_eq!(ev["bm25"]["queries"], 5);
}

/// A dataset folder with text only: no vector files.
fn text_only_dataset(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("text-only");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["corpus.jsonl", "queries.jsonl"] {
        std::fs::copy(common::fixtures().join("tiny").join(f), data.join(f)).unwrap();
    }
    data
}

#[test]
fn ingest_and_query_with_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let data = text_only_dataset(tmp.path());
    let model = common::fixtures().join("model/m3");
    let out = ok(&[
        "ingest",
        "--db",
        s(&db),
        "--dataset",
        s(&data),
        "--model",
        s(&model),
    ]);
    assert!(out.contains("commit 1: 12 documents written"), "{out}");

    // One commit holds all three outputs of every document.
    let h = hybridb::Database::open(&db).unwrap();
    let schema = h.schema().clone();
    assert_eq!(schema.dense.unwrap().dim, 32);
    assert!(schema.sparse && schema.colbert.unwrap().dim == 32);
    let stats = h.stats().unwrap();
    assert_eq!(
        (stats.seq, stats.with_dense, stats.hnsw_points),
        (1, 12, 12)
    );
    assert!(stats.sparse_postings > 12, "{stats:?}");
    drop(h);

    let run = ok(&[
        "run",
        "--db",
        s(&db),
        "--queries",
        s(&data),
        "--model",
        s(&model),
        "--legs",
        "dense,sparse,bm25",
        "--rerank",
        "colbert",
        "--k",
        "3",
    ]);
    let q1: Vec<&str> = run.lines().filter(|l| l.starts_with("q1 ")).collect();
    assert_eq!(q1.len(), 3, "{run}");

    let hits = ok(&[
        "search",
        "--db",
        s(&db),
        "--model",
        s(&model),
        "--json",
        "--rerank",
        "colbert",
        "서울 날씨",
    ]);
    let hits: serde_json::Value = serde_json::from_str(&hits).unwrap();
    let legs: Vec<&str> = hits[0]["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["leg"].as_str().unwrap())
        .collect();
    for leg in ["dense", "sparse", "colbert"] {
        assert!(legs.contains(&leg), "{legs:?}");
    }
}

#[test]
fn encode_prints_the_three_outputs() {
    let model = common::fixtures().join("model/m3-heads");
    let out = ok(&[
        "encode",
        "--model",
        s(&model),
        "--max-length",
        "48",
        "--json",
        "What is hybrid search?",
        "",
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixtures().join("model/reference.json")).unwrap(),
    )
    .unwrap();
    let want = &reference["m3"][0];
    assert_eq!(
        lines[0]["tokens"],
        want["input_ids"].as_array().unwrap().len()
    );
    for (g, w) in lines[0]["dense"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["dense"].as_array().unwrap())
    {
        assert!((g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-5);
    }
    assert_eq!(
        lines[0]["sparse"].as_object().unwrap().len(),
        want["sparse"].as_object().unwrap().len()
    );
    assert_eq!(
        lines[0]["colbert"].as_array().unwrap().len(),
        want["colbert"].as_array().unwrap().len()
    );
    // The empty text: <s> </s>, no sparse weight, one ColBERT row.
    assert_eq!(lines[1]["tokens"], 2);
    assert_eq!(lines[1]["colbert"].as_array().unwrap().len(), 1);
}

#[test]
fn model_errors_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = text_only_dataset(tmp.path());
    let model = common::fixtures().join("model/m3");
    let fail = |args: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hybridb"));
        cmd.args(args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    };

    // Missing model directory, and a directory that holds no model.
    let db = tmp.path().join("db1");
    let e = fail(
        &[
            "ingest",
            "--db",
            s(&db),
            "--dataset",
            s(&data),
            "--model",
            s(&tmp.path().join("nope")),
        ],
        None,
    );
    assert!(e.contains("does not exist"), "{e}");
    let e = fail(
        &[
            "ingest",
            "--db",
            s(&db),
            "--dataset",
            s(&data),
            "--model",
            s(&data),
        ],
        None,
    );
    assert!(
        e.contains("no tokenizer.json") && e.contains("corpus.jsonl"),
        "{e}"
    );
    assert!(!db.exists());

    // No onnxruntime library.
    let e = fail(
        &[
            "ingest",
            "--db",
            s(&db),
            "--dataset",
            s(&data),
            "--model",
            s(&model),
        ],
        Some(("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")),
    );
    assert!(
        e.contains("not found") && e.contains("setup-onnxruntime.sh"),
        "{e}"
    );
    assert!(!db.exists());

    // A database whose dense dimension differs from the model's: refused, nothing written.
    let db = tmp.path().join("db2");
    ok(&[
        "ingest",
        "--db",
        s(&db),
        "--dataset",
        s(&common::fixtures().join("tiny")),
    ]);
    let before = hybridb::Database::open(&db).unwrap().stats().unwrap().seq;
    let e = fail(
        &[
            "ingest",
            "--db",
            s(&db),
            "--dataset",
            s(&data),
            "--model",
            s(&model),
        ],
        None,
    );
    assert!(
        e.contains("dense vectors have") && e.contains("produces 32"),
        "{e}"
    );
    let after = hybridb::Database::open(&db).unwrap().stats().unwrap();
    assert_eq!(after.seq, before);
}

#[test]
fn verify_and_repair_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    ok(&[
        "ingest",
        "--db",
        s(&db),
        "--dataset",
        s(&common::fixtures().join("tiny")),
    ]);
    let out = ok(&["verify", "--db", s(&db)]);
    assert!(out.contains("ok       store: 12 live documents"), "{out}");
    assert!(!out.contains("PROBLEM"));

    // Damage the text index: verify fails naming it; repair rebuilds it.
    let idx = std::fs::read_dir(db.join("text"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "idx"))
        .unwrap();
    let mut b = std::fs::read(&idx).unwrap();
    b[10] ^= 0x40;
    std::fs::write(&idx, b).unwrap();
    let out = hybridb(&["verify", "--db", s(&db)]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PROBLEM") && stdout.contains("hybridb repair"),
        "{stdout}"
    );
    let out = ok(&["repair", "--db", s(&db)]);
    assert!(
        out.contains("rebuilt the derived indexes of 12 live documents"),
        "{out}"
    );
    ok(&["verify", "--db", s(&db)]);
    let hits = ok(&["search", "--db", s(&db), "--legs", "bm25", "서울"]);
    assert!(hits.contains("seoul"), "{hits}");
}

/// Runs a command that must fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = hybridb(args);
    assert!(!out.status.success(), "hybridb {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn repeated_ids_and_keys_are_reported_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let input = tmp.path().join("dup.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"g0\", \"text\": \"a\"}\n{\"id\": \"g1\", \"text\": \"b\"}\n\
         {\"id\": \"g2\", \"text\": \"c\"}\n{\"id\": \"g1\", \"text\": \"d\"}\n",
    )
    .unwrap();
    let err = fails(&["ingest", "--db", s(&db), "--jsonl", s(&input)]);
    assert!(
        err.contains("dup.jsonl:4") && err.contains("\"g1\"") && err.contains("line 2"),
        "{err}"
    );
    assert!(!db.exists());
    std::fs::write(
        &input,
        "{\"id\": \"g0\", \"text\": \"a\", \"id\": \"g9\"}\n",
    )
    .unwrap();
    let err = fails(&["ingest", "--db", s(&db), "--jsonl", s(&input)]);
    assert!(
        err.contains("dup.jsonl:1") && err.contains("duplicate key \"id\""),
        "{err}"
    );
    assert!(!db.exists());
}

#[test]
fn bad_ids_are_refused_and_search_escapes_what_it_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let input = tmp.path().join("ids.jsonl");
    for (id, shown) in [
        (r#"a b"#, r#""a b""#),
        (r#"a\u0000b"#, r#""a\0b""#),
        (r#"\u001b[31mred"#, r#""\u{1b}[31mred""#),
    ] {
        std::fs::write(
            &input,
            format!("{{\"id\": \"ok\", \"text\": \"\"}}\n{{\"id\": \"{id}\", \"text\": \"x\"}}\n"),
        )
        .unwrap();
        let err = fails(&["ingest", "--db", s(&db), "--jsonl", s(&input)]);
        assert!(err.contains("ids.jsonl:2") && err.contains(shown), "{err}");
        assert!(!err.contains('\0') && !err.contains('\u{1b}'), "{err:?}");
        assert!(!db.exists());
    }

    // Titles and texts are stored as given, and printed with control characters escaped.
    std::fs::write(
        &input,
        "{\"id\": \"t\", \"title\": \"bell\\u0007\\u001b[2J\", \"text\": \"kimchi\\u0000\\nline \\u202e two\"}\n",
    )
    .unwrap();
    ok(&["ingest", "--db", s(&db), "--jsonl", s(&input)]);
    let out = ok(&["search", "--db", s(&db), "--legs", "bm25", "kimchi"]);
    assert!(
        !out.chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{out:?}"
    );
    assert!(
        out.contains(r"bell\u{7}\u{1b}[2J") && out.contains(r"kimchi\0\nline \u{202e} two"),
        "{out}"
    );
}

#[test]
fn an_empty_input_is_an_error_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "\n  \n").unwrap();
    let err = fails(&["ingest", "--db", s(&db), "--jsonl", s(&empty)]);
    assert!(err.contains("empty.jsonl: no documents"), "{err}");
    assert!(!db.exists());
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("corpus.jsonl"), "").unwrap();
    let err = fails(&["ingest", "--db", s(&db), "--dataset", s(&data)]);
    assert!(err.contains("corpus.jsonl: no documents"), "{err}");
    assert!(!db.exists());

    // On an existing database: an error, and no commit.
    ok(&[
        "ingest",
        "--db",
        s(&db),
        "--dataset",
        s(&common::fixtures().join("tiny")),
    ]);
    let err = fails(&["ingest", "--db", s(&db), "--jsonl", s(&empty)]);
    assert!(err.contains("no documents"), "{err}");
    let stats = hybridb::Database::open(&db).unwrap().stats().unwrap();
    assert_eq!((stats.seq, stats.documents), (1, 12));
}

/// Runs the binary with the failpoint `point` armed (see `fsio::failpoint`).
#[cfg(feature = "failpoints")]
fn failing_at(point: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hybridb"))
        .args(args)
        .env("HYBRIDB_FAILPOINT", point)
        .output()
        .unwrap()
}

/// A first ingest that fails before its commit point leaves no database behind: not the
/// directory it made, nor the files it added to one that existed.
#[cfg(feature = "failpoints")]
#[test]
fn a_failed_first_ingest_removes_what_it_created() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::fixtures().join("tiny");
    let ingest = |db: &Path, point: &str| {
        failing_at(point, &["ingest", "--db", s(db), "--dataset", s(&data)])
    };
    let db = tmp.path().join("new");
    let out = ingest(&db, "commit:before-store-commit:enospc");
    assert!(!out.status.success());
    assert!(!db.exists());

    let db = tmp.path().join("existing");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("notes.txt"), "mine").unwrap();
    let out = ingest(&db, "commit:before-vectors:enospc");
    assert!(!out.status.success());
    let left: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);

    // Past the commit point the commit is durable: the database stays, and the error says so.
    let db = tmp.path().join("committed");
    let out = ingest(&db, "commit:after-store-commit:enospc");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("commit 1 is durable"), "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    let stats = hybridb::Database::open(&db).unwrap().stats().unwrap();
    assert_eq!((stats.seq, stats.documents), (1, 12));
}

/// With the text index unable to catch up (a full disk), stats and the other legs still answer
/// from the committed data, and a BM25 search says which index is behind.
#[cfg(feature = "failpoints")]
#[test]
fn reads_work_while_the_text_index_cannot_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let data = common::fixtures().join("tiny");
    let run = |args: &[&str], point: &str| failing_at(point, args);
    let out = run(
        &["ingest", "--db", s(&db), "--dataset", s(&data)],
        "commit:before-text:enospc",
    );
    assert!(!out.status.success());
    let enospc = "open:before-text:enospc";
    let out = run(&["stats", "--db", s(&db), "--json"], enospc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["documents"], 12);
    assert_eq!(stats["lagging"][0]["index"], "text", "{stats}");
    let out = run(&["search", "--db", s(&db), "서울"], enospc);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the text index holds commits up to 0"),
        "{err}"
    );
    // With space again, the index catches up.
    let out = run(&["search", "--db", s(&db), "서울"], "none");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of the tiny dataset to damage.
fn tiny_copy(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("tiny");
    std::fs::create_dir_all(&data).unwrap();
    for e in std::fs::read_dir(common::fixtures().join("tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
    }
    data
}

#[test]
fn input_errors_name_the_file_and_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");

    // A bad row of the sparse side file is reported against that file and its line.
    let data = tiny_copy(&tmp.path().join("sparse"));
    let path = data.join("corpus.sparse.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = r#"{"indices": [9, 4], "values": [0.5, 0.5]}"#.into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = fails(&["ingest", "--db", s(&db), "--dataset", s(&data)]);
    assert!(err.contains("corpus.sparse.jsonl:3: indices"), "{err}");
    assert!(!err.contains("corpus.jsonl"), "{err}");
    assert!(!db.exists());

    // A non-finite dense value: the .npy file and row, once, and no id repeated.
    let data = tiny_copy(&tmp.path().join("dense"));
    let path = data.join("corpus.dense.npy");
    let mut m = hybridb::npy::read_f32_matrix(&path).unwrap();
    m.data[3 * m.dim + 1] = f32::NAN;
    hybridb::npy::write_f32_matrix(&path, m.rows, m.dim, &m.data).unwrap();
    let err = fails(&["ingest", "--db", s(&db), "--dataset", s(&data)]);
    assert_eq!(err.matches("corpus.dense.npy row 3").count(), 1, "{err}");
    assert!(!db.exists());

    // Vectors of another dimension than the database's: the file, and no id twice.
    ok(&[
        "ingest",
        "--db",
        s(&db),
        "--dataset",
        s(&common::fixtures().join("tiny")),
    ]);
    let input = tmp.path().join("dims.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"d1\", \"text\": \"x\", \"dense\": [1, 2]}\n",
    )
    .unwrap();
    let err = fails(&["ingest", "--db", s(&db), "--jsonl", s(&input)]);
    assert!(
        err.contains("dims.jsonl") && err.contains("dimension 2") && err.matches("d1").count() <= 1,
        "{err}"
    );

    // Token offsets past the end: plain numbers, no Debug text.
    let data = tiny_copy(&tmp.path().join("offsets"));
    let path = data.join("corpus.colbert.offsets.npy");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(&(1i64 << 62).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let err = fails(&[
        "ingest",
        "--db",
        s(&tmp.path().join("db2")),
        "--dataset",
        s(&data),
    ]);
    assert!(
        err.contains("offsets end at 4611686018427387904") && !err.contains("Some("),
        "{err}"
    );

    // The OS error once.
    let err = fails(&[
        "ingest",
        "--db",
        s(&tmp.path().join("db3")),
        "--jsonl",
        s(&tmp.path().join("missing.jsonl")),
    ]);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");

    // A UTF-8 byte order mark at the start of a file is skipped.
    let input = tmp.path().join("bom.jsonl");
    std::fs::write(&input, "\u{feff}{\"id\": \"b1\", \"text\": \"bom\"}\n").unwrap();
    let out = ok(&[
        "ingest",
        "--db",
        s(&tmp.path().join("db4")),
        "--jsonl",
        s(&input),
    ]);
    assert!(out.contains("1 documents written"), "{out}");
}
