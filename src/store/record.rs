//! The byte layout of a document record (store format 3), with its reader for format-2
//! records, which a store may still hold.
//!
//! A record is a marker byte 0, a flags byte, a postcard head (id, commit, sparse weights with
//! their ids as gaps), the strings (title, text, metadata) as postcard or zstd-compressed
//! postcard (with the store's dictionary once it has one), and the CRC-32 of all of it. A
//! format-2 record is a postcard [`DocRecord`] and never starts with 0: its first byte is the
//! id's length, and ids are not empty.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::DocRecord;
use crate::document::SparseVector;
use crate::error::{Error, Result};

/// First byte of a format-3 record.
const MARKER: u8 = 0;
/// Flags bit: the strings are zstd-compressed.
const ZSTD: u8 = 1;
/// Flags bit (with [`ZSTD`]): compressed with the store's dictionary.
const DICT: u8 = 2;
/// A dictionary is trained once the strings to compress add up to this many bytes.
const TRAIN_FROM: usize = 256 << 10;
/// Training reads at most this many bytes of samples.
const TRAIN_AT_MOST: usize = 8 << 20;
/// Largest dictionary: one byte per 32 of samples, up to this.
const DICT_AT_MOST: usize = 64 << 10;
/// Strings shorter than this are stored as they are: a zstd frame costs more than it saves.
const COMPRESS_FROM: usize = 128;
/// zstd level: the default. Korean prose shrinks to about 0.6 of its size, 0.47 with a dictionary.
const LEVEL: i32 = 3;
/// Upper bound on a record's uncompressed strings, checked before allocating for them.
const MAX_STRINGS: usize = 1 << 30;

#[derive(Serialize, Deserialize)]
struct Head<'a> {
    id: &'a str,
    seq: u64,
    /// Term ids as gaps: the first id, then each id minus the one before.
    sparse: Option<(Vec<u32>, Vec<f32>)>,
}

#[derive(Serialize, Deserialize)]
struct Strings<'a> {
    title: &'a str,
    text: &'a str,
    metadata: &'a str,
}

/// A record's identity and sparse weights, without its strings.
pub(crate) struct DocHead {
    pub id: String,
    pub sparse: Option<SparseVector>,
}

/// A zstd dictionary trained on a store's first documents: short documents compress better
/// with it, and decompress faster.
pub(crate) struct Dict {
    /// Unique in this process: names the dictionary in the per-thread contexts.
    key: u64,
    bytes: Vec<u8>,
}

impl Dict {
    pub fn new(bytes: Vec<u8>) -> Dict {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Dict {
            key: NEXT.fetch_add(1, Ordering::Relaxed),
            bytes,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Trains a dictionary on the records' strings, or `None` when they are too few to train
    /// on or training fails (records are then compressed without one).
    pub fn train<'a>(records: impl Iterator<Item = &'a DocRecord> + Clone) -> Option<Dict> {
        // Most commits of a store without a dictionary hold too little text: tell from the
        // lengths (plus at most 5 bytes of length prefix per string), before encoding any.
        let upper: usize = (records.clone())
            .map(|r| r.title.len() + r.text.len() + r.metadata.len() + 3 * 5)
            .sum();
        if upper < TRAIN_FROM {
            return None;
        }
        let (mut data, mut sizes) = (Vec::new(), Vec::new());
        for r in records {
            let plain = postcard::to_allocvec(&strings_of(r)).ok()?;
            if plain.len() >= COMPRESS_FROM && data.len() + plain.len() <= TRAIN_AT_MOST {
                data.extend_from_slice(&plain);
                sizes.push(plain.len());
            }
        }
        if data.len() < TRAIN_FROM {
            return None;
        }
        let size = (data.len() / 32).min(DICT_AT_MOST);
        zstd::dict::from_continuous(&data, &sizes, size)
            .ok()
            .map(Dict::new)
    }
}

/// Per-thread zstd contexts: one without a dictionary, one with the last dictionary used.
struct Contexts<T> {
    plain: Option<T>,
    dict: Option<(u64, T)>,
}

impl<T> Contexts<T> {
    const EMPTY: Contexts<T> = Contexts {
        plain: None,
        dict: None,
    };

