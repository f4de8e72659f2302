//! Posting lists in memory and in immutable segment files (`seg-<id>.spx`): the writer, the
//! validating reader, and the [`Postings`] view that search walks over both.
//!
//! A posting list is cut into blocks of at most [`BLOCK`] postings. Each block records its first
//! and last document, its largest weight and where it starts; a posting stores its document as an
//! offset from its block's first document, so a block also ends early where that offset would
//! not fit a `u32`. In a file the offsets are bit-packed, each block at the width of its last
//! offset, and weights are `f32`: both fixed-width within a block, so a cursor reads any posting
//! in place. Version-1 files, with every offset a `u32`, are still read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

/// Most postings in one block.
pub(super) const BLOCK: usize = 128;
const SEG_MAGIC: &[u8; 8] = b"HDBSPSEG";
/// Version written; version 1 (unpacked offsets) is still read.
const SEG_VERSION: u32 = 2;
const HEADER: usize = 16;
const DICT_ENTRY: usize = 24;
const BLOCK_ENTRY: usize = 24;
/// Footer fields (48 bytes) and the CRC-32 (4 bytes).
const FOOTER: usize = 52;

/// One block's metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Block {
    /// First document in the block; postings store `doc - base`.
    pub base: u64,
    /// Last document in the block.
    pub last: u64,
    /// Largest weight in the block.
    pub max: f32,
    /// Index of the block's first posting within the list.
    pub start: u32,
    /// In a file: byte position of the block's offsets within the list's offsets, and their
    /// width in bits.
    pub pos: u32,
    pub bits: u32,
}

impl Block {
    /// Bytes that `n` offsets of this block's width take.
    fn packed_len(&self, n: usize) -> Option<usize> {
        n.checked_mul(self.bits as usize).map(|b| b.div_ceil(8))
    }
}

/// Bits needed for offsets up to `span`.
fn width(span: u32) -> u32 {
    u32::BITS - span.leading_zeros()
}

/// Appends `offs` to `out`, `bits` each, least significant bit first, ending on a whole byte.
fn pack(offs: &[u32], bits: u32, out: &mut Vec<u8>) {
    let (mut acc, mut n) = (0u64, 0u32);
    for &o in offs {
        acc |= u64::from(o) << n;
        n += bits;
        while n >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            n -= 8;
        }
    }
    if n > 0 {
        out.push(acc as u8);
    }
}

/// The `bits`-wide value at bit `bit` of `b` (bits past the end read as 0).
#[inline]
fn unpack(b: &[u8], bit: usize, bits: u32) -> u32 {
    let at = bit / 8;
    let word = match b.get(at..at.wrapping_add(8)) {
        Some(c) => u64::from_le_bytes(c.try_into().unwrap_or_default()),
        None => {
            let mut c = [0u8; 8];
            let tail = b.get(at..).unwrap_or_default();
            let n = tail.len().min(8);
            c[..n].copy_from_slice(&tail[..n]);
            u64::from_le_bytes(c)
        }
    };
    ((word >> (bit % 8)) & ((1u64 << bits) - 1)) as u32
}

/// Read access to one term's posting list, in memory or in a mapped file.
pub(super) trait Postings {
    fn len(&self) -> usize;
    fn nblocks(&self) -> usize;
    /// Block `b`, or a default block when out of range.
    fn block(&self, b: usize) -> Block;
    /// Offset of posting `i`, which lies in block `blk`, from the block's base (0 when out of
    /// range).
    fn off(&self, blk: &Block, i: usize) -> u32;
    /// Weight of posting `i` (0 when out of range).
    fn weight(&self, i: usize) -> f32;
}

/// A posting list being built in memory; documents must be appended in increasing order.
#[derive(Clone, Debug, Default)]
pub(super) struct MemTerm {
    offs: Vec<u32>,
    weights: Vec<f32>,
    blocks: Vec<Block>,
    max: f32,
}

impl MemTerm {
    /// Appends a posting. `doc` must exceed the list's last document (the caller checks).
    pub fn push(&mut self, doc: u64, weight: f32) {
        let n = self.offs.len();
        let fits = self.blocks.last().and_then(|b| {
            let full = n - b.start as usize >= BLOCK;
            let off = u32::try_from(doc.checked_sub(b.base)?).ok()?;
            (!full).then_some(off)
        });
        match (fits, self.blocks.last_mut()) {
            (Some(off), Some(b)) => {
                b.last = doc;
                b.max = b.max.max(weight);
                self.offs.push(off);
            }
            _ => {
                self.blocks.push(Block {
                    base: doc,
                    last: doc,
                    max: weight,
                    // A list never reaches 2^32 postings in practice; the writer rejects it.
                    start: u32::try_from(n).unwrap_or(u32::MAX),
                    pos: 0,
                    bits: 0,
                });
                self.offs.push(0);
            }
        }
        self.max = if n == 0 { weight } else { self.max.max(weight) };
        self.weights.push(weight);
    }

