//! Exact top-k over posting lists: windowed MaxScore with block-max bounds.
//!
//! Documents are taken in windows of consecutive numbers ([`FIRST_WINDOW`] wide at first, then
//! doubling up to [`WINDOW`], so that a k-th score is known early). In each window a list's bound is the
//! query weight times the largest block maximum among its blocks there. Lists are ordered by
//! bound; the longest prefix whose bounds sum below the current k-th score is *non-essential*
//! (a document found only there cannot enter the top k); a window where every list is
//! non-essential is skipped without reading a posting. The essential lists are accumulated
//! term-at-a-time into a per-window array; each document found there is kept only while its
//! partial score plus the remaining bounds (refined by the probed block's maximum) can still
//! reach the k-th score, probing the non-essential lists from the largest bound down.
//!
//! Exactness: a surviving document's score is recomputed by separate cursors as the `f32` sum
//! of `query weight × doc weight` over the query's terms in ascending term order, which is
//! bit-identical to [`SparseVector::dot`]. Pruning compares `f64` sums of `f32` products scaled
//! by a relative slack that covers the rounding of an `f32` sum of that many non-negative
//! terms, so a bound never falls below a score. Bounds hold only when every weight is
//! non-negative; otherwise the caller turns pruning off and every document is scored.
//!
//! [`SparseVector::dot`]: crate::document::SparseVector::dot

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::segment::{Block, Postings};
use crate::docset::DocSet;
use crate::query::TopK;

/// Document numbers per window.
const WINDOW: usize = 4096;
/// Width of a segment's first window; each next one doubles up to [`WINDOW`].
const FIRST_WINDOW: usize = 256;
/// Marks an exhausted cursor.
const END: u64 = u64::MAX;
/// Up to this many postings in a segment's query lists, every posting is scored term at a time:
/// bounding only pays on long lists (on korquad-v1-dev's 128-term queries it cost 4× more).
pub(super) const EXHAUSTIVE: u64 = 1 << 16;

/// Work done by one search, for tests and tuning.
#[allow(dead_code, reason = "read by tests and measurements")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SearchStats {
    /// Postings in the query terms' lists, over all segments.
    pub total: u64,
    /// Postings in the blocks the search read (a block counts whole once a cursor reads it).
    pub decoded: u64,
    /// Postings the search read, one by one (binary-search probes included).
    pub visited: u64,
    /// Documents whose exact score was computed.
    pub scored: u64,
}

/// The state of one search shared by its segments: the top k, the k-th score, scratch space.
pub(super) struct Collector<'a> {
    allow: &'a DocSet,
    k: usize,
    top: TopK,
    /// Bit patterns of the best k scores (all positive, so bits order like values).
    kth: BinaryHeap<Reverse<u32>>,
    slack: f64,
    /// Partial scores of the window's documents, and which of them were found.
    acc: Vec<f64>,
    seen: Vec<u64>,
    /// Exact scores of the window's documents when every posting is scored.
    sums: Vec<f32>,
    pub stats: SearchStats,
}

impl<'a> Collector<'a> {
    pub fn new(k: usize, nq: usize, allow: &'a DocSet) -> Self {
        Collector {
            allow,
            k,
            top: TopK::new(k),
            kth: BinaryHeap::with_capacity(k + 1),
            // An f32 sum of n non-negative terms is within a factor (1 + u)^n of the exact sum
            // (u = 2^-24); 2^-23 per term plus a margin also covers the f64 bound sums.
            slack: 1.0 + (nq as f64 + 4.0) * f64::powi(2.0, -23),
            acc: Vec::new(),
            seen: Vec::new(),
            sums: Vec::new(),
            stats: SearchStats::default(),
        }
    }

    /// The score a new document must reach: the k-th best so far, or 0 (hits score above 0).
    fn theta(&self) -> f64 {
        match self.kth.peek() {
            Some(Reverse(bits)) if self.kth.len() >= self.k => f64::from(f32::from_bits(*bits)),
            _ => 0.0,
        }
    }

