//! The `hybridb` command line: a thin layer over the library.

mod model;
mod plan;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hybridb::dataset::{self, DatasetDir};
use hybridb::{Analyzer, Database, Hit, Metric, Precision, Schema, TextKind, eval, npy};
use indicatif::{ProgressBar, ProgressStyle};
use model::{EncoderArgs, ModelCommand};
use plan::{PlanArgs, QuerySet};

#[derive(Parser)]
#[command(
    name = "hybridb",
    version,
    about = "Embedded hybrid-retrieval database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest a dataset folder (corpus.jsonl + optional vectors) or a JSONL file, in one commit.
    /// With --model, the text is encoded and the input's vectors are ignored.
    Ingest {
        #[arg(long)]
        db: PathBuf,
        /// Dataset folder in the layout of datasets/README.md.
        #[arg(long, conflicts_with = "jsonl")]
        dataset: Option<PathBuf>,
        /// Plain JSONL: {"id","title","text","metadata"} per line, "dense"/"sparse" optional.
        #[arg(long)]
        jsonl: Option<PathBuf>,
        /// Dense metric for a new database.
        #[arg(long, default_value = "cosine")]
        metric: Metric,
        /// BM25 analyzer for a new database: hangul-bigram or default.
        #[arg(long, default_value = "hangul-bigram")]
        analyzer: Analyzer,
        /// Stored precision of ColBERT token vectors for a new database: f32, f16, int8, binary.
        #[arg(long, default_value = "f16")]
        colbert_precision: Precision,
        #[command(flatten)]
        encoder: EncoderArgs,
    },
    /// Convert SQuAD-format JSON (KorQuAD, KLUE MRC) into a dataset folder.
    ImportSquad {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Answer every query of a dataset folder and print a TREC run.
    Run {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        queries: PathBuf,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        encoder: EncoderArgs,
        /// Run tag (last column).
        #[arg(long, default_value = "hybridb")]
        tag: String,
    },
    /// Recall@1/5/10/20/100, MRR@10 and nDCG@10 of a run file, or of each leg and the fusion.
    Eval {
        #[arg(long)]
        queries: PathBuf,
        #[arg(long, conflicts_with = "db")]
        run: Option<PathBuf>,
        #[arg(long)]
        db: Option<PathBuf>,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        encoder: EncoderArgs,
        #[arg(long)]
        json: bool,
    },
    /// Search with text (encoded by --model, if given) and/or a query vector from a .npy file.
    Search {
        #[arg(long)]
        db: PathBuf,
        text: Option<String>,
        #[arg(long, requires = "row")]
        vector_file: Option<PathBuf>,
        #[arg(long)]
        row: Option<usize>,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        encoder: EncoderArgs,
        #[arg(long)]
        json: bool,
        /// Open read-only, beside a writer in another process (e.g. a running ingest).
        #[arg(long)]
        read_only: bool,
    },
    /// Encode texts with a model and print the dense, sparse and ColBERT outputs.
    Encode {
        #[arg(required = true)]
        texts: Vec<String>,
        /// Encode as queries (query prefix) rather than passages.
        #[arg(long)]
        query: bool,
        /// One JSON object per text: {"dense", "sparse", "colbert", "tokens", "truncated"}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        encoder: EncoderArgs,
    },
    /// Model directories: download one, or describe one.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Counts and sizes.
    Stats {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
        /// Open read-only, beside a writer in another process.
        #[arg(long)]
        read_only: bool,
    },
    /// Delete documents by id, in one commit.
    Delete {
        #[arg(long)]
        db: PathBuf,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Check every file and index against the store; exit status 1 when something is wrong.
    Verify {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Delete and rebuild the derived indexes (HNSW graph, sparse index, text index).
    Repair {
        #[arg(long)]
        db: PathBuf,
    },
    /// Rebuild the HNSW graph without deleted documents and merge the text index.
    Compact {
        #[arg(long)]
        db: PathBuf,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// shows (a library error such as `Error::Io` shows its source in its own text).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Ingest {
            db,
            dataset,
            jsonl,
            metric,
            analyzer,
            colbert_precision,
            encoder,
        } => ingest(
            &db,
            dataset.as_deref(),
            jsonl.as_deref(),
            Schema::new().text_with(analyzer),
            metric,
            colbert_precision,
            &encoder,
        ),
        Command::ImportSquad { file, out } => {
            let s = hybridb::squad::import_squad(&file, &out)?;
            println!(
                "wrote {}: {} documents ({} duplicate paragraphs merged), {} queries ({} unanswerable)",
                out.display(),
                s.documents,
                s.duplicate_paragraphs,
                s.queries,
                s.unanswerable
            );
            Ok(())
        }
        Command::Run {
            db,
            queries,
            plan,
            encoder,
            tag,
        } => {
            let db = Database::open(&db)?;
            let set = QuerySet::load(&queries, encoder.open()?.as_ref())?;
            let mut out = BufWriter::new(std::io::stdout().lock());
            // Each query's lines are written as its chunk of queries is answered.
            plan::answer_each(&db, &set, &plan.query(100)?, plan.k_or(100), |q, hits| {
                for (i, h) in hits.iter().enumerate() {
                    eval::write_trec_line(&mut out, &q.id, &h.id, i + 1, h.score, &tag)?;
                }
                Ok(())
            })?;
            out.flush()?;
            Ok(())
        }
        Command::Eval {
            queries,
            run,
            db,
            plan,
            encoder,
            json,
        } => plan::eval_cmd(
            &queries,
            run.as_deref(),
            db.as_deref(),
            &plan,
            encoder.open()?.as_ref(),
            json,
        ),
        Command::Search {
            db,
            text,
            vector_file,
            row,
            plan,
            encoder,
            json,
            read_only,
        } => {
            let db = open(&db, read_only)?;
            let mut q = plan.query(10)?;
            if let (Some(enc), Some(t)) = (encoder.open()?, &text) {
                let e = enc.encode(&[t], TextKind::Query)?.remove(0);
                q = plan::with_embedding(q, e, &db)?;
            }
            if let Some(t) = text {
                q = q.text(t);
            }
            if let (Some(f), Some(r)) = (vector_file, row) {
                q = q.dense(npy::read_f32_row(&f, r)?);
            }
            let hits = db.search(&q)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else {
                print_hits(&hits);
            }
            Ok(())
        }
        Command::Stats {
            db,
            json,
            read_only,
        } => {
            let s = open(&db, read_only)?.stats()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                let v = serde_json::to_value(&s)?;
                for (k, v) in v.as_object().into_iter().flatten() {
                    println!("{k:>22}  {v}");
                }
            }
            Ok(())
        }
        Command::Delete { db, ids } => {
            let db = Database::open(&db)?;
            let mut w = db.writer()?;
            for id in &ids {
                w.delete(id)?;
            }
            let info = w.commit()?;
            println!("commit {}: {} removed", info.seq, info.removed);
            Ok(())
        }
        Command::Compact { db } => {
            let db = Database::open(&db)?;
            let spinner = spinner("compacting");
            db.compact()?;
            spinner.finish_and_clear();
            let s = db.stats()?;
            println!(
                "compacted: {} documents, {} HNSW points, {} bytes on disk",
                s.documents, s.hnsw_points, s.disk_bytes
            );
            Ok(())
        }
        Command::Verify { db, json } => {
            let report = Database::verify(&db)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for c in &report.checked {
                    println!("ok       {c}");
                }
                for p in &report.problems {
                    let fix = if p.repairable {
                        "derived: `hybridb repair` rebuilds it"
                    } else {
                        "primary data: re-ingest the affected documents"
                    };
                    println!("PROBLEM  {}: {} ({fix})", p.path.display(), p.message);
                }
            }
            if !report.is_ok() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Repair { db } => {
            let spinner = spinner("rebuilding the derived indexes");
            let r = Database::repair(&db)?;
            spinner.finish_and_clear();
            for p in &r.removed {
                println!("removed  {}", p.display());
            }
            println!(
                "rebuilt the derived indexes of {} live documents",
                r.documents
            );
            Ok(())
        }
        Command::Encode {
            texts,
            query,
            json,
            encoder,
        } => model::encode_cmd(&encoder, &texts, query, json),
        Command::Model(cmd) => model::model_cmd(cmd),
    }
}