    fn get(
        &mut self,
        dict: Option<&Dict>,
        make: impl FnOnce(&[u8]) -> std::io::Result<T>,
    ) -> Result<&mut T> {
        let fresh = |bytes: &[u8]| make(bytes).map_err(|e| store_error("starting zstd", e));
        let context = match dict {
            None => {
                if self.plain.is_none() {
                    self.plain = Some(fresh(&[])?);
                }
                self.plain.as_mut()
            }
            Some(d) => {
                if !matches!(&self.dict, Some((key, _)) if *key == d.key) {
                    self.dict = Some((d.key, fresh(&d.bytes)?));
                }
                self.dict.as_mut().map(|(_, c)| c)
            }
        };
        context.ok_or_else(|| store_error("starting zstd", "no context"))
    }
}

thread_local! {
    static COMPRESSORS: RefCell<Contexts<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(Contexts::EMPTY) };
    static DECOMPRESSORS: RefCell<Contexts<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(Contexts::EMPTY) };
}

fn strings_of(r: &DocRecord) -> Strings<'_> {
    Strings {
        title: &r.title,
        text: &r.text,
        metadata: &r.metadata,
    }
}

fn store_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("{what}: {e}"))
}

fn bad(reason: impl std::fmt::Display) -> Error {
    super::corrupt("document", reason)
}

/// Encodes a record in format 3, compressing its strings with `dict` if given.
pub(crate) fn encode(r: &DocRecord, dict: Option<&Dict>) -> Result<Vec<u8>> {
    let sparse = match &r.sparse {
        Some(v) => {
            // Ascending ids (a `SparseVector` invariant) never wrap; refuse them if they would.
            let mut prev = 0;
            let gaps = (v.indices().iter())
                .map(|&i| i.checked_sub(std::mem::replace(&mut prev, i)))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| store_error("encoding a record", "sparse ids not ascending"))?;
            Some((gaps, v.values().to_vec()))
        }
        None => None,
    };
    let head = Head {
        id: &r.id,
        seq: r.seq,
        sparse,
    };
    let encoding = |e| store_error("encoding a record", e);
    let mut out = vec![MARKER, 0];
    out = postcard::to_extend(&head, out).map_err(encoding)?;
    let plain = postcard::to_allocvec(&strings_of(r)).map_err(encoding)?;
    let packed = if plain.len() >= COMPRESS_FROM {
        Some(compress(&plain, dict)?).filter(|c| c.len() + varint_len(plain.len()) < plain.len())
    } else {
        None
    };
    match packed {
        Some(c) => {
            out[1] |= if dict.is_some() { ZSTD | DICT } else { ZSTD };
            out = postcard::to_extend(&plain.len(), out).map_err(encoding)?;
            out.extend_from_slice(&c);
        }
        None => out.extend_from_slice(&plain),
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn varint_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

fn compress(plain: &[u8], dict: Option<&Dict>) -> Result<Vec<u8>> {
    COMPRESSORS.with(|c| {
        let mut c = c.borrow_mut();
        let c = c.get(dict, |bytes| {
            zstd::bulk::Compressor::with_dictionary(LEVEL, bytes)
        })?;
        c.compress(plain)
            .map_err(|e| store_error("compressing a record", e))
    })
}

/// A record whose CRC matched.
enum Layout<'a> {
    /// Format 2: the postcard [`DocRecord`].
    V2(&'a [u8]),
    /// Format 3: the head, the strings' bytes and the flags.
    V3(Head<'a>, &'a [u8], u8),
}

/// Checks the CRC and tells the two formats apart.
fn split(bytes: &[u8]) -> Result<Layout<'_>> {
    let body = super::checked(bytes, "document")?;
    let [MARKER, flags, rest @ ..] = body else {
        return Ok(Layout::V2(body));
    };
    if flags & !(ZSTD | DICT) != 0 || *flags == DICT {
        return Err(bad(format!("unknown flags {flags:#04x}")));
    }
    let (head, rest) = postcard::take_from_bytes::<Head>(rest).map_err(bad)?;
    Ok(Layout::V3(head, rest, *flags))
}

fn sparse_of(gaps: Option<(Vec<u32>, Vec<f32>)>) -> Result<Option<SparseVector>> {
    let Some((mut ids, values)) = gaps else {
        return Ok(None);
    };
    let mut prev = 0u32;
    for id in &mut ids {
        prev = prev
            .checked_add(*id)
            .ok_or_else(|| bad("sparse ids overflow u32"))?;
        *id = prev;
    }
    // A zero gap after the first id is a repeated id, which this refuses.
    SparseVector::new(ids, values).map(Some).map_err(bad)
}

