//! The dense leg: raw vectors in a memory-mapped file (the primary copy, written before the
//! commit point) and an HNSW graph over them (derived, dumped at checkpoints, caught up on open).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use memmap2::Mmap;
use rayon::prelude::*;

mod hnsw;
mod kernel;
mod pages;
mod rowcrc;
mod sq8;

use hnsw::Graph;
pub(crate) use kernel::{dot, dot_portable};
use rowcrc::RowChecksums;
use sq8::Codes;

use crate::docset::DocSet;
use crate::error::{Error, Result};
use crate::fsio::{header, read_header, sync_dir, write_atomic};
use crate::schema::DenseSpec;

const VECTORS_MAGIC: &[u8; 8] = b"HYBVEC\0\0";
const VECTORS_VERSION: u32 = 1;
/// Size of the vectors-file header; rows start here.
pub(crate) const VECTORS_HEADER: u64 = 64;
const GRAPH_MAGIC: &[u8; 8] = b"HYBHNSW\0";
const GRAPH_VERSION: u32 = 2;
const MANIFEST: &str = "hnsw.manifest";
/// magic 8, version 4, dim 4, covers 8, points 8, generation 8, graph crc 4, reserved 4, crc 4.
const MANIFEST_LEN: usize = 52;
/// Graphs smaller than this grow by serial inserts.
const SERIAL_BELOW: usize = 2048;
/// Nodes rescored past `k` (at least; `k` more for large `k`) after a walk by the codes.
const RESCORE_MARGIN: usize = 32;

/// Scales `v` to unit length in place (a zero vector stays zero). The norm is taken in `f64`,
/// where the square of any finite `f32` neither overflows nor underflows, so every finite
/// vector with a nonzero component comes out at unit length.
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) / norm) as f32);
    }
}

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

    /// Asks the CPU to start loading row `doc` into cache (a hint; no effect elsewhere).
    #[inline]
    pub fn prefetch(&self, doc: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some(row) = self.row(doc) {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            for line in row.chunks(16) {
                // Safety: a prefetch of a valid address has no effect but on the cache.
                unsafe { _mm_prefetch(line.as_ptr().cast::<i8>(), _MM_HINT_T0) };
            }
        }
    }
}

/// The graph and the rows its searches read (the newest mapping: it holds every node's row).
struct Live {
    graph: Graph,
    vectors: Arc<Vectors>,
    /// Codes of the rows, which searches walk the graph by once they cover every node.
    codes: Codes,
}

