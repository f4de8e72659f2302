//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_regressions.rs`: one
//! function per reader of files or input, each taking arbitrary bytes. Not a stable API.
//!
//! A function may see its input rejected with an error; it must not panic, hang or allocate
//! far more than the input's size. Readers that only take a path get the bytes through a file
//! in a fresh scratch directory.
//!
//! Inputs that stand for several files are packed by [`pack`]: a flags byte, for some targets
//! a `u64` LE parameter, then every file but the last as a `u32` LE length and its bytes, and
//! the last file as the rest. Flag bit 0 ([`FIX_CRC`]) has the checksums recomputed before
//! the files are written, so that mutations reach the checks behind them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dataset::{self, DatasetDir};
use crate::docset::DocSet;
use crate::document::SparseVector;
use crate::error::Result;
use crate::index::colbert::{ColbertStore, Precision};
use crate::index::dense::{DenseIndex, search_exact};
use crate::index::sparse::SparseIndex;
use crate::query::{DenseMode, Fusion, Leg, Query, Rerank, RerankFusion};
use crate::schema::{DenseSpec, HnswParams, Metric, Schema};
use crate::{Database, Document, npy, store};

/// Every target, as named in `fuzz/Cargo.toml` and under `fixtures/fuzz/`.
pub const TARGETS: &[&str] = &[
    "docs_jsonl",
    "queries_jsonl",
    "sparse_jsonl",
    "squad",
    "npy",
    "trec_run",
    "header",
    "store_record",
    "sparse_index",
    "colbert",
    "dense",
    "safetensors",
    "fetch_listing",
    "sparse_vector",
    "filter",
    "query",
];

/// Flag bit: recompute the checksums of the packed files.
pub const FIX_CRC: u8 = 1;

/// Runs target `name` on `data`; `false` when there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    let f: fn(&[u8]) = match name {
        "docs_jsonl" => docs_jsonl,
        "queries_jsonl" => queries_jsonl,
        "sparse_jsonl" => sparse_jsonl,
        "squad" => squad,
        "npy" => npy,
        "trec_run" => trec_run,
        "header" => header,
        "store_record" => store_record,
        "sparse_index" => sparse_index,
        "colbert" => colbert,
        "dense" => dense,
        "safetensors" => safetensors,
        "fetch_listing" => fetch_listing,
        "sparse_vector" => sparse_vector,
        "filter" => filter,
        "query" => query,
        _ => return false,
    };
    f(data);
    true
}

