//! A hierarchical navigable small-world graph (Malkov & Yashunin) over the rows of `vectors.bin`.
//!
//! Nodes are document numbers and the graph holds links only: distances read the mapped rows.
//! Inserts run in parallel. A writer changes a node's link list under that node's (striped)
//! lock; readers load lists without locking and may see a list mid-update, whose entries are
//! valid node ids either way. Levels are drawn from a hash of the document number, so they do
//! not depend on the order of inserts.

use std::cell::RefCell;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::Vectors;
use super::kernel::dot;
use super::pages::reserve_huge;
use super::sq8::{Codes, QueryCode};

/// `levels` entry of a row that is not in the graph.
const NO_LEVEL: u8 = u8::MAX;
const MAX_LEVEL: usize = 15;
const NO_UPPER: u32 = u32::MAX;
/// `entry` of an empty graph.
const EMPTY: u64 = u64::MAX;
const STRIPES: usize = 4096;
const FILE_MAGIC: &[u8; 8] = b"HYBGRAPH";
/// Version 2 writes each link list sorted, as LEB128 varints of the first id and the gaps;
/// version 1 (still read) wrote u32s.
const FILE_VERSION: u32 = 2;
const FILE_HEADER: usize = 40;

/// The negated inner product (a cosine index stores normalized rows); NaN, from a damaged row or
/// from inf − inf, is the farthest.
#[inline]
fn distance(a: &[f32], b: &[f32]) -> f32 {
    let d = -dot(a, b);
    if d.is_nan() { f32::INFINITY } else { d }
}

/// What a graph walk measures distances in: the `f32` rows, or their 8-bit codes.
pub(crate) trait Space {
    type Query: ?Sized;
    /// The distance from `q` to `node`'s row; `None` if the row is missing.
    fn distance(&self, q: &Self::Query, node: u32) -> Option<f32>;
    /// Starts loading `node`'s row into cache.
    fn prefetch(&self, node: u32);
}

impl Space for Vectors {
    type Query = [f32];

    #[inline]
    fn distance(&self, q: &[f32], node: u32) -> Option<f32> {
        self.row(node as u64).map(|r| distance(q, r))
    }

    #[inline]
    fn prefetch(&self, node: u32) {
        Vectors::prefetch(self, node as u64);
    }
}

impl Space for Codes {
    type Query = QueryCode;

    #[inline]
    fn distance(&self, q: &QueryCode, node: u32) -> Option<f32> {
        Codes::distance(self, q, node)
    }

