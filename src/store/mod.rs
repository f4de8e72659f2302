//! The redb document store: documents, the id map, liveness flags, tombstones and the commit
//! state. It is the source of truth; every index is derived from it (and from the vector rows).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::document::SparseVector;
use crate::error::{Error, Result};
use crate::schema::Schema;

mod record;

pub(crate) use record::{Dict, DocHead, decode as decode_doc, encode as encode_doc};

/// Format version of the store's records and tables. Version 2 added the CRC-32 after every
/// postcard record; version 3 compresses document strings and gap-codes sparse ids.
pub(crate) const STORE_VERSION: u32 = 3;
/// The oldest format this build reads. A writable open raises it to [`STORE_VERSION`] (its
/// records stay readable), so that older builds do not meet records they cannot read.
const OLDEST_READABLE: u32 = 2;

/// The store's file name, named in corruption errors.
pub(crate) const STORE_FILE: &str = "docs.redb";

/// `"format"` → u32 LE version, `"schema"` → postcard [`Schema`], `"state"` → postcard [`State`].
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Document number → postcard [`DocRecord`].
pub(crate) const DOCS: TableDefinition<u64, &[u8]> = TableDefinition::new("docs");
/// External id → document number of its live version.
pub(crate) const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
/// Live document number → flags ([`HAS_DENSE`], [`HAS_SPARSE`]).
pub(crate) const LIVE: TableDefinition<u64, u8> = TableDefinition::new("live");
/// Replaced or deleted document number → sequence number of the commit that removed it.
pub(crate) const TOMBSTONES: TableDefinition<u64, u64> = TableDefinition::new("tombstones");

pub(crate) const HAS_DENSE: u8 = 1;
pub(crate) const HAS_SPARSE: u8 = 2;

/// The commit state, rewritten by every commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// Sequence number of the last commit (0 for a new database).
    pub seq: u64,
    /// The next document number to assign; also the committed row count of the vector file.
    pub next_doc: u64,
}

/// A stored document. Metadata is kept as JSON text (postcard cannot carry `serde_json::Value`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct DocRecord {
    pub id: String,
    pub title: String,
    pub text: String,
    pub metadata: String,
    /// Commit that wrote this version.
    pub seq: u64,
    pub sparse: Option<SparseVector>,
}

/// postcard bytes followed by their CRC-32 (u32 LE).
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut bytes =
        postcard::to_allocvec(v).map_err(|e| Error::Store(format!("encoding a record: {e}")))?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Checks the CRC-32 trailer and decodes; any mismatch is `Corrupted` naming the store file.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    let body = checked(bytes, what)?;
    postcard::from_bytes(body).map_err(|e| corrupt(what, e))
}

/// The bytes before a value's CRC-32 trailer, once the trailer matches them.
fn checked<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    let Some(split) = bytes.len().checked_sub(4) else {
        return Err(corrupt(
            what,
            format!("{} bytes, shorter than its checksum", bytes.len()),
        ));
    };
    let (body, crc) = bytes.split_at(split);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(corrupt(what, "checksum mismatch"));
    }
    Ok(body)
}

/// `Corrupted` naming the store file and the kind of value.
fn corrupt(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::corrupted(STORE_FILE, format!("{what} record: {reason}"))
}

/// Reads version, schema and state. `Ok(None)` when the store was never initialized.
pub(crate) fn read_meta(db: &impl ReadableDatabase) -> Result<Option<(Schema, State, u32)>> {
    read_meta_in(&db.begin_read()?)
}

/// [`read_meta`] within the read transaction `txn`.
pub(crate) fn read_meta_in(txn: &redb::ReadTransaction) -> Result<Option<(Schema, State, u32)>> {
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(version) = table.get("format")? else {
        return Ok(None);
    };
    let v = version.value();
    let version = u32::from_le_bytes(
        v.try_into()
            .map_err(|_| Error::corrupted(STORE_FILE, "format record is not 4 bytes"))?,
    );
    if !(OLDEST_READABLE..=STORE_VERSION).contains(&version) {
        return Err(Error::Store(format!(
            "store format version {version} is not supported (this build reads \
             {OLDEST_READABLE} to {STORE_VERSION}); re-ingest the documents into a new database"
        )));
    }
    let schema: Schema = match table.get("schema")? {
        Some(s) => decode(s.value(), "schema")?,
        None => return Err(Error::corrupted(STORE_FILE, "schema record missing")),
    };
    // A schema is validated when a database is created; one that fails now was damaged since.
    if let Err(e) = schema.validate() {
        let reason = match e {
            Error::InvalidInput(m) => m,
            e => e.to_string(),
        };
        return Err(corrupt("schema", reason));
    }
    let state: State = match table.get("state")? {
        Some(s) => decode(s.value(), "state")?,
        None => return Err(Error::corrupted(STORE_FILE, "state record missing")),
    };
    Ok(Some((schema, state, version)))
}

/// Marks a store of an older readable format as [`STORE_VERSION`], before this build writes
/// records in that format.
pub(crate) fn raise_format(db: &redb::Database) -> Result<()> {
    let txn = db.begin_write()?;
    txn.open_table(META)?
        .insert("format", STORE_VERSION.to_le_bytes().as_slice())?;
    txn.commit()?;
    Ok(())
}