/// Packs files into one input (see the module docs).
pub fn pack(flags: u8, param: Option<u64>, files: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![flags];
    if let Some(p) = param {
        out.extend_from_slice(&p.to_le_bytes());
    }
    for (i, f) in files.iter().enumerate() {
        if i + 1 < files.len() {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

struct Unpacked {
    flags: u8,
    param: u64,
    files: Vec<Vec<u8>>,
}

fn unpack(data: &[u8], with_param: bool, n: usize) -> Unpacked {
    let (&flags, mut rest) = data.split_first().unwrap_or((&0, &[]));
    let mut param = 0;
    if with_param {
        let (p, r) = rest.split_at(rest.len().min(8));
        let mut b = [0u8; 8];
        b[..p.len()].copy_from_slice(p);
        param = u64::from_le_bytes(b);
        rest = r;
    }
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        if i + 1 == n {
            files.push(rest.to_vec());
            break;
        }
        let len = rest.get(..4).map_or(0, |b| u32_le(b, 0) as usize);
        let rest_after_len = rest.get(4..).unwrap_or_default();
        let (f, r) = rest_after_len.split_at(len.min(rest_after_len.len()));
        files.push(f.to_vec());
        rest = r;
    }
    Unpacked {
        flags,
        param,
        files,
    }
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    b.get(at..)
        .and_then(|s| s.first_chunk::<4>())
        .map_or(0, |c| u32::from_le_bytes(*c))
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(|s| s.first_chunk::<8>())
        .map_or(0, |c| u64::from_le_bytes(*c))
}

/// Writes the CRC-32 of `b[from..at]` at `at` (nothing when `b` is too short).
fn set_crc(b: &mut [u8], from: usize, at: usize) {
    if b.len() >= at + 4 && from <= at {
        let crc = crc32fast::hash(&b[from..at]);
        b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Sets the trailing CRC-32 of a file whose last 4 bytes checksum all before them.
fn set_trailing_crc(b: &mut [u8]) {
    if let Some(at) = b.len().checked_sub(4) {
        set_crc(b, 0, at);
    }
}

/// A fresh directory under the system temp directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hybridb-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fuzz harness: cannot create a scratch directory");
        Scratch(dir)
    }

    /// Writes `bytes` to `name` (in a subdirectory created as needed) and returns its path.
    fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("fuzz harness: cannot create a directory");
        }
        std::fs::write(&p, bytes).expect("fuzz harness: cannot write a scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A corpus JSONL file: streamed line by line, then read whole into documents.
pub fn docs_jsonl(data: &[u8]) {
    let s = Scratch::new();
    let p = s.put("corpus.jsonl", data);
    if let Ok(lines) = dataset::read_docs_jsonl(&p) {
        lines.for_each(drop);
    }
    let _ = dataset::read_documents(&p, None, None);
}

/// A queries JSONL file.
pub fn queries_jsonl(data: &[u8]) {
    let s = Scratch::new();
    let _ = dataset::read_queries(&s.put("queries.jsonl", data));
}

/// A `.sparse.jsonl` file; each record is also checked as a sparse vector.
pub fn sparse_jsonl(data: &[u8]) {
    let s = Scratch::new();
    if let Ok(lines) = dataset::read_sparse_jsonl(&s.put("corpus.sparse.jsonl", data)) {
        for r in lines.flatten() {
            let _ = SparseVector::new(r.indices, r.values);
        }
    }
}

/// A SQuAD-format JSON file, converted in memory.
pub fn squad(data: &[u8]) {
    let _ = crate::squad::convert(Path::new("squad.json"), data);
}

/// A `.npy` file, read as a float32 matrix (whole, by row, header only) and as an int64 vector.
pub fn npy(data: &[u8]) {
    let s = Scratch::new();
    let p = s.put("a.npy", data);
    if let Ok((rows, _)) = npy::read_npy_dim(&p) {
        let _ = npy::read_f32_row(&p, 0);
        let _ = npy::read_f32_row(&p, rows.saturating_sub(1));
        let _ = npy::read_f32_row(&p, rows);
    }
    if let Ok(m) = npy::read_f32_matrix(&p) {
        let _ = m.row(m.rows.saturating_sub(1));
    }
    let _ = npy::read_i64_vector(&p);
}

/// A TREC run file.
pub fn trec_run(data: &[u8]) {
    let s = Scratch::new();
    let _ = crate::eval::read_trec_run(&s.put("run.trec", data));
}

/// Magics of the files with the shared 64-byte header.
const HEADER_MAGICS: &[&[u8; 8]] = &[b"HYBVEC\0\0", b"HYBVCRC\0", b"HYBCOLT\0", b"HYBCOLD\0"];

/// One file with the shared 64-byte header (`fsio::read_header`), checked against every
/// magic. Packed: one file.
pub fn header(data: &[u8]) {
    let mut u = unpack(data, false, 1);
    let mut f = std::mem::take(&mut u.files[0]);
    if u.flags & FIX_CRC != 0 {
        set_crc(&mut f, 0, 60);
    }
    let s = Scratch::new();
    let p = s.put("file.bin", &f);
    let Ok(file) = std::fs::File::open(&p) else {
        return;
    };
    for magic in HEADER_MAGICS {
        let _ = crate::fsio::read_header(&file, &p, magic, 1);
    }
}

/// A store record, decoded as a document, a state and a schema (then validated). Packed: one
/// file; with [`FIX_CRC`] a CRC-32 of the record is appended first, as the store writes it.
pub fn store_record(data: &[u8]) {
    let u = unpack(data, false, 1);
    let mut rec = u.files[0].clone();
    if u.flags & FIX_CRC != 0 {
        let crc = crc32fast::hash(&rec);
        rec.extend_from_slice(&crc.to_le_bytes());
    }
    if let Ok(d) = store::decode_doc(&rec, None) {
        let _ = serde_json::from_str::<serde_json::Value>(&d.metadata);
        if let Some(v) = d.sparse {
            let _ = SparseVector::new(v.indices().to_vec(), v.values().to_vec());
        }
    }
    let _ = store::decode::<store::State>(&rec, "state");
    if let Ok(schema) = store::decode::<Schema>(&rec, "schema") {
        let _ = schema.validate();
    }
}

/// Segment and term ids as the harness reads them (only to aim writes and queries).
fn manifest_ids(m: &[u8]) -> Vec<u64> {
    let count = u32_le(m, 12).min(8) as usize;
    (0..count)
        .map(|i| 32 + 8 * i)
        .take_while(|&at| at + 8 <= m.len())
        .map(|at| u64_le(m, at))
        .collect()
}

fn segment_terms(seg: &[u8], out: &mut Vec<u32>) {
    let Some(f) = seg.len().checked_sub(52) else {
        return;
    };
    let (dict, terms) = (u64_le(seg, f), u64_le(seg, f + 8).min(64));
    for e in 0..terms {
        match usize::try_from(dict.saturating_add(e * 24)) {
            Ok(at) if at < seg.len() => out.push(u32_le(seg, at)),
            _ => break,
        }
    }
}

/// The sparse index directory: `sparse.manifest` and up to two segments, written under the
/// first two ids the manifest names (else 1 and 2). Opened, searched, merged, searched again.
/// Packed: manifest, segment, segment.
pub fn sparse_index(data: &[u8]) {
    let mut u = unpack(data, false, 3);
    if u.flags & FIX_CRC != 0 {
        u.files.iter_mut().for_each(|f| set_trailing_crc(f));
    }
    let s = Scratch::new();
    let (manifest, segs) = (&u.files[0], &u.files[1..]);
    let mut ids = manifest_ids(manifest);
    ids.extend([1, 2]);
    if !manifest.is_empty() {
        s.put("sparse/sparse.manifest", manifest);
    }
    let mut terms = vec![0];
    for (seg, id) in segs.iter().zip(&ids) {
        if !seg.is_empty() {
            s.put(&format!("sparse/seg-{id}.spx"), seg);
            segment_terms(seg, &mut terms);
        }
    }
    let Ok(mut index) = SparseIndex::open(&s.0.join("sparse"), true) else {
        return;
    };
    terms.sort_unstable();
    terms.dedup();
    let weights = vec![1.0; terms.len()];
    let Ok(query) = SparseVector::new(terms, weights) else {
        return;
    };
    let next_doc = index.committed().1.min(4096);
    let mut all = DocSet::new();
    let mut even = DocSet::new();
    for d in 0..next_doc {
        all.insert(d);
        if d % 2 == 0 {
            even.insert(d);
        }
    }
    let _ = index.search(&query, 10, &all);
    if index.merge(&even).is_ok() {
        let _ = index.search(&query, 10, &all);
    }
}

fn precision(code: u32) -> Precision {
    match code {
        1 => Precision::F16,
        2 => Precision::Int8,
        3 => Precision::Binary,
        _ => Precision::F32,
    }
}

/// Recomputes the entry checksums of `docs.bin` over the tokens they point at.
fn fix_colbert_entries(docs: &mut [u8], tokens: &[u8], bpt: u64) {
    let entries = (docs.len().saturating_sub(64) / 16).min(4096);
    for n in 0..entries {
        let at = 64 + 16 * n;
        let (start, count) = (u64_le(docs, at), u32_le(docs, at + 8));
        let offset = |t: u64| usize::try_from(t.checked_mul(bpt)?.checked_add(64)?).ok();
        let range = (|| Some(offset(start)?..offset(start.checked_add(u64::from(count))?)?))();
        let Some(bytes) = range.and_then(|r| tokens.get(r)) else {
            continue;
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&(n as u64).to_le_bytes());
        h.update(&start.to_le_bytes());
        h.update(&count.to_le_bytes());
        h.update(bytes);
        docs[at + 12..at + 16].copy_from_slice(&h.finalize().to_le_bytes());
    }
}

/// Flag bit of [`colbert`] and [`dense`]: the committed count is the parameter, not the count
/// the file's length implies.
pub const COMMITTED_PARAM: u8 = 4;

/// The ColBERT directory (`docs.bin`, `tokens.bin`), dim and precision taken from the
/// `docs.bin` header. Opened as the database opens it, then every committed document (up to
/// 1024) is scored. Flag bit 1 recomputes the entry checksums. Packed with a parameter:
/// `docs.bin`, `tokens.bin`.
pub fn colbert(data: &[u8]) {
    let mut u = unpack(data, true, 2);
    let (dim, code) = match u.files[0].len() {
        n if n >= 20 => (u32_le(&u.files[0], 12) as usize, u32_le(&u.files[0], 16)),
        _ => (8, 0),
    };
    let prec = precision(code);
    if u.flags & FIX_CRC != 0 {
        u.files.iter_mut().for_each(|f| set_crc(f, 0, 60));
    }
    if u.flags & 2 != 0 {
        let bpt = prec.bytes_per_token(dim.min(1 << 16)) as u64;
        let (docs, tokens) = u.files.split_at_mut(1);
        fix_colbert_entries(&mut docs[0], &tokens[0], bpt);
    }
    let committed = if u.flags & COMMITTED_PARAM != 0 {
        u.param
    } else {
        (u.files[0].len().saturating_sub(64) / 16) as u64
    };
    let s = Scratch::new();
    for (name, f) in ["docs.bin", "tokens.bin"].iter().zip(&u.files) {
        if !f.is_empty() {
            s.put(&format!("colbert/{name}"), f);
        }
    }
    let Ok(store) = ColbertStore::open(&s.0.join("colbert"), dim, prec, committed, true) else {
        return;
    };
    let Ok(view) = store.view(committed) else {
        return;
    };
    let query = vec![1.0 / (dim as f32).sqrt(); 2 * dim];
    let docs: Vec<u64> = (0..committed.min(1024)).collect();
    let _ = view.maxsim_many(&query, &docs);
}

/// The dense directory (`vectors.bin`, `hnsw.manifest`, `vectors.crc`; an empty file is left
/// out), dim taken from the `vectors.bin` header. Opened as the database opens it, caught up,
/// and searched through the graph and exactly. Flag bit 1 recomputes the manifest checksum,
/// bit 3 selects the dot-product metric. Packed with a parameter: the three files.
pub fn dense(data: &[u8]) {
    let mut u = unpack(data, true, 3);
    let dim = match u32_le(&u.files[0], 12) as usize {
        d @ 1..=65_536 => d,
        _ => 4,
    };
    if u.flags & FIX_CRC != 0 {
        set_crc(&mut u.files[0], 0, 60);
        set_crc(&mut u.files[2], 0, 60);
    }
    if u.flags & 2 != 0 {
        set_crc(&mut u.files[1], 0, 48);
    }
    let committed = if u.flags & COMMITTED_PARAM != 0 {
        u.param
    } else {
        (u.files[0].len().saturating_sub(64) / (dim * 4)) as u64
    };
    let metric = if u.flags & 8 != 0 {
        Metric::Dot
    } else {
        Metric::Cosine
    };
    let spec = DenseSpec {
        dim,
        metric,
        hnsw: HnswParams {
            m: 8,
            ef_construction: 16,
            ef_search: 16,
            exact_below: 0,
        },
    };
    let s = Scratch::new();
    for (name, f) in ["vectors.bin", "hnsw.manifest", "vectors.crc"]
        .iter()
        .zip(&u.files)
    {
        if !f.is_empty() {
            s.put(&format!("dense/{name}"), f);
        }
    }
    let Ok(index) = DenseIndex::open(&s.0.join("dense"), spec, committed, true) else {
        return;
    };
    let Ok(vectors) = index.map(committed) else {
        return;
    };
    let mut with = DocSet::new();
    (0..committed.min(256)).for_each(|d| with.insert(d));
    index.catch_up(&vectors, &with, committed.min(256));
    let query = vec![1.0 / (dim as f32).sqrt(); dim];
    let _ = index.search_graph(&query, 5, 16, &with);
    let _ = search_exact(&vectors, &query, 5, 0..committed.min(256));
}

/// A safetensors file of a linear head, applied once when it loads.
pub fn safetensors(data: &[u8]) {
    let s = Scratch::new();
    let p = s.put("head.safetensors", data);
    if let Ok(l) = crate::encoder::heads::Linear::read(&p) {
        let mut y = vec![0.0; l.out];
        l.apply(&vec![1.0; l.inp], &mut y);
    }
}

const LISTING_URL: &str = "https://huggingface.co/api/models/o/r/tree/main?recursive=true";

/// A hub listing page and `Link` header lines: the page parsed, each line followed as the
/// next-page link and matched as a path against the default include patterns. Packed: the
/// header lines, the page.
pub fn fetch_listing(data: &[u8]) {
    let u = unpack(data, false, 2);
    let _ = crate::fetch::parse_listing(LISTING_URL, &u.files[1]);
    let mut url = LISTING_URL.to_string();
    for line in String::from_utf8_lossy(&u.files[0]).lines() {
        if let Some(next) = crate::fetch::next_link(line) {
            url = crate::fetch::absolute(&url, &next);
        }
        for pattern in crate::fetch::DEFAULT_INCLUDE {
            let _ = crate::fetch::glob_match(pattern, line);
        }
    }
}

/// Reads fixed-size values off the front of a fuzz input; zeros once it runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn u32(&mut self) -> u32 {
        u32_le(&pad::<4>(self.take(4)), 0)
    }
    fn u64(&mut self) -> u64 {
        u64_le(&pad::<8>(self.take(8)), 0)
    }
    fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    /// A string of at most `max` bytes, lossily decoded.
    fn string(&mut self, max: usize) -> String {
        let n = usize::from(self.u8()) % (max + 1);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}

fn pad<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(b);
    out
}

/// A sparse vector three ways: deserialized from JSON and from postcard (both must apply the
/// checks of [`SparseVector::new`]), and built by `new` from ids and weights read off the
/// input. Every vector that is accepted is checked against the rules, and the dot products of
/// each pair must not panic and must agree both ways round.
pub fn sparse_vector(data: &[u8]) {
    let mut vectors: Vec<SparseVector> = Vec::new();
    vectors.extend(serde_json::from_slice::<SparseVector>(data).ok());
    vectors.extend(postcard::from_bytes::<SparseVector>(data).ok());
    let mut r = Reader(data);
    let (n, m) = (usize::from(r.u8() % 64), usize::from(r.u8() % 64));
    let indices: Vec<u32> = (0..n).map(|_| r.u32()).collect();
    vectors.extend(SparseVector::new(indices, r.f32s(m)).ok());
    for v in &vectors {
        let (ids, w) = (v.indices(), v.values());
        assert_eq!(
            ids.len(),
            w.len(),
            "accepted a vector with mismatched lengths"
        );
        assert!(ids.windows(2).all(|p| p[0] < p[1]), "accepted unsorted ids");
        assert!(
            w.iter().all(|x| x.is_finite()),
            "accepted a non-finite weight"
        );
    }
    for a in &vectors {
        for b in &vectors {
            let (x, y) = (a.dot(b), b.dot(a));
            assert!(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
        }
    }
}

/// Legs of the databases [`filter`] and [`query`] search: 4-d dense, sparse, text, 4-d
/// ColBERT.
const FUZZ_DIM: usize = 4;

/// A small database with every leg, built once per process in a scratch directory (left in
/// the temp directory when the process exits) and shared by every input: cosine when
/// `dot` is false, else dot product. Some rows are extreme but finite.
fn fuzz_db(dot: bool) -> &'static Database {
    use std::sync::OnceLock;
    static DBS: [OnceLock<(Scratch, Database)>; 2] = [OnceLock::new(), OnceLock::new()];
    let build = || -> Result<(Scratch, Database)> {
        let s = Scratch::new();
        let metric = if dot { Metric::Dot } else { Metric::Cosine };
        let schema = Schema::new()
            .dense(FUZZ_DIM, metric)
            .hnsw(HnswParams {
                m: 4,
                ef_construction: 16,
                ef_search: 16,
                exact_below: 8,
            })
            .sparse()
            .text()
            .colbert(FUZZ_DIM, Precision::F16);
        let db = Database::open_or_create(s.0.join("db"), schema)?;
        let rows: [[f32; 4]; 6] = [
            [1.0, 0.0, 0.0, 0.0],
            [1e20, 1.0, 0.0, 0.0],
            [1e-30, 1e-30, 0.0, 1e-30],
            [f32::MAX, -f32::MAX, 0.0, 0.0],
            [0.0; 4],
            [-0.5, 0.25, 2.0, -1.0],
        ];
        let words = ["서울", "부산", "항구", "도시", "김치", "rain", "city"];
        for part in 0..2 {
            let mut w = db.writer()?;
            for i in (part * 12)..(part * 12 + 12) {
                let text: Vec<&str> = (0..4)
                    .map(|j| words[(i * 3 + j * 5) % words.len()])
                    .collect();
                let tag = ["a", "b", "c"][i % 3];
                let meta = serde_json::json!({
                    "n": i, "tag": tag, "even": i % 2 == 0,
                    "x": {"y": i % 4}, "f": i as f64 + 0.5, "list": [i, i + 1], "s": text[0],
                });
                let sparse = SparseVector::new(
                    vec![i as u32, i as u32 + 3, 1000 + i as u32],
                    vec![1.0, 0.5, i as f32],
                )?;
                // Within the f16 range the ColBERT leg stores.
                let colbert: Vec<f32> = (0..2 * FUZZ_DIM)
                    .map(|j| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0)
                    .collect();
                let doc = Document::new(format!("d{i}"))
                    .title(words[i % words.len()])
                    .text(text.join(" "))
                    .metadata(meta)
                    .dense(rows[i % rows.len()].to_vec())
                    .sparse(sparse)
                    .colbert(colbert);
                w.upsert(doc)?;
            }
            if part == 1 {
                w.delete("d3")?;
            }
            w.commit()?;
        }
        Ok((s, db))
    };
    let (_, db) = DBS[usize::from(dot)]
        .get_or_init(|| build().expect("fuzz harness: cannot build the database"));
    db
}

/// A filter value read off the input: null, a bool, an integer, a float (NaN and infinities
/// become null, as JSON has no such numbers), a string, or an array or object of one value.
fn filter_value(r: &mut Reader) -> serde_json::Value {
    use serde_json::Value;
    match r.u8() % 8 {
        0 => Value::Null,
        1 => Value::Bool(r.u8() & 1 == 1),
        2 => Value::from(r.u64() as i64),
        3 => Value::from(r.u64()),
        4 => {
            serde_json::Number::from_f64(f64::from_bits(r.u64())).map_or(Value::Null, Value::Number)
        }
        5 => Value::from(r.string(32)),
        6 => Value::Array(vec![Value::from(r.u8())]),
        _ => serde_json::json!({ r.string(8): r.u8() }),
    }
}

/// Filters read off the input: as JSON (`[[path, value], ...]`) when it parses, else up to
/// four (path, value) pairs from bytes.
fn filters_of(data: &[u8]) -> Vec<(String, serde_json::Value)> {
    if let Ok(f) = serde_json::from_slice::<Vec<(String, serde_json::Value)>>(data) {
        return f;
    }
    let mut r = Reader(data);
    let n = r.u8() % 5;
    (0..n)
        .map(|_| (r.string(24), filter_value(&mut r)))
        .collect()
}

/// Metadata equality filters, on their own and with a text query, against [`fuzz_db`]. Every
/// hit must be a live document.
pub fn filter(data: &[u8]) {
    let db = fuzz_db(false);
    let filters = filters_of(data);
    let mut q = Query::new().text("서울 city").k(30).fetch_documents(false);
    for (path, value) in filters {
        q = q.filter_eq(path, value);
    }
    if let Ok(hits) = db.search(&q) {
        for h in hits {
            assert!(h.id != "d3", "a deleted document passed a filter");
        }
    }
    let q = q.dense(vec![1.0, 0.5, 0.0, 0.0]).legs(&[Leg::Dense]);
    let _ = db.search(&q);
}

/// A query with every parameter read off the input, extreme values included (k, depth and ef
/// up to `u64::MAX`, weights, RRF k and vector values from raw bits: NaN, infinities,
/// subnormals), run against [`fuzz_db`]. It may be refused, never panic; an answer holds at
/// most k hits, without repeats.
///
/// Layout: flags (bit 0 the dot-product database; bit 1 fetches documents; bits 2-4 give a
/// dense vector, a sparse vector, ColBERT tokens; bit 5 names the legs; bit 6 RRF; bit 7 a
/// rerank), then k, depth and
/// ef as `u64` (depth and ef unset when zero), the dense mode, four leg weights (each after a
/// byte saying whether it is set), the RRF k, the vectors, the legs and the rerank, then the
/// filters and (after a byte saying whether there is one) the text.
pub fn query(data: &[u8]) {
    let mut r = Reader(data);
    let flags = r.u8();
    let db = fuzz_db(flags & 1 != 0);
    let k = r.u64() as usize;
    let mut q = Query::new().k(k).fetch_documents(flags & 2 != 0);
    if let d @ 1.. = r.u64() {
        q = q.depth(d as usize);
    }
    if let ef @ 1.. = r.u64() {
        q = q.ef(ef as usize);
    }
    q = q.dense_mode(match r.u8() % 3 {
        0 => DenseMode::Auto,
        1 => DenseMode::Exact,
        _ => DenseMode::Approximate,
    });
    let all = [Leg::Dense, Leg::Sparse, Leg::Bm25, Leg::Colbert];
    for leg in all {
        if r.u8() & 1 == 1 {
            q = q.weight(leg, r.f32());
        }
    }
    let rrf_k = r.f32();
    if flags & 64 != 0 {
        q = q.fusion(Fusion::Rrf { k: rrf_k });
    }
    if flags & 4 != 0 {
        // Usually the schema's dimension; sometimes not.
        let n = match r.u8() % 8 {
            0 => 0,
            1 => 7,
            _ => FUZZ_DIM,
        };
        q = q.dense(r.f32s(n));
    }
    if flags & 8 != 0 {
        let n = usize::from(r.u8() % 8);
        let mut ids: Vec<u32> = (0..n).map(|_| r.u32() % 2048).collect();
        ids.sort_unstable();
        ids.dedup();
        let weights = r.f32s(ids.len());
        if let Ok(v) = SparseVector::new(ids, weights) {
            q = q.sparse(v);
        }
    }
    if flags & 16 != 0 {
        let n = usize::from(r.u8() % 4) * FUZZ_DIM + usize::from(r.u8() % 2);
        q = q.colbert(r.f32s(n));
    }
    if flags & 32 != 0 {
        let legs: Vec<Leg> = (0..r.u8() % 5)
            .map(|_| all[usize::from(r.u8() % 4)])
            .collect();
        q = q.legs(&legs);
    }
    if flags & 128 != 0 {
        let top = r.u64() as usize;
        let fusion = if r.u8() & 1 == 0 {
            RerankFusion::Rrf { k: r.f32() }
        } else {
            RerankFusion::Weighted {
                dense: r.f32(),
                sparse: r.f32(),
                colbert: r.f32(),
            }
        };
        q = q.rerank(Rerank { top, fusion });
    }
    let n = usize::from(r.u8() % 3);
    for _ in 0..n {
        q = q.filter_eq(r.string(16), filter_value(&mut r));
    }
    if r.u8() & 1 == 1 {
        q = q.text(String::from_utf8_lossy(r.take(256)).into_owned());
    }
    if let Ok(hits) = db.search(&q) {
        assert!(hits.len() <= k, "{} hits for k = {k}", hits.len());
        let mut ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), hits.len(), "a document twice in one answer");
    }
}