    #[inline]
    fn prefetch(&self, node: u32) {
        Codes::prefetch(self, node);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Near {
    dist: f32,
    node: u32,
}

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// Per-thread buffers of a layer search, reused across searches.
#[derive(Default)]
struct Scratch {
    /// One bit per row: visited in this search. A bitset stays in the L2 cache at a million
    /// rows, where a word per row would not.
    marks: Vec<u64>,
    /// Words of `marks` set in this search, cleared by the next `begin`.
    touched: Vec<u32>,
    candidates: BinaryHeap<Reverse<Near>>,
    found: BinaryHeap<Near>,
    ids: Vec<u32>,
}

impl Scratch {
    fn begin(&mut self, rows: usize) {
        for &w in &self.touched {
            self.marks[w as usize] = 0;
        }
        self.touched.clear();
        let words = rows.div_ceil(64);
        if self.marks.len() < words {
            self.marks.resize(words, 0);
        }
        self.candidates.clear();
        self.found.clear();
    }

    /// Marks `node` visited; false if it already was.
    #[inline]
    fn visit(&mut self, node: u32) -> bool {
        let (w, bit) = ((node >> 6) as usize, 1u64 << (node & 63));
        let word = &mut self.marks[w];
        if *word & bit != 0 {
            return false;
        }
        if *word == 0 {
            self.touched.push(w as u32);
        }
        *word |= bit;
        true
    }
}

/// How many rows ahead of the one being scored a walk asks the cache for. Measured at 200k × 384
/// (codes beyond the L3 cache): 3 and 4 took 0.80–0.91× the time of 1; 8 was no better than 1.
const PREFETCH_AHEAD: usize = 3;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

pub(crate) struct Graph {
    /// Links per node on levels above 0; level 0 holds twice as many.
    m: usize,
    ef_construction: usize,
    /// Top level of each row's node, or `NO_LEVEL`.
    levels: Vec<u8>,
    /// `2m + 1` slots per row: the count, then the neighbours.
    links0: Vec<AtomicU32>,
    /// Where a node's level-1 list starts in `upper` (levels above follow, `m + 1` slots each).
    upper_at: Vec<u32>,
    upper: Vec<AtomicU32>,
    /// `level << 32 | node` of the entry point, or `EMPTY`.
    entry: AtomicU64,
    nodes: AtomicUsize,
    locks: Box<[Mutex<()>]>,
}

impl Graph {
    pub fn new(m: usize, ef_construction: usize) -> Graph {
        Graph {
            m: m.max(2),
            ef_construction: ef_construction.max(1),
            levels: Vec::new(),
            links0: Vec::new(),
            upper_at: Vec::new(),
            upper: Vec::new(),
            entry: AtomicU64::new(EMPTY),
            nodes: AtomicUsize::new(0),
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.load(Ordering::Acquire)
    }

    fn m0(&self) -> usize {
        2 * self.m
    }

    /// Gives each of `docs` that is not a node yet its level and empty lists; returns those.
    /// Call [`Graph::insert`] on each afterwards.
    pub fn add_nodes(&mut self, docs: impl Iterator<Item = u32>) -> Vec<u32> {
        let mut added = Vec::new();
        for doc in docs {
            let i = doc as usize;
            if i >= self.levels.len() {
                self.grow(i + 1);
            }
            if self.levels[i] != NO_LEVEL {
                continue;
            }
            let level = draw_level(doc, self.m);
            self.levels[i] = level as u8;
            if level > 0 {
                let Ok(at) = u32::try_from(self.upper.len()) else {
                    self.levels[i] = 0;
                    added.push(doc);
                    continue;
                };
                self.upper_at[i] = at;
                let slots = level * (self.m + 1);
                self.upper
                    .resize_with(self.upper.len() + slots, || AtomicU32::new(0));
            }
            added.push(doc);
        }
        added
    }

    /// Makes room for `rows` rows at once (inserts would otherwise grow the arrays by halves).
    pub fn reserve(&mut self, rows: usize) {
        if rows > self.levels.len() {
            self.resize(rows);
        }
    }

    fn grow(&mut self, rows: usize) {
        self.resize(rows.max(self.levels.len() * 3 / 2));
    }

    fn resize(&mut self, rows: usize) {
        self.levels.resize(rows, NO_LEVEL);
        self.upper_at.resize(rows, NO_UPPER);
        let slots = rows * (self.m0() + 1);
        let more = slots.saturating_sub(self.links0.len());
        reserve_huge(&mut self.links0, more);
        self.links0.resize_with(slots, || AtomicU32::new(0));
    }

    /// The count slot and neighbour slots of `node` on `level` (which the node must have).
    #[inline]
    fn list(&self, node: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let w = self.m0() + 1;
            let s = node as usize * w;
            &self.links0[s..s + w]
        } else {
            let w = self.m + 1;
            let s = self.upper_at[node as usize] as usize + (level - 1) * w;
            &self.upper[s..s + w]
        }
    }

    /// Copies the neighbours of `node` on `level` into `out`.
    #[inline]
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        let list = self.list(node, level);
        let n = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
        out.clear();
        out.extend(list[1..=n].iter().map(|a| a.load(Ordering::Relaxed)));
    }

    fn lock(&self, node: u32) -> std::sync::MutexGuard<'_, ()> {
        self.locks[node as usize % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Links `node` (given a level by [`Graph::add_nodes`]) into the graph. `vectors` must hold
    /// the rows of every node; `codes`, if given, too: the walks then measure by them, and the
    /// candidates they end with are rescored exactly before links are chosen.
    pub fn insert(&self, vectors: &Vectors, codes: Option<&Codes>, node: u32) {
        let Some(q) = vectors.row(node as u64) else {
            return;
        };
        let qc = codes.map(|c| (c, c.query(q)));
        let level = self.levels[node as usize] as usize;
        let mut entry = self.entry.load(Ordering::Acquire);
        if entry == EMPTY {
            let mine = (level as u64) << 32 | node as u64;
            match self
                .entry
                .compare_exchange(EMPTY, mine, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.nodes.fetch_add(1, Ordering::AcqRel);
                    return;
                }
                Err(current) => entry = current,
            }
        }
        let (ep, top) = (entry as u32, (entry >> 32) as usize);
        let ep_dist = match &qc {
            Some((c, qc)) => c.distance(qc, ep),
            None => Space::distance(vectors, q, ep),
        };
        let Some(dist) = ep_dist else {
            return;
        };
        let mut cur = Near { dist, node: ep };
        for lc in (level + 1..=top).rev() {
            cur = match &qc {
                Some((c, qc)) => self.greedy(*c, qc, cur, lc),
                None => self.greedy(vectors, q, cur, lc),
            };
        }
        let mut eps = vec![cur];
        for lc in (0..=level.min(top)).rev() {
            let efc = self.ef_construction;
            let not_self = |n: u32| n != node;
            let found = match &qc {
                Some((c, qc)) => {
                    // Entry points from the level above carry exact distances.
                    for e in eps.iter_mut() {
                        e.dist = c.distance(qc, e.node).unwrap_or(f32::INFINITY);
                    }
                    let mut found = self.search_layer(*c, qc, &eps, efc, lc, &not_self);
                    for f in found.iter_mut() {
                        f.dist = Space::distance(vectors, q, f.node).unwrap_or(f32::INFINITY);
                    }
                    found.sort_unstable();
                    found
                }
                None => self.search_layer(vectors, q, &eps, efc, lc, &not_self),
            };
            let chosen = self.select(vectors, &found, self.m);
            {
                let _g = self.lock(node);
                let list = self.list(node, lc);
                for (slot, c) in list[1..].iter().zip(&chosen) {
                    slot.store(c.node, Ordering::Relaxed);
                }
                list[0].store(chosen.len() as u32, Ordering::Release);
            }
            for c in &chosen {
                self.link_back(vectors, c.node, node, c.dist, lc);
            }
            if !found.is_empty() {
                eps = found;
            }
        }
        self.nodes.fetch_add(1, Ordering::AcqRel);
        if level > top {
            let mine = (level as u64) << 32 | node as u64;
            let mut current = self.entry.load(Ordering::Acquire);
            while (current >> 32) < level as u64 {
                match self.entry.compare_exchange(
                    current,
                    mine,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(c) => current = c,
                }
            }
        }
    }

    /// Links every node that no level-0 list names (the neighbour heuristic can prune a node out
    /// of all of them, leaving it unreachable) from its nearest neighbour. A full list gives up
    /// its farthest entry that other lists also name. Runs after inserts, with none running.
    pub fn link_orphans(&self, vectors: &Vectors) {
        let rows = self.levels.len();
        let mut inbound = vec![0u32; rows];
        let mut ids = Vec::new();
        for node in 0..rows {
            if self.levels[node] != NO_LEVEL {
                self.neighbours(node as u32, 0, &mut ids);
                for &n in &ids {
                    inbound[n as usize] += 1;
                }
            }
        }
        let entry = self.entry.load(Ordering::Acquire) as u32;
        for orphan in 0..rows as u32 {
            if self.levels[orphan as usize] == NO_LEVEL
                || inbound[orphan as usize] > 0
                || orphan == entry
            {
                continue;
            }
            let Some(o) = vectors.row(orphan as u64) else {
                continue;
            };
            self.neighbours(orphan, 0, &mut ids);
            let nearest = ids
                .iter()
                .filter_map(|&n| vectors.row(n as u64).map(|r| (distance(o, r), n)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let Some((_, host)) = nearest else {
                continue;
            };
            let _g = self.lock(host);
            let list = self.list(host, 0);
            let cap = list.len() - 1;
            let count = (list[0].load(Ordering::Relaxed) as usize).min(cap);
            if count < cap {
                list[count + 1].store(orphan, Ordering::Relaxed);
                list[0].store(count as u32 + 1, Ordering::Release);
            } else if let Some(h) = vectors.row(host as u64) {
                let victim = (1..=count)
                    .filter(|&i| inbound[list[i].load(Ordering::Relaxed) as usize] > 1)
                    .max_by(|&a, &b| {
                        let d = |i: usize| {
                            let n = list[i].load(Ordering::Relaxed) as u64;
                            vectors.row(n).map_or(f32::INFINITY, |r| distance(h, r))
                        };
                        d(a).total_cmp(&d(b))
                    });
                if let Some(i) = victim {
                    inbound[list[i].load(Ordering::Relaxed) as usize] -= 1;
                    list[i].store(orphan, Ordering::Release);
                } else {
                    continue;
                }
            }
            inbound[orphan as usize] += 1;
        }
    }

    /// Adds `new` to the list of `target` on `level`, pruning the list when it is full.
    fn link_back(&self, vectors: &Vectors, target: u32, new: u32, dist: f32, level: usize) {
        let _g = self.lock(target);
        let list = self.list(target, level);
        let cap = list.len() - 1;
        let count = (list[0].load(Ordering::Relaxed) as usize).min(cap);
        if list[1..=count]
            .iter()
            .any(|a| a.load(Ordering::Relaxed) == new)
        {
            return;
        }
        if count < cap {
            list[count + 1].store(new, Ordering::Relaxed);
            list[0].store(count as u32 + 1, Ordering::Release);
            return;
        }
        let Some(t) = vectors.row(target as u64) else {
            return;
        };
        let mut candidates: Vec<Near> = list[1..=count]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter_map(|n| {
                vectors.row(n as u64).map(|r| Near {
                    dist: distance(t, r),
                    node: n,
                })
            })
            .collect();
        candidates.push(Near { dist, node: new });
        candidates.sort_unstable();
        let keep = self.select(vectors, &candidates, cap);
        for (slot, c) in list[1..].iter().zip(&keep) {
            slot.store(c.node, Ordering::Relaxed);
        }
        list[0].store(keep.len() as u32, Ordering::Release);
    }

    /// The neighbour-selection heuristic: going from the nearest, keep a candidate only if it is
    /// nearer to the base than to every candidate kept so far. `candidates` is sorted.
    fn select(&self, vectors: &Vectors, candidates: &[Near], m: usize) -> Vec<Near> {
        if candidates.len() <= m {
            return candidates.to_vec();
        }
        let mut kept: Vec<(Near, &[f32])> = Vec::with_capacity(m);
        for &c in candidates {
            if kept.len() >= m {
                break;
            }
            let Some(row) = vectors.row(c.node as u64) else {
                continue;
            };
            if kept.iter().all(|(_, r)| distance(row, r) >= c.dist) {
                kept.push((c, row));
            }
        }
        kept.into_iter().map(|(c, _)| c).collect()
    }

    /// Moves from `cur` to nearer neighbours on `level` until none is nearer.
    fn greedy<S: Space + ?Sized>(
        &self,
        space: &S,
        q: &S::Query,
        mut cur: Near,
        level: usize,
    ) -> Near {
        let mut ids = Vec::with_capacity(self.m);
        loop {
            let mut moved = false;
            self.neighbours(cur.node, level, &mut ids);
            for &n in &ids {
                if let Some(d) = space.distance(q, n)
                    && d < cur.dist
                {
                    cur = Near { dist: d, node: n };
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// The `ef` nearest nodes on `level` that `accept` takes, reached from `eps`; sorted.
    fn search_layer<S: Space + ?Sized>(
        &self,
        space: &S,
        q: &S::Query,
        eps: &[Near],
        ef: usize,
        level: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Near> {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            s.begin(self.levels.len());
            for &e in eps {
                if s.visit(e.node) {
                    s.candidates.push(Reverse(e));
                    if accept(e.node) {
                        s.found.push(e);
                    }
                }
            }
            while s.found.len() > ef {
                s.found.pop();
            }
            while let Some(Reverse(c)) = s.candidates.pop() {
                if s.found.len() >= ef && s.found.peek().is_some_and(|w| c.dist > w.dist) {
                    break;
                }
                let mut ids = std::mem::take(&mut s.ids);
                self.neighbours(c.node, level, &mut ids);
                ids.retain(|&n| s.visit(n));
                // Rows are far apart in memory: keep the next few loading while one is scored.
                for &n in ids.iter().take(PREFETCH_AHEAD) {
                    space.prefetch(n);
                }
                for (j, &n) in ids.iter().enumerate() {
                    if let Some(&next) = ids.get(j + PREFETCH_AHEAD) {
                        space.prefetch(next);
                    }
                    let Some(d) = space.distance(q, n) else {
                        continue;
                    };
                    let worst = s.found.peek().map_or(f32::INFINITY, |w| w.dist);
                    if s.found.len() < ef || d < worst {
                        let near = Near { dist: d, node: n };
                        s.candidates.push(Reverse(near));
                        if accept(n) {
                            s.found.push(near);
                            if s.found.len() > ef {
                                s.found.pop();
                            }
                        }
                    }
                }
                s.ids = ids;
            }
            let mut out: Vec<Near> = s.found.drain().collect();
            out.sort_unstable();
            out
        })
    }

    /// The `k` nodes nearest to `q` among those `accept` takes, searching level 0 with `ef`
    /// candidates: `(node, distance)`, nearest first.
    pub fn search<S: Space + ?Sized>(
        &self,
        space: &S,
        q: &S::Query,
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        let entry = self.entry.load(Ordering::Acquire);
        if entry == EMPTY || k == 0 {
            return Vec::new();
        }
        let (ep, top) = (entry as u32, (entry >> 32) as usize);
        let Some(dist) = space.distance(q, ep) else {
            return Vec::new();
        };
        let mut cur = Near { dist, node: ep };
        for lc in (1..=top).rev() {
            cur = self.greedy(space, q, cur, lc);
        }
        let found = self.search_layer(space, q, &[cur], ef.max(k), 0, accept);
        found
            .into_iter()
            .take(k)
            .map(|n| (n.node, n.dist))
            .collect()
    }

    /// The graph's file: nodes below `covers` only (rows past it may be mid-insert).
    pub fn encode(&self, covers: u64) -> Vec<u8> {
        let rows = (covers as usize).min(self.levels.len());
        let mut entry = self.entry.load(Ordering::Acquire);
        if entry != EMPTY && entry as u32 as usize >= rows {
            // The entry is a node being inserted: take a highest node below `rows`.
            entry = (0..rows)
                .filter(|&i| self.levels[i] != NO_LEVEL)
                .max_by_key(|&i| (self.levels[i], std::cmp::Reverse(i)))
                .map_or(EMPTY, |i| (self.levels[i] as u64) << 32 | i as u64);
        }
        let mut out = Vec::with_capacity(FILE_HEADER + rows * (1 + 2 * (self.m + 1)));
        out.extend_from_slice(FILE_MAGIC);
        out.extend_from_slice(&FILE_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.m as u32).to_le_bytes());
        out.extend_from_slice(&(entry as u32).to_le_bytes());
        out.extend_from_slice(&((entry >> 32) as u32).to_le_bytes());
        out.extend_from_slice(&(rows as u64).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&self.levels[..rows]);
        let mut ids = Vec::new();
        for node in 0..rows {
            let level = self.levels[node];
            if level == NO_LEVEL {
                continue;
            }
            for lc in 0..=level as usize {
                self.neighbours(node as u32, lc, &mut ids);
                ids.retain(|&n| (n as usize) < rows && self.levels[n as usize] != NO_LEVEL);
                ids.sort_unstable();
                ids.dedup();
                put_varint(&mut out, ids.len() as u32);
                // The first id (its gap from 0), then the gaps.
                let mut prev = 0;
                for &n in &ids {
                    put_varint(&mut out, n - prev);
                    prev = n;
                }
            }
        }
        out
    }

    /// Reads a graph written by [`Graph::encode`]; `None` if it is not one with these parameters
    /// or is not consistent (the caller rebuilds the graph from the rows).
    pub fn decode(bytes: &[u8], m: usize, ef_construction: usize) -> Option<Graph> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != FILE_MAGIC {
            return None;
        }
        let version = r.u32()?;
        if !(version == 1 || version == FILE_VERSION) || r.u32()? as usize != m {
            return None;
        }
        let (entry_node, entry_level) = (r.u32()?, r.u32()?);
        let rows = usize::try_from(r.u64()?).ok()?;
        r.u64()?;
        let levels = r.take(rows)?.to_vec();
        let mut g = Graph::new(m, ef_construction);
        if g.m != m || rows > u32::MAX as usize {
            return None;
        }
        let nodes: Vec<u32> = (0..rows as u32)
            .filter(|&i| levels[i as usize] != NO_LEVEL)
            .collect();
        if nodes
            .iter()
            .any(|&i| levels[i as usize] as usize > MAX_LEVEL)
        {
            return None;
        }
        g.resize(rows);
        for &node in &nodes {
            let level = levels[node as usize] as usize;
            g.levels[node as usize] = level as u8;
            if level > 0 {
                g.upper_at[node as usize] = u32::try_from(g.upper.len()).ok()?;
                let slots = level * (m + 1);
                g.upper
                    .resize_with(g.upper.len() + slots, || AtomicU32::new(0));
            }
        }
        for &node in &nodes {
            for lc in 0..=levels[node as usize] as usize {
                let list = g.list(node, lc);
                let n = if version == 1 { r.u32()? } else { r.varint()? } as usize;
                if n >= list.len() {
                    return None;
                }
                let mut prev: Option<u32> = None;
                for slot in &list[1..=n] {
                    let id = if version == 1 {
                        r.u32()?
                    } else {
                        // The first id, then gaps of at least 1: strictly increasing.
                        let v = r.varint()?;
                        match prev {
                            None => v,
                            Some(p) if v > 0 => p.checked_add(v)?,
                            Some(_) => return None,
                        }
                    };
                    prev = Some(id);
                    let ok = (id as usize) < rows
                        && levels[id as usize] != NO_LEVEL
                        && levels[id as usize] as usize >= lc;
                    if !ok {
                        return None;
                    }
                    slot.store(id, Ordering::Relaxed);
                }
                list[0].store(n as u32, Ordering::Relaxed);
            }
        }
        if r.at != bytes.len() {
            return None;
        }
        let entry = if nodes.is_empty() {
            EMPTY
        } else {
            let ok =
                (entry_node as usize) < rows && levels[entry_node as usize] as u32 == entry_level;
            if !ok {
                return None;
            }
            (entry_level as u64) << 32 | entry_node as u64
        };
        g.entry = AtomicU64::new(entry);
        g.nodes = AtomicUsize::new(nodes.len());
        Some(g)
    }
}

/// A level drawn from the exponential distribution with scale 1 / ln m, from a hash of `doc`.
fn draw_level(doc: u32, m: usize) -> usize {
    let mut z = (doc as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // Uniform in (0, 1].
    let u = ((z >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let level = -u.ln() / (m as f64).ln();
    (level as usize).min(MAX_LEVEL)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// An unsigned LEB128 varint of at most 5 bytes that fits a u32.
    fn varint(&mut self) -> Option<u32> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = *self.take(1)?.first()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(v).ok();
            }
        }
        None
    }
}

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, low bits first).
fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors around `clusters` random centres, deterministic.
    fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % clusters];
                let mut v: Vec<f32> = c.iter().map(|x| x + 0.6 * next()).collect();
                let norm = dot(&v, &v).sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect()
    }

