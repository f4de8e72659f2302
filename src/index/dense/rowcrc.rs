//! `dense/vectors.crc`: a CRC-32 per vector row, written with the rows before the commit point
//! and checked for every committed row on open.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use super::VECTORS_HEADER;
use crate::error::{Error, Result};
use crate::fsio::{HEADER_LEN, header, read_header};

const MAGIC: &[u8; 8] = b"HYBVCRC\0";
const VERSION: u32 = 1;
/// Rows checked per parallel task.
const CHUNK_ROWS: usize = 4096;

/// The checksum file of a vectors file.
pub(crate) struct RowChecksums {
    path: PathBuf,
    file: File,
    dim: usize,
}

fn row_bytes(dim: usize) -> usize {
    dim * 4
}

impl RowChecksums {
    /// Opens `vectors.crc` beside `vectors` (the open vectors file, already length-checked for
    /// `rows` committed rows), creating it from the rows when it does not exist yet, cutting
    /// entries past `rows`, and checking every committed row against its checksum.
    pub(crate) fn open(
        dir: &Path,
        vectors: &File,
        dim: usize,
        rows: u64,
        writable: bool,
    ) -> Result<RowChecksums> {
        let path = dir.join("vectors.crc");
        let exists = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(writable && !exists)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let me = RowChecksums { path, file, dim };
        let map = if rows == 0 {
            None
        } else {
            // Safety: committed rows are never rewritten while the database is open.
            Some(unsafe { Mmap::map(vectors) }.map_err(|e| Error::io(dir.join("vectors.bin"), e))?)
        };
        let row_data = |map: &Mmap, n: usize| {
            let start = VECTORS_HEADER as usize + n * row_bytes(dim);
            map[start..start + row_bytes(dim)].to_vec()
        };
        if !exists {
            let h = header(MAGIC, VERSION, &(dim as u32).to_le_bytes());
            me.write_at(&h, 0)?;
            if let Some(map) = &map {
                let crcs: Vec<u8> = (0..rows as usize)
                    .flat_map(|n| crc32fast::hash(&row_data(map, n)).to_le_bytes())
                    .collect();
                me.write_at(&crcs, HEADER_LEN as u64)?;
            }
            me.sync()?;
        } else {
            let h = read_header(&me.file, &me.path, MAGIC, VERSION)?;
            let file_dim = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
            if file_dim != dim {
                return Err(Error::corrupted(
                    &me.path,
                    format!("dimension {file_dim} but the schema says {dim}"),
                ));
            }
        }
        let want = HEADER_LEN as u64 + 4 * rows;
        let len = me
            .file
            .metadata()
            .map_err(|e| Error::io(&me.path, e))?
            .len();
        if len < want {
            return Err(Error::corrupted(
                &me.path,
                format!("{len} bytes but the last commit needs {want}"),
            ));
        }
        if len > want && writable {
            me.file.set_len(want).map_err(|e| Error::io(&me.path, e))?;
            me.sync()?;
        }
        if let Some(map) = &map {
            me.check(map, rows as usize)?;
        }
        Ok(me)
    }

    /// Checks rows `0..rows` of the mapped vectors file against their checksums.
    fn check(&self, map: &Mmap, rows: usize) -> Result<()> {
        let mut crcs = vec![0u8; rows * 4];
        self.file
            .read_exact_at(&mut crcs, HEADER_LEN as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        let width = row_bytes(self.dim);
        let bad = (0..rows.div_ceil(CHUNK_ROWS))
            .into_par_iter()
            .find_map_first(|chunk| {
                (chunk * CHUNK_ROWS..rows.min((chunk + 1) * CHUNK_ROWS)).find(|&n| {
                    let start = VECTORS_HEADER as usize + n * width;
                    let want = &crcs[n * 4..n * 4 + 4];
                    crc32fast::hash(&map[start..start + width]).to_le_bytes() != want
                })
            });
        match bad {
            Some(n) => Err(Error::corrupted(
                self.path.with_file_name("vectors.bin"),
                format!("row {n} (document number {n}) does not match its checksum in vectors.crc"),
            )),
            None => Ok(()),
        }
    }

    /// Writes the checksums of rows `first..` (`data` holds whole rows) and syncs.
    pub(crate) fn write(&self, first: u64, data: &[u8]) -> Result<()> {
        let crcs: Vec<u8> = data
            .chunks_exact(row_bytes(self.dim).max(1))
            .flat_map(|row| crc32fast::hash(row).to_le_bytes())
            .collect();
        self.write_at(&crcs, HEADER_LEN as u64 + 4 * first)?;
        self.sync()
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io(&self.path, e))
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}
