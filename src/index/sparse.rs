//! The sparse lexical-weight leg: an inverted index from token id to `(document, weight)`
//! postings, searched for the exact top k by dot product with block-max MaxScore pruning.
//!
//! The index lives in one directory: immutable segment files `seg-<id>.spx` and a manifest
//! `sparse.manifest` naming them together with the `(seq, next_doc)` of the last database commit
//! they cover. Recent documents sit in an in-memory segment that [`SparseIndex::apply`] fills and
//! [`SparseIndex::flush`] writes out as a new segment before it rewrites the manifest; the memory
//! segment is never persisted otherwise, so after a reopen the caller re-adds the documents from
//! [`SparseIndex::committed`]'s `next_doc` onwards. Deletions are not applied here: every search
//! takes the set of live documents, and [`SparseIndex::merge`] drops the postings of the others.
//!
//! Segments hold increasing, disjoint ranges of document numbers in manifest order, because
//! documents are only ever added above the covered `next_doc`. A hit is a document in `allow`
//! whose dot product with the query is above zero; results equal [`search_brute_force`]'s, scores
//! included, bit for bit. See `storage-format.md` for the file layouts.

mod search;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use self::search::{Collector, Cursor, search_lists};
use self::segment::{MemTerm, Postings, Segment, SegmentWriter, u32_at, u64_at};
use crate::docset::DocSet;
use crate::document::SparseVector;
use crate::error::{Error, Result};
use crate::fsio::{sync_dir, write_atomic};
use crate::query::TopK;

pub(crate) use self::search::SearchStats;

const MANIFEST: &str = "sparse.manifest";
const MANIFEST_MAGIC: &[u8; 8] = b"HDBSPMAN";
const MANIFEST_VERSION: u32 = 1;
/// `apply` flushes once the memory segment holds this many postings.
const FLUSH_POSTINGS: u64 = 1 << 20;
/// After a flush, the newest segment is merged into the one before it while that one holds
/// fewer than this many times its postings: segment sizes then at least halve from oldest to
/// newest, so n equal flushes leave at most log2(n) + 1 segments (a search pays per segment).
const MERGE_RATIO: u64 = 2;

/// Postings of documents added since the last flush.
#[derive(Default)]
struct MemSegment {
    terms: HashMap<u32, MemTerm>,
    postings: u64,
    min_weight: f32,
}

/// The sparse index of one database. Search takes `&self`; changes take `&mut self`.
pub(crate) struct SparseIndex {
    dir: PathBuf,
    /// `(seq, next_doc)` recorded in the manifest: what the segments cover.
    committed: (u64, u64),
    /// `(seq, next_doc)` of the last `apply`: what segments and memory cover together.
    pending: (u64, u64),
    segments: Vec<Segment>,
    mem: MemSegment,
    next_id: u64,
    flush_at: u64,
    /// Counts [`merge`](Self::merge)s, which drop postings that older snapshots may still see.
    merges: u64,
}

