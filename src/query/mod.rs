//! Queries: what a caller asks, the per-leg candidate lists, and fused hits with their provenance.

pub(crate) mod fusion;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::Serialize;

use crate::document::SparseVector;
use crate::error::{Error, Result};

/// A retrieval leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// Nearest neighbours of the dense query vector (HNSW, or exact on small collections).
    Dense,
    /// Dot product of sparse lexical weights (exact, inverted index).
    Sparse,
    /// BM25 over title and text.
    Bm25,
    /// ColBERT MaxSim: not a candidate leg; it reranks the fused candidates.
    Colbert,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Dense => "dense",
            Leg::Sparse => "sparse",
            Leg::Bm25 => "bm25",
            Leg::Colbert => "colbert",
        }
    }
}

impl std::str::FromStr for Leg {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dense" => Ok(Leg::Dense),
            "sparse" => Ok(Leg::Sparse),
            "bm25" => Ok(Leg::Bm25),
            "colbert" => Ok(Leg::Colbert),
            _ => Err(Error::invalid(format!(
                "unknown leg {s:?} (expected dense, sparse, bm25 or colbert)"
            ))),
        }
    }
}

/// How the legs' lists become one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Fusion {
    /// Reciprocal Rank Fusion with constant `k` (conventionally 60).
    Rrf { k: f32 },
    /// Weighted sum of per-leg min-max normalized scores (the default: on korquad-v1-dev it beats
    /// RRF k=60 at every cutoff without tuned weights; see the README).
    #[default]
    Weighted,
}

impl Fusion {
    /// RRF with the conventional k = 60.
    pub const RRF_60: Fusion = Fusion::Rrf { k: 60.0 };
}

/// ColBERT reranking of the fused candidates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rerank {
    /// How many of the fused candidates are scored by MaxSim (100 by default).
    pub top: usize,
    pub fusion: RerankFusion,
}

impl Default for Rerank {
    fn default() -> Self {
        Rerank {
            top: 100,
            fusion: RerankFusion::default(),
        }
    }
}

/// How the reranked order is made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RerankFusion {
    /// RRF over the candidate legs' ranks and the ColBERT rank, with constant `k`.
    Rrf { k: f32 },
    /// `dense·s_dense + sparse·s_sparse + colbert·s_colbert` over raw scores, as FlagEmbedding's
    /// BGE-M3 `compute_score` does; a missing score counts 0.
    Weighted {
        dense: f32,
        sparse: f32,
        colbert: f32,
    },
}

impl Default for RerankFusion {
    /// FlagEmbedding's recommended weights 0.4, 0.2, 0.4.
    fn default() -> Self {
        RerankFusion::Weighted {
            dense: 0.4,
            sparse: 0.2,
            colbert: 0.4,
        }
    }
}

/// How the dense leg searches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenseMode {
    /// HNSW, or brute force when the collection is smaller than the schema's `exact_below`.
    #[default]
    Auto,
    /// Always brute force (for measuring recall).
    Exact,
    /// Always HNSW.
    Approximate,
}

/// A hybrid query. Legs run when their input is given (text for BM25, a vector for dense),
/// unless [`Query::legs`] names them explicitly.
#[derive(Clone, Debug)]
pub struct Query {
    pub(crate) text: Option<String>,
    pub(crate) dense: Option<Vec<f32>>,
    pub(crate) sparse: Option<SparseVector>,
    pub(crate) colbert: Option<Vec<f32>>,
    pub(crate) rerank: Option<Rerank>,
    pub(crate) k: usize,
    pub(crate) depth: Option<usize>,
    pub(crate) legs: Option<Vec<Leg>>,
    pub(crate) weights: Vec<(Leg, f32)>,
    pub(crate) fusion: Fusion,
    pub(crate) filter: Vec<(String, serde_json::Value)>,
    pub(crate) dense_mode: DenseMode,
    pub(crate) ef: Option<usize>,
    pub(crate) fetch: bool,
}

impl Default for Query {
    fn default() -> Self {
        Query::new()
    }
}

impl Query {
    /// The largest `k` a query may ask for.
    pub const MAX_K: usize = 100_000;
    /// The largest per-leg candidate depth a query may ask for.
    pub const MAX_DEPTH: usize = 100_000;
    /// The largest HNSW candidate list size a query may ask for.
    pub const MAX_EF: usize = 100_000;

    pub fn new() -> Self {
        Query {
            text: None,
            dense: None,
            sparse: None,
            colbert: None,
            rerank: None,
            k: 10,
            depth: None,
            legs: None,
            weights: Vec::new(),
            fusion: Fusion::default(),
            filter: Vec::new(),
            dense_mode: DenseMode::Auto,
            ef: None,
            fetch: true,
        }
    }

    /// Query text for the BM25 leg.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Query vector for the dense leg.
    pub fn dense(mut self, vector: Vec<f32>) -> Self {
        self.dense = Some(vector);
        self
    }

    /// Query weights for the sparse leg.
    pub fn sparse(mut self, vector: SparseVector) -> Self {
        self.sparse = Some(vector);
        self
    }

    /// Query token vectors for ColBERT (row-major, tokens × dim). With them the fused
    /// candidates are reranked by MaxSim (see [`Query::rerank`]).
    pub fn colbert(mut self, tokens: Vec<f32>) -> Self {
        self.colbert = Some(tokens);
        self
    }

    /// Reranking of the fused candidates by ColBERT MaxSim (the default [`Rerank`] whenever
    /// query token vectors are given).
    pub fn rerank(mut self, rerank: Rerank) -> Self {
        self.rerank = Some(rerank);
        self
    }

