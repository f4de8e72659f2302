//! Reader and writer for NumPy `.npy` files, limited to what hybridb needs:
//! little-endian `float32` matrices of shape `[rows, dim]` (C order) and
//! little-endian `int64` vectors of shape `[n]`.
//!
//! Format versions 1.0, 2.0 and 3.0 are read; files are written as 1.0 (2.0 when
//! the header would not fit a 16-bit length). Sizes read from a header are
//! checked against the file's length before anything is allocated, so a
//! damaged or hostile header yields [`Error::Corrupted`] rather than a panic or
//! a huge allocation.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Largest header we accept; numpy itself never writes more than a few hundred bytes.
const MAX_HEADER_LEN: usize = 1 << 20;

/// A dense row-major `f32` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub dim: usize,
    /// `rows * dim` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i`, or `None` when `i` is out of range.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        let start = i.checked_mul(self.dim)?;
        let end = start.checked_add(self.dim)?;
        if i >= self.rows {
            return None;
        }
        self.data.get(start..end)
    }
}

/// What a parsed header tells us.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
    /// Byte offset of the first data element.
    data_offset: u64,
}

/// An open `.npy` file positioned at its data, with its header checked
/// against the expected dtype and the file length.
struct Opened {
    file: File,
    header: Header,
}

/// Reads the whole of a 2-D `<f4` file.
pub fn read_f32_matrix(path: &Path) -> Result<Matrix> {
    let (mut opened, rows, dim) = open_f32_2d(path)?;
    let mut bytes = Vec::new();
    opened
        .file
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let data = decode_f32(path, &bytes, rows.saturating_mul(dim))?;
    Ok(Matrix { rows, dim, data })
}

/// Reads only row `row` of a 2-D `<f4` file (one seek and one read).
pub fn read_f32_row(path: &Path, row: usize) -> Result<Vec<f32>> {
    let (mut opened, rows, dim) = open_f32_2d(path)?;
    if row >= rows {
        return Err(Error::invalid(format!(
            "row {row} out of range: {} has {rows} rows",
            path.display()
        )));
    }
    // The whole data size was checked against the file length, so these fit.
    let row_bytes = dim
        .checked_mul(4)
        .ok_or_else(|| Error::corrupted(path, "row size overflows"))?;
    let offset = (row as u64)
        .checked_mul(row_bytes as u64)
        .and_then(|o| o.checked_add(opened.header.data_offset))
        .ok_or_else(|| Error::corrupted(path, "row offset overflows"))?;
    opened
        .file
        .seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    let mut bytes = vec![0u8; row_bytes];
    opened
        .file
        .read_exact(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    decode_f32(path, &bytes, dim)
}

/// The `(rows, dim)` shape of a 2-D `<f4` file, reading only its header.
pub fn read_npy_dim(path: &Path) -> Result<(usize, usize)> {
    let (_, rows, dim) = open_f32_2d(path)?;
    Ok((rows, dim))
}

/// Reads a 1-D `<i8` file (for example an offsets array).
pub fn read_i64_vector(path: &Path) -> Result<Vec<i64>> {
    let mut opened = open_checked(path, "<i8", 8)?;
    let n = match opened.header.shape.as_slice() {
        [n] => *n,
        other => {
            return Err(Error::corrupted(
                path,
                format!("expected a 1-D int64 array, found shape {other:?}"),
            ));
        }
    };
    let mut bytes = Vec::new();
    opened
        .file
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() != n.saturating_mul(8) {
        return Err(Error::corrupted(path, "data length changed while reading"));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            i64::from_le_bytes(b)
        })
        .collect())
}

