//! The ColBERT leg: per document, a list of token vectors (BGE-M3 ColBERT output, one
//! L2-normalized vector per token), used to rerank the other legs' top candidates by MaxSim,
//! score(q, p) = (1/|q|) Σ_i max_j q_i·p_j.
//!
//! The token vectors are primary data, kept in two append-only files written (and synced)
//! before the database's commit point: `tokens.bin` holds the encoded vectors and `docs.bin`
//! one fixed-size entry per document number (token start, token count, CRC-32 of the entry and
//! its tokens). Entries past the committed document count belong to an unfinished commit and
//! are cut off on open. Readers memory map both files through a [`ColbertView`]; each
//! document's checksum is verified the first time it is read and remembered afterwards.

mod kernel;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::error::{Error, Result};
use kernel::{Backend, Query, Scratch};

const TOKENS_MAGIC: &[u8; 8] = b"HYBCOLT\0";
const DOCS_MAGIC: &[u8; 8] = b"HYBCOLD\0";
const VERSION: u32 = 1;
/// Size of both headers; token data and entries start here.
const HEADER: u64 = 64;
/// Size of one `docs.bin` entry: u64 token start, u32 token count, u32 CRC-32.
const ENTRY: u64 = 16;
/// Largest supported dimension (keeps every size computation far from overflow).
pub(crate) const MAX_DIM: usize = 1 << 16;
/// Encoded bytes buffered by `append` before they are written.
const WRITE_CHUNK: usize = 16 << 20;

