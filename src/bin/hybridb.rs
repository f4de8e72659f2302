//! The `hybridb` command line: a thin layer over the library.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hybridb::dataset::{self, DatasetDir, QueryRecord, TokenVectors};
use hybridb::eval::{self, Metrics};
use hybridb::{
    Analyzer, Database, DenseMode, Fusion, Hit, Leg, Metric, Precision, Query, Rerank,
    RerankFusion, Schema, SparseVector, npy,
};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

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
        #[arg(long)]
        json: bool,
    },
    /// Search with text and/or a query vector from a .npy file.
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
        #[arg(long)]
        json: bool,
    },
    /// Counts and sizes.
    Stats {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Delete documents by id, in one commit.
    Delete {
        #[arg(long)]
        db: PathBuf,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Rebuild the HNSW graph without deleted documents and merge the text index.
    Compact {
        #[arg(long)]
        db: PathBuf,
    },
}

#[derive(Args, Clone)]
struct PlanArgs {
    /// Legs to run, comma separated (default: every leg the query has input for).
    #[arg(long, value_delimiter = ',')]
    legs: Option<Vec<Leg>>,
    /// weighted (sum of min-max normalized scores) or rrf.
    #[arg(long, default_value = "weighted")]
    fusion: String,
    #[arg(long, default_value_t = 60.0)]
    rrf_k: f32,
    /// Leg weight in fusion, as LEG=W; repeatable.
    #[arg(long = "weight", value_parser = parse_weight)]
    weights: Vec<(Leg, f32)>,
    /// Hits per query.
    #[arg(long)]
    k: Option<usize>,
    /// Candidates per leg before fusion.
    #[arg(long)]
    depth: Option<usize>,
    /// Dense search mode: auto, exact or hnsw.
    #[arg(long, default_value = "auto")]
    dense_mode: String,
    /// Rerank the fused candidates: colbert (needs queries.colbert.npy + offsets).
    #[arg(long)]
    rerank: Option<String>,
    /// Candidates reranked by ColBERT MaxSim.
    #[arg(long, default_value_t = 100)]
    rerank_top: usize,
    /// Final order after reranking: weighted (0.4 dense + 0.2 sparse + 0.4 colbert) or rrf.
    #[arg(long, default_value = "weighted")]
    rerank_fusion: String,
    /// Metadata equality filter, as PATH=JSON (e.g. source="klue" or year=2020); repeatable.
    #[arg(long = "filter", value_parser = parse_filter)]
    filters: Vec<(String, serde_json::Value)>,
}

fn parse_weight(s: &str) -> Result<(Leg, f32), String> {
    let (leg, w) = s.split_once('=').ok_or("expected LEG=WEIGHT")?;
    let leg: Leg = leg.parse().map_err(|e: hybridb::Error| e.to_string())?;
    let w: f32 = w
        .parse()
        .map_err(|_| format!("weight {w:?} is not a number"))?;
    Ok((leg, w))
}

fn parse_filter(s: &str) -> Result<(String, serde_json::Value), String> {
    let (path, v) = s.split_once('=').ok_or("expected PATH=VALUE")?;
    // A bare word is taken as a string; anything that parses as JSON is JSON.
    let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
    Ok((path.to_string(), value))
}

impl PlanArgs {
    fn query(&self, default_k: usize) -> Result<Query> {
        let mut q = Query::new().k(self.k.unwrap_or(default_k));
        if let Some(d) = self.depth {
            q = q.depth(d);
        }
        if let Some(legs) = &self.legs {
            q = q.legs(legs);
        }
        q = q.fusion(match self.fusion.as_str() {
            "rrf" => Fusion::Rrf { k: self.rrf_k },
            "weighted" => Fusion::Weighted,
            other => bail!("unknown fusion {other:?} (expected rrf or weighted)"),
        });
        for (leg, w) in &self.weights {
            q = q.weight(*leg, *w);
        }
        q = q.dense_mode(match self.dense_mode.as_str() {
            "auto" => DenseMode::Auto,
            "exact" => DenseMode::Exact,
            "hnsw" => DenseMode::Approximate,
            other => bail!("unknown dense mode {other:?} (expected auto, exact or hnsw)"),
        });
        match self.rerank.as_deref() {
            None => {}
            Some("colbert") => {
                let fusion = match self.rerank_fusion.as_str() {
                    "weighted" => RerankFusion::default(),
                    "rrf" => RerankFusion::Rrf { k: self.rrf_k },
                    other => bail!("unknown rerank fusion {other:?} (expected weighted or rrf)"),
                };
                q = q.rerank(Rerank {
                    top: self.rerank_top,
                    fusion,
                });
            }
            Some(other) => bail!("unknown reranker {other:?} (expected colbert)"),
        }
        for (path, value) in &self.filters {
            q = q.filter_eq(path.clone(), value.clone());
        }
        Ok(q)
    }
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
        } => ingest(
            &db,
            dataset.as_deref(),
            jsonl.as_deref(),
            metric,
            analyzer,
            colbert_precision,
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
            tag,
        } => {
            let db = Database::open(&db)?;
            let set = QuerySet::load(&queries)?;
            let runs = answer_all(&db, &set, &plan.query(100)?)?;
            let mut out = BufWriter::new(std::io::stdout().lock());
            for (q, hits) in set.queries.iter().zip(&runs) {
                for (i, h) in hits.iter().enumerate() {
                    eval::write_trec_line(&mut out, &q.id, &h.id, i + 1, h.score, &tag)?;
                }
            }
            out.flush()?;
            Ok(())
        }
        Command::Eval {
            queries,
            run,
            db,
            plan,
            json,
        } => eval_cmd(&queries, run.as_deref(), db.as_deref(), &plan, json),
        Command::Search {
            db,
            text,
            vector_file,
            row,
            plan,
            json,
        } => {
            let db = Database::open(&db)?;
            let mut q = plan.query(10)?;
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
        Command::Stats { db, json } => {
            let s = Database::open(&db)?.stats()?;
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
    }
}

fn ingest(
    db_path: &Path,
    dataset: Option<&Path>,
    jsonl: Option<&Path>,
    metric: Metric,
    analyzer: Analyzer,
    colbert_precision: Precision,
) -> Result<()> {
    // Every line is read and checked before anything is written.
    let docs = match (dataset, jsonl) {
        (Some(d), _) => DatasetDir::open(d)?.documents(),
        (None, Some(f)) => dataset::read_documents(f, None, None),
        (None, None) => bail!("give --dataset DIR or --jsonl FILE"),
    }
    .context("nothing was ingested")?;
    let dim = docs.iter().find_map(|d| d.dense_vector().map(<[f32]>::len));
    let mut schema = Schema::new().text_with(analyzer);
    if let Some(dim) = dim {
        schema = schema.dense(dim, metric);
    }
    if docs.iter().any(|d| d.sparse_vector().is_some()) {
        schema = schema.sparse();
    }
    if let Some((tokens, _)) = dataset.and_then(|d| DatasetDir::new(d).corpus_colbert()) {
        let (_, dim) = npy::read_npy_dim(&tokens)?;
        schema = schema.colbert(dim, colbert_precision);
    }
    let db = if db_path.join("docs.redb").exists() {
        Database::open(db_path)?
    } else {
        Database::open_or_create(db_path, schema)?
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

fn spinner(msg: &str) -> ProgressBar {
    let s = ProgressBar::new_spinner().with_message(msg.to_string());
    s.enable_steady_tick(std::time::Duration::from_millis(120));
    s
}

/// Queries of a dataset folder with their optional dense, sparse and ColBERT vectors.
struct QuerySet {
    queries: Vec<QueryRecord>,
    dense: Option<npy::Matrix>,
    sparse: Option<Vec<SparseVector>>,
    colbert: Option<TokenVectors>,
}

impl QuerySet {
    fn load(dir: &Path) -> Result<QuerySet> {
        let d = DatasetDir::new(dir);
        let queries = dataset::read_queries(&d.queries())?;
        let dense = d
            .queries_dense()
            .map(|p| npy::read_f32_matrix(&p))
            .transpose()?;
        if let Some(m) = &dense
            && m.rows != queries.len()
        {
            bail!(
                "queries.dense.npy has {} rows but queries.jsonl has {} queries",
                m.rows,
                queries.len()
            );
        }
        let sparse = match d.queries_sparse() {
            Some(p) => {
                let rows = dataset::read_sparse_jsonl(&p)?
                    .map(|r| r.and_then(|r| SparseVector::new(r.indices, r.values)))
                    .collect::<hybridb::Result<Vec<_>>>()
                    .with_context(|| format!("{}", p.display()))?;
                if rows.len() != queries.len() {
                    bail!(
                        "{} has {} lines but queries.jsonl has {} queries",
                        p.display(),
                        rows.len(),
                        queries.len()
                    );
                }
                Some(rows)
            }
            None => None,
        };
        let colbert = match d.queries_colbert() {
            Some((t, o)) => {
                let tv = TokenVectors::read(&t, &o)?;
                if tv.len() != queries.len() {
                    bail!(
                        "{} describes {} queries but queries.jsonl has {}",
                        o.display(),
                        tv.len(),
                        queries.len()
                    );
                }
                Some(tv)
            }
            None => None,
        };
        Ok(QuerySet {
            queries,
            dense,
            sparse,
            colbert,
        })
    }

    fn query(&self, i: usize, base: &Query, db: &Database) -> Query {
        let mut q = base.clone().text(self.queries[i].text.clone());
        if db.schema().dense.is_some()
            && let Some(v) = self.dense.as_ref().and_then(|m| m.row(i))
        {
            q = q.dense(v.to_vec());
        }
        if db.schema().sparse
            && let Some(v) = self.sparse.as_ref().and_then(|s| s.get(i))
        {
            q = q.sparse(v.clone());
        }
        if base.is_reranked()
            && let Some(t) = self.colbert.as_ref().and_then(|c| c.get(i))
        {
            q = q.colbert(t.to_vec());
        }
        q.fetch_documents(false)
    }
}

fn answer_all(db: &Database, set: &QuerySet, base: &Query) -> Result<Vec<Vec<Hit>>> {
    let bar = ProgressBar::new(set.queries.len() as u64).with_style(ProgressStyle::with_template(
        "queries {bar:40} {pos}/{len} ({per_sec})",
    )?);
    let runs = (0..set.queries.len())
        .into_par_iter()
        .map(|i| {
            let r = db.search(&set.query(i, base, db));
            bar.inc(1);
            r.with_context(|| format!("query {}", set.queries[i].id))
        })
        .collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    Ok(runs)
}

fn to_runs(set: &QuerySet, runs: &[Vec<Hit>]) -> HashMap<String, Vec<String>> {
    set.queries
        .iter()
        .zip(runs)
        .map(|(q, hits)| (q.id.clone(), hits.iter().map(|h| h.id.clone()).collect()))
        .collect()
}

fn eval_cmd(
    queries: &Path,
    run: Option<&Path>,
    db: Option<&Path>,
    plan: &PlanArgs,
    json: bool,
) -> Result<()> {
    let set = QuerySet::load(queries)?;
    let mut rows: Vec<(String, Metrics)> = Vec::new();
    match (run, db) {
        (Some(run), _) => {
            let runs = eval::read_trec_run(run)?;
            rows.push((
                run.display().to_string(),
                eval::evaluate(&set.queries, &runs),
            ));
        }
        (None, Some(db)) => {
            let db = Database::open(db)?;
            let plain = PlanArgs {
                rerank: None,
                ..plan.clone()
            }
            .query(100)?;
            let mut legs = plan.legs.clone().unwrap_or_default();
            if legs.is_empty() {
                if db.schema().dense.is_some() && set.dense.is_some() {
                    legs.push(Leg::Dense);
                }
                if db.schema().sparse && set.sparse.is_some() {
                    legs.push(Leg::Sparse);
                }
                if db.schema().text.is_some() {
                    legs.push(Leg::Bm25);
                }
            }
            for leg in &legs {
                let runs = answer_all(&db, &set, &plain.clone().legs(&[*leg]))?;
                rows.push((
                    leg.as_str().to_string(),
                    eval::evaluate(&set.queries, &to_runs(&set, &runs)),
                ));
            }
            if legs.len() > 1 {
                let runs = answer_all(&db, &set, &plain.clone().legs(&legs))?;
                let name = match plan.fusion.as_str() {
                    "weighted" => "fused (weighted)".to_string(),
                    _ => format!("fused (rrf k={})", plan.rrf_k),
                };
                rows.push((name, eval::evaluate(&set.queries, &to_runs(&set, &runs))));
            }
            if plan.rerank.is_some() {
                let runs = answer_all(&db, &set, &plan.query(100)?.legs(&legs))?;
                let name = format!("+ colbert rerank ({})", plan.rerank_fusion);
                rows.push((name, eval::evaluate(&set.queries, &to_runs(&set, &runs))));
            }
        }
        (None, None) => bail!("give --run FILE or --db DIR"),
    }
    if json {
        let obj: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(n, m)| Ok((n.clone(), serde_json::to_value(m)?)))
            .collect::<Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        println!(
            "{:<20} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "run", "queries", "R@1", "R@5", "R@10", "R@20", "R@100", "MRR@10", "nDCG@10"
        );
        for (name, m) in &rows {
            println!(
                "{:<20} {:>7} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4}",
                name,
                m.queries,
                m.recall[0],
                m.recall[1],
                m.recall[2],
                m.recall[3],
                m.recall[4],
                m.mrr10,
                m.ndcg10
            );
        }
    }
    Ok(())
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
