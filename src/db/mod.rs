//! The database: opening a directory, recovery of lagging indexes, snapshots for readers,
//! search, and maintenance. Writes go through [`Writer`].

mod recovery;
mod search;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

use std::fs::File;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use redb::{ReadableDatabase, ReadableTableMetadata};
use serde::Serialize;

pub use recovery::Lag;
pub use verify::{Problem, RepairReport, VerifyReport};

pub use writer::{CommitInfo, Writer};

use recovery::{catch_up_sparse, catch_up_text, lag};

use crate::docset::DocSet;
use crate::error::{Error, Result};
use crate::index::colbert::{ColbertStore, ColbertView};
use crate::index::dense::{DenseIndex, Vectors};
use crate::index::sparse::SparseIndex;
use crate::index::text::{Analyzer, TextIndex};
use crate::schema::Schema;
use crate::store::{self, DOCS, HAS_DENSE, STORE_FILE, State, TOMBSTONES};

const LOCK_FILE: &str = "LOCK";
/// Attempts, 10 ms apart, to take a lock that is held, before `Error::Locked`.
const LOCK_RETRIES: u32 = 20;
const DENSE_DIR: &str = "dense";
const TEXT_DIR: &str = "text";
const SPARSE_DIR: &str = "sparse";
const COLBERT_DIR: &str = "colbert";

/// An embedded hybrid-retrieval database in one directory.
///
/// `Database` is `Send + Sync`: share it between threads by reference or in an `Arc`. Searches
/// read the last published commit and never wait for a writer.
pub struct Database {
    /// Taken only by `drop`, which closes it before compacting the store.
    inner: ManuallyDrop<Arc<Inner>>,
}

pub(crate) struct Inner {
    path: PathBuf,
    /// The directory lock; `None` for a read-only handle.
    lock: Option<File>,
    store: Store,
    read_only: bool,
    schema: Schema,
    dense: RwLock<Option<DenseIndex>>,
    sparse: RwLock<Option<SparseIndex>>,
    colbert: Option<ColbertStore>,
    /// The write side: taken by a [`Writer`] for its lifetime, and by maintenance.
    write: Mutex<WriteSide>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The store's zstd dictionary: read on open, or set by the commit that trains it.
    dict: OnceLock<Arc<store::Dict>>,
    /// Set when a commit reached the store but could not be applied in memory.
    poisoned: std::sync::atomic::AtomicBool,
    /// Whether a [`Writer`] exists: the slot `Database::writer` takes.
    writer_open: std::sync::atomic::AtomicBool,
}

pub(crate) struct WriteSide {
    text: TextIndex,
}

/// What one commit made visible: the reader's consistent view.
pub(crate) struct Snapshot {
    pub state: State,
    pub live: Arc<DocSet>,
    pub with_dense: Arc<DocSet>,
    pub vectors: Option<Arc<Vectors>>,
    pub colbert: Option<Arc<ColbertView>>,
    pub text: tantivy::Searcher,
    pub read: redb::ReadTransaction,
    /// `DenseIndex::rebuilds` and `SparseIndex::merges` when this view was published: where an
    /// index has moved on, compaction dropped entries this view may still need, and its leg
    /// answers exactly from the view's primary data instead.
    pub dense_rebuilds: u64,
    pub sparse_merges: u64,
    /// Indexes that do not hold this view's commit (see [`Lag`]).
    pub lagging: Arc<Vec<Lag>>,
}

impl Snapshot {
    /// `Err(IndexBehind)` if `index` does not hold this view's commit.
    pub(crate) fn require(&self, index: &str) -> Result<()> {
        match self.lagging.iter().find(|l| l.index == index) {
            Some(l) => Err(l.error(self.state.seq)),
            None => Ok(()),
        }
    }
}

/// Counts and sizes reported by [`Database::stats`].
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub path: PathBuf,
    pub seq: u64,
    pub documents: u64,
    pub with_dense: u64,
    pub deleted_not_compacted: u64,
    pub next_doc: u64,
    pub hnsw_points: u64,
    pub sparse_postings: u64,
    pub sparse_segments: u64,
    pub text_documents: u64,
    pub dense_dim: Option<usize>,
    pub analyzer: Option<String>,
    pub disk_bytes: u64,
    /// Indexes behind the last commit; empty when every index holds it.
    pub lagging: Vec<Lag>,
}