    fn exact(rows: &[Vec<f32>], q: &[f32], k: usize, accept: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let mut all: Vec<Near> = (0..rows.len() as u32)
            .filter(|&i| accept(i))
            .map(|i| Near {
                dist: distance(q, &rows[i as usize]),
                node: i,
            })
            .collect();
        all.sort_unstable();
        all.into_iter().take(k).map(|n| n.node).collect()
    }

    fn build(rows: &[Vec<f32>], vectors: &Vectors, parallel: bool) -> Graph {
        build_with(rows, vectors, parallel, None)
    }

    fn codes_of(rows: &[Vec<f32>], vectors: &Vectors) -> Codes {
        let mut codes = Codes::new(rows[0].len());
        let (c, s) = Codes::encode(vectors, 0, rows.len());
        codes.append(c, s);
        codes
    }

    fn build_with(
        rows: &[Vec<f32>],
        vectors: &Vectors,
        parallel: bool,
        codes: Option<&Codes>,
    ) -> Graph {
        let mut g = Graph::new(12, 100);
        let added = g.add_nodes(0..rows.len() as u32);
        if parallel {
            use rayon::prelude::*;
            added.par_iter().for_each(|&d| g.insert(vectors, codes, d));
        } else {
            added.iter().for_each(|&d| g.insert(vectors, codes, d));
        }
        g.link_orphans(vectors);
        g
    }

