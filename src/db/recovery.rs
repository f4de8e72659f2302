//! Recovery of the derived indexes on open: catching the sparse and text indexes up with the
//! store, and what is reported when one cannot be caught up ([`Lag`]).

use std::path::Path;

use redb::ReadableTable;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::index::sparse::SparseIndex;
use crate::index::text::{TextDoc, TextIndex};
use crate::store::{self, State, TOMBSTONES};

/// An index that could not take the store's last commit (a full disk, too few file handles):
/// it holds commits up to `seq`. Searches that need it fail with [`Error::IndexBehind`];
/// the next read-write open catches it up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lag {
    /// `"sparse"` or `"text"` (BM25 and metadata filters).
    pub index: &'static str,
    pub seq: u64,
    pub reason: String,
}

impl Lag {
    /// The error of a search that needs this index, with the store at `store_seq`.
    pub(crate) fn error(&self, store_seq: u64) -> Error {
        Error::IndexBehind {
            index: self.index,
            seq: self.seq,
            store_seq,
            reason: self.reason.clone(),
        }
    }
}

/// Records in `lagging` that `index` holds commits up to `seq` only, when catching it up
/// failed for a reason other than damage (a full disk, too few file handles). Damage is
/// returned as the error it is.
pub(super) fn lag(
    lagging: &mut Vec<Lag>,
    index: &'static str,
    seq: u64,
    caught_up: Result<()>,
) -> Result<()> {
    match caught_up {
        Ok(()) => Ok(()),
        Err(e @ Error::Corrupted { .. }) => Err(e),
        Err(e) => {
            lagging.push(Lag {
                index,
                seq,
                reason: e.to_string(),
            });
            Ok(())
        }
    }
}

/// Re-adds to the sparse index the documents committed after its last flush.
pub(super) fn catch_up_sparse(
    index: &mut SparseIndex,
    read: &redb::ReadTransaction,
    state: &State,
    dir: &Path,
    dict: Option<&store::Dict>,
) -> Result<()> {
    let (seq, next) = index.committed();
    if seq > state.seq || next > state.next_doc {
        return Err(Error::corrupted(
            dir,
            format!(
                "sparse index covers commit {seq} (documents < {next}) but the store ends at \
                 commit {} (documents < {})",
                state.seq, state.next_doc
            ),
        ));
    }
    if seq == state.seq {
        return Ok(());
    }
    let records = store::docs_from(read, next, dict)?;
    let adds: Vec<(u64, &crate::SparseVector)> = records
        .iter()
        .filter_map(|(d, r)| r.sparse.as_ref().map(|v| (*d, v)))
        .collect();
    index.apply(&adds, state.seq, state.next_doc)
}

/// Brings the text index up to the store's last commit: deletes what was removed after the
/// index's commit and adds documents numbered from the index's `next_doc` on.
pub(super) fn catch_up_text(
    text: &mut TextIndex,
    read: &redb::ReadTransaction,
    state: &State,
    with_body: bool,
    dict: Option<&store::Dict>,
) -> Result<()> {
    let (text_seq, text_next) = match text.committed()? {
        Some((seq, next)) if seq <= state.seq && next <= state.next_doc => (seq, next),
        Some(_) => {
            // Ahead of the store: it cannot be trusted, rebuild it.
            text.clear(0, 0)?;
            (0, 0)
        }
        None => (0, 0),
    };
    if text_seq == state.seq {
        return Ok(());
    }
    let mut deletes = Vec::new();
    for row in read.open_table(TOMBSTONES)?.iter()? {
        let (doc, seq) = row?;
        if seq.value() > text_seq {
            deletes.push(doc.value());
        }
    }
    crate::fsio::failpoint("open:before-text")?;
    let records = store::docs_from(read, text_next, dict)?;
    let metas: Vec<serde_json::Value> = records
        .iter()
        .map(|(_, r)| serde_json::from_str(&r.metadata).unwrap_or(serde_json::Value::Null))
        .collect();
    let adds: Vec<TextDoc<'_>> = records
        .iter()
        .zip(&metas)
        .map(|((doc, r), meta)| TextDoc {
            docnum: *doc,
            title: if with_body { &r.title } else { "" },
            text: if with_body { &r.text } else { "" },
            metadata: meta,
        })
        .collect();
    text.apply(&adds, &deletes, state.seq, state.next_doc)
}