    pub fn clear(&mut self) {
        self.offs.clear();
        self.weights.clear();
        self.blocks.clear();
        self.max = 0.0;
    }

    /// Appends every posting of `p` whose document satisfies `keep`.
    pub fn extend_from<P: Postings>(&mut self, p: &P, keep: impl Fn(u64) -> bool) {
        for b in 0..p.nblocks() {
            let blk = p.block(b);
            let end = if b + 1 < p.nblocks() {
                p.block(b + 1).start as usize
            } else {
                p.len()
            };
            for i in blk.start as usize..end {
                let doc = blk.base.saturating_add(u64::from(p.off(&blk, i)));
                if keep(doc) {
                    self.push(doc, p.weight(i));
                }
            }
        }
    }
}

impl Postings for &MemTerm {
    fn len(&self) -> usize {
        self.offs.len()
    }
    fn nblocks(&self) -> usize {
        self.blocks.len()
    }
    fn block(&self, b: usize) -> Block {
        self.blocks.get(b).copied().unwrap_or_default()
    }
    fn off(&self, _: &Block, i: usize) -> u32 {
        self.offs.get(i).copied().unwrap_or(0)
    }
    fn weight(&self, i: usize) -> f32 {
        self.weights.get(i).copied().unwrap_or(0.0)
    }
}

/// One term's posting list inside a mapped segment.
#[derive(Clone, Copy)]
pub(super) struct DiskTerm<'a> {
    blocks: &'a [u8],
    /// The offsets and then the weights: offsets are read 8 bytes at a time, and the weights
    /// after them keep most reads near the end of the offsets on the fast path.
    data: &'a [u8],
    /// The tail of `data`.
    weights: &'a [u8],
    max: f32,
    version: u32,
}

impl DiskTerm<'_> {
    /// Bytes the list takes in the file.
    fn bytes(&self) -> usize {
        self.blocks.len() + self.data.len()
    }

    /// Bytes the offsets take.
    fn offs_len(&self) -> usize {
        self.data.len() - self.weights.len()
    }
}

/// Block entry `b` of `blocks` in the layout of segment `version` (a default block when out of
/// range).
#[inline]
fn block_entry(blocks: &[u8], b: usize, version: u32) -> Block {
    let Some(e) = b
        .checked_mul(BLOCK_ENTRY)
        .and_then(|at| blocks.get(at..))
        .and_then(|s| s.first_chunk::<BLOCK_ENTRY>())
    else {
        return Block::default();
    };
    let field = |o: usize| u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]);
    let base = u64::from(field(0)) | u64::from(field(4)) << 32;
    if version == 1 {
        let start = field(20);
        return Block {
            base,
            last: u64::from(field(8)) | u64::from(field(12)) << 32,
            max: f32::from_bits(field(16)),
            start,
            pos: start.saturating_mul(4),
            bits: 32,
        };
    }
    let span = field(8);
    Block {
        base,
        last: base.saturating_add(u64::from(span)),
        max: f32::from_bits(field(12)),
        start: field(16),
        pos: field(20),
        bits: width(span),
    }
}

impl Postings for DiskTerm<'_> {
    fn len(&self) -> usize {
        self.weights.len() / 4
    }
    fn nblocks(&self) -> usize {
        self.blocks.len() / BLOCK_ENTRY
    }
    #[inline]
    fn block(&self, b: usize) -> Block {
        block_entry(self.blocks, b, self.version)
    }
    #[inline]
    fn off(&self, blk: &Block, i: usize) -> u32 {
        // Out-of-range positions wrap to huge bit numbers, which read as 0.
        let k = i.wrapping_sub(blk.start as usize);
        let bit = (blk.pos as usize)
            .wrapping_mul(8)
            .wrapping_add(k.wrapping_mul(blk.bits as usize));
        unpack(self.data, bit, blk.bits)
    }
    fn weight(&self, i: usize) -> f32 {
        f32::from_bits(u32_at(self.weights, i.saturating_mul(4)))
    }
}

/// Little-endian `u32` at byte `at`, 0 when out of range.
#[inline]
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..)
        .and_then(|s| s.first_chunk::<4>())
        .map_or(0, |c| u32::from_le_bytes(*c))
}

/// Little-endian `u64` at byte `at`, 0 when out of range.
#[inline]
pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(|s| s.first_chunk::<8>())
        .map_or(0, |c| u64::from_le_bytes(*c))
}