    fn recall(
        g: &Graph,
        rows: &[Vec<f32>],
        v: &Vectors,
        queries: &[Vec<f32>],
        accept: &dyn Fn(u32) -> bool,
    ) -> f64 {
        let mut hit = 0;
        for q in queries {
            let truth = exact(rows, q, 10, accept);
            let got = g.search(v, q, 10, 64, accept);
            assert!(got.iter().all(|(n, _)| accept(*n)));
            hit += got.iter().filter(|(n, _)| truth.contains(n)).count();
        }
        hit as f64 / (queries.len() * 10) as f64
    }

    #[test]
    fn recall_against_brute_force() {
        let rows = clustered(4000, 32, 40, 1);
        let queries = clustered(100, 32, 40, 2);
        let v = Vectors::for_test(&rows);
        let codes = codes_of(&rows, &v);
        for (parallel, codes) in [(false, None), (true, None), (true, Some(&codes))] {
            let g = build_with(&rows, &v, parallel, codes);
            assert_eq!(g.len(), rows.len());
            let by = if codes.is_some() { "codes" } else { "rows" };
            let all = recall(&g, &rows, &v, &queries, &|_| true);
            assert!(all >= 0.95, "parallel {parallel}, by {by}: recall {all}");
            // A filter keeping a third of the nodes.
            let third = recall(&g, &rows, &v, &queries, &|n| n % 3 == 0);
            assert!(
                third >= 0.95,
                "parallel {parallel}, by {by}: filtered recall {third}"
            );
        }
    }