/// Writes `data` (row-major, `rows * dim` values) as a 2-D `<f4` file, replacing `path`.
pub fn write_f32_matrix(path: &Path, rows: usize, dim: usize, data: &[f32]) -> Result<()> {
    if rows.checked_mul(dim) != Some(data.len()) {
        return Err(Error::invalid(format!(
            "matrix of {rows} x {dim} needs {} values, got {}",
            rows.saturating_mul(dim),
            data.len()
        )));
    }
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // Magic, version and length field, then the dict padded with spaces and a
    // final newline so the data starts on a 64-byte boundary.
    // Padded length of the dict after a prefix (magic, version, length field).
    let padded = |prefix: usize| {
        let unpadded = prefix + dict.len() + 1;
        dict.len() + 1 + (64 - unpadded % 64) % 64
    };
    let len_field = match u16::try_from(padded(10)) {
        Ok(len) => [&[1u8, 0][..], &len.to_le_bytes()[..]].concat(),
        Err(_) => {
            let len =
                u32::try_from(padded(12)).map_err(|_| Error::invalid("npy header too long"))?;
            [&[2u8, 0][..], &len.to_le_bytes()[..]].concat()
        }
    };
    let header_len = padded(6 + len_field.len());

    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::new(file);
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&len_field);
    head.extend_from_slice(dict.as_bytes());
    head.resize(6 + len_field.len() + header_len - 1, b' ');
    head.push(b'\n');
    let io = |e| Error::io(path, e);
    w.write_all(&head).map_err(io)?;
    for v in data {
        w.write_all(&v.to_le_bytes()).map_err(io)?;
    }
    w.flush().map_err(io)?;
    w.get_ref().sync_all().map_err(io)?;
    Ok(())
}

/// Opens a file that must be a C-order 2-D `<f4` array.
fn open_f32_2d(path: &Path) -> Result<(Opened, usize, usize)> {
    let opened = open_checked(path, "<f4", 4)?;
    let (rows, dim) = match opened.header.shape.as_slice() {
        [r, d] => (*r, *d),
        other => {
            return Err(Error::corrupted(
                path,
                format!("expected a 2-D float32 matrix, found shape {other:?}"),
            ));
        }
    };
    if opened.header.fortran_order {
        return Err(Error::corrupted(
            path,
            "Fortran-order (column-major) matrices are not supported",
        ));
    }
    Ok((opened, rows, dim))
}

/// Opens `path`, parses its header, checks the dtype and that the file holds
/// exactly the data the shape calls for. Leaves the file at the data offset.
fn open_checked(path: &Path, descr: &str, item_size: usize) -> Result<Opened> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let header = read_header(path, &mut file)?;
    if header.descr != descr {
        return Err(Error::corrupted(
            path,
            format!("unsupported dtype {:?} (expected {descr:?})", header.descr),
        ));
    }
    let expected = header
        .shape
        .iter()
        .try_fold(item_size as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| Error::corrupted(path, "shape size overflows"))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let actual = file_len.saturating_sub(header.data_offset);
    if actual != expected {
        return Err(Error::corrupted(
            path,
            format!(
                "shape {:?} needs {expected} data bytes but the file has {actual}{}",
                header.shape,
                if actual < expected {
                    " (truncated)"
                } else {
                    ""
                }
            ),
        ));
    }
    if usize::try_from(expected).is_err() {
        return Err(Error::corrupted(path, "array too large for this platform"));
    }
    Ok(Opened { file, header })
}

/// Reads magic, version and the header dict; leaves `file` at the data.
fn read_header(path: &Path, file: &mut File) -> Result<Header> {
    let eof = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupted(path, "file ends inside the npy header")
        } else {
            Error::io(path, e)
        }
    };
    let mut pre = [0u8; 8];
    file.read_exact(&mut pre).map_err(eof)?;
    if &pre[..6] != MAGIC {
        return Err(Error::corrupted(path, "not a NumPy .npy file (bad magic)"));
    }
    let major = pre[6];
    let (len, len_size) = match major {
        1 => {
            let mut b = [0u8; 2];
            file.read_exact(&mut b).map_err(eof)?;
            (usize::from(u16::from_le_bytes(b)), 2)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            file.read_exact(&mut b).map_err(eof)?;
            let len = usize::try_from(u32::from_le_bytes(b)).unwrap_or(usize::MAX);
            (len, 4)
        }
        v => {
            return Err(Error::corrupted(
                path,
                format!("unsupported npy format version {v}.{}", pre[7]),
            ));
        }
    };
    if len > MAX_HEADER_LEN {
        return Err(Error::corrupted(
            path,
            format!("npy header of {len} bytes is too long"),
        ));
    }
    let mut text = vec![0u8; len];
    file.read_exact(&mut text).map_err(eof)?;
    let (descr, fortran_order, shape) = parse_dict(&text)
        .map_err(|reason| Error::corrupted(path, format!("bad npy header: {reason}")))?;
    Ok(Header {
        descr,
        fortran_order,
        shape,
        data_offset: (8 + len_size + len) as u64,
    })
}