    /// Whether a document whose score is at most `bound` cannot enter the top k.
    #[inline]
    fn hopeless(&self, bound: f64) -> bool {
        let b = bound * self.slack;
        b <= 0.0 || b < self.theta()
    }

    fn offer(&mut self, doc: u64, score: f32) {
        self.stats.scored += 1;
        if score > 0.0 {
            self.top.push(doc, score);
            let bits = score.to_bits();
            if self.kth.len() < self.k {
                self.kth.push(Reverse(bits));
            } else if let Some(mut least) = self.kth.peek_mut()
                && bits > least.0
            {
                *least = Reverse(bits);
            }
        }
    }

    pub fn into_sorted(self) -> (Vec<(u64, f32)>, SearchStats) {
        (self.top.into_sorted(), self.stats)
    }
}

/// A forward-only position in one posting list.
#[derive(Clone)]
pub(super) struct Cursor<P> {
    p: P,
    q: f32,
    nblocks: usize,
    blk: usize,
    /// Block `blk`'s metadata.
    cur: Block,
    end: usize,
    pos: usize,
    /// Current document (`END` when exhausted); valid after `seek` and `next`.
    doc: u64,
    counted: usize,
    decoded: u64,
    visited: u64,
}

impl<P: Postings> Cursor<P> {
    /// A cursor before the first posting of `p`, for a query term of weight `q`.
    pub fn new(p: P, q: f32) -> Self {
        let mut c = Cursor {
            q,
            nblocks: p.nblocks(),
            blk: 0,
            cur: Block::default(),
            end: 0,
            pos: 0,
            doc: END,
            counted: usize::MAX,
            decoded: 0,
            visited: 0,
            p,
        };
        c.load(0);
        c
    }

    fn len(&self) -> usize {
        self.p.len()
    }

    /// Moves to the start of block `b` without reading a posting.
    fn load(&mut self, b: usize) {
        self.blk = b;
        if b < self.nblocks {
            self.cur = self.p.block(b);
            self.pos = self.cur.start as usize;
            self.end = if b + 1 < self.nblocks {
                self.p.block(b + 1).start as usize
            } else {
                self.p.len()
            };
        }
    }

    /// Offset of posting `i` of the current block from its base.
    #[inline]
    fn off(&self, i: usize) -> u32 {
        self.p.off(&self.cur, i)
    }

    /// Reads the document at `pos`, counting the block as decoded the first time.
    #[inline]
    fn read(&mut self) {
        if self.blk >= self.nblocks || self.pos >= self.end {
            self.doc = END;
            return;
        }
        if self.counted != self.blk {
            self.counted = self.blk;
            self.decoded += (self.end - self.pos) as u64;
        }
        self.visited += 1;
        let off = self.off(self.pos);
        self.doc = self.cur.base.saturating_add(u64::from(off));
    }

    #[inline]
    fn next(&mut self) {
        self.pos += 1;
        if self.pos >= self.end {
            self.load(self.blk + 1);
        }
        self.read();
    }

    /// Skips whole blocks that end before `target`; returns the maximum weight of the block
    /// that may hold it, or `None` when no block does.
    fn shallow(&mut self, target: u64) -> Option<f32> {
        let mut b = self.blk;
        while b < self.nblocks && self.p.block(b).last < target {
            b += 1;
        }
        if b != self.blk {
            self.load(b);
        }
        (b < self.nblocks && self.cur.base <= target).then_some(self.cur.max)
    }

    /// Skips blocks that end before `target`; returns the first document the list may hold at
    /// or after `target` (`None` when exhausted).
    fn shallow_start(&mut self, target: u64) -> Option<u64> {
        self.shallow(target);
        (self.blk < self.nblocks).then(|| self.cur.base.max(target))
    }

    /// Largest weight in the blocks from the current one that start at or before `upto`.
    fn max_upto(&self, upto: u64) -> f32 {
        let mut m = 0.0f32;
        let mut b = self.blk;
        while b < self.nblocks {
            let blk = self.p.block(b);
            if blk.base > upto {
                break;
            }
            m = m.max(blk.max);
            b += 1;
        }
        m
    }