/// Ingests in one commit. When the database is new and the ingest fails with nothing committed,
/// what it created is removed: the directory, if it made it, else the entries it added.
fn ingest(
    db_path: &Path,
    dataset: Option<&Path>,
    jsonl: Option<&Path>,
    base: Schema,
    metric: Metric,
    colbert_precision: Precision,
    encoder: &EncoderArgs,
) -> Result<()> {
    let fresh = !db_path.join("docs.redb").exists();
    let before = entries(db_path);
    let mut committing = false;
    let result = ingest_into(
        db_path,
        dataset,
        jsonl,
        base,
        metric,
        colbert_precision,
        encoder,
        &mut committing,
    );
    if result.is_err() && fresh && (!committing || nothing_committed(db_path)) {
        match before {
            None => {
                let _ = std::fs::remove_dir_all(db_path);
            }
            Some(before) => {
                for name in entries(db_path).unwrap_or_default() {
                    if !before.contains(&name) {
                        let p = db_path.join(name);
                        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                    }
                }
            }
        }
    }
    result
}

/// The names in directory `dir` (none when it is not a readable directory), or `None` when
/// nothing exists at `dir`.
fn entries(dir: &Path) -> Option<std::collections::HashSet<std::ffi::OsString>> {
    if let Err(e) = std::fs::symlink_metadata(dir)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return None;
    }
    let list = std::fs::read_dir(dir).map(|l| l.flatten().map(|e| e.file_name()).collect());
    Some(list.unwrap_or_default())
}