/// Decodes a record of either format; `dict` is the store's dictionary, if it has one.
pub(crate) fn decode(bytes: &[u8], dict: Option<&Dict>) -> Result<DocRecord> {
    let (head, rest, flags) = match split(bytes)? {
        Layout::V3(head, rest, flags) => (head, rest, flags),
        Layout::V2(body) => return postcard::from_bytes(body).map_err(bad),
    };
    let buf;
    let plain = if flags & ZSTD != 0 {
        let (len, c) = postcard::take_from_bytes::<usize>(rest).map_err(bad)?;
        if len > MAX_STRINGS {
            return Err(bad(format!("{len} bytes of strings")));
        }
        let dict = match (flags & DICT != 0, dict) {
            (false, _) => None,
            (true, Some(d)) => Some(d),
            (true, None) => return Err(bad("compressed with a dictionary the store lacks")),
        };
        buf = decompress(c, len, dict)?;
        &buf[..]
    } else {
        rest
    };
    let s: Strings = postcard::from_bytes(plain).map_err(bad)?;
    let record = DocRecord {
        id: head.id.to_string(),
        title: s.title.to_string(),
        text: s.text.to_string(),
        metadata: s.metadata.to_string(),
        seq: head.seq,
        sparse: sparse_of(head.sparse)?,
    };
    Ok(record)
}

/// Decodes only the id and the sparse weights (the strings are not decompressed).
pub(crate) fn decode_head(bytes: &[u8]) -> Result<DocHead> {
    match split(bytes)? {
        Layout::V3(head, _, _) => Ok(DocHead {
            id: head.id.to_string(),
            sparse: sparse_of(head.sparse)?,
        }),
        Layout::V2(body) => {
            let r: DocRecord = postcard::from_bytes(body).map_err(bad)?;
            Ok(DocHead {
                id: r.id,
                sparse: r.sparse,
            })
        }
    }
}