/// How token vectors are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// 4·dim bytes: f32 values.
    F32,
    /// 2·dim bytes: IEEE binary16 values (round to nearest even).
    F16,
    /// dim + 4 bytes: f32 scale = max|x|/127, then dim i8 values round(x/scale).
    Int8,
    /// ⌈dim/8⌉ bytes: sign bits (1 = positive), scored against the f32 query.
    Binary,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
            Precision::Binary => "binary",
        }
    }

    /// Encoded size of one token vector.
    pub fn bytes_per_token(self, dim: usize) -> usize {
        match self {
            Precision::F32 => 4 * dim,
            Precision::F16 => 2 * dim,
            Precision::Int8 => dim + 4,
            Precision::Binary => dim.div_ceil(8),
        }
    }

    fn code(self) -> u32 {
        match self {
            Precision::F32 => 0,
            Precision::F16 => 1,
            Precision::Int8 => 2,
            Precision::Binary => 3,
        }
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "int8" => Ok(Precision::Int8),
            "binary" => Ok(Precision::Binary),
            _ => Err(Error::invalid(format!(
                "unknown ColBERT precision {s:?} (expected f32, f16, int8 or binary)"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writer-side bookkeeping, behind the store's mutex.
struct WriteState {
    /// Entries written and synced.
    next_doc: u64,
    /// Tokens written and synced.
    next_token: u64,
    /// No append may rewrite entries below this: the committed count at open, raised by every
    /// view (a view maps those entries).
    floor: u64,
}

/// One bit per document number: its checksum has been verified.
struct Verified {
    words: Vec<AtomicU64>,
}

impl Verified {
    fn with_capacity(bits: u64, from: Option<&Verified>) -> Verified {
        let n = usize::try_from(bits.div_ceil(64)).unwrap_or(usize::MAX / 8);
        let mut words: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
        if let Some(old) = from {
            for (w, o) in words.iter_mut().zip(&old.words) {
                *w.get_mut() = o.load(Ordering::Relaxed);
            }
        }
        Verified { words }
    }

    fn bits(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    fn get(&self, doc: u64) -> bool {
        let w = usize::try_from(doc / 64)
            .ok()
            .and_then(|w| self.words.get(w));
        w.is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (doc % 64)) != 0)
    }

    fn set(&self, doc: u64) {
        if let Some(w) = usize::try_from(doc / 64)
            .ok()
            .and_then(|w| self.words.get(w))
        {
            w.fetch_or(1 << (doc % 64), Ordering::Relaxed);
        }
    }
}

/// The token store of one collection: `tokens.bin` and `docs.bin` in one directory.
pub(crate) struct ColbertStore {
    tokens_path: PathBuf,
    docs_path: PathBuf,
    tokens: File,
    docs: File,
    dim: usize,
    precision: Precision,
    writable: bool,
    state: Mutex<WriteState>,
    verified: Mutex<Arc<Verified>>,
}

impl ColbertStore {
    /// Opens (or, when `writable`, creates) the store in `dir`. `committed_docs` is the number
    /// of committed document numbers: entries past it are cut off when writable; a store with
    /// fewer entries is `Corrupted`. The files' dim and precision must match.
    pub fn open(
        dir: &Path,
        dim: usize,
        precision: Precision,
        committed_docs: u64,
        writable: bool,
    ) -> Result<Self> {
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::invalid(format!(
                "ColBERT dimension {dim} is outside 1..={MAX_DIM}"
            )));
        }
        if writable {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let tokens_path = dir.join("tokens.bin");
        let docs_path = dir.join("docs.bin");
        let bpt = precision.bytes_per_token(dim) as u64;
        let tokens = open_file(&tokens_path, TOKENS_MAGIC, dim, precision, writable)?;
        let docs = open_file(&docs_path, DOCS_MAGIC, dim, precision, writable)?;

        let docs_len = file_len(&docs, &docs_path)?;
        let want = committed_docs
            .checked_mul(ENTRY)
            .and_then(|b| b.checked_add(HEADER))
            .ok_or_else(|| Error::corrupted(&docs_path, "committed document count overflows"))?;
        if docs_len < want {
            return Err(Error::corrupted(
                &docs_path,
                format!("{docs_len} bytes but the last commit needs {want}"),
            ));
        }
        let next_token = if committed_docs == 0 {
            0
        } else {
            let (start, count, _) = read_entry(&docs, &docs_path, committed_docs - 1)?;
            start
                .checked_add(count)
                .ok_or_else(|| Error::corrupted(&docs_path, "token range overflows"))?
        };
        let tokens_len = file_len(&tokens, &tokens_path)?;
        let tokens_want = next_token
            .checked_mul(bpt)
            .and_then(|b| b.checked_add(HEADER))
            .ok_or_else(|| Error::corrupted(&docs_path, "token range overflows"))?;
        if tokens_len < tokens_want {
            return Err(Error::corrupted(
                &tokens_path,
                format!("{tokens_len} bytes but the last commit needs {tokens_want}"),
            ));
        }
        if writable {
            truncate(&docs, &docs_path, docs_len, want)?;
            truncate(&tokens, &tokens_path, tokens_len, tokens_want)?;
        }
        Ok(ColbertStore {
            tokens_path,
            docs_path,
            tokens,
            docs,
            dim,
            precision,
            writable,
            state: Mutex::new(WriteState {
                next_doc: committed_docs,
                next_token,
                floor: committed_docs,
            }),
            verified: Mutex::new(Arc::new(Verified::with_capacity(committed_docs, None))),
        })
    }

    /// Number of entries written (committed or not).
    #[cfg(test)]
    pub fn docs(&self) -> u64 {
        self.lock().next_doc
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes entries for document numbers `first..first + docs.len()`: `Some(tokens)` is
    /// row-major, `n × dim` values (n may be 0), `None` means no tokens. Numbers between the
    /// last entry and `first` get empty entries; `first` below the last entry rewrites the
    /// uncommitted tail (never entries a view has mapped). Syncs both files before returning.
    pub fn append(&self, first: u64, docs: &[Option<&[f32]>]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        let dim = self.dim;
        for (k, d) in docs.iter().enumerate() {
            let Some(v) = d else { continue };
            let doc = first.saturating_add(k as u64);
            if !v.len().is_multiple_of(dim) {
                return Err(Error::invalid(format!(
                    "document {doc}: {} ColBERT values is not a multiple of dim {dim}",
                    v.len()
                )));
            }
            if u32::try_from(v.len() / dim).is_err() {
                return Err(Error::invalid(format!("document {doc}: too many tokens")));
            }
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(Error::invalid(format!("document {doc}: ColBERT value {x}")));
            }
            if self.precision == Precision::F16 && v.iter().any(|&x| x.abs() > 65504.0) {
                return Err(Error::invalid(format!(
                    "document {doc}: value exceeds f16 range"
                )));
            }
        }
        first
            .checked_add(docs.len() as u64)
            .ok_or_else(|| Error::invalid("document number overflows"))?;

        let mut st = self.lock();
        if first < st.floor {
            return Err(Error::invalid(format!(
                "ColBERT append at document {first}, below the committed/viewed count {}",
                st.floor
            )));
        }
        // Where the new entries start, and the token they start at.
        let (mut doc, mut token) = if first < st.next_doc {
            let (start, _, _) = read_entry(&self.docs, &self.docs_path, first)?;
            if start > st.next_token {
                return Err(Error::corrupted(
                    &self.docs_path,
                    format!("entry {first} starts past the written tokens"),
                ));
            }
            (first, start)
        } else {
            (st.next_doc, st.next_token)
        };
        let bpt = self.precision.bytes_per_token(dim) as u64;
        let token_offset = |t: u64| {
            t.checked_mul(bpt)
                .and_then(|b| b.checked_add(HEADER))
                .ok_or_else(|| Error::invalid("token offset overflows"))
        };
        let entry_offset = |d: u64| {
            d.checked_mul(ENTRY)
                .and_then(|b| b.checked_add(HEADER))
                .ok_or_else(|| Error::invalid("document number overflows"))
        };
        let mut entries_at = entry_offset(doc)?;
        let mut tokens_at = token_offset(token)?;
        let mut entries = Vec::new();
        let mut buf = Vec::new();
        let gap =
            usize::try_from(first - doc).map_err(|_| Error::invalid("document gap too large"))?;
        for d in std::iter::repeat_n(None, gap).chain(docs.iter().copied()) {
            let start = buf.len();
            let vals = d.unwrap_or(&[]);
            encode(self.precision, dim, vals, &mut buf);
            let count = (vals.len() / dim) as u64;
            let crc = entry_crc(doc, token, count as u32, &buf[start..]);
            entries.extend_from_slice(&token.to_le_bytes());
            entries.extend_from_slice(&(count as u32).to_le_bytes());
            entries.extend_from_slice(&crc.to_le_bytes());
            token = token
                .checked_add(count)
                .ok_or_else(|| Error::invalid("token count overflows"))?;
            doc += 1;
            if buf.len() >= WRITE_CHUNK {
                write_at(&self.tokens, &self.tokens_path, &buf, tokens_at)?;
                tokens_at += buf.len() as u64;
                buf.clear();
            }
            if entries.len() >= WRITE_CHUNK {
                write_at(&self.docs, &self.docs_path, &entries, entries_at)?;
                entries_at += entries.len() as u64;
                entries.clear();
            }
        }
        write_at(&self.tokens, &self.tokens_path, &buf, tokens_at)?;
        write_at(&self.docs, &self.docs_path, &entries, entries_at)?;
        // A rewrite may leave stale bytes past the new ends.
        let (tokens_end, docs_end) = (token_offset(token)?, entry_offset(doc)?);
        let tokens_len = file_len(&self.tokens, &self.tokens_path)?;
        truncate(&self.tokens, &self.tokens_path, tokens_len, tokens_end)?;
        let docs_len = file_len(&self.docs, &self.docs_path)?;
        truncate(&self.docs, &self.docs_path, docs_len, docs_end)?;
        sync(&self.tokens, &self.tokens_path)?;
        sync(&self.docs, &self.docs_path)?;
        st.next_doc = doc;
        st.next_token = token;
        Ok(())
    }

    /// A read-only, memory-mapped view of the first `docs` entries (at most the number
    /// written). Cheap: two maps and a shared verification bitmap.
    pub fn view(&self, docs: u64) -> Result<Arc<ColbertView>> {
        let mut st = self.lock();
        if docs > st.next_doc {
            return Err(Error::invalid(format!(
                "ColBERT view of {docs} documents but only {} are written",
                st.next_doc
            )));
        }
        st.floor = st.floor.max(docs);
        drop(st);
        let verified = {
            let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.bits() < docs {
                let cap = docs.max(v.bits().saturating_mul(2));
                *v = Arc::new(Verified::with_capacity(cap, Some(v.as_ref())));
            }
            Arc::clone(&v)
        };
        let bpt = self.precision.bytes_per_token(self.dim);
        let (docs_map, tokens_map, total_tokens) = if docs == 0 {
            (None, None, 0)
        } else {
            // Only what the first `docs` entries cover: a commit in progress writes past it.
            let need = docs.checked_mul(ENTRY).and_then(|b| b.checked_add(HEADER));
            let dm = map(&self.docs, &self.docs_path, need)?;
            let (start, count, _) = read_entry(&self.docs, &self.docs_path, docs - 1)?;
            let total = start
                .checked_add(count)
                .ok_or_else(|| Error::corrupted(&self.docs_path, "token range overflows"))?;
            let tokens_need = total
                .checked_mul(bpt as u64)
                .and_then(|b| b.checked_add(HEADER));
            let tm = map(&self.tokens, &self.tokens_path, tokens_need)?;
            (Some(dm), Some(tm), total)
        };
        Ok(Arc::new(ColbertView {
            docs_map,
            tokens_map,
            docs,
            total_tokens,
            dim: self.dim,
            precision: self.precision,
            tokens_path: self.tokens_path.clone(),
            docs_path: self.docs_path.clone(),
            verified,
        }))
    }
}

/// A read-only snapshot of the first `docs` entries, shareable across threads.
pub(crate) struct ColbertView {
    docs_map: Option<Mmap>,
    tokens_map: Option<Mmap>,
    docs: u64,
    /// Whole tokens present in the mapped `tokens.bin`.
    total_tokens: u64,
    dim: usize,
    precision: Precision,
    tokens_path: PathBuf,
    docs_path: PathBuf,
    verified: Arc<Verified>,
}

impl ColbertView {
    /// The raw entry of `doc` (start, count, crc), `None` if out of range. Not verified.
    fn entry(&self, doc: u64) -> Option<(u64, u64, u32)> {
        if doc >= self.docs {
            return None;
        }
        let at = usize::try_from(HEADER + doc * ENTRY).ok()?;
        let e = self.docs_map.as_ref()?.get(at..at + ENTRY as usize)?;
        let start = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        let count = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64;
        Some((
            start,
            count,
            u32::from_le_bytes([e[12], e[13], e[14], e[15]]),
        ))
    }

    /// Number of token vectors of `doc` (0 if out of range or its entry is out of bounds).
    #[cfg(test)]
    pub fn tokens(&self, doc: u64) -> usize {
        match self.entry(doc) {
            Some((start, count, _))
                if start
                    .checked_add(count)
                    .is_some_and(|e| e <= self.total_tokens) =>
            {
                count as usize
            }
            _ => 0,
        }
    }

    /// Reads `doc`'s tokens, checking its entry and checksum.
    pub fn check(&self, doc: u64) -> Result<()> {
        self.doc_bytes(doc).map(|_| ())
    }

    /// The encoded tokens of `doc` and their count, checksum verified (once per document).
    /// `None` if out of range.
    fn doc_bytes(&self, doc: u64) -> Result<Option<(&[u8], usize)>> {
        let Some((start, count, crc)) = self.entry(doc) else {
            return Ok(None);
        };
        let bpt = self.precision.bytes_per_token(self.dim) as u64;
        let range = start
            .checked_add(count)
            .filter(|&end| end <= self.total_tokens)
            .map(|_| (HEADER + start * bpt) as usize..(HEADER + (start + count) * bpt) as usize);
        let bytes = range
            .and_then(|r| self.tokens_map.as_ref().and_then(|m| m.get(r)))
            .ok_or_else(|| {
                Error::corrupted(
                    &self.docs_path,
                    format!(
                        "document {doc}: tokens {start}+{count} lie past the end of tokens.bin"
                    ),
                )
            })?;
        if !self.verified.get(doc) {
            if entry_crc(doc, start, count as u32, bytes) != crc {
                return Err(Error::corrupted(
                    &self.tokens_path,
                    format!("document {doc}: checksum mismatch (its tokens or docs.bin entry)"),
                ));
            }
            self.verified.set(doc);
        }
        Ok(Some((bytes, count as usize)))
    }

    /// Checks a query and prepares it for scoring; `None` for an empty query.
    fn prepare(&self, query: &[f32]) -> Result<Option<Query>> {
        check_query(query, self.dim)?;
        let q = Query::new(
            query,
            self.dim,
            self.precision,
            Backend::detect(self.precision),
        );
        Ok((!q.is_empty()).then_some(q))
    }

    fn score(&self, q: &Query, doc: u64, s: &mut Scratch) -> Result<Option<f32>> {
        match self.doc_bytes(doc)? {
            Some((bytes, count)) if count > 0 => Ok(Some(kernel::score(q, bytes, count, s))),
            _ => Ok(None),
        }
    }

    /// MaxSim of the query token vectors (row-major, `n_q × dim`, assumed L2-normalized)
    /// against `doc`. `None` if the document has no tokens, is out of range, or the query is
    /// empty; `Corrupted` if the document's bytes fail their checksum.
    #[cfg(test)]
    pub fn maxsim(&self, query: &[f32], doc: u64) -> Result<Option<f32>> {
        let Some(q) = self.prepare(query)? else {
            return Ok(None);
        };
        self.score(&q, doc, &mut Scratch::default())
    }

    /// [`maxsim`](Self::maxsim) for many documents on all cores, in input order.
    pub fn maxsim_many(&self, query: &[f32], docs: &[u64]) -> Result<Vec<Option<f32>>> {
        let Some(q) = self.prepare(query)? else {
            return Ok(vec![None; docs.len()]);
        };
        docs.par_iter()
            .map_init(Scratch::default, |s, &doc| self.score(&q, doc, s))
            .collect()
    }
}

/// Reference MaxSim in plain loops (f32), for tests: (1/|q|) Σ_i max_j q_i·p_j; 0 when either
/// side has no tokens.
#[cfg(test)]
pub(crate) fn maxsim_reference(query: &[f32], doc: &[f32], dim: usize) -> f32 {
    if dim == 0 || query.len() < dim || doc.len() < dim {
        return 0.0;
    }
    let mut sum = 0.0f32;
    for q in query.chunks_exact(dim) {
        let mut best = f32::NEG_INFINITY;
        for p in doc.chunks_exact(dim) {
            best = best.max(q.iter().zip(p).map(|(a, b)| a * b).sum());
        }
        sum += best;
    }
    sum / (query.len() / dim) as f32
}

fn check_query(query: &[f32], dim: usize) -> Result<()> {
    if !query.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "query has {} values, not a multiple of the ColBERT dim {dim}",
            query.len()
        )));
    }
    if let Some(x) = query.iter().find(|x| !x.is_finite()) {
        return Err(Error::invalid(format!("query value {x}")));
    }
    Ok(())
}