    #[test]
    fn walking_by_codes_and_rescoring_keeps_recall() {
        let rows = clustered(4000, 48, 40, 5);
        let queries = clustered(100, 48, 40, 6);
        let v = Vectors::for_test(&rows);
        let g = build(&rows, &v, true);
        let codes = codes_of(&rows, &v);
        for keep in [1u32, 3] {
            let accept = |n: u32| n.is_multiple_of(keep);
            let (mut by_codes, mut by_rows) = (0, 0);
            for q in &queries {
                let truth = exact(&rows, q, 10, &accept);
                let qc = codes.query(q);
                let mut got: Vec<Near> = g
                    .search(&codes, &qc, 42, 64, &accept)
                    .into_iter()
                    .map(|(node, _)| Near {
                        dist: distance(q, &rows[node as usize]),
                        node,
                    })
                    .collect();
                got.sort_unstable();
                assert!(got.iter().all(|n| accept(n.node)));
                by_codes += got
                    .iter()
                    .take(10)
                    .filter(|n| truth.contains(&n.node))
                    .count();
                let plain = g.search(&v, q, 10, 64, &accept);
                by_rows += plain.iter().filter(|(n, _)| truth.contains(n)).count();
            }
            let (by_codes, by_rows) = (by_codes as f64 / 1000.0, by_rows as f64 / 1000.0);
            assert!(
                by_codes >= 0.9 && by_codes >= by_rows - 0.01,
                "keep 1/{keep}: by codes {by_codes}, by rows {by_rows}"
            );
        }
    }

