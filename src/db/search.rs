//! Query execution over one snapshot: per-leg candidates, fusion, and hit assembly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{Database, Snapshot};
use crate::docset::DocSet;
use crate::document::{check_dense, check_tokens};
use crate::error::{Error, Result};
use crate::index::dense::{normalize, search_exact};
use crate::index::sparse::search_brute_force;
use crate::index::text;
use crate::query::fusion::{self, LegResult};
use crate::query::{DenseMode, Fusion, Hit, Leg, LegScore, Query, RerankFusion, StoredDocument};
use crate::schema::Metric;
use crate::store::{self, DOCS, DocRecord};

impl Database {
    /// Runs a hybrid query against the last commit.
    pub fn search(&self, query: &Query) -> Result<Vec<Hit>> {
        self.search_in(&self.inner.snapshot(), query)
    }

    /// Runs a query against the commit `snap` shows.
    pub(super) fn search_in(&self, snap: &Snapshot, query: &Query) -> Result<Vec<Hit>> {
        query.validate()?;
        let legs = self.plan(query)?;
        let allow = self.allowed(snap, query)?;
        let depth = query.depth_for(legs.len());
        let run = |leg: Leg| -> Result<LegResult> {
            let hits = match leg {
                Leg::Dense => self.dense_leg(snap, query, &allow, depth)?,
                Leg::Sparse => self.sparse_leg(snap, query, &allow, depth)?,
                Leg::Bm25 => {
                    snap.require("text")?;
                    let q = query.text.as_deref().unwrap_or_default();
                    text::search(&snap.text, q, depth, Some(&allow))?
                }
                // Rejected by `plan`.
                Leg::Colbert => Vec::new(),
            };
            Ok(LegResult {
                leg,
                weight: query.weight_of(leg),
                hits,
            })
        };
        let results = run_legs(&legs, run)?;
        let mut fused = match (results.len(), query.fusion) {
            (1, _) => results[0]
                .hits
                .iter()
                .enumerate()
                .map(|(i, &(doc, score))| fusion::Fused {
                    doc,
                    score,
                    legs: vec![(results[0].leg, i + 1, score)],
                })
                .collect(),
            (_, Fusion::Rrf { k }) => fusion::rrf(&results, k),
            (_, Fusion::Weighted) => fusion::weighted(&results),
        };
        if let Some(tokens) = &query.colbert {
            fused = self.rerank(snap, query, tokens, &results, fused)?;
        }
        fused.truncate(query.k);
        self.assemble(snap, fused, query.fetch)
    }

    /// The legs a query runs: the ones it names, or every leg it gives input for.
    fn plan(&self, query: &Query) -> Result<Vec<Leg>> {
        let schema = &self.inner.schema;
        let legs = match &query.legs {
            Some(legs) => {
                let mut unique: Vec<Leg> = Vec::with_capacity(legs.len());
                for leg in legs {
                    if !unique.contains(leg) {
                        unique.push(*leg);
                    }
                }
                unique
            }
            None => {
                let mut legs = Vec::new();
                if query.dense.is_some() {
                    legs.push(Leg::Dense);
                }
                if query.sparse.is_some() && schema.sparse {
                    legs.push(Leg::Sparse);
                }
                if query.text.is_some() && schema.text.is_some() {
                    legs.push(Leg::Bm25);
                }
                legs
            }
        };
        if query.colbert.is_some() && schema.colbert.is_none() {
            return Err(Error::invalid(
                "the database has no ColBERT leg to rerank with",
            ));
        }
        if legs.is_empty() {
            return Err(Error::invalid(
                "the query runs no leg: give it text (bm25) and/or a dense vector",
            ));
        }
        for leg in &legs {
            match leg {
                Leg::Dense if schema.dense.is_none() => {
                    return Err(Error::invalid("the database has no dense leg"));
                }
                Leg::Dense if query.dense.is_none() => {
                    return Err(Error::invalid("the dense leg needs a query vector"));
                }
                Leg::Sparse if !schema.sparse => {
                    return Err(Error::invalid("the database has no sparse leg"));
                }
                Leg::Sparse if query.sparse.is_none() => {
                    return Err(Error::invalid("the sparse leg needs query weights"));
                }
                Leg::Colbert => {
                    return Err(Error::invalid(
                        "colbert is not a candidate leg: give query token vectors to rerank",
                    ));
                }
                Leg::Bm25 if schema.text.is_none() => {
                    return Err(Error::invalid("the database has no bm25 leg"));
                }
                Leg::Bm25 if query.text.is_none() => {
                    return Err(Error::invalid("the bm25 leg needs query text"));
                }
                _ => {}
            }
        }
        Ok(legs)
    }

