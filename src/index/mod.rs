//! The derived indexes, one module per leg.

pub(crate) mod dense;
pub mod text;