/// A value in the header dict (a Python literal).
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_dict(text: &[u8]) -> std::result::Result<(String, bool, Vec<usize>), String> {
    let mut p = Cursor { s: text, i: 0 };
    p.ws();
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let value = p.literal()?;
        match (key.as_str(), value) {
            ("descr", Lit::Str(s)) => descr = Some(s),
            ("fortran_order", Lit::Bool(b)) => fortran = Some(b),
            ("shape", Lit::Tuple(t)) => shape = Some(t),
            (k @ ("descr" | "fortran_order" | "shape"), _) => {
                return Err(format!("key {k:?} has the wrong type"));
            }
            (k, _) => return Err(format!("unknown key {k:?}")),
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != text.len() {
        return Err("trailing characters after the dict".into());
    }
    Ok((
        descr.ok_or("missing 'descr'")?,
        fortran.ok_or("missing 'fortran_order'")?,
        shape.ok_or("missing 'shape'")?,
    ))
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a string at byte {}", self.i)),
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == quote {
                let s = self.s.get(start..self.i).unwrap_or_default();
                self.i += 1;
                return String::from_utf8(s.to_vec()).map_err(|_| "header is not UTF-8".into());
            }
            self.i += 1;
        }
        Err("unterminated string".into())
    }

    fn literal(&mut self) -> std::result::Result<Lit, String> {
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(Lit::Str),
            Some(b'(') => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.ws();
                    if self.eat(b')') {
                        break;
                    }
                    dims.push(self.integer()?);
                    self.ws();
                    if !self.eat(b',') {
                        self.ws();
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(Lit::Tuple(dims))
            }
            _ => {
                let rest = self.s.get(self.i..).unwrap_or_default();
                for (word, b) in [(&b"True"[..], true), (&b"False"[..], false)] {
                    if rest.starts_with(word) {
                        self.i += word.len();
                        return Ok(Lit::Bool(b));
                    }
                }
                Err(format!("unexpected value at byte {}", self.i))
            }
        }
    }

    fn integer(&mut self) -> std::result::Result<usize, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        // A trailing `L` appears in headers written by Python 2.
        let digits = std::str::from_utf8(self.s.get(start..self.i).unwrap_or_default())
            .map_err(|_| "bad integer")?;
        self.eat(b'L');
        digits
            .parse()
            .map_err(|_| format!("bad dimension {digits:?} at byte {start}"))
    }
}

