//! hybridb: an embedded hybrid-retrieval database.
//!
//! A [`Database`] lives in one directory. Documents carry text, JSON metadata and optionally a
//! dense vector, sparse lexical weights and ColBERT token vectors; they are indexed for dense
//! nearest-neighbour search (HNSW), exact sparse dot-product search and BM25 over title and
//! text. A [`Query`] fuses the legs by a weighted sum or Reciprocal Rank Fusion and can rerank
//! the fused candidates by ColBERT MaxSim.
//! A [`Writer`] batch commits atomically across every index. The on-disk format is described in
//! `storage-format.md`.

mod db;
mod docset;
mod document;
mod encoder;
mod error;
mod fsio;
mod index;
mod query;
mod schema;
mod store;

pub mod dataset;
pub mod eval;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod npy;
pub mod squad;

pub use db::{CommitInfo, Database, Lag, Problem, RepairReport, Stats, VerifyReport, Writer};
pub use document::{Document, MAX_ID_BYTES, SparseVector};
pub use encoder::{
    Embedding, Encoder, EncoderOptions, Layout, ModelInfo, ORT_VERSION, Pooling, TextKind,
    default_runtime_dir, loaded_runtime,
};
pub use error::{Error, Result};
pub use index::colbert::Precision;
pub use index::text::Analyzer;
pub use query::{
    DenseMode, Fusion, Hit, Leg, LegScore, Query, Rerank, RerankFusion, StoredDocument,
};
pub use schema::{ColbertSpec, DenseSpec, HnswParams, Metric, Schema};
