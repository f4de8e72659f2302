//! `verify`: every file and every index checked against the store; `repair`: the derived
//! indexes (HNSW graph, sparse index, tantivy) deleted and rebuilt from the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::ReadableTable;
use serde::Serialize;

use super::{COLBERT_DIR, DENSE_DIR, Database, SPARSE_DIR, TEXT_DIR};
use crate::error::{Error, Result};
use crate::index::text;
use crate::store::{self, DOCS, DocRecord, HAS_DENSE, IDS, LIVE, STORE_FILE};

/// What [`Database::verify`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Live documents.
    pub documents: u64,
    /// One line per check that ran.
    pub checked: Vec<String>,
    pub problems: Vec<Problem>,
}

/// One thing wrong with a database.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// The file or index directory concerned.
    pub path: PathBuf,
    pub message: String,
    /// Whether it lies in derived data, which [`Database::repair`] rebuilds.
    pub repairable: bool,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What [`Database::repair`] rebuilt.
#[derive(Clone, Debug, Serialize)]
pub struct RepairReport {
    /// Derived files and directories deleted before the rebuild.
    pub removed: Vec<PathBuf>,
    /// Live documents after the rebuild.
    pub documents: u64,
}

/// Derived data: rebuilt by `repair`, never the only copy of anything.
fn is_derived(root: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let name = rel.to_string_lossy();
    rel.starts_with(TEXT_DIR) || rel.starts_with(SPARSE_DIR) || name.starts_with("dense/hnsw")
}

impl Database {
    /// Opens the database at `path` and checks it: redb's page checksums, every record's
    /// checksum, the id map against the documents, every vector row and ColBERT document
    /// against its checksum, tantivy's file checksums, and that the sparse index and tantivy
    /// hold exactly the live documents with exactly their stored content. Damage found while
    /// opening is reported as a problem rather than an error.
    pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport> {
        let path = path.as_ref();
        let mut report = VerifyReport::default();
        match Database::open(path) {
            Ok(db) => {
                report
                    .checked
                    .push("open: store pages, vector rows, segment and index files".into());
                db.check_contents(&mut report)?;
            }
            Err(Error::Corrupted { path: bad, reason }) => report.problems.push(Problem {
                repairable: is_derived(path, &bad),
                path: bad,
                message: reason,
            }),
            Err(e) => return Err(e),
        }
        Ok(report)
    }

