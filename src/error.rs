//! The library's error type. Every fallible public function returns [`Result`].

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in hybridb.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with the path it concerned.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another writer (in this or another process) holds the database.
    #[error("database {0} is locked by another writer")]
    Locked(PathBuf),
    /// Another [`Writer`](crate::Writer) of this database is still open.
    #[error("another writer of this database is still open")]
    WriterBusy,
    /// The store was left unclean by a writer that stopped without closing it (a crash, a
    /// kill), and a read-only open cannot recover it: one read-write open does.
    #[error(
        "database {0} was not closed by its last writer (it crashed or was killed); open it \
         read-write once to recover it"
    )]
    NotRecovered(PathBuf),
    /// The database was opened read-only.
    #[error("the database was opened read-only")]
    ReadOnly,
    /// A file's content does not match its format: bad magic, version, checksum or length.
    #[error("corrupted file {path}: {reason}")]
    Corrupted { path: PathBuf, reason: String },
    /// The directory holds no database (and it was opened without create).
    #[error("no database at {0}")]
    NotFound(PathBuf),
    /// The caller passed a value the operation cannot accept.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A document does not fit the collection's schema.
    #[error("document {id:?}: {reason}")]
    InvalidDocument { id: String, reason: String },
    /// A line of an input file could not be parsed.
    #[error("{path}:{line}: {field}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        field: String,
        reason: String,
    },
    /// A commit reached the store, so it is durable, but applying it to the indexes failed
    /// (a full disk, too few file handles). Writing is refused until the database is reopened;
    /// the open catches every index up from the store.
    #[error(
        "commit {seq} is durable, but updating the indexes failed: {source}; they catch up \
         from the store when the database is opened again (after the cause is fixed)"
    )]
    NotApplied {
        seq: u64,
        #[source]
        source: Box<Error>,
    },
    /// A query needs an index that does not hold the last commit: catching it up from the
    /// store failed (see [`Stats::lagging`](crate::Stats::lagging)). Legs that are not behind
    /// keep answering.
    #[error(
        "the {index} index holds commits up to {seq} but the store is at {store_seq} ({reason}); \
         reopen the database read-write once the cause is fixed, and it catches up"
    )]
    IndexBehind {
        index: &'static str,
        seq: u64,
        store_seq: u64,
        reason: String,
    },
    /// The redb document store failed.
    #[error("document store: {0}")]
    Store(String),
    /// The tantivy text index failed.
    #[error("text index: {0}")]
    Text(String),
    /// A model directory is missing, not recognised, or its model failed to run.
    #[error("model: {0}")]
    Model(String),
    /// The ONNX Runtime library could not be found or loaded.
    #[error("onnxruntime: {0}")]
    Runtime(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupted(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupted {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput(reason.into())
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        Error::Text(e.to_string())
    }
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        }
    )*};
}
store_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