impl Database {
    /// Opens an existing database.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Self::open_impl(path.as_ref(), None)
    }

    /// Opens the database at `path`, creating it with `schema` when the directory holds none.
    /// An existing database must have been created with an equal schema.
    pub fn open_or_create(path: impl AsRef<Path>, schema: Schema) -> Result<Database> {
        schema.validate()?;
        Self::open_impl(path.as_ref(), Some(schema))
    }

    fn open_impl(path: &Path, create: Option<Schema>) -> Result<Database> {
        if create.is_none() && !path.join(STORE_FILE).exists() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        // A lock can outlive its holder for a moment: a process that forks to run a program
        // shares its open files, the lock's among them, until the program starts. A holder
        // that is really there still holds it after the retries.
        let mut tries = 0;
        loop {
            let opened = lock(path).and_then(|lock| {
                Self::open_locked(path, create.clone(), Some(lock), false)?
                    .ok_or_else(|| Error::Store("a read-write open cannot lag".into()))
            });
            match opened {
                Err(Error::Locked(_)) if tries < LOCK_RETRIES => tries += 1,
                other => return other,
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Opens the database for reading only, beside a writer that may be running in another
    /// process. The handle sees the last commit made before it opened (open again to see
    /// later ones); `writer`, `checkpoint` and `compact` return [`Error::ReadOnly`]. Opening
    /// waits (up to a few seconds) while a writer is between its store commit and its text
    /// index commit or is replacing index files; a text index that stays behind the store, as
    /// after a writer died mid-commit, is reported in [`Stats::lagging`] and the other legs
    /// answer. A store whose writer died without closing it is [`Error::NotRecovered`] until a
    /// read-write open recovers it.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Database> {
        let path = path.as_ref();
        if !path.join(STORE_FILE).exists() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        // A writer may also replace files while they are being opened (a text index merge,
        // a sparse checkpoint): errors are retried too, and the last one is returned.
        let mut last = None;
        for attempt in 0..500 {
            // The last attempts accept a text index that stays behind the store, as after a
            // writer died mid-commit or ran out of space: it is reported, the other legs answer.
            let lag_ok = attempt >= 490;
            match Self::open_locked(path, None, None, lag_ok) {
                Ok(Some(db)) => return Ok(db),
                Ok(None) => last = None,
                // Damage in the store, or a store its dead writer left unclean: retrying
                // cannot help (redb's read transactions are consistent).
                Err(e @ Error::NotRecovered(_)) => return Err(e),
                Err(e @ Error::Corrupted { .. }) if names_store(&e) => return Err(e),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(last.unwrap_or_else(|| {
            Error::Store(
                "the text index does not match the store (a writer was replacing it for \
                 several seconds); try again"
                    .into(),
            )
        }))
    }

    /// Opens with the directory's lock held, or read-only (`lock` is `None`). A read-only open
    /// returns `None` when the text index does not reflect the store's last commit yet, unless
    /// `lag_ok` and the index is behind it, which is then reported in the snapshot. A
    /// read-write open reports any index it could not catch up (see [`Lag`]).
    fn open_locked(
        path: &Path,
        create: Option<Schema>,
        lock: Option<File>,
        lag_ok: bool,
    ) -> Result<Option<Database>> {
        let read_only = lock.is_none();
        let writable = !read_only;
        let store_path = path.join(STORE_FILE);
        let existed = store_path.exists();
        if existed && create.is_none() && std::fs::metadata(&store_path).is_ok_and(|m| m.len() == 0)
        {
            return Err(Error::corrupted(&store_path, "empty file"));
        }
        let store = if read_only {
            Store::Ro(open_store_read_only(&store_path)?)
        } else {
            Store::Rw(open_store(&store_path, existed)?)
        };
        let meta = match &store {
            Store::Rw(db) => {
                let meta = store::read_meta(db)?;
                if let Some((_, _, format)) = meta
                    && format < store::STORE_VERSION
                {
                    store::raise_format(db)?;
                }
                meta.map(|(schema, state, _)| (schema, state))
            }
            Store::Ro(db) => store::read_meta(db)
                .map_err(|e| at_store(e, &store_path))?
                .map(|(schema, state, _)| (schema, state)),
        };
        let (schema, state) = match (meta, create) {
            (Some((schema, state)), Some(wanted)) => {
                if schema != wanted {
                    return Err(Error::invalid(format!(
                        "database at {} has schema {schema:?}, not the requested {wanted:?}",
                        path.display()
                    )));
                }
                (schema, state)
            }
            (Some(found), None) => found,
            (None, Some(schema)) => {
                let Store::Rw(db) = &store else {
                    return Err(Error::ReadOnly);
                };
                store::init(db, &schema)?;
                (schema, State::default())
            }
            (None, None) => return Err(Error::NotFound(path.to_path_buf())),
        };

        let read = store.begin_read()?;
        // Read-only, the tables are read unverified by redb: its errors and panics are damage.
        let damage = |e: Error| {
            if read_only {
                at_store(e, &store_path)
            } else {
                e
            }
        };
        if read_only
            && store::read_meta_in(&read)
                .map_err(damage)?
                .is_none_or(|(_, now, _)| now != state)
        {
            // A writer committed between the two reads: try again on one view.
            return Ok(None);
        }
        let dict = store::read_dict(&read).map_err(damage)?.map(Arc::new);
        let mut live = DocSet::new();
        let mut with_dense = DocSet::new();
        let live_docs = unwinding(|| store::live_docs(&read)).map_err(damage)?;
        for &(doc, flags) in &live_docs {
            live.insert(doc);
            if flags & HAS_DENSE != 0 {
                with_dense.insert(doc);
            }
        }

        let (dense, vectors) = match schema.dense {
            Some(spec) => {
                let dense =
                    DenseIndex::open(&path.join(DENSE_DIR), spec, state.next_doc, writable)?;
                let vectors = dense.map(state.next_doc)?;
                // Catch the graph up with rows committed after its last dump.
                dense.catch_up(&vectors, &with_dense, state.next_doc);
                (Some(dense), Some(vectors))
            }
            None => (None, None),
        };

        let mut lagging = Vec::new();
        let sparse = if schema.sparse {
            let mut index = SparseIndex::open(&path.join(SPARSE_DIR), writable)?;
            if read_only && index.committed().0 > state.seq {
                // A writer checkpointed a later commit since the store was read.
                return Ok(None);
            }
            let caught_up = unwinding(|| {
                catch_up_sparse(
                    &mut index,
                    &read,
                    &state,
                    &path.join(SPARSE_DIR),
                    dict.as_deref(),
                )
            });
            // Read-only, catching up writes nothing, so a failure can only be damage.
            let caught_up = if read_only {
                Ok(caught_up.map_err(damage)?)
            } else {
                caught_up
            };
            lag(&mut lagging, "sparse", index.committed().0, caught_up)?;
            Some(index)
        } else {
            None
        };
        let (colbert, colbert_view) = match schema.colbert {
            Some(spec) => {
                let store = ColbertStore::open(
                    &path.join(COLBERT_DIR),
                    spec.dim,
                    spec.precision,
                    state.next_doc,
                    writable,
                )?;
                let view = store.view(state.next_doc)?;
                (Some(store), Some(view))
            }
            None => (None, None),
        };

        let analyzer = schema.text.unwrap_or(Analyzer::Default);
        let mut text = TextIndex::open(&path.join(TEXT_DIR), analyzer, writable)?;
        if read_only {
            // Nothing may be written: the text index must already match the store. The payload
            // is read before and after loading the searcher, so that it is the searcher's own.
            let seen = text.reload_committed()?;
            match seen.map(|p| p.unwrap_or((0, 0))) {
                Some(p) if p == (state.seq, state.next_doc) => {}
                Some((seq, _)) if lag_ok && seq < state.seq => lagging.push(Lag {
                    index: "text",
                    seq,
                    reason: "no writer has applied the last commits to it yet".into(),
                }),
                _ => return Ok(None),
            }
        } else {
            let caught_up = catch_up_text(
                &mut text,
                &read,
                &state,
                schema.text.is_some(),
                dict.as_deref(),
            );
            if caught_up.is_err() {
                // The searcher must show what the index holds, not a half-applied change.
                let _ = text.reload_committed();
            }
            let seq = text.committed().ok().flatten().map_or(0, |(seq, _)| seq);
            lag(&mut lagging, "text", seq, caught_up)?;
        }

        if read_only {
            // A read-write open had redb check every page; this one checks the tables, once
            // the rest of the open has succeeded (it may be retried while a writer works).
            unwinding(|| store::check_tables(&read, &live_docs)).map_err(damage)?;
        }
        let snapshot = Snapshot {
            state,
            live: Arc::new(live),
            with_dense: Arc::new(with_dense),
            vectors,
            colbert: colbert_view,
            text: text.searcher(),
            read,
            dense_rebuilds: dense.as_ref().map_or(0, DenseIndex::rebuilds),
            sparse_merges: sparse.as_ref().map_or(0, SparseIndex::merges),
            lagging: Arc::new(lagging),
        };
        let behind = !snapshot.lagging.is_empty();
        Ok(Some(Database {
            inner: ManuallyDrop::new(Arc::new(Inner {
                path: path.to_path_buf(),
                lock,
                store,
                read_only,
                schema,
                dense: RwLock::new(dense),
                sparse: RwLock::new(sparse),
                colbert,
                write: Mutex::new(WriteSide { text }),
                snapshot: RwLock::new(Arc::new(snapshot)),
                dict: dict.map(OnceLock::from).unwrap_or_default(),
                // Writes would have to wait for the lagging index: refused until a reopen.
                poisoned: std::sync::atomic::AtomicBool::new(behind),
                writer_open: std::sync::atomic::AtomicBool::new(false),
            })),
        }))
    }

    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Sequence number of the last commit.
    pub fn seq(&self) -> u64 {
        self.inner.snapshot().state.seq
    }

    /// Number of live documents.
    pub fn len(&self) -> u64 {
        self.inner.snapshot().live.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a write batch. Only one writer exists at a time: while one is open this returns
    /// [`Error::WriterBusy`]. After a commit that reached the store but failed to update an
    /// index in memory, writing is refused until the database is reopened.
    pub fn writer(&self) -> Result<Writer<'_>> {
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        let snap = self.inner.snapshot();
        if let Some(l) = snap.lagging.first() {
            return Err(l.error(snap.state.seq));
        }
        if self
            .inner
            .poisoned
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::Store(
                "an earlier commit is durable but could not be applied to the indexes in \
                 memory; reopen the database to catch them up"
                    .into(),
            ));
        }
        use std::sync::atomic::Ordering;
        if self
            .inner
            .writer_open
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::WriterBusy);
        }
        Ok(Writer::new(&self.inner))
    }

    /// Writes the sparse index's memory segment and the HNSW graph to disk, so the next open
    /// need not rebuild them from the store (also done when the database is dropped), and
    /// waits for the text index's background merges, deleting the files they replaced.
    pub fn checkpoint(&self) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        let mut write = self.inner.lock_write();
        if let Some(s) = self.inner.sparse_mut().as_mut() {
            s.flush()?;
        }
        crate::index::sparse::merge_tiers(&self.inner.sparse)?;
        {
            let dense = self.inner.dense.read().unwrap_or_else(|p| p.into_inner());
            if let Some(d) = dense.as_ref().filter(|d| d.dirty()) {
                d.dump()?;
            }
        }
        // Text merges run in the background; a checkpoint waits for them, lets readers move to
        // the merged segments and deletes the old ones' files.
        write.text.settle()?;
        self.republish(&write)?;
        write.text.collect_garbage()
    }

    /// Publishes the current state again, so that new readers see the indexes' files as they
    /// are now (after merges) and release the old ones.
    fn republish(&self, write: &WriteSide) -> Result<()> {
        let snap = self.inner.snapshot();
        let (state, live, with_dense) = (snap.state, snap.live.clone(), snap.with_dense.clone());
        let lagging = snap.lagging.clone();
        drop(snap);
        self.inner.publish(write, state, live, with_dense, lagging)
    }

    /// Rebuilds the HNSW graph without deleted documents, merges the text index's segments and
    /// forgets tombstones every index has applied. Deleted documents never weigh on BM25 scores
    /// (its statistics count live documents); until merged away, which happens in the background
    /// for a text segment over a fifth deleted, they cost space and search time.
    pub fn compact(&self) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        let mut write = self.inner.lock_write();
        let snap = self.inner.snapshot();
        {
            let mut dense = self.inner.dense.write().unwrap_or_else(|p| p.into_inner());
            if let (Some(d), Some(v)) = (dense.as_mut(), snap.vectors.as_ref()) {
                let mut keep = (*snap.with_dense).clone();
                keep.intersect_with(&snap.live);
                d.rebuild(v, &keep, snap.state.next_doc);
                d.dump()?;
            }
        }
        if let Some(s) = self.inner.sparse_mut().as_mut() {
            s.merge(&snap.live)?;
        }
        write.text.merge_all()?;
        let txn = self.inner.store.begin_write()?;
        {
            let mut tomb = txn.open_table(TOMBSTONES)?;
            let applied = write.text.committed()?.map_or(0, |(seq, _)| seq);
            tomb.retain(|_, seq| seq > applied)?;
        }
        txn.commit()?;
        drop(snap);
        self.republish(&write)?;
        write.text.collect_garbage()
    }

    /// Counts and on-disk size.
    pub fn stats(&self) -> Result<Stats> {
        let snap = self.inner.snapshot();
        let tombstones = snap.read.open_table(TOMBSTONES)?.len()?;
        let hnsw_points = self
            .inner
            .dense
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |d| d.graph_len() as u64);
        let (sparse_postings, sparse_segments) = self
            .inner
            .sparse
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or((0, 0), |s| (s.postings(), s.segments() as u64));
        Ok(Stats {
            path: self.inner.path.clone(),
            seq: snap.state.seq,
            documents: snap.live.len() as u64,
            with_dense: snap.with_dense.len() as u64,
            deleted_not_compacted: tombstones,
            next_doc: snap.state.next_doc,
            hnsw_points,
            sparse_postings,
            sparse_segments,
            text_documents: snap.text.num_docs(),
            dense_dim: self.inner.schema.dense.map(|d| d.dim),
            analyzer: self.inner.schema.text.map(|a| a.as_str().to_string()),
            disk_bytes: dir_size(&self.inner.path),
            lagging: snap.lagging.to_vec(),
        })
    }

    /// The stored document with external id `id`, if it is live.
    pub fn get(&self, id: &str) -> Result<Option<crate::StoredDocument>> {
        let snap = self.inner.snapshot();
        let ids = snap.read.open_table(store::IDS)?;
        let Some(doc) = ids.get(id)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let docs = snap.read.open_table(DOCS)?;
        match store::get_doc(&docs, doc, self.inner.dict())? {
            Some(r) => Ok(Some(search::stored(r)?)),
            None => Ok(None),
        }
    }
}