/// Decodes exactly `n` little-endian f32 values.
fn decode_f32(path: &Path, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    if Some(bytes.len()) != n.checked_mul(4) {
        return Err(Error::corrupted(path, "data length changed while reading"));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_npy(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[major, 0]);
        let mut text = dict.as_bytes().to_vec();
        text.push(b'\n');
        if major == 1 {
            v.extend_from_slice(&(text.len() as u16).to_le_bytes());
        } else {
            v.extend_from_slice(&(text.len() as u32).to_le_bytes());
        }
        v.extend_from_slice(&text);
        v.extend_from_slice(data);
        v
    }

    fn f32_bytes(vals: &[f32]) -> Vec<u8> {
        vals.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn is_corrupted(r: Result<impl std::fmt::Debug>, needle: &str) {
        match r {
            Err(Error::Corrupted { reason, .. }) => {
                assert!(
                    reason.contains(needle),
                    "reason {reason:?} lacks {needle:?}"
                )
            }
            other => panic!("expected Corrupted({needle}), got {other:?}"),
        }
    }

    #[test]
    fn round_trip_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        write_f32_matrix(&path, 3, 4, &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            (bytes.len() - 48) % 64,
            0,
            "data starts on a 64-byte boundary"
        );
        let m = read_f32_matrix(&path).unwrap();
        assert_eq!((m.rows, m.dim), (3, 4));
        assert_eq!(m.data, data);
        assert_eq!(m.row(1), Some(&data[4..8]));
        assert_eq!(m.row(3), None);
        assert_eq!(read_npy_dim(&path).unwrap(), (3, 4));
        assert_eq!(read_f32_row(&path, 2).unwrap(), &data[8..12]);
        assert!(matches!(
            read_f32_row(&path, 3),
            Err(Error::InvalidInput(_))
        ));
        write_f32_matrix(&path, 0, 8, &[]).unwrap();
        assert_eq!(read_f32_matrix(&path).unwrap().data.len(), 0);
        // Wrong length is refused before writing.
        assert!(write_f32_matrix(&path, 2, 2, &data).is_err());
    }

    #[test]
    fn truncated_and_extra_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        write_f32_matrix(&path, 2, 3, &[1.0; 6]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        is_corrupted(read_f32_matrix(&path), "truncated");
        is_corrupted(read_f32_row(&path, 0), "truncated");
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 4]);
        std::fs::write(&path, &longer).unwrap();
        is_corrupted(read_f32_matrix(&path), "needs 24 data bytes");
        // Cut inside the header.
        std::fs::write(&path, &bytes[..20]).unwrap();
        is_corrupted(read_npy_dim(&path), "header");
        std::fs::write(&path, b"PK\x03\x04 not numpy").unwrap();
        is_corrupted(read_f32_matrix(&path), "magic");
    }

    #[test]
    fn wrong_dtype_order_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.npy");
        let d = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }";
        std::fs::write(&path, raw_npy(1, d, &[0; 8])).unwrap();
        is_corrupted(read_f32_matrix(&path), "dtype");
        let d = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 1), }";
        std::fs::write(&path, raw_npy(1, d, &[0; 8])).unwrap();
        is_corrupted(read_f32_matrix(&path), "Fortran");
        let d = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        std::fs::write(&path, raw_npy(1, d, &[0; 8])).unwrap();
        is_corrupted(read_f32_matrix(&path), "2-D");
        let d = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }";
        std::fs::write(&path, raw_npy(1, d, &[])).unwrap();
        is_corrupted(read_npy_dim(&path), "overflow");
        let d = "{'descr': '<f4', 'fortran_order': False}";
        std::fs::write(&path, raw_npy(1, d, &[])).unwrap();
        is_corrupted(read_npy_dim(&path), "missing 'shape'");
        let d = "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1, 1)}";
        std::fs::write(&path, raw_npy(1, d, &[0; 4])).unwrap();
        is_corrupted(read_npy_dim(&path), "unexpected value");
        std::fs::write(&path, raw_npy(9, "{}", &[])).unwrap();
        is_corrupted(read_npy_dim(&path), "version 9");
    }

    #[test]
    fn version_2_and_3_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.npy");
        let vals = [1.5f32, -2.0, 3.25, 0.0];
        for major in [2, 3] {
            let d = "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 2)}";
            std::fs::write(&path, raw_npy(major, d, &f32_bytes(&vals))).unwrap();
            let m = read_f32_matrix(&path).unwrap();
            assert_eq!((m.rows, m.dim), (2, 2));
            assert_eq!(m.data, vals);
            assert_eq!(read_f32_row(&path, 1).unwrap(), [3.25, 0.0]);
        }
    }

    #[test]
    fn i64_vector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.npy");
        let vals = [0i64, 5, -7, i64::MAX];
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let d = "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }";
        std::fs::write(&path, raw_npy(1, d, &data)).unwrap();
        assert_eq!(read_i64_vector(&path).unwrap(), vals);
        let d = "{'descr': '<i8', 'fortran_order': False, 'shape': (4L,), }";
        std::fs::write(&path, raw_npy(1, d, &data)).unwrap();
        assert_eq!(read_i64_vector(&path).unwrap(), vals);
        let d = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }";
        std::fs::write(&path, raw_npy(1, d, &data)).unwrap();
        is_corrupted(read_i64_vector(&path), "1-D");
        let d = "{'descr': '<i4', 'fortran_order': False, 'shape': (8,), }";
        std::fs::write(&path, raw_npy(1, d, &data)).unwrap();
        is_corrupted(read_i64_vector(&path), "dtype");
    }
}