    #[test]
    fn lists_respect_their_caps_and_levels() {
        let rows = clustered(3000, 16, 10, 3);
        let v = Vectors::for_test(&rows);
        let g = build(&rows, &v, true);
        let mut ids = Vec::new();
        for node in 0..rows.len() as u32 {
            let level = g.levels[node as usize] as usize;
            for lc in 0..=level {
                g.neighbours(node, lc, &mut ids);
                let cap = if lc == 0 { g.m0() } else { g.m };
                assert!(ids.len() <= cap && !ids.contains(&node));
                assert!(ids.iter().all(|&n| g.levels[n as usize] as usize >= lc));
            }
        }
        // Every node but the entry is named by some level-0 list.
        let mut named = vec![false; rows.len()];
        for node in 0..rows.len() as u32 {
            g.neighbours(node, 0, &mut ids);
            ids.iter().for_each(|&n| named[n as usize] = true);
        }
        let entry = g.entry.load(Ordering::Acquire) as u32;
        assert!((0..rows.len() as u32).all(|n| named[n as usize] || n == entry));
        // About 1/m of the nodes reach level 1.
        let upper = g.levels.iter().filter(|&&l| l != NO_LEVEL && l > 0).count();
        assert!((150..350).contains(&upper), "{upper} nodes above level 0");
    }

