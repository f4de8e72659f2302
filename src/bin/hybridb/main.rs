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
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
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

fn ingest(
    db_path: &Path,
    dataset: Option<&Path>,
    jsonl: Option<&Path>,
    base: Schema,
    metric: Metric,
    colbert_precision: Precision,
    encoder: &EncoderArgs,
) -> Result<()> {
    let enc = encoder.open()?;
    // Every line is read and checked, and all text encoded, before anything is written.
    let mut docs = match (dataset, jsonl, &enc) {
        (Some(d), _, Some(_)) => {
            let d = DatasetDir::open(d)?;
            if d.corpus_dense().is_some() || d.corpus_sparse().is_some() {
                eprintln!("note: the dataset's vector files are ignored; --model encodes the text");
            }
            dataset::read_documents(&d.corpus(), None, None)
        }
        (Some(d), _, None) => DatasetDir::open(d)?.documents(),
        (None, Some(f), _) => dataset::read_documents(f, None, None),
        (None, None, _) => bail!("give --dataset DIR or --jsonl FILE"),
    }
    .context("nothing was ingested")?;
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
        if let Some((tokens, _)) = dataset.and_then(|d| DatasetDir::new(d).corpus_colbert()) {
            let (_, dim) = npy::read_npy_dim(&tokens)?;
            schema = schema.colbert(dim, colbert_precision);
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
    for doc in docs {
        let id = doc.id().to_string();
        w.upsert(doc)
            .with_context(|| format!("document {id:?}; nothing was ingested"))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let spinner = spinner(&format!("committing {total} documents (indexing)"));
    let started = std::time::Instant::now();
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
            h.id,
            h.score,
            legs.join(", ")
        );
        if let Some(d) = &h.document {
            let snippet: String = d.text.chars().take(120).collect();
            if !d.title.is_empty() {
                println!("     {}", d.title);
            }
            println!("     {snippet}");
        }
    }
}