/// Streams a new segment file: terms in increasing id order, then the dictionary and footer.
pub(super) struct SegmentWriter {
    path: PathBuf,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    pos: u64,
    dict: Vec<u8>,
    last_term: Option<u32>,
    postings: u64,
    min_doc: u64,
    max_doc: u64,
    min_weight: f32,
}

impl SegmentWriter {
    pub fn create(path: &Path) -> Result<SegmentWriter> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = SegmentWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            pos: 0,
            dict: Vec::new(),
            last_term: None,
            postings: 0,
            min_doc: u64::MAX,
            max_doc: 0,
            min_weight: f32::INFINITY,
        };
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(SEG_MAGIC);
        header.extend_from_slice(&SEG_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.pos += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Writes one term's list (terms in strictly increasing order; empty lists are skipped).
    pub fn add(&mut self, term: u32, t: &MemTerm) -> Result<()> {
        let (Some(first), Some(last)) = (t.blocks.first(), t.blocks.last()) else {
            return Ok(());
        };
        if self.last_term.is_some_and(|p| p >= term) {
            return Err(Error::invalid(format!(
                "sparse terms out of order at {term}"
            )));
        }
        let (Ok(count), Ok(nblocks)) = (u32::try_from(t.offs.len()), u32::try_from(t.blocks.len()))
        else {
            return Err(Error::invalid(format!("term {term} has too many postings")));
        };
        let mut buf = Vec::with_capacity(t.offs.len() * 8 + t.blocks.len() * BLOCK_ENTRY);
        let mut packed = Vec::with_capacity(t.offs.len() * 4);
        for (i, b) in t.blocks.iter().enumerate() {
            let end = t
                .blocks
                .get(i + 1)
                .map_or(t.offs.len(), |n| n.start as usize);
            // Offsets fit a u32 by construction (`MemTerm::push`).
            let span = u32::try_from(b.last - b.base).unwrap_or(u32::MAX);
            let Ok(pos) = u32::try_from(packed.len()) else {
                return Err(Error::invalid(format!("term {term} has too many postings")));
            };
            pack(&t.offs[b.start as usize..end], width(span), &mut packed);
            buf.extend_from_slice(&b.base.to_le_bytes());
            buf.extend_from_slice(&span.to_le_bytes());
            buf.extend_from_slice(&b.max.to_le_bytes());
            buf.extend_from_slice(&b.start.to_le_bytes());
            buf.extend_from_slice(&pos.to_le_bytes());
        }
        buf.extend_from_slice(&packed);
        buf.extend(t.weights.iter().flat_map(|w| w.to_le_bytes()));
        self.min_doc = self.min_doc.min(first.base);
        self.max_doc = self.max_doc.max(last.last);
        self.postings += u64::from(count);
        for w in &t.weights {
            self.min_weight = self.min_weight.min(*w);
        }
        self.last_term = Some(term);
        self.dict.extend_from_slice(&term.to_le_bytes());
        self.dict.extend_from_slice(&count.to_le_bytes());
        self.dict.extend_from_slice(&nblocks.to_le_bytes());
        self.dict.extend_from_slice(&t.max.to_le_bytes());
        self.dict.extend_from_slice(&self.pos.to_le_bytes());
        self.put(&buf)
    }

    /// Postings written so far.
    pub fn postings(&self) -> u64 {
        self.postings
    }

    /// Writes the dictionary and footer and fsyncs the file.
    pub fn finish(mut self) -> Result<()> {
        let dict_offset = self.pos;
        let dict = std::mem::take(&mut self.dict);
        self.put(&dict)?;
        let mut footer = Vec::with_capacity(FOOTER);
        footer.extend_from_slice(&dict_offset.to_le_bytes());
        footer.extend_from_slice(&((dict.len() / DICT_ENTRY) as u64).to_le_bytes());
        footer.extend_from_slice(&self.postings.to_le_bytes());
        footer.extend_from_slice(&self.min_doc.to_le_bytes());
        footer.extend_from_slice(&self.max_doc.to_le_bytes());
        footer.extend_from_slice(&self.min_weight.to_le_bytes());
        footer.extend_from_slice(&0u32.to_le_bytes());
        self.put(&footer)?;
        let crc = self.crc.clone().finalize();
        self.put(&crc.to_le_bytes())?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}

/// An open, validated segment file.
pub(super) struct Segment {
    pub id: u64,
    pub path: PathBuf,
    map: Mmap,
    dict_offset: usize,
    terms: usize,
    pub postings: u64,
    pub min_doc: u64,
    pub max_doc: u64,
    pub min_weight: f32,
    /// Layout version of the file.
    pub version: u32,
}

impl Segment {
    /// Maps `path` and checks magic, version, CRC and every structural invariant that search
    /// relies on, so a corrupt file is refused here rather than misread later.
    pub fn open(path: &Path, id: u64) -> Result<Segment> {
        let bad = |reason: String| Error::corrupted(path, reason);
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad("segment file listed in the manifest is missing".into()));
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < (HEADER + FOOTER) as u64 {
            return Err(bad(format!(
                "file is {len} bytes, shorter than header and footer"
            )));
        }
        // SAFETY: segment files are immutable once written; nothing maps them for writing.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let b: &[u8] = &map;
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body) != u32_at(crc, 0) {
            return Err(bad("checksum mismatch".into()));
        }
        if b.get(..8) != Some(&SEG_MAGIC[..]) {
            return Err(bad("bad magic".into()));
        }
        let version = u32_at(b, 8);
        if !(1..=SEG_VERSION).contains(&version) {
            return Err(bad(format!("unsupported version {version}")));
        }
        let f = b.len() - FOOTER;
        let dict_offset = u64_at(b, f);
        let terms = u64_at(b, f + 8);
        let dict_end = terms
            .checked_mul(DICT_ENTRY as u64)
            .and_then(|n| n.checked_add(dict_offset));
        if dict_offset < HEADER as u64 || dict_end != Some(f as u64) {
            return Err(bad("dictionary does not fit the file".into()));
        }
        let seg = Segment {
            id,
            path: path.to_path_buf(),
            dict_offset: dict_offset as usize,
            terms: terms as usize,
            postings: u64_at(b, f + 16),
            min_doc: u64_at(b, f + 24),
            max_doc: u64_at(b, f + 32),
            min_weight: f32::from_bits(u32_at(b, f + 40)),
            map,
            version,
        };
        seg.validate().map_err(bad)?;
        Ok(seg)
    }

    /// Checks the dictionary, the lists' layout and the footer's totals.
    fn validate(&self) -> Result<(), String> {
        if self.terms == 0 {
            return Err("segment has no terms".into());
        }
        let (mut pos, mut postings) = (HEADER as u64, 0u64);
        let (mut min_doc, mut max_doc, mut min_w) = (u64::MAX, 0u64, f32::INFINITY);
        let mut prev_term = None;
        for e in 0..self.terms {
            let at = self.dict_offset + e * DICT_ENTRY;
            let term = u32_at(&self.map, at);
            if prev_term.is_some_and(|p| p >= term) {
                return Err(format!("dictionary entry {e}: term ids not ascending"));
            }
            prev_term = Some(term);
            if u64_at(&self.map, at + 16) != pos {
                return Err(format!("term {term}: postings not where expected"));
            }
            let t = self
                .term_at(e)
                .ok_or_else(|| format!("term {term}: postings out of bounds"))?;
            let (lo, hi, w) = check_list(&t).map_err(|r| format!("term {term}: {r}"))?;
            pos += t.bytes() as u64;
            postings += t.len() as u64;
            min_doc = min_doc.min(lo);
            max_doc = max_doc.max(hi);
            min_w = min_w.min(w);
        }
        if pos != self.dict_offset as u64 {
            return Err("postings do not end at the dictionary".into());
        }
        if (postings, min_doc, max_doc) != (self.postings, self.min_doc, self.max_doc)
            || min_w.to_bits() != self.min_weight.to_bits()
        {
            return Err("footer totals disagree with the postings".into());
        }
        Ok(())
    }

    /// The list of dictionary entry `e`, if its byte ranges lie before the dictionary.
    fn term_at(&self, e: usize) -> Option<DiskTerm<'_>> {
        let at = self.dict_offset.checked_add(e.checked_mul(DICT_ENTRY)?)?;
        let count = u32_at(&self.map, at + 4) as usize;
        let nblocks = u32_at(&self.map, at + 8) as usize;
        let max = f32::from_bits(u32_at(&self.map, at + 12));
        let start = usize::try_from(u64_at(&self.map, at + 16)).ok()?;
        if start < HEADER || nblocks == 0 {
            return None;
        }
        let list = self.map.get(start..self.dict_offset)?;
        let blocks_len = nblocks.checked_mul(BLOCK_ENTRY)?;
        let weights_len = count.checked_mul(4)?;
        // Version 1: offsets, weights, blocks. Version 2: blocks, packed offsets, weights, the
        // offsets ending where the last block's do.
        let (blocks, offs_len, data) = if self.version == 1 {
            let (data, rest) = list.split_at_checked(weights_len.checked_mul(2)?)?;
            (rest.get(..blocks_len)?, weights_len, data)
        } else {
            let blocks = list.get(..blocks_len)?;
            let last = block_entry(blocks, nblocks - 1, self.version);
            let n = count.checked_sub(last.start as usize)?;
            let offs_len = (last.pos as usize).checked_add(last.packed_len(n)?)?;
            let rest = list.get(blocks_len..)?;
            (
                blocks,
                offs_len,
                rest.get(..offs_len.checked_add(weights_len)?)?,
            )
        };
        Some(DiskTerm {
            blocks,
            data,
            weights: data.get(offs_len..)?,
            max,
            version: self.version,
        })
    }

    /// Term id of dictionary entry `e`.
    fn term_id(&self, e: usize) -> u32 {
        u32_at(&self.map, self.dict_offset + e * DICT_ENTRY)
    }

    /// The posting list of `term`, if the segment has it.
    pub fn term(&self, term: u32) -> Option<DiskTerm<'_>> {
        let (mut lo, mut hi) = (0, self.terms);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.term_id(mid).cmp(&term) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.term_at(mid),
            }
        }
        None
    }

    /// Every term id in the segment, ascending.
    pub fn term_ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.terms).map(|e| self.term_id(e))
    }
}

