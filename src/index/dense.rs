//! The dense leg: raw vectors in a memory-mapped file (the primary copy, written before the
//! commit point) and an HNSW graph over them (derived, dumped at checkpoints, caught up on open).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{Distance, Hnsw};
use memmap2::Mmap;

mod rowcrc;

use rowcrc::RowChecksums;

use crate::docset::DocSet;
use crate::error::{Error, Result};
use crate::fsio::{header, read_header, sync_dir, write_atomic};
use crate::schema::{DenseSpec, Metric};

const VECTORS_MAGIC: &[u8; 8] = b"HYBVEC\0\0";
const VECTORS_VERSION: u32 = 1;
/// Size of the vectors-file header; rows start here.
pub(crate) const VECTORS_HEADER: u64 = 64;
const GRAPH_MAGIC: &[u8; 8] = b"HYBHNSW\0";
const GRAPH_VERSION: u32 = 1;
const GRAPH_BASENAME: &str = "graph";
const MANIFEST: &str = "hnsw.manifest";
/// magic 8, version 4, dim 4, covers 8, points 8, generation 8, graph crc 4, data crc 4, crc 4.
const MANIFEST_LEN: usize = 52;

/// Dot product written so the compiler vectorizes it (eight independent accumulators).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for i in chunks * 8..n {
        sum += a[i] * b[i];
    }
    sum
}

/// Scales `v` to unit length in place (a zero vector stays zero).
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The HNSW distance: a non-negative, decreasing function of the similarity, because hnsw_rs
/// requires distances ≥ 0. Cosine (vectors stored normalized): 1 − dot, clamped at 0. Dot: 1 − dot
/// for dot ≤ 0 and 1 / (1 + dot) above, which keeps the order of inner products.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HybridDist {
    dot_metric: bool,
}

impl Distance<f32> for HybridDist {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = dot(a, b);
        if d.is_nan() {
            // hnsw_rs panics on a NaN distance. NaN comes from a non-finite value in a damaged
            // vectors.bin, or from inf - inf in a Dot product of finite vectors: farthest.
            return f32::MAX;
        }
        if self.dot_metric {
            if d <= 0.0 { 1.0 - d } else { 1.0 / (1.0 + d) }
        } else {
            (1.0 - d).max(0.0)
        }
    }
}

type Graph = Hnsw<'static, f32, HybridDist>;

/// The persisted vector rows, memory mapped. Row `n` holds document number `n`.
pub(crate) struct Vectors {
    map: Option<Mmap>,
    dim: usize,
    rows: u64,
}

impl Vectors {
    pub fn row(&self, doc: u64) -> Option<&[f32]> {
        if doc >= self.rows {
            return None;
        }
        let map = self.map.as_ref()?;
        let start = VECTORS_HEADER as usize + doc as usize * self.dim * 4;
        let bytes = map.get(start..start + self.dim * 4)?;
        // The header is 64 bytes and rows are whole f32s, so rows are 4-byte aligned.
        let (pre, floats, _) = unsafe { bytes.align_to::<f32>() };
        if pre.is_empty() { Some(floats) } else { None }
    }
}

/// The dense index: vector file, HNSW graph, and the number of rows the graph covers.
pub(crate) struct DenseIndex {
    dir: PathBuf,
    spec: DenseSpec,
    file: File,
    checksums: RowChecksums,
    graph: Graph,
    /// Documents `< graph_covers` with a vector are in the graph (dumped or inserted since).
    graph_covers: AtomicU64,
    /// `graph_covers` of the last dump on disk.
    dumped_covers: AtomicU64,
}