/// Whether the database at `path` holds no commit, as a fresh open reads it. False when it
/// cannot be opened: then it is left alone.
fn nothing_committed(path: &Path) -> bool {
    Database::open_read_only(path)
        .and_then(|db| db.stats())
        .is_ok_and(|s| s.seq == 0)
}

#[allow(clippy::too_many_arguments)]
fn ingest_into(
    db_path: &Path,
    dataset: Option<&Path>,
    jsonl: Option<&Path>,
    base: Schema,
    metric: Metric,
    colbert_precision: Precision,
    encoder: &EncoderArgs,
    committing: &mut bool,
) -> Result<()> {
    let enc = encoder.open()?;
    let dir = dataset.map(DatasetDir::open).transpose()?;
    // The files the documents and their vectors come from, named in errors.
    let input = match (&dir, jsonl) {
        (Some(d), _) => d.corpus(),
        (None, Some(f)) => f.to_path_buf(),
        (None, None) => bail!("give --dataset DIR or --jsonl FILE"),
    };
    let (dense_input, sparse_input) = match (&dir, &enc) {
        (Some(d), None) => (d.corpus_dense(), d.corpus_sparse()),
        _ => (None, None),
    };
    // Every line is read and checked, and all text encoded, before anything is written.
    let mut docs = match (&dir, &enc) {
        (Some(d), Some(_)) => {
            if d.corpus_dense().is_some() || d.corpus_sparse().is_some() {
                eprintln!("note: the dataset's vector files are ignored; --model encodes the text");
            }
            dataset::read_documents(&input, None, None)
        }
        (Some(d), None) => d.documents(),
        (None, _) => dataset::read_documents(&input, None, None),
    }
    .context("nothing was ingested")?;
    if docs.is_empty() {
        bail!("{}: no documents; nothing was ingested", input.display());
    }
    let colbert = match (&enc, dir.as_ref().and_then(DatasetDir::corpus_colbert)) {
        (None, Some((tokens, _))) => Some((npy::read_npy_dim(&tokens)?.1, tokens)),
        _ => None,
    };
    let existing = if db_path.join("docs.redb").exists() {
        Some(Database::open(db_path)?)
    } else {
        None
    };
    let schema = if let Some(enc) = &enc {
        if let Some(db) = &existing {
            enc.check_schema(db.schema())
                .context("nothing was ingested")?;
        }
        let texts = docs.len();
        let started = std::time::Instant::now();
        let bar = ProgressBar::new(texts as u64).with_style(ProgressStyle::with_template(
            "encoding {bar:40} {pos}/{len} docs ({per_sec}, eta {eta})",
        )?);
        enc.encode_documents(&mut docs, &mut |n| bar.set_position(n as u64))
            .context("nothing was ingested")?;
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "encoded {texts} documents in {secs:.1}s ({:.0} docs/s)",
            texts as f64 / secs.max(1e-9)
        );
        enc.schema(base, colbert_precision)
    } else {
        let mut schema = base;
        if let Some(dim) = docs.iter().find_map(|d| d.dense_vector().map(<[f32]>::len)) {
            schema = schema.dense(dim, metric);
        }
        if docs.iter().any(|d| d.sparse_vector().is_some()) {
            schema = schema.sparse();
        }
        if let Some((dim, _)) = &colbert {
            schema = schema.colbert(*dim, colbert_precision);
        }
        if let Some(db) = &existing {
            let dense_from = dense_input.as_deref().unwrap_or(&input);
            let sparse_from = sparse_input.as_deref().unwrap_or(&input);
            let colbert_from = colbert.as_ref().map_or(input.as_path(), |(_, p)| p);
            fits(&schema, db.schema(), dense_from, sparse_from, colbert_from)
                .context("nothing was ingested")?;
        }
        schema
    };
    let db = match existing {
        Some(db) => db,
        None => Database::open_or_create(db_path, schema)?,
    };
    let total = docs.len();
    let bar = ProgressBar::new(total as u64).with_style(ProgressStyle::with_template(
        "staging {bar:40} {pos}/{len} docs ({per_sec})",
    )?);
    let mut w = db.writer()?;
    for (i, doc) in docs.into_iter().enumerate() {
        // The library's error names the document's id.
        w.upsert(doc).with_context(|| {
            format!(
                "{}, document {}: nothing was ingested",
                input.display(),
                i + 1
            )
        })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let spinner = spinner(&format!("committing {total} documents (indexing)"));
    let started = std::time::Instant::now();
    *committing = true;
    let info = w.commit()?;
    spinner.finish_and_clear();
    db.checkpoint()?;
    println!(
        "commit {}: {} documents written, {} replaced, in {:.1}s; {} live documents",
        info.seq,
        info.upserted,
        info.removed,
        started.elapsed().as_secs_f64(),
        db.len()
    );
    Ok(())
}