/// Checks one list's blocks and postings; returns its first doc, last doc and smallest weight.
fn check_list(t: &DiskTerm<'_>) -> Result<(u64, u64, f32), String> {
    let (n, nb) = (t.len(), t.nblocks());
    if n == 0 || nb == 0 || nb > n {
        return Err(format!("{n} postings in {nb} blocks"));
    }
    let (mut max, mut min_w, mut prev_last) = (f32::NEG_INFINITY, f32::INFINITY, None);
    let mut pos = 0usize;
    for b in 0..nb {
        let blk = t.block(b);
        let start = blk.start as usize;
        let end = if b + 1 < nb {
            t.block(b + 1).start as usize
        } else {
            n
        };
        let want_start = if b == 0 { 0 } else { start };
        if start != want_start || end <= start || end - start > BLOCK || end > n {
            return Err(format!("block {b} has a bad extent"));
        }
        if blk.pos as usize != pos {
            return Err(format!("block {b}: offsets not where expected"));
        }
        pos = blk
            .packed_len(end - start)
            .map_or(usize::MAX, |n| pos.saturating_add(n));
        if prev_last.is_some_and(|p| p >= blk.base) || t.off(&blk, start) != 0 {
            return Err(format!("block {b}: documents not ascending"));
        }
        let mut bmax = f32::NEG_INFINITY;
        for i in start..end {
            if i > start && t.off(&blk, i) <= t.off(&blk, i - 1) {
                return Err(format!("block {b}: documents not ascending"));
            }
            let w = t.weight(i);
            if !w.is_finite() {
                return Err(format!("block {b}: weight not finite"));
            }
            bmax = bmax.max(w);
            min_w = min_w.min(w);
        }
        let last = blk.base.checked_add(u64::from(t.off(&blk, end - 1)));
        if last != Some(blk.last) || bmax.to_bits() != blk.max.to_bits() {
            return Err(format!("block {b}: metadata disagrees with its postings"));
        }
        max = max.max(bmax);
        prev_last = Some(blk.last);
    }
    if max.to_bits() != t.max.to_bits() {
        return Err("list maximum disagrees with its blocks".into());
    }
    if pos != t.offs_len() {
        return Err("offsets do not end where the blocks do".into());
    }
    Ok((t.block(0).base, t.block(nb - 1).last, min_w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_offsets_round_trip_at_every_width() {
        for bits in 0..=32u32 {
            let max = if bits == 0 {
                0
            } else {
                u32::MAX >> (32 - bits)
            };
            let offs: Vec<u32> = (0..131u32)
                .map(|i| match i % 3 {
                    0 => max,
                    1 => i.wrapping_mul(0x9e37_79b9) & max,
                    _ => 0,
                })
                .collect();
            let mut out = vec![0xaa];
            pack(&offs, bits, &mut out);
            assert_eq!(out.len(), 1 + (offs.len() * bits as usize).div_ceil(8));
            for (k, &o) in offs.iter().enumerate() {
                assert_eq!(
                    unpack(&out, 8 + k * bits as usize, bits),
                    o,
                    "bits {bits} k {k}"
                );
            }
        }
        assert_eq!(width(0), 0);
        assert_eq!(width(1), 1);
        assert_eq!(width(255), 8);
        assert_eq!(width(256), 9);
        assert_eq!(width(u32::MAX), 32);
    }
}