    /// Deletes the derived indexes (the HNSW graph dumps, the sparse index and the tantivy
    /// index) and rebuilds them from the store and the vector rows. The store, the vector rows
    /// and the ColBERT tokens are the only copy of their data: damage there cannot be repaired,
    /// and the error says which file.
    pub fn repair(path: impl AsRef<Path>) -> Result<RepairReport> {
        let path = path.as_ref();
        if !path.join(STORE_FILE).exists() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        let lock = super::lock(path)?;
        let mut removed = Vec::new();
        let dense = path.join(DENSE_DIR);
        if let Ok(rd) = std::fs::read_dir(&dense) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("hnsw") {
                    removed.push(e.path());
                }
            }
        }
        for d in [SPARSE_DIR, TEXT_DIR] {
            if path.join(d).exists() {
                removed.push(path.join(d));
            }
        }
        removed.sort();
        for p in &removed {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
            r.map_err(|e| Error::io(p, e))?;
        }
        let db = Database::open_locked(path, None, Some(lock), false)?
            .ok_or_else(|| Error::Store("a read-write open cannot lag".into()))?;
        // A rebuild that could not finish is a failed repair, not a lagging index.
        let snap = db.inner.snapshot();
        if let Some(l) = snap.lagging.first() {
            return Err(l.error(snap.state.seq));
        }
        drop(snap);
        db.checkpoint()?;
        Ok(RepairReport {
            removed,
            documents: db.len(),
        })
    }

    fn check_contents(&self, report: &mut VerifyReport) -> Result<()> {
        let root = self.inner.path.clone();
        let snap = self.inner.snapshot();
        let mut problem = |path: PathBuf, message: String| {
            report.problems.push(Problem {
                repairable: is_derived(&root, &path),
                path,
                message,
            });
        };
        for l in snap.lagging.iter() {
            let dir = if l.index == "text" {
                TEXT_DIR
            } else {
                SPARSE_DIR
            };
            problem(
                root.join(dir),
                format!(
                    "holds commits up to {} of {}: catching it up failed: {}",
                    l.seq, snap.state.seq, l.reason
                ),
            );
        }
        let store_path = root.join(STORE_FILE);

        // The store: records, id map and live flags agree.
        let docs = snap.read.open_table(DOCS)?;
        let mut live: HashMap<u64, (DocRecord, u8)> = HashMap::new();
        for row in snap.read.open_table(LIVE)?.iter()? {
            let (doc, flags) = row?;
            let doc = doc.value();
            match docs.get(doc)? {
                None => problem(
                    store_path.clone(),
                    format!("live document {doc} has no record"),
                ),
                Some(bytes) => match store::decode_doc(bytes.value(), self.inner.dict()) {
                    Ok(r) => {
                        live.insert(doc, (r, flags.value()));
                    }
                    Err(e) => problem(store_path.clone(), format!("document {doc}: {e}")),
                },
            }
        }
        let mut mapped = 0usize;
        for row in snap.read.open_table(IDS)?.iter()? {
            let (id, doc) = row?;
            let (id, doc) = (id.value().to_string(), doc.value());
            match live.get(&doc) {
                Some((r, _)) if r.id == id => mapped += 1,
                Some((r, _)) => problem(
                    store_path.clone(),
                    format!(
                        "id {id:?} maps to document {doc}, whose record says {:?}",
                        r.id
                    ),
                ),
                None => problem(
                    store_path.clone(),
                    format!("id {id:?} maps to document {doc}, which is not live"),
                ),
            }
        }
        if mapped != live.len() {
            problem(
                store_path.clone(),
                format!("{} live documents but {mapped} ids map to them", live.len()),
            );
        }
        report.documents = live.len() as u64;
        report.checked.push(format!(
            "store: {} live documents and their ids",
            live.len()
        ));

        // Dense: every live document with a vector has a committed row (rows were checked
        // against their checksums on open), and the graph holds at least that many points.
        if self.inner.schema.dense.is_some() {
            let with_dense = live.values().filter(|(_, f)| f & HAS_DENSE != 0).count();
            let points = self.stats()?.hnsw_points as usize;
            if points < with_dense {
                problem(
                    root.join(DENSE_DIR).join("hnsw.manifest"),
                    format!("the graph has {points} points for {with_dense} vectors"),
                );
            }
            report.checked.push(format!(
                "dense: {with_dense} vector rows, {points} graph points"
            ));
        }

        // Sparse: each live document's postings are exactly its stored weights.
        if let Some(index) = self.inner.sparse_index().as_ref() {
            let forward = index.forward();
            let dir = root.join(SPARSE_DIR);
            let mut bad = 0;
            for (doc, (r, _)) in &live {
                let stored: Vec<(u32, f32)> = r
                    .sparse
                    .as_ref()
                    .map(|v| v.indices().iter().copied().zip(v.values().iter().copied()))
                    .into_iter()
                    .flatten()
                    .collect();
                let indexed = forward.get(doc).map(Vec::as_slice).unwrap_or_default();
                if stored.as_slice() != indexed {
                    bad += 1;
                    if bad <= 10 {
                        problem(
                            dir.clone(),
                            format!(
                                "document {doc} ({:?}): {} postings indexed, {} stored",
                                r.id,
                                indexed.len(),
                                stored.len()
                            ),
                        );
                    }
                }
            }
            report
                .checked
                .push(format!("sparse: postings of {} live documents", live.len()));
        }

        // Text: tantivy holds each live document exactly once, and nothing else.
        let dir = root.join(TEXT_DIR);
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for d in text::docnums(&snap.text)? {
            *seen.entry(d).or_default() += 1;
        }
        let missing = live.keys().filter(|d| !seen.contains_key(d)).count();
        let extra = seen.keys().filter(|d| !live.contains_key(d)).count();
        let doubled = seen.values().filter(|&&n| n > 1).count();
        if missing + extra + doubled > 0 {
            problem(
                dir,
                format!(
                    "{missing} live documents missing, {extra} not live present, {doubled} \
                     present more than once"
                ),
            );
        }
        report
            .checked
            .push(format!("text: {} indexed documents", seen.len()));

        // ColBERT: every live document's tokens read back with a matching checksum.
        if let Some(view) = &snap.colbert {
            let mut bad = 0;
            for doc in live.keys() {
                if let Err(e) = view.check(*doc) {
                    bad += 1;
                    if bad <= 10 {
                        let (p, m) = match e {
                            Error::Corrupted { path, reason } => (path, reason),
                            other => (root.join(COLBERT_DIR), other.to_string()),
                        };
                        problem(p, m);
                    }
                }
            }
            report
                .checked
                .push(format!("colbert: tokens of {} live documents", live.len()));
        }
        Ok(())
    }
}