impl Inner {
    /// The store's zstd dictionary, if it has one.
    pub(crate) fn dict(&self) -> Option<&store::Dict> {
        self.dict.get().map(|d| &**d)
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn sparse_mut(&self) -> std::sync::RwLockWriteGuard<'_, Option<SparseIndex>> {
        self.sparse.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn sparse_index(&self) -> std::sync::RwLockReadGuard<'_, Option<SparseIndex>> {
        self.sparse.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_write(&self) -> std::sync::MutexGuard<'_, WriteSide> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a new view current: new state, live sets, vector map and text searcher.
    pub(crate) fn publish(
        &self,
        write: &WriteSide,
        state: State,
        live: Arc<DocSet>,
        with_dense: Arc<DocSet>,
        lagging: Arc<Vec<Lag>>,
    ) -> Result<()> {
        let (vectors, dense_rebuilds) = match self
            .dense
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(d) => (Some(d.map(state.next_doc)?), d.rebuilds()),
            None => (None, 0),
        };
        let sparse_merges = self.sparse_index().as_ref().map_or(0, SparseIndex::merges);
        let colbert = match &self.colbert {
            Some(c) => Some(c.view(state.next_doc)?),
            None => None,
        };
        let snap = Snapshot {
            state,
            live,
            with_dense,
            vectors,
            colbert,
            text: write.text.searcher(),
            read: self.store.begin_read()?,
            dense_rebuilds,
            sparse_merges,
            lagging,
        };
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
        Ok(())
    }
}

