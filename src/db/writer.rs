//! The write batch and the commit protocol.
//!
//! A commit (see storage-format.md, "Commit protocol"): (1) the new dense rows are written past
//! the committed end of the vector file and synced; (2) one redb transaction records the
//! documents, id map, live flags, tombstones and the new state — this is the commit point;
//! (3) the HNSW graph and the tantivy index apply the change (tantivy records the commit's
//! sequence number as its payload), as does the sparse index (in memory until it flushes);
//! (4) a new snapshot is published to readers. ColBERT token vectors, like dense rows, are
//! primary data and are written in step (1).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Inner, Lag, WriteSide};
use crate::document::{Document, check_dense, check_tokens, id_problem, show_id};
use crate::error::{Error, Result};
use crate::fsio::failpoint;
use crate::index::colbert::Precision;
use crate::index::dense::normalize;
use crate::index::text::TextDoc;
use crate::schema::Metric;
use crate::store::{self, DOCS, DocRecord, HAS_DENSE, HAS_SPARSE, IDS, LIVE, META, TOMBSTONES};

enum Op {
    Upsert(Box<Document>),
    Delete(String),
}

/// What a commit did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    /// Sequence number of this commit (unchanged when the batch was empty).
    pub seq: u64,
    /// Documents written (new or replacing an older version).
    pub upserted: u64,
    /// Documents removed (deleted, or replaced by an upsert).
    pub removed: u64,
}

/// A batch of upserts and deletes, applied atomically by [`Writer::commit`]. Dropping a writer
/// without committing discards the batch. Within a batch the last operation on an id wins.
///
/// A writer is `Send`: it may be handed to another thread. It holds the database's writer slot
/// (see [`Database::writer`](crate::Database::writer)) until it is dropped or committed; the
/// write side's lock is taken only inside [`commit`](Writer::commit).
pub struct Writer<'db> {
    inner: &'db Inner,
    ops: Vec<Op>,
    by_id: HashMap<String, usize>,
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        self.inner.writer_open.store(false, Ordering::Release);
    }
}