    #[test]
    fn file_round_trip_and_damage() {
        let rows = clustered(1500, 16, 10, 4);
        let queries = clustered(20, 16, 10, 5);
        let v = Vectors::for_test(&rows);
        let g = build(&rows, &v, false);
        let bytes = g.encode(rows.len() as u64);
        let back = Graph::decode(&bytes, 12, 100).expect("decodes");
        assert_eq!(back.len(), g.len());
        assert_eq!(back.encode(rows.len() as u64), bytes);
        for q in &queries {
            assert_eq!(
                back.search(&v, q, 10, 40, &|_| true),
                g.search(&v, q, 10, 40, &|_| true)
            );
        }
        // Another m, a cut file, an id out of range: refused.
        assert!(Graph::decode(&bytes, 16, 100).is_none());
        assert!(Graph::decode(&bytes[..bytes.len() - 2], 12, 100).is_none());
        let mut bad = bytes.clone();
        // The first list's count is one byte; its first id becomes `rows` (out of range).
        let first_id = FILE_HEADER + rows.len() + 1;
        let first_len = varint_len(&bytes[first_id..]);
        let mut out_of_range = Vec::new();
        put_varint(&mut out_of_range, rows.len() as u32);
        bad.splice(first_id..first_id + first_len, out_of_range);
        assert!(Graph::decode(&bad, 12, 100).is_none());
        // A repeated id (a gap of 0) and an overlong varint: refused.
        let mut zero_gap = bytes.clone();
        let second = first_id + first_len;
        zero_gap.splice(second..second + varint_len(&bytes[second..]), [0]);
        assert!(Graph::decode(&zero_gap, 12, 100).is_none());
        let mut overlong = bytes.clone();
        overlong.splice(first_id..first_id + first_len, [0xff; 6]);
        assert!(Graph::decode(&overlong, 12, 100).is_none());
        // Encoding a prefix keeps only the nodes below it.
        let half = Graph::decode(&g.encode(700), 12, 100).expect("prefix decodes");
        assert_eq!(half.len(), 700);
        let empty = Graph::new(12, 100);
        assert_eq!(
            Graph::decode(&empty.encode(0), 12, 100).map(|g| g.len()),
            Some(0)
        );
    }

