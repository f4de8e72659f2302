//! Query plans from the command line, query sets of dataset folders, and evaluation.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use hybridb::dataset::{self, DatasetDir, QueryRecord, TokenVectors};
use hybridb::eval::{self, Metrics};
use hybridb::{
    Database, DenseMode, Embedding, Encoder, Fusion, Hit, Leg, Query, Rerank, RerankFusion,
    SparseVector, TextKind, npy,
};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::model;

#[derive(Args, Clone)]
pub struct PlanArgs {
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

pub fn parse_weight(s: &str) -> Result<(Leg, f32), String> {
    let (leg, w) = s.split_once('=').ok_or("expected LEG=WEIGHT")?;
    let leg: Leg = leg.parse().map_err(|e: hybridb::Error| e.to_string())?;
    let w: f32 = w
        .parse()
        .map_err(|_| format!("weight {w:?} is not a number"))?;
    Ok((leg, w))
}

pub fn parse_filter(s: &str) -> Result<(String, serde_json::Value), String> {
    let (path, v) = s.split_once('=').ok_or("expected PATH=VALUE")?;
    // A bare word is taken as a string; anything that parses as JSON is JSON.
    let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
    Ok((path.to_string(), value))
}

impl PlanArgs {
    /// Hits per query: `--k`, else `default_k`.
    pub fn k_or(&self, default_k: usize) -> usize {
        self.k.unwrap_or(default_k)
    }

    pub fn query(&self, default_k: usize) -> Result<Query> {
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

/// Queries of a dataset folder with their optional dense, sparse and ColBERT vectors.
pub struct QuerySet {
    pub queries: Vec<QueryRecord>,
    dense: Option<npy::Matrix>,
    sparse: Option<Vec<SparseVector>>,
    colbert: Option<TokenVectors>,
}

impl QuerySet {
    pub fn load(dir: &Path, encoder: Option<&Encoder>) -> Result<QuerySet> {
        let d = DatasetDir::new(dir);
        let queries = dataset::read_queries(&d.queries())?;
        if let Some(enc) = encoder {
            return Self::encoded(queries, enc);
        }
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

    /// Queries with vectors from the encoder; vector files are not read.
    fn encoded(queries: Vec<QueryRecord>, enc: &Encoder) -> Result<QuerySet> {
        let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
        let embeddings = model::encode_all(enc, &texts, TextKind::Query)?;
        let info = enc.info();
        let dense = npy::Matrix {
            rows: embeddings.len(),
            dim: info.dense_dim,
            data: embeddings
                .iter()
                .flat_map(|e| e.dense.iter().copied())
                .collect(),
        };
        let sparse = info.sparse.then(|| {
            embeddings
                .iter()
                .map(|e| e.sparse.clone().unwrap_or_default())
                .collect()
        });
        let colbert = info.colbert_dim.map(|dim| {
            let mut offsets = vec![0i64];
            let mut data = Vec::new();
            for e in &embeddings {
                data.extend_from_slice(e.colbert.as_deref().unwrap_or_default());
                offsets.push((data.len() / dim) as i64);
            }
            TokenVectors {
                tokens: npy::Matrix {
                    rows: data.len() / dim,
                    dim,
                    data,
                },
                offsets,
            }
        });
        Ok(QuerySet {
            queries,
            dense: Some(dense),
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

/// Hits held at once by [`answer_each`], across the queries of one parallel chunk.
const HITS_IN_FLIGHT: usize = 1 << 18;

/// Answers the queries in order, handing each query's hits to `each` as soon as the parallel
/// chunk that holds it is done; `k` (the hits per query) sizes the chunks so that about
/// [`HITS_IN_FLIGHT`] hits are held at once.
pub fn answer_each(
    db: &Database,
    set: &QuerySet,
    base: &Query,
    k: usize,
    mut each: impl FnMut(&QueryRecord, Vec<Hit>) -> Result<()>,
) -> Result<()> {
    let bar = ProgressBar::new(set.queries.len() as u64).with_style(ProgressStyle::with_template(
        "queries {bar:40} {pos}/{len} ({per_sec})",
    )?);
    let chunk = (HITS_IN_FLIGHT / k.max(1)).clamp(1, 1024);
    let all: Vec<usize> = (0..set.queries.len()).collect();
    for part in all.chunks(chunk) {
        let runs = part
            .par_iter()
            .map(|&i| {
                let r = db.search(&set.query(i, base, db));
                bar.inc(1);
                r.with_context(|| format!("query {}", set.queries[i].id))
            })
            .collect::<Result<Vec<_>>>()?;
        for (&i, hits) in part.iter().zip(runs) {
            each(&set.queries[i], hits)?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Each query's ranked ids, answered through [`answer_each`].
fn runs_of(
    db: &Database,
    set: &QuerySet,
    base: &Query,
    k: usize,
) -> Result<HashMap<String, Vec<String>>> {
    let mut runs = HashMap::with_capacity(set.queries.len());
    answer_each(db, set, base, k, |q, hits| {
        runs.insert(q.id.clone(), hits.into_iter().map(|h| h.id).collect());
        Ok(())
    })?;
    Ok(runs)
}

pub fn eval_cmd(
    queries: &Path,
    run: Option<&Path>,
    db: Option<&Path>,
    plan: &PlanArgs,
    encoder: Option<&Encoder>,
    json: bool,
) -> Result<()> {
    let set = QuerySet::load(queries, encoder)?;
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
            let k = plan.k_or(100);
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
                let runs = runs_of(&db, &set, &plain.clone().legs(&[*leg]), k)?;
                rows.push((
                    leg.as_str().to_string(),
                    eval::evaluate(&set.queries, &runs),
                ));
            }
            if legs.len() > 1 {
                let runs = runs_of(&db, &set, &plain.clone().legs(&legs), k)?;
                let name = match plan.fusion.as_str() {
                    "weighted" => "fused (weighted)".to_string(),
                    _ => format!("fused (rrf k={})", plan.rrf_k),
                };
                rows.push((name, eval::evaluate(&set.queries, &runs)));
            }
            if plan.rerank.is_some() {
                let runs = runs_of(&db, &set, &plan.query(100)?.legs(&legs), k)?;
                let name = format!("+ colbert rerank ({})", plan.rerank_fusion);
                rows.push((name, eval::evaluate(&set.queries, &runs)));
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

/// Adds an encoded query's vectors to a query: dense and sparse where the database has those
/// legs, ColBERT when the query is reranked.
pub fn with_embedding(mut q: Query, e: Embedding, db: &Database) -> Result<Query> {
    let schema = db.schema();
    if let Some(d) = &schema.dense {
        if d.dim != e.dense.len() {
            bail!(
                "the database's dense vectors have {} dimensions but the model produces {}",
                d.dim,
                e.dense.len()
            );
        }
        q = q.dense(e.dense);
    }
    if schema.sparse
        && let Some(s) = e.sparse
    {
        q = q.sparse(s);
    }
    if q.is_reranked()
        && let Some(c) = e.colbert
    {
        q = q.colbert(c);
    }
    Ok(q)
}
