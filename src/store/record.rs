//! The byte layout of a document record (store format 3), with its reader for format-2
//! records, which a store may still hold.
//!
//! A record is a marker byte 0, a flags byte, a postcard head (id, commit, sparse weights with
//! their ids as gaps), the strings (title, text, metadata) as postcard or zstd-compressed
//! postcard, and the CRC-32 of all of it. A format-2 record is a postcard [`DocRecord`] and
//! never starts with 0: its first byte is the id's length, and ids are not empty.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::{DocRecord, STORE_FILE};
use crate::document::SparseVector;
use crate::error::{Error, Result};

/// First byte of a format-3 record.
const MARKER: u8 = 0;
/// Flags bit: the strings are zstd-compressed.
const ZSTD: u8 = 1;
/// Strings shorter than this are stored as they are: a zstd frame costs more than it saves.
const COMPRESS_FROM: usize = 128;
/// zstd level: the default, about 0.6 of the size on Korean prose.
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

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn store_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("{what}: {e}"))
}

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::corrupted(STORE_FILE, format!("document record: {reason}"))
}

/// Encodes a record in format 3.
pub(crate) fn encode(r: &DocRecord) -> Result<Vec<u8>> {
    let sparse = r.sparse.as_ref().map(|v| {
        let gaps = (v.indices().iter())
            .scan(0, |prev, &i| Some(i - std::mem::replace(prev, i)))
            .collect();
        (gaps, v.values().to_vec())
    });
    let head = Head {
        id: &r.id,
        seq: r.seq,
        sparse,
    };
    let strings = Strings {
        title: &r.title,
        text: &r.text,
        metadata: &r.metadata,
    };
    let encoding = |e| store_error("encoding a record", e);
    let mut out = vec![MARKER, 0];
    out = postcard::to_extend(&head, out).map_err(encoding)?;
    let plain = postcard::to_allocvec(&strings).map_err(encoding)?;
    let packed = if plain.len() >= COMPRESS_FROM {
        compress(&plain)?.filter(|c| c.len() + varint_len(plain.len()) < plain.len())
    } else {
        None
    };
    match packed {
        Some(c) => {
            out[1] |= ZSTD;
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

fn compress(plain: &[u8]) -> Result<Option<Vec<u8>>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let c = match c.as_mut() {
            Some(c) => c,
            None => c.insert(
                zstd::bulk::Compressor::new(LEVEL).map_err(|e| store_error("starting zstd", e))?,
            ),
        };
        c.compress(plain)
            .map(Some)
            .map_err(|e| store_error("compressing a record", e))
    })
}

/// Checks the CRC and splits a format-3 record into its head and the strings' bytes (and
/// whether they are compressed). `None` for a format-2 record.
fn split(bytes: &[u8]) -> Result<Option<(Head<'_>, &[u8], bool)>> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(bad(format!(
            "{} bytes, shorter than its checksum",
            bytes.len()
        )));
    };
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(bad("checksum mismatch"));
    }
    let [MARKER, flags, rest @ ..] = body else {
        return Ok(None);
    };
    if flags & !ZSTD != 0 {
        return Err(bad(format!("unknown flags {flags:#04x}")));
    }
    let (head, rest) = postcard::take_from_bytes::<Head>(rest).map_err(bad)?;
    Ok(Some((head, rest, flags & ZSTD != 0)))
}

fn sparse_of(gaps: Option<(Vec<u32>, Vec<f32>)>) -> Result<Option<SparseVector>> {
    let Some((mut ids, values)) = gaps else {
        return Ok(None);
    };
    let mut prev = 0u32;
    for (i, id) in ids.iter_mut().enumerate() {
        prev = match prev.checked_add(*id) {
            Some(v) if i == 0 || *id > 0 => v,
            _ => return Err(bad("sparse ids are not ascending")),
        };
        *id = prev;
    }
    SparseVector::new(ids, values).map(Some).map_err(bad)
}

/// Decodes a record of either format.
pub(crate) fn decode(bytes: &[u8]) -> Result<DocRecord> {
    let Some((head, rest, packed)) = split(bytes)? else {
        return super::decode(bytes, "document");
    };
    let buf;
    let plain = if packed {
        let (len, c) = postcard::take_from_bytes::<usize>(rest).map_err(bad)?;
        if len > MAX_STRINGS {
            return Err(bad(format!("{len} bytes of strings")));
        }
        buf = decompress(c, len)?;
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
        Some((head, _, _)) => Ok(DocHead {
            id: head.id.to_string(),
            sparse: sparse_of(head.sparse)?,
        }),
        None => {
            let r: DocRecord = super::decode(bytes, "document")?;
            Ok(DocHead {
                id: r.id,
                sparse: r.sparse,
            })
        }
    }
}

fn decompress(c: &[u8], len: usize) -> Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let d = match d.as_mut() {
            Some(d) => d,
            None => d.insert(
                zstd::bulk::Decompressor::new().map_err(|e| store_error("starting zstd", e))?,
            ),
        };
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
                let bytes = encode(&r).unwrap();
                assert_eq!(bytes[0], MARKER);
                assert_eq!(bytes[1] & ZSTD != 0, text.len() > COMPRESS_FROM);
                assert_eq!(decode(&bytes).unwrap(), r);
                let head = decode_head(&bytes).unwrap();
                assert_eq!((head.id, head.sparse), (r.id.clone(), r.sparse.clone()));
            }
        }
    }

    #[test]
    fn prose_is_stored_compressed() {
        let r = record(&prose(), None);
        let plain = postcard::to_allocvec(&r).unwrap().len();
        let stored = encode(&r).unwrap().len();
        assert!(stored * 4 < plain, "{stored} bytes stored for {plain}");
    }

    #[test]
    fn format_2_records_still_decode() {
        let r = record(&prose(), SparseVector::new(vec![2, 9], vec![1.0, 0.5]).ok());
        let bytes = super::super::encode(&r).unwrap();
        assert_ne!(bytes[0], MARKER);
        assert_eq!(decode(&bytes).unwrap(), r);
        assert_eq!(decode_head(&bytes).unwrap().id, r.id);
    }

    #[test]
    fn damage_is_reported_as_corruption() {
        let r = record(&prose(), SparseVector::new(vec![2, 9], vec![1.0, 0.5]).ok());
        let bytes = encode(&r).unwrap();
        let corrupted = |b: &[u8]| matches!(decode(b), Err(Error::Corrupted { .. }));
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
}