/// Appends the encoding of `vals` (`n × dim`, validated) to `out`.
fn encode(precision: Precision, dim: usize, vals: &[f32], out: &mut Vec<u8>) {
    for v in vals.chunks_exact(dim) {
        match precision {
            Precision::F32 => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Precision::F16 => v.iter().for_each(|&x| {
                out.extend_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes())
            }),
            Precision::Int8 => {
                let scale = v.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 127.0;
                out.extend_from_slice(&scale.to_le_bytes());
                for &x in v {
                    let q = if scale > 0.0 {
                        (x / scale).round().clamp(-127.0, 127.0)
                    } else {
                        0.0
                    };
                    out.push(q as i8 as u8);
                }
            }
            Precision::Binary => {
                for bits in v.chunks(8) {
                    let byte = bits
                        .iter()
                        .enumerate()
                        .fold(0u8, |b, (k, &x)| b | (((x > 0.0) as u8) << k));
                    out.push(byte);
                }
            }
        }
    }
}

/// CRC-32 of an entry and its tokens: docnum u64, start u64, count u32 (LE), token bytes.
fn entry_crc(doc: u64, start: u64, count: u32, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&doc.to_le_bytes());
    h.update(&start.to_le_bytes());
    h.update(&count.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

/// Reads entry `doc` from `docs.bin`: (start, count, crc).
fn read_entry(file: &File, path: &Path, doc: u64) -> Result<(u64, u64, u32)> {
    let mut e = [0u8; ENTRY as usize];
    let at = doc
        .checked_mul(ENTRY)
        .and_then(|b| b.checked_add(HEADER))
        .ok_or_else(|| Error::corrupted(path, "entry offset overflows"))?;
    file.read_exact_at(&mut e, at)
        .map_err(|_| Error::corrupted(path, format!("entry {doc} is missing")))?;
    let start = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
    let count = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64;
    Ok((
        start,
        count,
        u32::from_le_bytes([e[12], e[13], e[14], e[15]]),
    ))
}

fn header(magic: &[u8; 8], dim: usize, precision: Precision) -> [u8; HEADER as usize] {
    let mut fields = [0u8; 12];
    fields[..4].copy_from_slice(&(dim as u32).to_le_bytes());
    fields[4..8].copy_from_slice(&precision.code().to_le_bytes());
    fields[8..].copy_from_slice(&(precision.bytes_per_token(dim) as u32).to_le_bytes());
    crate::fsio::header(magic, VERSION, &fields)
}

/// Opens one of the two files, writing its header when it is new (absent or empty) and
/// checking it otherwise.
fn open_file(
    path: &Path,
    magic: &[u8; 8],
    dim: usize,
    precision: Precision,
    writable: bool,
) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .create(writable)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let want = header(magic, dim, precision);
    if writable && file_len(&file, path)? == 0 {
        write_at(&file, path, &want, 0)?;
        sync(&file, path)?;
        return Ok(file);
    }
    let h = crate::fsio::read_header(&file, path, magic, VERSION)?;
    if h != want {
        let file_dim = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
        let code = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        return Err(Error::corrupted(
            path,
            format!(
                "dim {file_dim} / precision code {code} but the schema says {dim} / {precision}"
            ),
        ));
    }
    Ok(file)
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    Ok(file.metadata().map_err(|e| Error::io(path, e))?.len())
}