/// Checks that the legs the input needs (`input`, as built from the documents) exist in the
/// database's schema with the same dimensions, naming the file the vectors come from.
fn fits(
    input: &Schema,
    db: &Schema,
    dense_from: &Path,
    sparse_from: &Path,
    colbert_from: &Path,
) -> Result<()> {
    match (&input.dense, &db.dense) {
        (Some(i), Some(d)) if i.dim != d.dim => bail!(
            "{}: dense vectors have dimension {} but the database's have {}",
            dense_from.display(),
            i.dim,
            d.dim
        ),
        (Some(_), None) => bail!(
            "{}: the documents have dense vectors but the database has no dense leg",
            dense_from.display()
        ),
        _ => {}
    }
    if input.sparse && !db.sparse {
        bail!(
            "{}: the documents have sparse vectors but the database has no sparse leg",
            sparse_from.display()
        );
    }
    match (&input.colbert, &db.colbert) {
        (Some(i), Some(d)) if i.dim != d.dim => bail!(
            "{}: ColBERT vectors have dimension {} but the database's have {}",
            colbert_from.display(),
            i.dim,
            d.dim
        ),
        (Some(_), None) => bail!(
            "{}: the documents have ColBERT vectors but the database has no ColBERT leg",
            colbert_from.display()
        ),
        _ => {}
    }
    Ok(())
}

fn open(path: &Path, read_only: bool) -> Result<Database> {
    Ok(if read_only {
        Database::open_read_only(path)?
    } else {
        Database::open(path)?
    })
}

fn spinner(msg: &str) -> ProgressBar {
    let s = ProgressBar::new_spinner().with_message(msg.to_string());
    s.enable_steady_tick(std::time::Duration::from_millis(120));
    s
}

fn print_hits(hits: &[Hit]) {
    for (i, h) in hits.iter().enumerate() {
        let legs: Vec<String> = h
            .legs
            .iter()
            .map(|l| format!("{}#{} {:.4}", l.leg.as_str(), l.rank, l.score))
            .collect();
        println!(
            "{:>3}. {}  score {:.5}  [{}]",
            i + 1,
            printable(&h.id),
            h.score,
            legs.join(", ")
        );
        if let Some(d) = &h.document {
            let snippet: String = d.text.chars().take(120).collect();
            if !d.title.is_empty() {
                println!("     {}", printable(&d.title));
            }
            println!("     {}", printable(&snippet));
        }
    }
}

/// `s` with control characters and bidirectional-text controls escaped as Rust writes them
/// (`\n`, `\0`, `\u{1b}`, `\u{202e}`), so stored text cannot drive the terminal.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    // Control characters, and the marks, embeddings, overrides and isolates of bidi text.
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !s.chars().any(hidden) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if hidden(c) {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}
