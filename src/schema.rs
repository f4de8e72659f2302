//! The collection schema: which legs a database has and how they are configured.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::colbert::Precision;
use crate::index::text::Analyzer;

/// Similarity used by the dense leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Cosine similarity. Vectors are L2-normalized when written, so scores are in [-1, 1].
    Cosine,
    /// Raw inner product.
    Dot,
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "dot" => Ok(Metric::Dot),
            _ => Err(Error::invalid(format!(
                "unknown metric {s:?} (expected cosine or dot)"
            ))),
        }
    }
}

/// HNSW build and search parameters of the dense leg.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Maximum neighbours per node and layer (M).
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to k when k is larger).
    pub ef_search: usize,
    /// Below this many live vectors the dense leg searches exactly instead of through HNSW.
    pub exact_below: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            // M=24 / ef_construction=160 builds 100k x 384-d at over 6k docs/s on 2 cores, as
            // fast as M=16, with 0.02-0.025 more Recall@10 at 100k x 384 and x 1024 and the same
            // query time (BENCHMARKS.md); ef_search=256 keeps korquad-v1-dev (e5 vectors, a
            // narrow cone) within 0.003 Recall@10 of exact search.
            m: 24,
            ef_construction: 160,
            ef_search: 256,
            exact_below: 2048,
        }
    }
}

/// Dense-leg configuration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseSpec {
    pub dim: usize,
    pub metric: Metric,
    pub hnsw: HnswParams,
}

/// ColBERT-leg configuration: token vector dimension and stored precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColbertSpec {
    pub dim: usize,
    pub precision: Precision,
}

/// What a database stores and indexes. Fixed at creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub dense: Option<DenseSpec>,
    /// Whether documents may carry sparse lexical weights (stored with the document).
    pub sparse: bool,
    /// The BM25 analyzer of the text leg, if there is one.
    pub text: Option<Analyzer>,
    /// ColBERT token vectors, used to rerank.
    pub colbert: Option<ColbertSpec>,
}

impl Schema {
    /// An empty schema: documents with text and metadata only, and no leg.
    pub fn new() -> Self {
        Schema {
            dense: None,
            sparse: false,
            text: None,
            colbert: None,
        }
    }

    /// Adds a dense leg of `dim` dimensions with default HNSW parameters.
    pub fn dense(mut self, dim: usize, metric: Metric) -> Self {
        self.dense = Some(DenseSpec {
            dim,
            metric,
            hnsw: HnswParams::default(),
        });
        self
    }

    /// Sets the HNSW parameters of the dense leg (no effect without one).
    pub fn hnsw(mut self, params: HnswParams) -> Self {
        if let Some(d) = &mut self.dense {
            d.hnsw = params;
        }
        self
    }

    /// Stores ColBERT token vectors of `dim` dimensions at `precision`, for reranking.
    pub fn colbert(mut self, dim: usize, precision: Precision) -> Self {
        self.colbert = Some(ColbertSpec { dim, precision });
        self
    }

    /// Adds the sparse lexical-weight leg (an inverted index over documents' sparse vectors).
    pub fn sparse(mut self) -> Self {
        self.sparse = true;
        self
    }

    /// Adds the BM25 text leg with the default (Hangul bigram) analyzer.
    pub fn text(self) -> Self {
        self.text_with(Analyzer::HangulBigram)
    }

    /// Adds the BM25 text leg with the given analyzer.
    pub fn text_with(mut self, analyzer: Analyzer) -> Self {
        self.text = Some(analyzer);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(d) = &self.dense {
            if d.dim == 0 || d.dim > 65_536 {
                return Err(Error::invalid(format!(
                    "dense dimension {} is out of range 1..=65536",
                    d.dim
                )));
            }
            let h = &d.hnsw;
            let ef = 1..=crate::Query::MAX_EF;
            if h.m < 2
                || h.m > 255
                || !ef.contains(&h.ef_construction)
                || !ef.contains(&h.ef_search)
            {
                return Err(Error::invalid(format!(
                    "HNSW parameters out of range (m 2..=255, ef_construction and ef_search \
                     1..={}): {h:?}",
                    crate::Query::MAX_EF
                )));
            }
        }
        if let Some(c) = &self.colbert
            && (c.dim == 0 || c.dim > 65_536)
        {
            return Err(Error::invalid(format!(
                "ColBERT dimension {} is out of range 1..=65536",
                c.dim
            )));
        }
        Ok(())
    }
}

impl Default for Schema {
    fn default() -> Self {
        Schema::new()
    }
}