fn decompress(c: &[u8], len: usize, dict: Option<&Dict>) -> Result<Vec<u8>> {
    DECOMPRESSORS.with(|d| {
        let mut d = d.borrow_mut();
        let d = d.get(dict, zstd::bulk::Decompressor::with_dictionary)?;
        let out = d.decompress(c, len).map_err(bad)?;
        if out.len() != len {
            return Err(bad(format!(
                "strings are {} bytes, the record says {len}",
                out.len()
            )));
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str, sparse: Option<SparseVector>) -> DocRecord {
        DocRecord {
            id: "doc-1".into(),
            title: "제목".into(),
            text: text.into(),
            metadata: r#"{"lang":"ko"}"#.into(),
            seq: 7,
            sparse,
        }
    }

    fn prose() -> String {
        "대한민국의 수도는 서울특별시이며, 서울은 한강을 따라 펼쳐진 도시이다. ".repeat(20)
    }

    #[test]
    fn records_round_trip_compressed_or_not() {
        let sparse =
            SparseVector::new(vec![0, 3, 250_001, u32::MAX], vec![0.5, -1.0, 2.0, 0.0]).unwrap();
        for text in [String::new(), "짧은 글".to_string(), prose()] {
            for sparse in [None, Some(sparse.clone())] {
                let r = record(&text, sparse);
                let bytes = encode(&r, None).unwrap();
                assert_eq!(bytes[0], MARKER);
                assert_eq!(bytes[1] & ZSTD != 0, text.len() > COMPRESS_FROM);
                assert_eq!(decode(&bytes, None).unwrap(), r);
                let head = decode_head(&bytes).unwrap();
                assert_eq!((head.id, head.sparse), (r.id.clone(), r.sparse.clone()));
            }
        }
    }

    #[test]
    fn prose_is_stored_compressed() {
        let r = record(&prose(), None);
        let plain = postcard::to_allocvec(&r).unwrap().len();
        let stored = encode(&r, None).unwrap().len();
        assert!(stored * 4 < plain, "{stored} bytes stored for {plain}");
    }

    #[test]
    fn format_2_records_still_decode() {
        let r = record(&prose(), SparseVector::new(vec![2, 9], vec![1.0, 0.5]).ok());
        let bytes = super::super::encode(&r).unwrap();
        assert_ne!(bytes[0], MARKER);
        assert_eq!(decode(&bytes, None).unwrap(), r);
        assert_eq!(decode_head(&bytes).unwrap().id, r.id);
    }

    #[test]
    fn damage_is_reported_as_corruption() {
        let r = record(&prose(), SparseVector::new(vec![2, 9], vec![1.0, 0.5]).ok());
        let bytes = encode(&r, None).unwrap();
        let corrupted = |b: &[u8]| matches!(decode(b, None), Err(Error::Corrupted { .. }));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(corrupted(&b), "flipped byte {i}");
        }
        assert!(corrupted(&bytes[..3]));
        // A valid checksum over bad content: repeated sparse ids, unknown flags, short strings.
        let reseal = |mut body: Vec<u8>| {
            let crc = crc32fast::hash(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            body
        };
        let head = Head {
            id: "x",
            seq: 1,
            sparse: Some((vec![4, 0], vec![1.0, 1.0])),
        };
        let body = postcard::to_extend(&head, vec![MARKER, 0]).unwrap();
        assert!(corrupted(&reseal(body)));
        let mut flags = bytes[..bytes.len() - 4].to_vec();
        flags[1] = 0x80;
        assert!(corrupted(&reseal(flags)));
        let mut long = vec![MARKER, ZSTD];
        long = postcard::to_extend(
            &Head {
                id: "x",
                seq: 1,
                sparse: None,
            },
            long,
        )
        .unwrap();
        long = postcard::to_extend(&(MAX_STRINGS + 1), long).unwrap();
        assert!(corrupted(&reseal(long)));
    }

    /// Korean-like prose of `n` sentences drawn from a small vocabulary, varied by `seed`.
    fn article(seed: u64, n: usize) -> String {
        const WORDS: [&str; 16] = [
            "서울은",
            "한강을",
            "따라",
            "펼쳐진",
            "도시이며",
            "대한민국의",
            "수도이다",
            "역사는",
            "조선",
            "시대부터",
            "이어진다",
            "인구는",
            "천만",
            "명에",
            "이르고",
            "경제의",
        ];
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = String::new();
        for _ in 0..n {
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.push_str(WORDS[(x % 16) as usize]);
                out.push(' ');
            }
            out.push_str(". ");
        }
        out
    }

    #[test]
    fn a_dictionary_is_trained_only_on_enough_text_and_shrinks_records() {
        let few: Vec<DocRecord> = (0..10).map(|i| record(&article(i, 8), None)).collect();
        assert!(Dict::train(few.iter()).is_none());
        let docs: Vec<DocRecord> = (0..400).map(|i| record(&article(i, 8), None)).collect();
        let dict = Dict::train(docs.iter()).expect("enough text to train on");
        assert!(!dict.bytes().is_empty() && dict.bytes().len() <= DICT_AT_MOST);
        let (mut plain, mut with) = (0, 0);
        for r in (400..450).map(|i| record(&article(i, 8), None)) {
            let a = encode(&r, None).unwrap();
            let b = encode(&r, Some(&dict)).unwrap();
            assert_eq!((a[1], b[1]), (ZSTD, ZSTD | DICT));
            assert_eq!(decode(&b, Some(&dict)).unwrap(), r);
            // Records without the dictionary still decode where the store has one.
            assert_eq!(decode(&a, Some(&dict)).unwrap(), r);
            (plain, with) = (plain + a.len(), with + b.len());
        }
        assert!(
            with * 4 < plain * 3,
            "{with} bytes with the dictionary, {plain} without"
        );
    }

    #[test]
    fn a_record_needs_the_dictionary_it_was_compressed_with() {
        let docs: Vec<DocRecord> = (0..400).map(|i| record(&article(i, 8), None)).collect();
        let dict = Dict::train(docs.iter()).unwrap();
        let other = Dict::train(docs.iter().rev()).unwrap();
        let bytes = encode(&docs[0], Some(&dict)).unwrap();
        let corrupted = |d| matches!(decode(&bytes, d), Err(Error::Corrupted { .. }));
        assert!(corrupted(None));
        // Alternating dictionaries on one thread uses the right one each time.
        let again = encode(&docs[1], Some(&other)).unwrap();
        assert_eq!(decode(&bytes, Some(&dict)).unwrap(), docs[0]);
        assert_eq!(decode(&again, Some(&other)).unwrap(), docs[1]);
        assert_eq!(decode(&bytes, Some(&dict)).unwrap(), docs[0]);
    }
}
