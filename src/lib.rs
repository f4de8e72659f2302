//! hybridb: an embedded hybrid-retrieval database.
//!
//! A [`Database`] lives in one directory. Documents carry text, JSON metadata and optionally a
//! dense vector; they are indexed for dense nearest-neighbour search (HNSW) and for BM25 over
//! title and text, and a [`Query`] fuses the legs by Reciprocal Rank Fusion or a weighted sum.
//! A [`Writer`] batch commits atomically across every index. The on-disk format is described in
//! `storage-format.md`.

mod db;
mod docset;
mod document;
mod error;
mod index;
mod query;
mod schema;
mod store;

pub mod dataset;
pub mod eval;
pub mod npy;
pub mod squad;

pub use db::{CommitInfo, Database, Stats, Writer};
pub use document::{Document, SparseVector};
pub use error::{Error, Result};
pub use index::text::Analyzer;
pub use query::{DenseMode, Fusion, Hit, Leg, LegScore, Query, StoredDocument};
pub use schema::{DenseSpec, HnswParams, Metric, Schema};