impl DenseIndex {
    /// Opens (or creates) the dense files in `dir`. `committed_rows` is the row count of the
    /// last commit; rows past it belong to an unfinished commit and are cut off.
    pub fn open(dir: &Path, spec: DenseSpec, committed_rows: u64, writable: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("vectors.bin");
        let exists = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(writable && !exists)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !exists {
            write_vectors_header(&file, &path, spec.dim)?;
        } else {
            check_vectors_header(&file, &path, spec.dim)?;
        }
        let want = committed_rows
            .checked_mul(spec.dim as u64 * 4)
            .and_then(|b| b.checked_add(VECTORS_HEADER))
            .ok_or_else(|| Error::corrupted(&path, "committed row count overflows"))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < want {
            return Err(Error::corrupted(
                &path,
                format!("{len} bytes but the last commit needs {want}"),
            ));
        }
        if len > want && writable {
            file.set_len(want).map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        let checksums = RowChecksums::open(dir, &file, spec.dim, committed_rows, writable)?;
        let (graph, covers) = match load_graph(dir, spec, committed_rows) {
            Some(loaded) => loaded,
            None => (new_graph(spec, committed_rows as usize), 0),
        };
        Ok(DenseIndex {
            dir: dir.to_path_buf(),
            spec,
            file,
            checksums,
            graph,
            graph_covers: AtomicU64::new(covers),
            dumped_covers: AtomicU64::new(covers),
        })
    }

    pub fn dim(&self) -> usize {
        self.spec.dim
    }

    /// Maps the first `rows` rows for reading.
    pub fn map(&self, rows: u64) -> Result<Arc<Vectors>> {
        let path = self.dir.join("vectors.bin");
        let map = if rows == 0 {
            None
        } else {
            // Safety: rows below the committed count are never rewritten while mapped.
            Some(unsafe { Mmap::map(&self.file) }.map_err(|e| Error::io(&path, e))?)
        };
        if let Some(m) = &map
            && (m.len() as u64) < VECTORS_HEADER + rows * self.spec.dim as u64 * 4
        {
            return Err(Error::corrupted(&path, "shorter than its committed rows"));
        }
        Ok(Arc::new(Vectors {
            map,
            dim: self.spec.dim,
            rows,
        }))
    }

    /// Writes rows `first..first + n` (a contiguous block, `data.len() == n * dim`) and syncs.
    pub fn write_rows(&self, first: u64, data: &[f32]) -> Result<()> {
        let path = self.dir.join("vectors.bin");
        let mut bytes = Vec::with_capacity(data.len() * 4);
        for x in data {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let offset = VECTORS_HEADER + first * self.spec.dim as u64 * 4;
        self.file
            .write_all_at(&bytes, offset)
            .map_err(|e| Error::io(&path, e))?;
        self.file.sync_data().map_err(|e| Error::io(&path, e))?;
        self.checksums.write(first, &bytes)
    }

    /// Inserts into the graph every document in `graph_covers..rows` that is in `with_vector`.
    /// Callers serialize calls (they hold the write side); searches may run meanwhile.
    pub fn catch_up(&self, vectors: &Vectors, with_vector: &DocSet, rows: u64) {
        let from = self.graph_covers.load(Ordering::Acquire);
        let todo: Vec<(&[f32], usize)> = (from..rows)
            .filter(|&d| with_vector.contains(d))
            .filter_map(|d| vectors.row(d).map(|r| (r, d as usize)))
            .collect();
        if todo.len() >= 256 {
            // In a pool of its own: in the global pool, searches that use rayon (ColBERT
            // rerank) would queue behind the whole insert.
            match build_pool() {
                Some(pool) => pool.install(|| self.graph.parallel_insert_slice(&todo)),
                None => self.graph.parallel_insert_slice(&todo),
            }
        } else {
            for item in todo {
                self.graph.insert_slice(item);
            }
        }
        self.graph_covers.fetch_max(rows, Ordering::AcqRel);
    }

    /// Replaces the graph by one built from the `keep` documents only.
    pub fn rebuild(&mut self, vectors: &Vectors, keep: &DocSet, rows: u64) {
        self.graph = new_graph(self.spec, keep.len());
        self.graph_covers.store(0, Ordering::Release);
        self.catch_up(vectors, keep, rows);
        self.dumped_covers.store(u64::MAX, Ordering::Release);
    }

    /// Whether the graph holds inserts that are not dumped yet.
    pub fn dirty(&self) -> bool {
        self.graph_covers.load(Ordering::Acquire) != self.dumped_covers.load(Ordering::Acquire)
    }

    /// Dumps the graph to a fresh directory and switches the manifest to it atomically.
    pub fn dump(&self) -> Result<()> {
        let covers = self.graph_covers.load(Ordering::Acquire);
        // A fresh directory per dump, so the one the manifest names is never touched.
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let gen_dir = self.dir.join(format!("hnsw-{generation}"));
        if gen_dir.exists() {
            std::fs::remove_dir_all(&gen_dir).map_err(|e| Error::io(&gen_dir, e))?;
        }
        std::fs::create_dir_all(&gen_dir).map_err(|e| Error::io(&gen_dir, e))?;
        if self.graph.get_nb_point() > 0 {
            self.graph
                .file_dump(&gen_dir, GRAPH_BASENAME)
                .map_err(|e| Error::io(&gen_dir, std::io::Error::other(e.to_string())))?;
        }
        let mut crcs = [0u32; 2];
        for (i, ext) in ["hnsw.graph", "hnsw.data"].iter().enumerate() {
            let p = gen_dir.join(format!("{GRAPH_BASENAME}.{ext}"));
            if p.exists() {
                let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
                f.sync_all().map_err(|e| Error::io(&p, e))?;
                crcs[i] = crc_file(&p)?;
            }
        }
        sync_dir(&gen_dir)?;
        let mut m = Vec::with_capacity(MANIFEST_LEN);
        m.extend_from_slice(GRAPH_MAGIC);
        m.extend_from_slice(&GRAPH_VERSION.to_le_bytes());
        m.extend_from_slice(&(self.spec.dim as u32).to_le_bytes());
        m.extend_from_slice(&covers.to_le_bytes());
        m.extend_from_slice(&(self.graph.get_nb_point() as u64).to_le_bytes());
        m.extend_from_slice(&generation.to_le_bytes());
        m.extend_from_slice(&crcs[0].to_le_bytes());
        m.extend_from_slice(&crcs[1].to_le_bytes());
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_le_bytes());
        crate::fsio::failpoint("hnsw:before-manifest")?;
        write_atomic(&self.dir.join(MANIFEST), &m)?;
        // Older generations are garbage now.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("hnsw-") && e.path() != gen_dir {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        self.dumped_covers.store(covers, Ordering::Release);
        Ok(())
    }

    /// Approximate top-`k` among `allow` by HNSW; `(doc, distance)` best first.
    ///
    /// hnsw_rs's filtered search never stops early (it explores until its candidates run out,
    /// close to a full scan), so when most graph points are allowed the graph is searched
    /// unfiltered for `ef` candidates and those are filtered here; the filtered search is used
    /// only when that leaves fewer than `k` or when `allow` is a small part of the graph.
    pub fn search_graph(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: &DocSet,
    ) -> Vec<(u64, f32)> {
        let ef = ef.max(k);
        let points = self.graph.get_nb_point();
        if allow.len() * 2 >= points {
            let hits: Vec<(u64, f32)> = self
                .graph
                .search(query, ef, ef)
                .into_iter()
                .filter(|n| allow.contains(n.d_id as u64))
                .take(k)
                .map(|n| (n.d_id as u64, n.distance))
                .collect();
            if hits.len() >= k.min(allow.len()) {
                return hits;
            }
        }
        let filter = |id: &usize| allow.contains(*id as u64);
        self.graph
            .search_filter(query, k, ef, Some(&filter))
            .into_iter()
            .map(|n| (n.d_id as u64, n.distance))
            .collect()
    }

    pub fn graph_len(&self) -> usize {
        self.graph.get_nb_point()
    }
}

/// Threads for HNSW inserts, apart from rayon's global pool that searches use; `None` if no
/// thread could be started.
fn build_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("hybridb-hnsw-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

fn new_graph(spec: DenseSpec, expected: usize) -> Graph {
    let dist = HybridDist {
        dot_metric: spec.metric == Metric::Dot,
    };
    let mut g = Hnsw::new(
        spec.hnsw.m,
        expected.max(1024),
        16,
        spec.hnsw.ef_construction,
        dist,
    );
    // Keeping pruned candidates looks like it would help connectivity, but on clustered data it
    // dropped Recall@10 from 0.99 to 0.35 (tests/hnsw_recall.rs): leave it off.
    g.set_extend_candidates(false);
    g
}

/// Loads the dumped graph named by the manifest, or `None` when there is none or it does not
/// check out (the caller then rebuilds from the vector rows, which are the primary copy).
fn load_graph(dir: &Path, spec: DenseSpec, committed_rows: u64) -> Option<(Graph, u64)> {
    let m = std::fs::read(dir.join(MANIFEST)).ok()?;
    if m.len() != MANIFEST_LEN || &m[..8] != GRAPH_MAGIC {
        return None;
    }
    let u32_at = |o: usize| u32::from_le_bytes(m[o..o + 4].try_into().unwrap_or_default());
    let u64_at = |o: usize| u64::from_le_bytes(m[o..o + 8].try_into().unwrap_or_default());
    if crc32fast::hash(&m[..48]) != u32_at(48)
        || u32_at(8) != GRAPH_VERSION
        || u32_at(12) as usize != spec.dim
    {
        return None;
    }
    let (covers, points, generation) = (u64_at(16), u64_at(24), u64_at(32));
    if covers > committed_rows {
        return None;
    }
    let gen_dir = dir.join(format!("hnsw-{generation}"));
    if points == 0 {
        return Some((new_graph(spec, committed_rows as usize), covers));
    }
    for (i, ext) in ["hnsw.graph", "hnsw.data"].iter().enumerate() {
        let p = gen_dir.join(format!("{GRAPH_BASENAME}.{ext}"));
        if crc_file(&p).ok()? != u32_at(40 + 4 * i) {
            return None;
        }
    }
    // hnsw_rs ties the graph's lifetime to its loader; the loader is a few paths and options,
    // leaked once per open so the graph can be 'static.
    let io: &'static HnswIo = Box::leak(Box::new(HnswIo::new(&gen_dir, GRAPH_BASENAME)));
    let dist = HybridDist {
        dot_metric: spec.metric == Metric::Dot,
    };
    // The files passed their checksums; a panic inside hnsw_rs still must not escape.
    let loaded = std::panic::catch_unwind(|| io.load_hnsw_with_dist::<f32, HybridDist>(dist));
    match loaded {
        Ok(Ok(mut g)) if g.get_nb_point() as u64 == points => {
            g.set_extend_candidates(false);
            Some((g, covers))
        }
        _ => None,
    }
}

fn write_vectors_header(file: &File, path: &Path, dim: usize) -> Result<()> {
    let h = header(VECTORS_MAGIC, VECTORS_VERSION, &(dim as u32).to_le_bytes());
    file.write_all_at(&h, 0).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn check_vectors_header(file: &File, path: &Path, dim: usize) -> Result<()> {
    let h = read_header(file, path, VECTORS_MAGIC, VECTORS_VERSION)?;
    let file_dim = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    if file_dim != dim {
        return Err(Error::corrupted(
            path,
            format!("dimension {file_dim} but the schema says {dim}"),
        ));
    }
    Ok(())
}

fn crc_file(path: &Path) -> Result<u32> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize())
}

/// Exact top-`k` by brute force over `candidates`; `(doc, similarity)` best first, ties by doc.
pub(crate) fn search_exact(
    vectors: &Vectors,
    query: &[f32],
    k: usize,
    candidates: impl Iterator<Item = u64>,
) -> Vec<(u64, f32)> {
    let mut top = crate::query::TopK::new(k);
    for doc in candidates {
        if let Some(row) = vectors.row(doc) {
            top.push(doc, dot(query, row));
        }
    }
    top.into_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }

    #[test]
    fn dot_distance_is_positive_and_order_preserving() {
        let d = HybridDist { dot_metric: true };
        let q = [1.0, 0.0];
        let sims = [-5.0f32, -0.5, 0.0, 0.5, 3.0, 100.0];
        let dists: Vec<f32> = sims.iter().map(|&s| d.eval(&q, &[s, 0.0])).collect();
        assert!(dists.iter().all(|&x| x > 0.0));
        assert!(dists.windows(2).all(|w| w[0] > w[1]));
        let c = HybridDist { dot_metric: false };
        assert_eq!(c.eval(&[1.0, 0.0], &[1.0000001, 0.0]), 0.0);
    }
}