    /// Number of hits to return (10 by default; at most [`Query::MAX_K`]).
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Candidates taken from each leg before fusion (default: max(k, 100); k when one leg runs
    /// and nothing is reranked, as nothing is fused then; at most [`Query::MAX_DEPTH`]).
    pub fn depth(mut self, depth: usize) -> Self {
        self.depth = Some(depth);
        self
    }

    /// Runs exactly these legs.
    pub fn legs(mut self, legs: &[Leg]) -> Self {
        self.legs = Some(legs.to_vec());
        self
    }

    /// Weight of a leg in fusion (1 by default).
    pub fn weight(mut self, leg: Leg, weight: f32) -> Self {
        self.weights.retain(|(l, _)| *l != leg);
        self.weights.push((leg, weight));
        self
    }

    pub fn fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// Keeps only documents whose metadata field at `path` (dot-separated) equals `value`.
    /// Several filters must all hold.
    pub fn filter_eq(mut self, path: impl Into<String>, value: serde_json::Value) -> Self {
        self.filter.push((path.into(), value));
        self
    }

    pub fn dense_mode(mut self, mode: DenseMode) -> Self {
        self.dense_mode = mode;
        self
    }

    /// HNSW candidate list size for this query (default from the schema; at most
    /// [`Query::MAX_EF`]).
    pub fn ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    /// Whether hits carry the stored document (title, text, metadata); true by default.
    pub fn fetch_documents(mut self, fetch: bool) -> Self {
        self.fetch = fetch;
        self
    }

    /// Whether this query asks for a rerank.
    pub fn is_reranked(&self) -> bool {
        self.rerank.is_some()
    }

    pub(crate) fn weight_of(&self, leg: Leg) -> f32 {
        self.weights
            .iter()
            .find(|(l, _)| *l == leg)
            .map_or(1.0, |(_, w)| *w)
    }

    /// The candidates each of `legs` legs gives.
    pub(crate) fn depth_for(&self, legs: usize) -> usize {
        let fused = legs > 1 || self.colbert.is_some();
        let default = if fused { self.k.max(100) } else { self.k };
        self.depth.unwrap_or(default).max(self.k)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::invalid("k must be at least 1"));
        }
        for (name, value, limit) in [
            ("k", Some(self.k), Self::MAX_K),
            ("depth", self.depth, Self::MAX_DEPTH),
            ("ef", self.ef, Self::MAX_EF),
        ] {
            if let Some(v) = value
                && v > limit
            {
                return Err(Error::invalid(format!(
                    "{name} is {v}, above the limit of {limit}"
                )));
            }
        }
        if let Some(v) = &self.sparse {
            v.check()
                .map_err(|e| Error::invalid(format!("query {e}")))?;
        }
        if let Fusion::Rrf { k } = self.fusion
            && !(k.is_finite() && k >= 0.0)
        {
            return Err(Error::invalid(format!(
                "RRF k must be finite and ≥ 0, got {k}"
            )));
        }
        if let Some(r) = &self.rerank {
            if r.top == 0 {
                return Err(Error::invalid("rerank top must be at least 1"));
            }
            let ok = match r.fusion {
                RerankFusion::Rrf { k } => k.is_finite() && k >= 0.0,
                RerankFusion::Weighted {
                    dense,
                    sparse,
                    colbert,
                } => [dense, sparse, colbert].iter().all(|w| w.is_finite()),
            };
            if !ok {
                return Err(Error::invalid(format!("bad rerank parameters {r:?}")));
            }
        }
        for (leg, w) in &self.weights {
            if !(w.is_finite() && *w >= 0.0) {
                return Err(Error::invalid(format!(
                    "weight of {} must be finite and ≥ 0, got {w}",
                    leg.as_str()
                )));
            }
        }
        Ok(())
    }
}

/// A leg's view of one hit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LegScore {
    pub leg: Leg,
    /// 1-based rank in that leg's list.
    pub rank: usize,
    /// The leg's own score (similarity for dense, BM25 for bm25).
    pub score: f32,
}

/// A stored document as returned with a hit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredDocument {
    pub title: String,
    pub text: String,
    pub metadata: serde_json::Value,
}

/// One result of a search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    pub id: String,
    /// The fused score (or the leg's own score when one leg ran).
    pub score: f32,
    /// Every leg that found the document, with its rank and score there.
    pub legs: Vec<LegScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<StoredDocument>,
}

/// Bounded top-k by score, ties broken toward the smaller document number.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

#[derive(PartialEq)]
struct Entry(f32, u64);
impl Eq for Entry {}
impl Ord for Entry {
    // The heap's max is the worst entry: lowest score, then largest doc.
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            // Grown as needed past this: `k` is only a bound.
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    #[inline]
    pub fn push(&mut self, doc: u64, score: f32) {
        if self.k == 0 {
            return;
        }
        let e = Entry(score, doc);
        if self.heap.len() < self.k {
            self.heap.push(e);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && e < *worst
        {
            *worst = e;
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<(u64, f32)> {
        let mut v: Vec<(u64, f32)> = self.heap.into_iter().map(|e| (e.1, e.0)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_keeps_best_and_breaks_ties_by_doc() {
        let mut t = TopK::new(3);
        for (d, s) in [(5, 0.5), (1, 0.9), (9, 0.7), (2, 0.7), (3, 0.1), (4, 0.7)] {
            t.push(d, s);
        }
        assert_eq!(t.into_sorted(), vec![(1, 0.9), (2, 0.7), (4, 0.7)]);
    }
}