/// The dense index: vector file, HNSW graph, and the number of rows the graph covers.
pub(crate) struct DenseIndex {
    dir: PathBuf,
    spec: DenseSpec,
    file: File,
    checksums: RowChecksums,
    live: RwLock<Live>,
    /// Documents `< graph_covers` with a vector are in the graph (dumped or inserted since).
    graph_covers: AtomicU64,
    /// `graph_covers` of the last dump on disk.
    dumped_covers: AtomicU64,
    /// Counts [`rebuild`](Self::rebuild)s, which drop nodes that older snapshots may still see.
    rebuilds: u64,
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
            None => (new_graph(spec), 0),
        };
        let index = DenseIndex {
            dir: dir.to_path_buf(),
            spec,
            file,
            checksums,
            live: RwLock::new(Live {
                graph,
                vectors: Arc::new(Vectors {
                    map: None,
                    dim: spec.dim,
                    rows: 0,
                }),
                codes: Codes::new(spec.dim),
            }),
            graph_covers: AtomicU64::new(covers),
            dumped_covers: AtomicU64::new(covers),
            rebuilds: 0,
        };
        Ok(index)
    }

    pub fn dim(&self) -> usize {
        self.spec.dim
    }

    /// How many times [`rebuild`](Self::rebuild) dropped nodes: a snapshot taken at another
    /// count may miss documents in the graph that it still sees as live.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Maps the first `rows` rows for reading.
    pub fn map(&self, rows: u64) -> Result<Arc<Vectors>> {
        let path = self.dir.join("vectors.bin");
        let len = rows
            .checked_mul(self.spec.dim as u64 * 4)
            .and_then(|b| b.checked_add(VECTORS_HEADER))
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| Error::corrupted(&path, "committed row count overflows"))?;
        let map = if rows == 0 {
            None
        } else {
            let file_len = self.file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if file_len < len as u64 {
                return Err(Error::corrupted(
                    &path,
                    format!("{file_len} bytes but its committed rows need {len}"),
                ));
            }
            // Only the committed rows: the tail a commit in progress writes is never mapped.
            // Safety: rows below the committed count are never rewritten or cut off while
            // mapped (truncation by another program is outside the format's assumptions).
            let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file) };
            Some(map.map_err(|e| Error::io(&path, e))?)
        };
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

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts into the graph every document in `graph_covers..rows` that is in `with_vector`;
    /// `vectors` maps at least `rows` rows. Callers serialize calls (they hold the write side);
    /// searches may run meanwhile.
    pub fn catch_up(&self, vectors: &Arc<Vectors>, with_vector: &DocSet, rows: u64) {
        let from = self.graph_covers.load(Ordering::Acquire);
        // Graph nodes are u32; a row past that range is left to exact search.
        let last = rows.min(u32::MAX as u64);
        let todo = (from..last)
            .filter(|&d| with_vector.contains(d) && vectors.row(d).is_some())
            .map(|d| d as u32);
        // Codes for every row up to `last`, made before the lock is taken.
        let coded = self.live().codes.rows();
        let fresh = (coded < last as usize).then(|| Codes::encode(vectors, coded, last as usize));
        let added = {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            if let Some((codes, scales)) = fresh {
                live.codes.append(codes, scales);
            }
            live.vectors = Arc::clone(vectors);
            live.graph.reserve(last as usize);
            live.graph.add_nodes(todo)
        };
        let live = self.live();
        // Walk by the codes once they cover every row (they do after the append above).
        let codes = (live.codes.rows() as u64 >= live.vectors.rows).then_some(&live.codes);
        let insert = |&doc: &u32| live.graph.insert(&live.vectors, codes, doc);
        // The first nodes of a graph go in one by one: concurrent inserts into a small graph
        // cannot see each other and link worse. Small collections get the same graph each time.
        let serial = SERIAL_BELOW
            .saturating_sub(live.graph.len())
            .min(added.len());
        let (first, rest) = added.split_at(serial);
        first.iter().for_each(insert);
        if rest.len() >= 256 {
            // In a pool of its own: in the global pool, searches that use rayon (ColBERT
            // rerank) would queue behind the whole insert.
            match build_pool() {
                Some(pool) => pool.install(|| rest.par_iter().for_each(insert)),
                None => rest.par_iter().for_each(insert),
            }
        } else {
            rest.iter().for_each(insert);
        }
        // A scan of every level-0 list: worth it when the commit is not tiny next to the graph.
        if !added.is_empty() && added.len() * 100 >= live.graph.len() {
            live.graph.link_orphans(&live.vectors);
        }
        self.graph_covers.fetch_max(rows, Ordering::AcqRel);
    }

    /// Replaces the graph by one built from the `keep` documents only.
    pub fn rebuild(&mut self, vectors: &Arc<Vectors>, keep: &DocSet, rows: u64) {
        self.rebuilds += 1;
        self.live.get_mut().unwrap_or_else(|p| p.into_inner()).graph = new_graph(self.spec);
        self.graph_covers.store(0, Ordering::Release);
        self.catch_up(vectors, keep, rows);
        self.dumped_covers.store(u64::MAX, Ordering::Release);
    }

    /// Whether the graph holds inserts that are not dumped yet.
    pub fn dirty(&self) -> bool {
        self.graph_covers.load(Ordering::Acquire) != self.dumped_covers.load(Ordering::Acquire)
    }

    /// Writes the graph to a fresh file and switches the manifest to it atomically.
    pub fn dump(&self) -> Result<()> {
        let covers = self.graph_covers.load(Ordering::Acquire);
        let (bytes, points) = {
            let live = self.live();
            (live.graph.encode(covers), live.graph.len())
        };
        // A fresh file per dump, so the one the manifest names is never touched.
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let name = format!("hnsw-{generation}.graph");
        let path = self.dir.join(&name);
        std::fs::write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir)?;
        let mut m = Vec::with_capacity(MANIFEST_LEN);
        m.extend_from_slice(GRAPH_MAGIC);
        m.extend_from_slice(&GRAPH_VERSION.to_le_bytes());
        m.extend_from_slice(&(self.spec.dim as u32).to_le_bytes());
        m.extend_from_slice(&covers.to_le_bytes());
        m.extend_from_slice(&(points as u64).to_le_bytes());
        m.extend_from_slice(&generation.to_le_bytes());
        m.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_le_bytes());
        crate::fsio::failpoint("hnsw:before-manifest")?;
        write_atomic(&self.dir.join(MANIFEST), &m)?;
        // Older generations (and directories of the version-1 dumps) are garbage now.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let entry_name = e.file_name();
                let entry_name = entry_name.to_string_lossy();
                if entry_name.starts_with("hnsw-") && entry_name != name {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(p)
                    } else {
                        std::fs::remove_file(p)
                    };
                }
            }
        }
        self.dumped_covers.store(covers, Ordering::Release);
        Ok(())
    }

    /// Approximate top-`k` among `allow` by HNSW: `(doc, similarity)` best first, the similarity
    /// computed from the `f32` rows. The walk measures by the 8-bit codes, and the best
    /// `max(2k, k + 32)` nodes it ends with are rescored exactly. It walks every node but keeps only allowed ones, so it
    /// slows down as `allow` thins out (callers search exactly below `exact_below` documents).
    pub fn search_graph(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: &DocSet,
    ) -> Vec<(u64, f32)> {
        let live = self.live();
        let accept = |n: u32| allow.contains(n as u64);
        // The codes' ranking is close to the exact one: rescoring its head is enough.
        let rescore = k.saturating_mul(2).max(k.saturating_add(RESCORE_MARGIN));
        let found = if live.codes.rows() as u64 >= live.vectors.rows {
            let q = live.codes.query(query);
            live.graph.search(&live.codes, &q, rescore, ef, &accept)
        } else {
            live.graph.search(&*live.vectors, query, k, ef, &accept)
        };
        let mut hits: Vec<(u64, f32)> = found
            .into_iter()
            .filter_map(|(n, _)| {
                let row = live.vectors.row(n as u64)?;
                Some((n as u64, dot(query, row)))
            })
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }

    pub fn graph_len(&self) -> usize {
        self.live().graph.len()
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

fn new_graph(spec: DenseSpec) -> Graph {
    Graph::new(spec.hnsw.m, spec.hnsw.ef_construction)
}

/// Loads the graph named by the manifest, or `None` when there is none or it does not check
/// out (the caller then rebuilds from the vector rows, which are the primary copy).
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
    let bytes = std::fs::read(dir.join(format!("hnsw-{generation}.graph"))).ok()?;
    if crc32fast::hash(&bytes) != u32_at(40) {
        return None;
    }
    let graph = Graph::decode(&bytes, spec.hnsw.m, spec.hnsw.ef_construction)?;
    (graph.len() as u64 == points).then_some((graph, covers))
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
impl Vectors {
    /// Rows in a temporary file, mapped (for tests of the graph).
    pub(crate) fn for_test(rows: &[Vec<f32>]) -> Vectors {
        use std::io::Write;
        let dim = rows.first().map_or(0, Vec::len);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0u8; VECTORS_HEADER as usize]).unwrap();
        for r in rows {
            for x in r {
                f.write_all(&x.to_le_bytes()).unwrap();
            }
        }
        Vectors {
            map: Some(unsafe { Mmap::map(&f) }.unwrap()),
            dim,
            rows: rows.len() as u64,
        }
    }
}

#[cfg(test)]
mod map_tests {
    use super::*;

    /// A map covers the committed rows only, not rows written past them.
    #[test]
    fn a_map_covers_only_the_rows_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = DenseSpec {
            dim: 4,
            metric: crate::Metric::Dot,
            hnsw: crate::HnswParams::default(),
        };
        let index = DenseIndex::open(tmp.path(), spec, 0, true).unwrap();
        index.write_rows(0, &[1.0; 12]).unwrap();
        let v = index.map(2).unwrap();
        assert_eq!(
            v.map.as_ref().unwrap().len() as u64,
            VECTORS_HEADER + 2 * 16
        );
        assert!(v.row(1).is_some() && v.row(2).is_none());
        // Rows the file does not hold are Corrupted, not mapped.
        assert!(matches!(index.map(4), Err(Error::Corrupted { .. })));
    }
}