impl<'db> Writer<'db> {
    /// Takes the writer slot, which the caller found free.
    pub(super) fn new(inner: &'db Inner) -> Self {
        Writer {
            inner,
            ops: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    /// Adds or replaces the document with this id. The document is validated now; an id that
    /// breaks the rule in [`Document`]'s docs is [`Error::InvalidInput`].
    pub fn upsert(&mut self, mut doc: Document) -> Result<()> {
        let schema = &self.inner.schema;
        let fail = |reason: String| Error::InvalidDocument {
            id: doc.id.clone(),
            reason,
        };
        if let Some(why) = id_problem(&doc.id) {
            return Err(Error::invalid(format!(
                "document id {} {why}",
                show_id(&doc.id)
            )));
        }
        if !(doc.metadata.is_object() || doc.metadata.is_null()) {
            return Err(fail("metadata must be a JSON object".into()));
        }
        match (&mut doc.dense, &schema.dense) {
            (Some(v), Some(spec)) => {
                check_dense(v, spec.dim, "dense vector").map_err(|e| fail(e.to_string()))?;
                if spec.metric == Metric::Cosine {
                    normalize(v);
                }
            }
            (Some(_), None) => return Err(fail("the schema has no dense leg".into())),
            (None, _) => {}
        }
        match (&doc.sparse, schema.sparse) {
            (Some(v), true) => v.check().map_err(fail)?,
            (Some(_), false) => return Err(fail("the schema has no sparse leg".into())),
            (None, _) => {}
        }
        match (&doc.colbert, &schema.colbert) {
            (Some(t), Some(spec)) => {
                check_tokens(t, spec.dim, "ColBERT token vectors")
                    .map_err(|e| fail(e.to_string()))?;
                // Found now rather than at commit, where it would fail the whole batch.
                if spec.precision == Precision::F16
                    && let Some(x) = t.iter().find(|x| x.abs() > f32::from(half::f16::MAX))
                {
                    return Err(fail(format!(
                        "ColBERT token vectors have a value {x} beyond the f16 range the \
                         collection stores (±65504)"
                    )));
                }
            }
            (Some(_), None) => return Err(fail("the schema has no ColBERT leg".into())),
            (None, _) => {}
        }
        let id = doc.id.clone();
        self.push(id, Op::Upsert(Box::new(doc)));
        Ok(())
    }

    /// Deletes the document with this id (no effect if there is none).
    pub fn delete(&mut self, id: &str) -> Result<()> {
        self.push(id.to_string(), Op::Delete(id.to_string()));
        Ok(())
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn push(&mut self, id: String, op: Op) {
        match self.by_id.get(&id) {
            Some(&i) => self.ops[i] = op,
            None => {
                self.by_id.insert(id, self.ops.len());
                self.ops.push(op);
            }
        }
    }

    /// Applies the batch atomically to every index and makes it visible to searches.
    pub fn commit(mut self) -> Result<CommitInfo> {
        let inner = self.inner;
        // Maintenance (checkpoint, compact) takes the write side too; the state is read under it.
        let mut write = inner.lock_write();
        let snap = inner.snapshot();
        if self.ops.is_empty() {
            return Ok(CommitInfo {
                seq: snap.state.seq,
                ..CommitInfo::default()
            });
        }
        let mut state = snap.state;
        state.seq += 1;
        let seq = state.seq;
        let first_new = state.next_doc;
        let mut live = (*snap.live).clone();
        let mut with_dense = (*snap.with_dense).clone();
        let mut removed = Vec::new();
        let mut added: Vec<(u64, &Document)> = Vec::new();

        let mut records: Vec<Option<DocRecord>> = (self.ops.iter())
            .map(|op| match op {
                Op::Upsert(d) => Some(DocRecord {
                    id: d.id.clone(),
                    title: d.title.clone(),
                    text: d.text.clone(),
                    metadata: d.metadata.to_string(),
                    seq,
                    sparse: d.sparse.clone(),
                }),
                Op::Delete(_) => None,
            })
            .collect();
        // The first commit with enough text trains the store's dictionary, in its transaction.
        let trained = match inner.dict() {
            Some(_) => None,
            None => store::Dict::train(records.iter().flatten()).map(Arc::new),
        };
        let dict = inner.dict().or(trained.as_deref());

        let txn = inner.store.begin_write()?;
        {
            let mut docs = txn.open_table(DOCS)?;
            let mut ids = txn.open_table(IDS)?;
            let mut live_t = txn.open_table(LIVE)?;
            let mut tomb = txn.open_table(TOMBSTONES)?;
            for (op, record) in self.ops.iter().zip(&mut records) {
                let id = match op {
                    Op::Upsert(d) => d.id.as_str(),
                    Op::Delete(id) => id.as_str(),
                };
                let old = ids.remove(id)?.map(|v| v.value());
                if let Some(old) = old {
                    docs.remove(old)?;
                    live_t.remove(old)?;
                    tomb.insert(old, seq)?;
                    live.remove(old);
                    with_dense.remove(old);
                    removed.push(old);
                }
                if let Op::Upsert(d) = op {
                    let doc = state.next_doc;
                    state.next_doc += 1;
                    if let Some(record) = record.take() {
                        docs.insert(doc, store::encode_doc(&record, dict)?.as_slice())?;
                    }
                    ids.insert(id, doc)?;
                    let mut flags = 0;
                    if d.dense.is_some() {
                        flags |= HAS_DENSE;
                        with_dense.insert(doc);
                    }
                    if d.sparse.is_some() {
                        flags |= HAS_SPARSE;
                    }
                    live_t.insert(doc, flags)?;
                    live.insert(doc);
                    added.push((doc, d));
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert("state", store::encode(&state)?.as_slice())?;
            if let Some(d) = &trained {
                meta.insert(store::DICT_KEY, store::encode(&d.bytes())?.as_slice())?;
            }
        }

        // Dense rows go to disk before the commit point; rows past the committed end are
        // ignored (and cut off) by the next open if the commit does not complete.
        let dense = inner.dense.read().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dense.as_ref()
            && !added.is_empty()
        {
            let dim = d.dim();
            let mut rows = vec![0.0f32; added.len() * dim];
            for (i, (_, doc)) in added.iter().enumerate() {
                if let Some(v) = &doc.dense {
                    rows[i * dim..(i + 1) * dim].copy_from_slice(v);
                }
            }
            failpoint("commit:before-vectors")?;
            d.write_rows(first_new, &rows)?;
        }
        if let Some(c) = &inner.colbert
            && !added.is_empty()
        {
            let tokens: Vec<Option<&[f32]>> =
                added.iter().map(|(_, d)| d.colbert.as_deref()).collect();
            failpoint("commit:before-colbert")?;
            c.append(first_new, &tokens)?;
        }
        failpoint("commit:before-store-commit")?;
        txn.commit()?;
        if let Some(d) = trained {
            // Set before the commit is published: its records need the dictionary.
            let _ = inner.dict.set(d);
        }

        // Derived indexes. The commit is durable in the store now: if applying it in memory
        // fails, the database refuses further writes until it is reopened, which catches every
        // index up from the store.
        let applied = failpoint("commit:after-store-commit").and_then(|()| {
            apply_derived(
                inner, &mut write, seq, &state, &added, &removed, live, with_dense, dense,
            )
        });
        if let Err(e) = applied {
            inner.poisoned.store(true, Ordering::SeqCst);
            return Err(Error::NotApplied {
                seq,
                source: Box::new(e),
            });
        }
        let info = CommitInfo {
            seq,
            upserted: added.len() as u64,
            removed: removed.len() as u64,
        };
        self.ops.clear();
        Ok(info)
    }
}

/// Steps 3–4 of the protocol: the HNSW graph, the sparse index and tantivy take the commit,
/// then readers get the new snapshot (published even when an index failed, so that nothing
/// deleted is visible).
#[allow(clippy::too_many_arguments)]
fn apply_derived(
    inner: &Inner,
    write: &mut WriteSide,
    seq: u64,
    state: &crate::store::State,
    added: &[(u64, &Document)],
    removed: &[u64],
    live: crate::docset::DocSet,
    with_dense: crate::docset::DocSet,
    dense: std::sync::RwLockReadGuard<'_, Option<crate::index::dense::DenseIndex>>,
) -> Result<()> {
    let with_dense = Arc::new(with_dense);
    let dense_result = match dense.as_ref() {
        Some(d) => d.map(state.next_doc).map(|vectors| {
            d.catch_up(&vectors, &with_dense, state.next_doc);
        }),
        None => Ok(()),
    };
    drop(dense);
    let sparse_result =
        failpoint("commit:before-sparse").and_then(|()| match inner.sparse_mut().as_mut() {
            Some(index) => {
                let adds: Vec<(u64, &crate::SparseVector)> = added
                    .iter()
                    .filter_map(|(doc, d)| d.sparse.as_ref().map(|v| (*doc, v)))
                    .collect();
                index.apply(&adds, seq, state.next_doc)
            }
            None => Ok(()),
        });
    let text_on = inner.schema.text.is_some();
    let adds: Vec<TextDoc<'_>> = added
        .iter()
        .map(|(doc, d)| TextDoc {
            docnum: *doc,
            title: if text_on { &d.title } else { "" },
            text: if text_on { &d.text } else { "" },
            metadata: &d.metadata,
        })
        .collect();
    let text_result = failpoint("commit:before-text")
        .and_then(|()| write.text.apply(&adds, removed, seq, state.next_doc));
    // An index that failed holds the commit before this one at most.
    let lagging = [("sparse", &sparse_result), ("text", &text_result)]
        .into_iter()
        .filter_map(|(index, r)| {
            r.as_ref().err().map(|e| Lag {
                index,
                seq: seq - 1,
                reason: e.to_string(),
            })
        })
        .collect();
    failpoint("commit:before-publish")?;
    inner.publish(write, *state, Arc::new(live), with_dense, Arc::new(lagging))?;
    // Searches keep running on the old sparse segments while a flush's new one is merged; a
    // failed merge changes nothing and is tried again after the next flush.
    if sparse_result.is_ok() {
        let _ = crate::index::sparse::merge_tiers(&inner.sparse);
    }
    dense_result?;
    sparse_result?;
    text_result
}