/// Inputs for [`query`]: every leg with a rerank, one leg at a time, RRF with filters.
fn query_seeds() -> Vec<Vec<u8>> {
    let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let head = |flags: u8, k: u64, mode: u8| -> Vec<u8> {
        let mut b = vec![flags];
        for p in [k, 0, 0] {
            b.extend_from_slice(&p.to_le_bytes());
        }
        b.extend_from_slice(&[mode, 0, 0, 0, 0]);
        b.extend_from_slice(&60f32.to_le_bytes());
        b
    };
    let mut out = Vec::new();
    // Text, dense, sparse and ColBERT, reranked by weights, no filter, then text.
    let mut q = head(2 | 4 | 8 | 16 | 128, 10, 0);
    q.push(2);
    q.extend(f32s(&[0.5, 0.5, 0.0, 0.1]));
    q.push(2);
    q.extend([3u32, 1003].iter().flat_map(|x| x.to_le_bytes()));
    q.extend(f32s(&[1.0, 0.5]));
    q.extend([2, 0]);
    q.extend(f32s(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]));
    q.extend(100u64.to_le_bytes());
    q.push(1);
    q.extend(f32s(&[0.4, 0.2, 0.4]));
    q.extend([0, 1]);
    q.extend("서울 항구".as_bytes());
    out.push(q);
    // Dense alone through HNSW, on the dot-product database.
    let mut q = head(1 | 4 | 32, 5, 2);
    q.push(2);
    q.extend(f32s(&[1.0, -1.0, 0.0, 0.0]));
    q.extend([1, 0, 0]);
    out.push(q);
    // RRF over text and dense with a tag filter.
    let mut q = head(4 | 64, 3, 0);
    q.push(2);
    q.extend(f32s(&[0.0, 1.0, 0.0, 0.0]));
    q.extend([1, 3]);
    q.extend(b"tag");
    q.extend([5, 1, b'b', 1]);
    q.extend("도시".as_bytes());
    out.push(q);
    out
}