    fn varint_len(bytes: &[u8]) -> usize {
        bytes.iter().position(|b| b & 0x80 == 0).unwrap() + 1
    }

    #[test]
    fn visit_marks_each_node_once_per_search() {
        let mut s = Scratch::default();
        for (rows, nodes) in [
            (130, vec![0, 63, 64, 129, 64, 0]),
            (1000, vec![999, 5, 999, 6]),
        ] {
            s.begin(rows);
            let fresh: Vec<bool> = nodes.iter().map(|&n| s.visit(n)).collect();
            let expect: Vec<bool> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| !nodes[..i].contains(n))
                .collect();
            assert_eq!(fresh, expect);
            // The next search starts with nothing visited.
            s.begin(rows);
            let again: Vec<bool> = nodes.iter().map(|&n| s.visit(n)).collect();
            assert_eq!(again, expect);
            s.begin(rows);
        }
        assert!(s.marks.iter().all(|&w| w == 0));
    }

    #[test]
    fn varints_round_trip() {
        let values = [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            1 << 21,
            (1 << 28) - 1,
            u32::MAX,
        ];
        let mut out = Vec::new();
        for &v in &values {
            put_varint(&mut out, v);
        }
        assert_eq!(out.len(), 1 + 1 + 1 + 2 + 2 + 3 + 4 + 4 + 5);
        let mut r = Reader { bytes: &out, at: 0 };
        for &v in &values {
            assert_eq!(r.varint(), Some(v));
        }
        assert_eq!(r.varint(), None);
        // More than 32 bits: refused.
        let mut r = Reader {
            bytes: &[0xff, 0xff, 0xff, 0xff, 0x1f],
            at: 0,
        };
        assert_eq!(r.varint(), None);
    }

    #[test]
    fn version_1_files_still_decode() {
        let rows = clustered(800, 16, 8, 7);
        let v = Vectors::for_test(&rows);
        let g = build(&rows, &v, false);
        let v2 = g.encode(rows.len() as u64);
        // Rewrite the version-2 file as version 1: the same header, lists of u32s.
        let mut r = Reader {
            bytes: &v2,
            at: FILE_HEADER + rows.len(),
        };
        let mut v1 = v2[..FILE_HEADER + rows.len()].to_vec();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        while r.at < v2.len() {
            let n = r.varint().unwrap();
            v1.extend_from_slice(&n.to_le_bytes());
            let mut id = 0;
            for _ in 0..n {
                id += r.varint().unwrap();
                v1.extend_from_slice(&id.to_le_bytes());
            }
        }
        let back = Graph::decode(&v1, 12, 100).expect("version 1 decodes");
        assert_eq!(back.encode(rows.len() as u64), v2);
        assert!(v2.len() < v1.len());
    }

    #[test]
    fn nan_rows_do_not_break_inserts_or_searches() {
        let mut rows = clustered(600, 8, 5, 6);
        rows[10] = vec![f32::NAN; 8];
        rows[20] = vec![f32::INFINITY; 8];
        let v = Vectors::for_test(&rows);
        let g = build(&rows, &v, true);
        assert_eq!(g.len(), rows.len());
        let got = g.search(&v, &rows[0], 5, 20, &|_| true);
        assert_eq!(got.first().map(|h| h.0), Some(0));
    }
}
