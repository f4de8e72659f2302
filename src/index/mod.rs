//! The derived indexes and vector stores, one module per leg.

pub(crate) mod colbert;
pub(crate) mod dense;
pub(crate) mod sparse;
pub mod text;