    /// Live documents passing the metadata filter.
    fn allowed(&self, snap: &Snapshot, query: &Query) -> Result<Arc<DocSet>> {
        if query.filter.is_empty() {
            return Ok(snap.live.clone());
        }
        snap.require("text")?;
        let mut set = text::filter_docs(&snap.text, &query.filter)?;
        set.intersect_with(&snap.live);
        Ok(Arc::new(set))
    }

    fn dense_leg(
        &self,
        snap: &Snapshot,
        query: &Query,
        allow: &DocSet,
        depth: usize,
    ) -> Result<Vec<(u64, f32)>> {
        let (Some(spec), Some(vectors), Some(q)) = (
            self.inner.schema.dense,
            snap.vectors.as_ref(),
            query.dense.as_ref(),
        ) else {
            return Ok(Vec::new());
        };
        check_dense(q, spec.dim, "query vector")?;
        let mut q = q.clone();
        if spec.metric == Metric::Cosine {
            normalize(&mut q);
        }
        let exact = match query.dense_mode {
            DenseMode::Exact => true,
            DenseMode::Approximate => false,
            DenseMode::Auto => allow.len() < spec.hnsw.exact_below,
        };
        if !exact {
            let ef = query.ef.unwrap_or(spec.hnsw.ef_search).max(depth);
            let dense = self.inner.dense.read().unwrap_or_else(|p| p.into_inner());
            // After a compaction the graph lacks documents this view may still have: the
            // exact scan below answers instead.
            if let Some(index) = dense
                .as_ref()
                .filter(|i| i.rebuilds() == snap.dense_rebuilds)
            {
                return Ok(index.search_graph(&q, depth, ef, allow));
            }
        }
        let candidates = allow.iter().filter(|&d| snap.with_dense.contains(d));
        Ok(search_exact(vectors, &q, depth, candidates))
    }

    fn sparse_leg(
        &self,
        snap: &Snapshot,
        query: &Query,
        allow: &DocSet,
        depth: usize,
    ) -> Result<Vec<(u64, f32)>> {
        let Some(q) = &query.sparse else {
            return Ok(Vec::new());
        };
        snap.require("sparse")?;
        {
            let index = self.inner.sparse_index();
            match index.as_ref() {
                Some(index) if index.merges() == snap.sparse_merges => {
                    return Ok(index.search(q, depth, allow));
                }
                None => return Ok(Vec::new()),
                Some(_) => {}
            }
        }
        // A compaction dropped postings this view still has: score its stored vectors.
        let table = snap.read.open_table(DOCS)?;
        let mut stored = Vec::new();
        for doc in allow.iter() {
            if let Some(v) = store::get_head(&table, doc)?.and_then(|h| h.sparse) {
                stored.push((doc, v));
            }
        }
        Ok(search_brute_force(
            q,
            depth,
            stored.iter().map(|(d, v)| (*d, v)),
        ))
    }