impl Drop for Database {
    /// Closes the database (see `Inner`'s drop), then, still holding the directory lock,
    /// compacts the store file when much of it is free (best effort).
    fn drop(&mut self) {
        // SAFETY: `self.inner` is taken once, here, and not used after.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        let Ok(mut inner) = Arc::try_unwrap(inner) else {
            return;
        };
        let lock = inner.lock.take();
        let store = inner.path.join(STORE_FILE);
        drop(inner);
        if lock.is_some() {
            // redb may panic on a damaged page rather than return an error (see `open_store`).
            let _ = std::panic::catch_unwind(|| store::compact_file(&store));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        // Best effort: a failed flush or dump only means the next open catches up from the store.
        if let Ok(sparse) = self.sparse.get_mut()
            && let Some(s) = sparse.as_mut()
        {
            let _ = s.flush();
        }
        if let Ok(dense) = self.dense.get_mut()
            && let Some(d) = dense.as_mut()
            && d.dirty()
        {
            let _ = d.dump();
        }
        if let Ok(write) = self.write.get_mut() {
            write.text.finish_merges();
        }
    }
}

/// The redb handle: read-write, or read-only beside a writer in another process.
enum Store {
    Rw(redb::Database),
    Ro(redb::ReadOnlyDatabase),
}