/// Creates every table and writes the initial records.
pub(crate) fn init(db: &redb::Database, schema: &Schema) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("format", STORE_VERSION.to_le_bytes().as_slice())?;
        meta.insert("schema", encode(schema)?.as_slice())?;
        meta.insert("state", encode(&State::default())?.as_slice())?;
        txn.open_table(DOCS)?;
        txn.open_table(IDS)?;
        txn.open_table(LIVE)?;
        txn.open_table(TOMBSTONES)?;
    }
    txn.commit()?;
    Ok(())
}

/// Cross-checks the tables for a read-only open, which cannot have redb verify its page
/// checksums (that needs the writer's lock): the documents are exactly the live ones, every
/// record's checksum holds, and the id map pairs each record's id with its number. One pass
/// over each table; the id map is compared through an order-free sum of hashes.
pub(crate) fn check_tables(txn: &redb::ReadTransaction, live: &[(u64, u8)]) -> Result<()> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let pair = |id: &str, doc: u64| {
        let mut h = DefaultHasher::new();
        (id, doc).hash(&mut h);
        h.finish()
    };
    let docs = txn.open_table(DOCS)?;
    let mut live = live.iter();
    let (mut from_docs, mut n) = (0u64, 0usize);
    for row in docs.iter()? {
        let (doc, bytes) = row?;
        let doc = doc.value();
        if live.next().map(|&(d, _)| d) != Some(doc) {
            return Err(Error::corrupted(
                STORE_FILE,
                format!("document number {doc} is stored but the live table disagrees"),
            ));
        }
        let head = record::decode_head(bytes.value())?;
        from_docs = from_docs.wrapping_add(pair(&head.id, doc));
        n += 1;
    }
    if let Some(&(doc, _)) = live.next() {
        return Err(Error::corrupted(
            STORE_FILE,
            format!("live document number {doc} has no record"),
        ));
    }
    let ids = txn.open_table(IDS)?;
    let (mut from_ids, mut m) = (0u64, 0usize);
    for row in ids.iter()? {
        let (id, doc) = row?;
        from_ids = from_ids.wrapping_add(pair(id.value(), doc.value()));
        m += 1;
    }
    if (from_ids, m) != (from_docs, n) {
        return Err(Error::corrupted(
            STORE_FILE,
            format!("the id map ({m} ids) does not match the {n} document records"),
        ));
    }
    Ok(())
}

/// Every live document number with its flags, ascending.
pub(crate) fn live_docs(txn: &redb::ReadTransaction) -> Result<Vec<(u64, u8)>> {
    let table = txn.open_table(LIVE)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push((k.value(), v.value()));
    }
    Ok(out)
}

/// Reads one document record; `dict` is the store's dictionary, if it has one.
pub(crate) fn get_doc(
    table: &impl ReadableTable<u64, &'static [u8]>,
    doc: u64,
    dict: Option<&Dict>,
) -> Result<Option<DocRecord>> {
    match table.get(doc)? {
        Some(v) => Ok(Some(record::decode(v.value(), dict)?)),
        None => Ok(None),
    }
}

/// Reads one document record's id and sparse weights, leaving its strings undecoded.
pub(crate) fn get_head(
    table: &impl ReadableTable<u64, &'static [u8]>,
    doc: u64,
) -> Result<Option<DocHead>> {
    match table.get(doc)? {
        Some(v) => Ok(Some(record::decode_head(v.value())?)),
        None => Ok(None),
    }
}

/// Every stored document numbered `from` or more, ascending: what a lagging index must add.
pub(crate) fn docs_from(
    txn: &redb::ReadTransaction,
    from: u64,
    dict: Option<&Dict>,
) -> Result<Vec<(u64, DocRecord)>> {
    let table = txn.open_table(DOCS)?;
    let mut out = Vec::new();
    for row in table.range(from..)? {
        let (doc, bytes) = row?;
        out.push((doc.value(), record::decode(bytes.value(), dict)?));
    }
    Ok(out)
}

/// `meta` key of the zstd dictionary, once the store has one.
pub(crate) const DICT_KEY: &str = "zstd-dict";

/// The store's zstd dictionary, if it has one.
pub(crate) fn read_dict(txn: &redb::ReadTransaction) -> Result<Option<Dict>> {
    let table = txn.open_table(META)?;
    let bytes = table.get(DICT_KEY)?;
    bytes
        .map(|v| decode::<Vec<u8>>(v.value(), "dictionary").map(Dict::new))
        .transpose()
}

/// How every handle opens the store: one writer process, read-only handles in others.
pub(crate) fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    b
}

/// Compacts a closed store file when at least an eighth of it (and 64 KiB) holds no table
/// page: free pages left by copy-on-write commits and the slack of redb's file growth. Returns
/// whether it compacted. redb refuses (an error) while another process has a read open.
pub(crate) fn compact_file(path: &std::path::Path) -> Result<bool> {
    let mut db = builder().create(path)?;
    let txn = db.begin_write()?;
    let stats = txn.stats()?;
    txn.abort()?;
    let used = (stats.leaf_pages() + stats.branch_pages()) * stats.page_size() as u64;
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let free = len.saturating_sub(used);
    if free < (len / 8).max(64 << 10) {
        return Ok(false);
    }
    db.compact()
        .map_err(|e| Error::Store(format!("compacting {}: {e}", path.display())))
}