    /// Moves to the first posting at or after `target`.
    fn seek(&mut self, target: u64) {
        if self.shallow(target).is_none() {
            // No block holds `target`: the next posting is the next block's first.
            self.read();
            return;
        }
        let want = target.saturating_sub(self.cur.base);
        // Gallop from the current posting (targets are usually near), then bisect.
        let (mut lo, mut step) = (self.pos, 1);
        let mut hi = loop {
            let probe = lo + step - 1;
            if probe >= self.end {
                break self.end;
            }
            self.visited += 1;
            if u64::from(self.off(probe)) >= want {
                break probe;
            }
            lo = probe + 1;
            step *= 2;
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.visited += 1;
            if u64::from(self.off(mid)) < want {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.pos = lo;
        if self.pos >= self.end {
            self.load(self.blk + 1);
        }
        self.read();
    }

    /// `q ×` the weight at the current posting.
    fn contribution(&self) -> f32 {
        self.q * self.p.weight(self.pos)
    }

    /// Calls `f(doc, contribution)` for each posting from the current one through document
    /// `upto` and leaves the cursor on the next: `next` in a loop, with the position in a
    /// register.
    #[inline]
    fn drain(&mut self, upto: u64, mut f: impl FnMut(u64, f32)) {
        while self.doc <= upto {
            let (base, end) = (self.cur.base, self.end);
            let (mut pos, mut doc, mut read) = (self.pos, self.doc, 0);
            loop {
                f(doc, self.q * self.p.weight(pos));
                pos += 1;
                if pos >= end {
                    break;
                }
                read += 1;
                doc = base.saturating_add(u64::from(self.off(pos)));
                if doc > upto {
                    (self.pos, self.doc) = (pos, doc);
                    self.visited += read;
                    return;
                }
            }
            self.visited += read;
            self.pos = end - 1;
            self.next();
        }
    }
}

/// Scores every document of the lists: term at a time into `f32` sums per window, in query term
/// order, so each score is bit-identical to [`SparseVector::dot`].
///
/// [`SparseVector::dot`]: crate::document::SparseVector::dot
fn score_all<P: Postings>(mut lists: Vec<Cursor<P>>, col: &mut Collector<'_>) {
    col.sums.resize(WINDOW, 0.0);
    col.seen.resize(WINDOW / 64, 0);
    let mut ws = 0u64;
    loop {
        let start = lists
            .iter_mut()
            .map(|c| {
                c.seek(ws);
                c.doc
            })
            .min()
            .unwrap_or(END);
        if start == END {
            break;
        }
        ws = start;
        let we = ws.saturating_add(WINDOW as u64 - 1).min(END - 1);
        let (sums, seen) = (&mut col.sums, &mut col.seen);
        for c in &mut lists {
            c.drain(we, |doc, x| {
                let at = (doc - ws) as usize;
                if let (Some(a), Some(s)) = (sums.get_mut(at), seen.get_mut(at / 64)) {
                    *a += x;
                    *s |= 1 << (at % 64);
                }
            });
        }
        for w in 0..col.seen.len() {
            let mut bits = std::mem::take(&mut col.seen[w]);
            while bits != 0 {
                let at = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let score = col.sums.get_mut(at).map_or(0.0, std::mem::take);
                let doc = ws + at as u64;
                if col.allow.contains(doc) {
                    col.offer(doc, score);
                }
            }
        }
        if we == END - 1 {
            break;
        }
        ws = we + 1;
    }
    col.stats.decoded += lists.iter().map(|c| c.decoded).sum::<u64>();
}

/// Searches one segment, adding its hits to `col`. `lists` holds one cursor per query term the
/// segment has, in query (ascending term) order. `prune` must be false unless every query and
/// document weight is non-negative.
pub(super) fn search_lists<P: Postings + Clone>(
    lists: Vec<Cursor<P>>,
    prune: bool,
    exhaustive: u64,
    col: &mut Collector<'_>,
) {
    let total = lists.iter().map(|c| c.len() as u64).sum::<u64>();
    col.stats.total += total;
    if total <= exhaustive {
        return score_all(lists, col);
    }
    col.acc.resize(WINDOW, 0.0);
    col.seen.resize(WINDOW / 64, 0);
    let n = lists.len();
    // `walk` cursors find and bound candidates; `exact` ones score survivors in term order.
    let mut exact = lists.clone();
    let mut walk = lists;
    let mut order: Vec<usize> = (0..n).collect();
    // Each list's bound within the window, and the bounds of lists order[..=i] summed.
    let mut wb = vec![0.0f32; n];
    let mut prefix = vec![0.0f64; n];
    let (mut ws, mut width) = (0u64, FIRST_WINDOW);
    while let Some(start) = walk.iter_mut().filter_map(|c| c.shallow_start(ws)).min() {
        ws = start;
        // Small first windows establish a k-th score early; later ones amortize the set-up.
        let we = ws.saturating_add(width as u64 - 1).min(END - 1);
        width = (width * 2).min(WINDOW);
        let mut e = 0;
        if prune {
            for (b, c) in wb.iter_mut().zip(&walk) {
                *b = c.q * c.max_upto(we);
            }
            order.sort_unstable_by(|&a, &b| wb[a].total_cmp(&wb[b]));
            let mut s = 0.0f64;
            for (p, &i) in prefix.iter_mut().zip(&order) {
                s += f64::from(wb[i]);
                *p = s;
            }
            e = prefix.iter().take_while(|&&s| col.hopeless(s)).count();
        }
        if e < n {
            // Essential lists, term at a time, into the window's partial scores.
            for &i in &order[e..] {
                let c = &mut walk[i];
                c.seek(ws);
                let (acc, seen) = (&mut col.acc, &mut col.seen);
                c.drain(we, |doc, x| {
                    let at = (doc - ws) as usize;
                    if let (Some(a), Some(s)) = (acc.get_mut(at), seen.get_mut(at / 64)) {
                        *a += f64::from(x);
                        *s |= 1 << (at % 64);
                    }
                });
            }
            let rest = if e > 0 { prefix[e - 1] } else { 0.0 };
            for w in 0..col.seen.len() {
                let mut bits = std::mem::take(&mut col.seen[w]);
                while bits != 0 {
                    let at = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let partial = col.acc.get_mut(at).map_or(0.0, std::mem::take);
                    let doc = ws + at as u64;
                    if !col.allow.contains(doc) || (prune && col.hopeless(partial + rest)) {
                        continue;
                    }
                    if let Some(partial) = probe(&mut walk, &order[..e], &prefix, doc, partial, col)
                        && !(prune && col.hopeless(partial))
                    {
                        let mut score = 0.0f32;
                        for c in &mut exact {
                            c.seek(doc);
                            if c.doc == doc {
                                score += c.contribution();
                            }
                        }
                        col.offer(doc, score);
                    }
                }
            }
        }
        if we == END - 1 {
            break;
        }
        ws = we + 1;
    }
    col.stats.decoded += walk.iter().chain(&exact).map(|c| c.decoded).sum::<u64>();
    col.stats.visited += walk.iter().chain(&exact).map(|c| c.visited).sum::<u64>();
}

/// Adds the non-essential lists' contributions at `doc` to `partial`, largest bound first;
/// `None` as soon as the document cannot reach the k-th score.
fn probe<P: Postings>(
    walk: &mut [Cursor<P>],
    non_essential: &[usize],
    prefix: &[f64],
    doc: u64,
    mut partial: f64,
    col: &Collector<'_>,
) -> Option<f64> {
    for (j, &i) in non_essential.iter().enumerate().rev() {
        let rest = if j > 0 { prefix[j - 1] } else { 0.0 };
        if col.hopeless(partial + prefix[j]) {
            return None;
        }
        let c = &mut walk[i];
        let Some(bmax) = c.shallow(doc) else { continue };
        if col.hopeless(partial + rest + f64::from(c.q * bmax)) {
            return None;
        }
        c.seek(doc);
        if c.doc == doc {
            partial += f64::from(c.contribution());
        }
    }
    Some(partial)
}