impl Store {
    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        Ok(match self {
            Store::Rw(db) => db.begin_read()?,
            Store::Ro(db) => db.begin_read()?,
        })
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        match self {
            Store::Rw(db) => Ok(db.begin_write()?),
            Store::Ro(_) => Err(Error::ReadOnly),
        }
    }
}

/// Opens the redb file read-only. Page checksums are not checked (that needs the writer's
/// lock); `verify` checks them.
fn open_store_read_only(path: &Path) -> Result<redb::ReadOnlyDatabase> {
    let opened = std::panic::catch_unwind(|| store::builder().open_read_only(path));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::RepairAborted)) => Err(Error::NotRecovered(
            path.parent().unwrap_or(path).to_path_buf(),
        )),
        Ok(Err(e)) => Err(store_open_error(path, e)),
        Err(_) => Err(Error::corrupted(
            path,
            "the store failed reading a damaged page",
        )),
    }
}

/// Takes the directory's exclusive lock: one open database per directory across processes.
fn lock(path: &Path) -> Result<File> {
    let lock_path = path.join(LOCK_FILE);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&lock_path, e)),
    }
}

/// Opens (or creates) the redb file. An existing file's page checksums are checked first: redb
/// checks them only in `check_integrity`, not on reads. redb can panic on some damaged pages
/// instead of returning an error; such a panic is reported as `Corrupted`.
fn open_store(path: &Path, existed: bool) -> Result<redb::Database> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut store = store::builder().create(path)?;
        if existed {
            store.check_integrity()?;
        }
        Ok(store)
    }));
    match opened {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            Err(Error::Locked(path.parent().unwrap_or(path).to_path_buf()))
        }
        Ok(Err(e)) => Err(store_open_error(path, e)),
        Err(_) => Err(Error::corrupted(
            path,
            "the store failed reading a damaged page",
        )),
    }
}

/// An error reading the store: `Corrupted` names the store's full path; a redb error while
/// checking the tables is damage too.
fn at_store(e: Error, path: &Path) -> Error {
    match e {
        Error::Corrupted { reason, .. } | Error::Store(reason) => Error::corrupted(path, reason),
        other => other,
    }
}

/// Runs a read of the store, reporting a panic of redb on a damaged page as an error.
fn unwinding<T>(read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .unwrap_or_else(|_| Err(Error::Store("redb failed reading a damaged page".into())))
}

/// Whether `e` is damage found in the store file.
fn names_store(e: &Error) -> bool {
    matches!(e, Error::Corrupted { path, .. } if path.ends_with(STORE_FILE))
}

/// A redb error on open: damage is `Corrupted` naming the file.
fn store_open_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
            Error::corrupted(path, why)
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            Error::corrupted(path, io.to_string())
        }
        other => other.into(),
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