    /// Reranks the first `rerank.top` fused candidates by ColBERT MaxSim.
    fn rerank(
        &self,
        snap: &Snapshot,
        query: &Query,
        tokens: &[f32],
        results: &[LegResult],
        mut fused: Vec<fusion::Fused>,
    ) -> Result<Vec<fusion::Fused>> {
        let (Some(spec), Some(view)) = (self.inner.schema.colbert, snap.colbert.as_ref()) else {
            return Ok(fused);
        };
        check_tokens(tokens, spec.dim, "query token vectors")?;
        let r = query.rerank.unwrap_or_default();
        // Rerank at least the k hits asked for.
        fused.truncate(r.top.max(query.k));
        let docs: Vec<u64> = fused.iter().map(|f| f.doc).collect();
        let scores = view.maxsim_many(tokens, &docs)?;
        // The ColBERT ranking of the candidates that have token vectors.
        let mut ranked: Vec<(u64, f32)> = docs
            .iter()
            .zip(&scores)
            .filter_map(|(&d, s)| s.map(|s| (d, s)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let colbert_rank: HashMap<u64, (usize, f32)> = ranked
            .iter()
            .enumerate()
            .map(|(i, &(d, s))| (d, (i + 1, s)))
            .collect();
        match r.fusion {
            RerankFusion::Rrf { k } => {
                let docs: HashSet<u64> = docs.into_iter().collect();
                let mut lists: Vec<LegResult> = results
                    .iter()
                    .map(|l| LegResult {
                        leg: l.leg,
                        weight: l.weight,
                        hits: l
                            .hits
                            .iter()
                            .filter(|(d, _)| docs.contains(d))
                            .copied()
                            .collect(),
                    })
                    .collect();
                lists.push(LegResult {
                    leg: Leg::Colbert,
                    weight: query.weight_of(Leg::Colbert),
                    hits: ranked,
                });
                let mut out = fusion::rrf(&lists, k);
                out.retain(|f| docs.contains(&f.doc));
                Ok(out)
            }
            RerankFusion::Weighted {
                dense,
                sparse,
                colbert,
            } => {
                let vectors = snap.vectors.as_ref();
                let qdense = query.dense.as_ref().map(|q| {
                    let mut q = q.clone();
                    if self
                        .inner
                        .schema
                        .dense
                        .is_some_and(|d| d.metric == Metric::Cosine)
                    {
                        normalize(&mut q);
                    }
                    q
                });
                let table = snap.read.open_table(DOCS)?;
                for f in fused.iter_mut() {
                    let s_dense = match (&qdense, vectors) {
                        (Some(q), Some(v)) if snap.with_dense.contains(f.doc) => {
                            v.row(f.doc).map_or(0.0, |r| crate::index::dense::dot(q, r))
                        }
                        _ => 0.0,
                    };
                    let s_sparse = match &query.sparse {
                        Some(q) => store::get_head(&table, f.doc)?
                            .and_then(|r| r.sparse)
                            .map_or(0.0, |v| q.dot(&v)),
                        None => 0.0,
                    };
                    let s_colbert = colbert_rank.get(&f.doc).map_or(0.0, |c| c.1);
                    f.score = dense * s_dense + sparse * s_sparse + colbert * s_colbert;
                }
                for f in fused.iter_mut() {
                    if let Some(&(rank, score)) = colbert_rank.get(&f.doc) {
                        f.legs.push((Leg::Colbert, rank, score));
                    }
                }
                fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
                Ok(fused)
            }
        }
    }

    fn assemble(
        &self,
        snap: &Snapshot,
        fused: Vec<fusion::Fused>,
        fetch: bool,
    ) -> Result<Vec<Hit>> {
        let docs = snap.read.open_table(DOCS)?;
        let mut hits = Vec::with_capacity(fused.len());
        for f in fused {
            // An index found a document the store does not hold: never a shorter answer.
            let missing = || {
                Error::corrupted(
                    self.inner.path.join(store::STORE_FILE),
                    format!("live document number {} has no record", f.doc),
                )
            };
            let (id, document) = if fetch {
                let record =
                    store::get_doc(&docs, f.doc, self.inner.dict())?.ok_or_else(missing)?;
                (record.id.clone(), Some(stored(record)?))
            } else {
                let head = store::get_head(&docs, f.doc)?.ok_or_else(missing)?;
                (head.id, None)
            };
            hits.push(Hit {
                id,
                score: f.score,
                legs: f
                    .legs
                    .into_iter()
                    .map(|(leg, rank, score)| LegScore { leg, rank, score })
                    .collect(),
                document,
            });
        }
        Ok(hits)
    }
}

/// Runs the legs side by side, as independent reads of one snapshot, and returns their results
/// in `legs` order. The dense leg, usually the slowest, runs on the calling thread, so that it
/// does not wait for a pool thread to wake; the others go to rayon's pool.
fn run_legs<F>(legs: &[Leg], run: F) -> Result<Vec<LegResult>>
where
    F: Fn(Leg) -> Result<LegResult> + Sync,
{
    if let [leg] = legs {
        return Ok(vec![run(*leg)?]);
    }
    let here = legs.iter().position(|&l| l == Leg::Dense).unwrap_or(0);
    let mut slots: Vec<Option<Result<LegResult>>> = legs.iter().map(|_| None).collect();
    rayon::in_place_scope(|s| {
        let run = &run;
        let mut mine = None;
        for (i, (slot, &leg)) in slots.iter_mut().zip(legs).enumerate() {
            if i == here {
                mine = Some(slot);
            } else {
                s.spawn(move |_| *slot = Some(run(leg)));
            }
        }
        if let Some(slot) = mine {
            *slot = Some(run(legs[here]));
        }
    });
    // The scope returns once every spawned leg has filled its slot.
    slots.into_iter().flatten().collect()
}

pub(super) fn stored(record: DocRecord) -> Result<StoredDocument> {
    let metadata = serde_json::from_str(&record.metadata)
        .map_err(|e| Error::Store(format!("metadata of {:?} is not JSON: {e}", record.id)))?;
    Ok(StoredDocument {
        title: record.title,
        text: record.text,
        metadata,
    })
}