impl SparseIndex {
    /// Opens the index in `dir`, creating the directory and an empty manifest if absent.
    /// Segment files the manifest does not name (left by a crash) are deleted. Read-only
    /// (`writable = false`), nothing is created or deleted and the memory segment is never
    /// flushed.
    pub fn open(dir: &Path, writable: bool) -> Result<SparseIndex> {
        if writable {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let path = dir.join(MANIFEST);
        let listed = if dir.exists() {
            list_segments(dir)?
        } else {
            Vec::new()
        };
        let (seq, next_doc, ids) = match std::fs::read(&path) {
            Ok(bytes) => parse_manifest(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !listed.is_empty() {
                    return Err(Error::corrupted(&path, "missing, but segment files exist"));
                }
                if writable {
                    write_manifest(&path, 0, 0, &[])?;
                }
                (0, 0, Vec::new())
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut segments: Vec<Segment> = Vec::with_capacity(ids.len());
        for &id in &ids {
            let seg = Segment::open(&dir.join(segment_name(id)), id)?;
            let after_prev = segments.last().is_none_or(|p| p.max_doc < seg.min_doc);
            if !after_prev || seg.max_doc >= next_doc {
                return Err(Error::corrupted(
                    &path,
                    format!("segment {id} documents out of order or beyond next_doc"),
                ));
            }
            segments.push(seg);
        }
        for (id, file) in listed {
            if writable && !ids.contains(&id) {
                // A crash between writing a segment and the manifest; the file is unused.
                let _ = std::fs::remove_file(file);
            }
        }
        if writable {
            let _ = std::fs::remove_file(path.with_extension("tmp"));
        }
        Ok(SparseIndex {
            dir: dir.to_path_buf(),
            committed: (seq, next_doc),
            pending: (seq, next_doc),
            segments,
            mem: MemSegment::default(),
            next_id: ids.last().map_or(1, |l| l + 1),
            flush_at: if writable { FLUSH_POSTINGS } else { u64::MAX },
            merges: 0,
        })
    }

    /// How many times [`merge`](Self::merge) dropped postings: a snapshot taken at another
    /// count may miss documents here that it still sees as live.
    pub fn merges(&self) -> u64 {
        self.merges
    }

    /// `(seq, next_doc)` of the last commit the flushed segments cover.
    pub fn committed(&self) -> (u64, u64) {
        self.committed
    }

    /// `(seq, next_doc)` of the last `apply`, covered by segments and memory together.
    #[cfg(test)]
    pub fn pending(&self) -> (u64, u64) {
        self.pending
    }

    /// Adds the documents of one database commit to the memory segment, then records
    /// `(seq, next_doc)`. Documents must be strictly increasing, at least the previous
    /// `next_doc` and below the new one; otherwise nothing changes and `InvalidInput` is
    /// returned (also for a malformed vector). Flushes when the memory segment has grown past
    /// its threshold; if that flush fails, the documents stay applied in memory and its error
    /// is returned.
    pub fn apply(&mut self, adds: &[(u64, &SparseVector)], seq: u64, next_doc: u64) -> Result<()> {
        let mut floor = self.pending.1;
        if next_doc < floor {
            return Err(Error::invalid(format!(
                "sparse next_doc {next_doc} is below the indexed {floor}"
            )));
        }
        for &(doc, _) in adds {
            if doc < floor || doc >= next_doc {
                return Err(Error::invalid(format!(
                    "sparse document {doc} is out of order or outside [{floor}, {next_doc})"
                )));
            }
            floor = doc + 1;
        }
        for &(doc, v) in adds {
            let (t, w) = (v.indices(), v.values());
            // A vector decoded without `SparseVector::new` could break its invariants.
            if t.len() != w.len()
                || t.windows(2).any(|p| p[0] >= p[1])
                || w.iter().any(|x| !x.is_finite())
            {
                return Err(Error::invalid(format!(
                    "sparse vector of document {doc} is malformed"
                )));
            }
        }
        for &(doc, v) in adds {
            for (&t, &w) in v.indices().iter().zip(v.values()) {
                self.mem.terms.entry(t).or_default().push(doc, w);
                self.mem.min_weight = if self.mem.postings == 0 {
                    w
                } else {
                    self.mem.min_weight.min(w)
                };
                self.mem.postings += 1;
            }
        }
        self.pending = (seq, next_doc);
        if self.mem.postings >= self.flush_at {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the memory segment as a new segment file and records `pending()` in the manifest.
    pub fn flush(&mut self) -> Result<()> {
        if self.mem.postings == 0 {
            if self.pending != self.committed {
                let ids: Vec<u64> = self.segments.iter().map(|s| s.id).collect();
                self.commit_manifest(&ids, self.pending)?;
            }
            return Ok(());
        }
        let (id, path) = self.new_segment_path();
        let mut terms: Vec<(&u32, &MemTerm)> = self.mem.terms.iter().collect();
        terms.sort_unstable_by_key(|(t, _)| **t);
        let written = (|| {
            let mut w = SegmentWriter::create(&path)?;
            for (t, list) in terms {
                w.add(*t, list)?;
            }
            w.finish()?;
            sync_dir(&self.dir)?;
            Segment::open(&path, id)
        })();
        let mut ids: Vec<u64> = self.segments.iter().map(|s| s.id).collect();
        ids.push(id);
        let seg = self.install(written, &path, self.pending, |_| ids)?;
        self.segments.push(seg);
        self.mem = MemSegment::default();
        Ok(())
    }

    /// The index of the segment the newest one should merge with: the one before it, when that
    /// one holds fewer than [`MERGE_RATIO`] times its postings.
    fn tier_merge_from(&self) -> Option<usize> {
        match self.segments.as_slice() {
            [.., older, newest] if older.postings < MERGE_RATIO.saturating_mul(newest.postings) => {
                Some(self.segments.len() - 2)
            }
            _ => None,
        }
    }

    /// Merges every segment and the memory segment into one, keeping only the documents in
    /// `keep`, switches the manifest to it (recording `pending()`) and deletes the old files.
    pub fn merge(&mut self, keep: &DocSet) -> Result<()> {
        self.merges += 1;
        let (id, path) = self.new_segment_path();
        let written = self.write_merged(0, true, |d| keep.contains(d), id, &path);
        self.finish_merge(0, written, &path, self.pending)?;
        self.mem = MemSegment::default();
        Ok(())
    }

    /// Writes segment `id` at `path` from the postings of the segments from index `from` on
    /// (and of the memory segment, with `mem`) whose documents `keep` takes; `None` if no
    /// posting is left. Reads only, so searches may run meanwhile.
    fn write_merged(
        &self,
        from: usize,
        mem: bool,
        keep: impl Fn(u64) -> bool,
        id: u64,
        path: &Path,
    ) -> Result<Option<Segment>> {
        let merged = &self.segments[from..];
        let mut ids: Vec<u32> = merged.iter().flat_map(|s| s.term_ids()).collect();
        if mem {
            ids.extend(self.mem.terms.keys());
        }
        ids.sort_unstable();
        ids.dedup();
        let mut w = SegmentWriter::create(path)?;
        let mut list = MemTerm::default();
        for &t in &ids {
            list.clear();
            for s in merged {
                if let Some(p) = s.term(t) {
                    list.extend_from(&p, &keep);
                }
            }
            if let Some(m) = self.mem.terms.get(&t).filter(|_| mem) {
                list.extend_from(&m, &keep);
            }
            w.add(t, &list)?;
        }
        let empty = w.postings() == 0;
        w.finish()?;
        if empty {
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            return Ok(None);
        }
        sync_dir(&self.dir)?;
        Segment::open(path, id).map(Some)
    }

    /// Replaces the segments from index `from` on by what [`write_merged`] wrote: switches the
    /// manifest, recording that the segments cover `covers` (`(seq, next_doc)`: `pending()`
    /// only if the memory segment was merged too), and deletes the old files. On failure
    /// nothing changes and the new file is removed.
    ///
    /// [`write_merged`]: Self::write_merged
    fn finish_merge(
        &mut self,
        from: usize,
        written: Result<Option<Segment>>,
        path: &Path,
        covers: (u64, u64),
    ) -> Result<()> {
        let kept: Vec<u64> = self.segments[..from].iter().map(|s| s.id).collect();
        let seg = self.install(written, path, covers, |s| {
            kept.iter().copied().chain(s.iter().map(|s| s.id)).collect()
        })?;
        let old: Vec<Segment> = self.segments.drain(from..).collect();
        self.segments.extend(seg);
        for s in old {
            let path = s.path.clone();
            drop(s);
            // A file left behind is deleted by the next open.
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Exact top `k` of the documents in `allow` by dot product with `query`, best first,
    /// ties toward the smaller document; only scores above zero count.
    pub fn search(&self, query: &SparseVector, k: usize, allow: &DocSet) -> Vec<(u64, f32)> {
        self.search_with_stats(query, k, allow).0
    }

    /// [`search`](Self::search), also returning how much work it did.
    pub fn search_with_stats(
        &self,
        query: &SparseVector,
        k: usize,
        allow: &DocSet,
    ) -> (Vec<(u64, f32)>, SearchStats) {
        self.search_inner(query, k, allow, search::EXHAUSTIVE)
    }

    /// [`search_with_stats`](Self::search_with_stats) that bounds every segment, however short
    /// its lists.
    #[cfg(test)]
    pub fn search_pruned_with_stats(
        &self,
        query: &SparseVector,
        k: usize,
        allow: &DocSet,
    ) -> (Vec<(u64, f32)>, SearchStats) {
        self.search_inner(query, k, allow, 0)
    }

    fn search_inner(
        &self,
        query: &SparseVector,
        k: usize,
        allow: &DocSet,
        exhaustive: u64,
    ) -> (Vec<(u64, f32)>, SearchStats) {
        let (qt, qw) = (query.indices(), query.values());
        // There are never more hits than postings; this also bounds the heap's allocation.
        let k = k.min(usize::try_from(self.postings()).unwrap_or(usize::MAX));
        let mut col = Collector::new(k, qt.len(), allow);
        if k == 0 || qt.is_empty() || allow.is_empty() {
            return col.into_sorted();
        }
        let query_ok = qw.iter().all(|&w| w >= 0.0);
        for s in &self.segments {
            let cursors = cursors(qt, qw, |t| s.term(t));
            search_lists(
                cursors,
                query_ok && s.min_weight >= 0.0,
                exhaustive,
                &mut col,
            );
        }
        if self.mem.postings > 0 {
            let cursors = cursors(qt, qw, |t| self.mem.terms.get(&t));
            search_lists(
                cursors,
                query_ok && self.mem.min_weight >= 0.0,
                exhaustive,
                &mut col,
            );
        }
        col.into_sorted()
    }

    /// Postings in all segments and the memory segment.
    /// Every posting of segments and memory, by document: `doc → [(term, weight)]` in
    /// ascending term order. For verification.
    pub fn forward(&self) -> HashMap<u64, Vec<(u32, f32)>> {
        fn each<P: Postings>(p: &P, term: u32, out: &mut HashMap<u64, Vec<(u32, f32)>>) {
            let nb = p.nblocks();
            for b in 0..nb {
                let blk = p.block(b);
                let end = if b + 1 < nb {
                    p.block(b + 1).start as usize
                } else {
                    p.len()
                };
                for i in blk.start as usize..end {
                    let doc = blk.base + u64::from(p.off(&blk, i));
                    out.entry(doc).or_default().push((term, p.weight(i)));
                }
            }
        }
        let mut out = HashMap::new();
        for seg in &self.segments {
            for term in seg.term_ids() {
                if let Some(p) = seg.term(term) {
                    each(&p, term, &mut out);
                }
            }
        }
        for (&term, t) in &self.mem.terms {
            each(&t, term, &mut out);
        }
        for v in out.values_mut() {
            v.sort_by_key(|&(t, _)| t);
        }
        out
    }

    pub fn postings(&self) -> u64 {
        self.segments.iter().map(|s| s.postings).sum::<u64>() + self.mem.postings
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    #[cfg(test)]
    fn set_flush_threshold(&mut self, postings: u64) {
        self.flush_at = postings;
    }

    fn new_segment_path(&mut self) -> (u64, PathBuf) {
        let id = self.next_id;
        self.next_id += 1;
        (id, self.dir.join(segment_name(id)))
    }

    /// Finishes a flush or merge: once `written` succeeded, records the segment ids that `ids`
    /// gives and `covers` in the manifest; on any failure removes the new file.
    fn install<T>(
        &mut self,
        written: Result<T>,
        path: &Path,
        covers: (u64, u64),
        ids: impl FnOnce(&T) -> Vec<u64>,
    ) -> Result<T> {
        let done = written.and_then(|seg| self.commit_manifest(&ids(&seg), covers).map(|()| seg));
        if done.is_err() {
            let _ = std::fs::remove_file(path);
        }
        done
    }

    /// Writes the manifest: segments `ids`, covering the commits up to `covers`.
    fn commit_manifest(&mut self, ids: &[u64], covers: (u64, u64)) -> Result<()> {
        let (seq, next_doc) = covers;
        crate::fsio::failpoint("sparse:before-manifest")?;
        write_manifest(&self.dir.join(MANIFEST), seq, next_doc, ids)?;
        self.committed = covers;
        Ok(())
    }
}

/// Merges the newest segments of the index in `lock` after a flush (see [`MERGE_RATIO`]),
/// building each merged segment under the read lock so that searches do not wait for it; the
/// write lock is taken only to reserve the segment's id and to switch to it. Callers must
/// serialize every change to the index (the database's write side does). A failed merge
/// leaves the segments as they were.
pub(crate) fn merge_tiers(lock: &RwLock<Option<SparseIndex>>) -> Result<()> {
    let write = || lock.write().unwrap_or_else(|p| p.into_inner());
    loop {
        let (from, id, path) = {
            let mut index = write();
            let Some(idx) = index.as_mut() else {
                return Ok(());
            };
            let Some(from) = idx.tier_merge_from() else {
                return Ok(());
            };
            let (id, path) = idx.new_segment_path();
            (from, id, path)
        };
        let written = match lock.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(idx) => idx.write_merged(from, false, |_| true, id, &path),
            None => return Ok(()),
        };
        if let Some(idx) = write().as_mut() {
            // The memory segment was not merged: the manifest covers what it did before.
            let covers = idx.committed;
            idx.finish_merge(from, written, &path, covers)?;
        }
    }
}

/// One cursor per query term that `find` has a list for, in query order.
fn cursors<P: Postings>(
    terms: &[u32],
    weights: &[f32],
    find: impl Fn(u32) -> Option<P>,
) -> Vec<Cursor<P>> {
    terms
        .iter()
        .zip(weights)
        .filter_map(|(&t, &q)| find(t).map(|p| Cursor::new(p, q)))
        .collect()
}

/// Exact top `k` by brute force over `(doc, vector)` pairs: `query.dot(vector)` for each, hits
/// scoring above zero, best first, ties toward the smaller document. The reference for tests
/// and the fallback of searches whose snapshot predates a [`SparseIndex::merge`].
pub(crate) fn search_brute_force<'a>(
    query: &SparseVector,
    k: usize,
    docs: impl Iterator<Item = (u64, &'a SparseVector)>,
) -> Vec<(u64, f32)> {
    let mut top = TopK::new(k);
    for (doc, v) in docs {
        let s = query.dot(v);
        if s > 0.0 {
            top.push(doc, s);
        }
    }
    top.into_sorted()
}

fn segment_name(id: u64) -> String {
    format!("seg-{id}.spx")
}

/// The `seg-<id>.spx` files in `dir`.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_prefix("seg-")?.strip_suffix(".spx")?.parse().ok());
        if let Some(id) = id {
            out.push((id, entry.path()));
        }
    }
    Ok(out)
}

/// Decodes a manifest into `(seq, next_doc, segment ids)`.
fn parse_manifest(path: &Path, b: &[u8]) -> Result<(u64, u64, Vec<u64>)> {
    let bad = |reason: &str| Error::corrupted(path, reason);
    if b.len() < 36 {
        return Err(bad("truncated"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != u32_at(crc, 0) {
        return Err(bad("checksum mismatch"));
    }
    if b.get(..8) != Some(&MANIFEST_MAGIC[..]) {
        return Err(bad("bad magic"));
    }
    if u32_at(b, 8) != MANIFEST_VERSION {
        return Err(bad("unsupported version"));
    }
    let count = u32_at(b, 12) as usize;
    if count.checked_mul(8).and_then(|n| n.checked_add(36)) != Some(b.len()) {
        return Err(bad("length disagrees with the segment count"));
    }
    let ids: Vec<u64> = (0..count).map(|i| u64_at(b, 32 + 8 * i)).collect();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("segment ids not ascending"));
    }
    Ok((u64_at(b, 16), u64_at(b, 24), ids))
}

fn write_manifest(path: &Path, seq: u64, next_doc: u64, ids: &[u64]) -> Result<()> {
    let count = u32::try_from(ids.len()).map_err(|_| Error::invalid("too many segments"))?;
    let mut b = Vec::with_capacity(36 + 8 * ids.len());
    b.extend_from_slice(MANIFEST_MAGIC);
    b.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&next_doc.to_le_bytes());
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
    write_atomic(path, &b)
}