/// Writes seed inputs for every target into `out/<target>/`: the repository's fixtures and
/// the files of small databases built from `fixtures/tiny`.
pub fn write_seed_corpora(fixtures: &Path, out: &Path) -> Result<()> {
    let mut n = 0;
    let mut seed = |target: &str, bytes: &[u8]| -> Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
        n += 1;
        let p = dir.join(format!("seed-{n:03}"));
        std::fs::write(&p, bytes).map_err(|e| crate::Error::io(&p, e))
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| crate::Error::io(p, e));
    let tiny = fixtures.join("tiny");
    for (target, files) in [
        ("docs_jsonl", &["tiny/corpus.jsonl", "bad-line.jsonl"][..]),
        ("queries_jsonl", &["tiny/queries.jsonl"]),
        (
            "sparse_jsonl",
            &["tiny/corpus.sparse.jsonl", "tiny/queries.sparse.jsonl"],
        ),
        ("squad", &["squad-mini.json"]),
        (
            "npy",
            &[
                "tiny/corpus.dense.npy",
                "tiny/corpus.colbert.offsets.npy",
                "tiny/queries.colbert.npy",
            ],
        ),
        (
            "safetensors",
            &[
                "model/m3-heads/sparse_linear.safetensors",
                "model/m3-heads/colbert_linear.safetensors",
            ],
        ),
    ] {
        for f in files {
            seed(target, &read(&fixtures.join(f))?)?;
        }
    }
    let mut run = Vec::new();
    for (q, d, rank) in [("q1", "seoul", 1), ("q1", "busan", 2), ("q2", "busan", 1)] {
        crate::eval::write_trec_line(&mut run, q, d, rank, 0.5, "hybrid")
            .map_err(|e| crate::Error::io("run.trec", e))?;
    }
    seed("trec_run", &run)?;
    for json in [
        r#"{"indices":[1,5,90000],"values":[0.5,-2.0,1e30]}"#,
        r#"{"indices":[],"values":[]}"#,
    ] {
        seed("sparse_vector", json.as_bytes())?;
    }
    let v = SparseVector::new(vec![3, 4_000_000_000], vec![1.5, 0.25])?;
    seed(
        "sparse_vector",
        &postcard::to_allocvec(&v).map_err(|e| crate::Error::Store(e.to_string()))?,
    )?;
    for json in [
        r#"[["tag","a"]]"#,
        r#"[["x.y",1],["even",true]]"#,
        r#"[["f",2.5],["list",3]]"#,
        r#"[["s","서울"],["n",-1]]"#,
    ] {
        seed("filter", json.as_bytes())?;
    }
    for q in query_seeds() {
        seed("query", &q)?;
    }
    let oid = "0123456789abcdef0123456789abcdef01234567";
    let listing = format!(
        r#"[{{"type":"file","path":"config.json","size":10,"oid":"{oid}"}},
            {{"type":"directory","path":"onnx","oid":"{oid}"}},
            {{"type":"file","path":"onnx/model.onnx","size":9,"oid":"{oid}",
              "lfs":{{"oid":"{oid}{}","size":9}}}}]"#,
        &oid[..24]
    );
    let link = "<https://huggingface.co/api/models/o/r/tree/main?cursor=abc>; rel=\"next\"\nonnx/model.onnx\n</api/next?p=2>; rel=next";
    seed(
        "fetch_listing",
        &pack(0, None, &[link.as_bytes(), listing.as_bytes()]),
    )?;

    let docs = DatasetDir::new(&tiny).documents()?;
    let scratch = Scratch::new();
    for (i, prec) in [
        Precision::F16,
        Precision::F32,
        Precision::Int8,
        Precision::Binary,
    ]
    .into_iter()
    .enumerate()
    {
        let dir = scratch.0.join(format!("db{i}"));
        let schema = Schema::new()
            .dense(
                16,
                if i % 2 == 0 {
                    Metric::Cosine
                } else {
                    Metric::Dot
                },
            )
            .sparse()
            .text()
            .colbert(8, prec);
        {
            let db = Database::open_or_create(&dir, schema.clone())?;
            // Two commits with a checkpoint after each: two sparse segments.
            for part in docs.chunks(docs.len().div_ceil(2)) {
                let mut w = db.writer()?;
                for d in part {
                    w.upsert(d.clone())?;
                }
                w.commit()?;
                db.checkpoint()?;
            }
        }
        let file = |p: &str| std::fs::read(dir.join(p)).unwrap_or_default();
        let rows = docs.len() as u64;
        let (vectors, crcs) = (file("dense/vectors.bin"), file("dense/vectors.crc"));
        let manifest = file("dense/hnsw.manifest");
        for flags in [0, 8] {
            seed(
                "dense",
                &pack(flags, Some(rows), &[&vectors, &manifest, &crcs]),
            )?;
        }
        seed(
            "dense",
            &pack(
                COMMITTED_PARAM | FIX_CRC | 2,
                Some(rows),
                &[&vectors, &manifest, &[]],
            ),
        )?;
        let (cdocs, tokens) = (file("colbert/docs.bin"), file("colbert/tokens.bin"));
        seed("colbert", &pack(0, Some(rows), &[&cdocs, &tokens]))?;
        seed(
            "colbert",
            &pack(
                COMMITTED_PARAM | FIX_CRC | 2,
                Some(rows),
                &[&cdocs, &tokens],
            ),
        )?;
        if i == 0 {
            for f in [&vectors, &crcs, &cdocs, &tokens] {
                seed("header", &pack(0, None, &[&f[..f.len().min(64)]]))?;
            }
            let sparse = dir.join("sparse");
            let mut segs: Vec<PathBuf> = std::fs::read_dir(&sparse)
                .map_err(|e| crate::Error::io(&sparse, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "spx"))
                .collect();
            segs.sort();
            let manifest = file("sparse/sparse.manifest");
            let segs: Vec<Vec<u8>> = segs.iter().map(|p| read(p)).collect::<Result<_>>()?;
            let mut files: Vec<&[u8]> = vec![&manifest];
            files.extend(segs.iter().map(Vec::as_slice));
            seed("sparse_index", &pack(0, None, &files))?;
            // Each segment alone, under a manifest naming only it.
            let mut one = b"HDBSPMAN".to_vec();
            for field in [1u32.to_le_bytes(), 1u32.to_le_bytes()] {
                one.extend_from_slice(&field);
            }
            for field in [2, rows, 1u64] {
                one.extend_from_slice(&field.to_le_bytes());
            }
            one.extend_from_slice(&[0; 4]);
            for seg in &segs {
                seed("sparse_index", &pack(FIX_CRC, None, &[&one, seg, &[]]))?;
            }
            let record = store::DocRecord {
                id: "seoul".into(),
                title: "서울".into(),
                text: "서울특별시".into(),
                metadata: r#"{"topic":"city"}"#.into(),
                seq: 1,
                sparse: docs.first().and_then(|d| d.sparse_vector().cloned()),
            };
            let state = store::State {
                seq: 2,
                next_doc: rows,
            };
            let records = [
                (store::encode(&record)?, postcard::to_allocvec(&record)),
                (store::encode(&state)?, postcard::to_allocvec(&state)),
                (store::encode(&schema)?, postcard::to_allocvec(&schema)),
            ];
            let long = store::DocRecord {
                text: record.text.repeat(20),
                ..record.clone()
            };
            for r in [&record, &long] {
                seed(
                    "store_record",
                    &pack(0, None, &[&store::encode_doc(r, None)?]),
                )?;
            }
            for (stored, plain) in records {
                seed("store_record", &pack(0, None, &[&stored]))?;
                if let Ok(plain) = plain {
                    seed("store_record", &pack(FIX_CRC, None, &[&plain]))?;
                }
            }
        }
    }
    Ok(())
}