fn truncate(file: &File, path: &Path, len: u64, want: u64) -> Result<()> {
    if len > want {
        file.set_len(want).map_err(|e| Error::io(path, e))?;
        sync(file, path)?;
    }
    Ok(())
}

fn write_at(file: &File, path: &Path, bytes: &[u8], at: u64) -> Result<()> {
    file.write_all_at(bytes, at).map_err(|e| Error::io(path, e))
}

fn sync(file: &File, path: &Path) -> Result<()> {
    file.sync_data().map_err(|e| Error::io(path, e))
}

/// Maps the first `len` bytes of `file` (`None`: the length overflowed), which must hold them.
fn map(file: &File, path: &Path, len: Option<u64>) -> Result<Mmap> {
    let len = len
        .and_then(|l| usize::try_from(l).ok())
        .ok_or_else(|| Error::corrupted(path, "committed length overflows"))?;
    let file_len = file_len(file, path)?;
    if file_len < len as u64 {
        return Err(Error::corrupted(
            path,
            format!("{file_len} bytes but its committed entries need {len}"),
        ));
    }
    // Safety: both files are append-only below the largest viewed document count (appends
    // never rewrite an entry or token a view can reach, and cut-offs only happen past it), so
    // the mapped bytes a view reads do not change while it lives. Truncation by another
    // program is outside the format's assumptions (storage-format.md).
    unsafe { memmap2::MmapOptions::new().len(len).map(file) }.map_err(|e| Error::io(path, e))
}
