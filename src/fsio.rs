//! Small file-system helpers shared by the on-disk structures.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Size of the header shared by hybridb's own binary files: magic (8 bytes), u32 version,
/// format-specific fields, and a CRC-32 of bytes 0..60 at offset 60.
pub(crate) const HEADER_LEN: usize = 64;

/// A header with `magic` and `version`, `fields` at offset 12, and its CRC filled in.
pub(crate) fn header(magic: &[u8; 8], version: u32, fields: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    let n = fields.len().min(48);
    h[12..12 + n].copy_from_slice(&fields[..n]);
    let crc = crc32fast::hash(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads and checks a header: length, magic, CRC and version. Returns it for the caller to
/// compare its own fields.
pub(crate) fn read_header(
    file: &File,
    path: &Path,
    magic: &[u8; 8],
    version: u32,
) -> Result<[u8; HEADER_LEN]> {
    let mut h = [0u8; HEADER_LEN];
    file.read_exact_at(&mut h, 0)
        .map_err(|_| Error::corrupted(path, "shorter than its 64-byte header"))?;
    let crc = u32::from_le_bytes([h[60], h[61], h[62], h[63]]);
    if &h[..8] != magic || crc32fast::hash(&h[..60]) != crc {
        return Err(Error::corrupted(path, "bad magic or header checksum"));
    }
    let found = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if found != version {
        return Err(Error::corrupted(
            path,
            format!("unsupported version {found}"),
        ));
    }
    Ok(h)
}

/// A fault point for tests of the commit protocol. With the `failpoints` feature, the N-th time
/// the process reaches the point named by `HYBRIDB_FAILPOINT=name:N` (N = 1 when omitted) it
/// aborts, or, with `name:N:enospc`, fails with "no space left on device" as a full disk would.
/// Without the feature it compiles to nothing.
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint(name: &str) -> crate::error::Result<()> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HITS: AtomicU32 = AtomicU32::new(0);
    let Ok(spec) = std::env::var("HYBRIDB_FAILPOINT") else {
        return Ok(());
    };
    let (spec, enospc) = match spec.strip_suffix(":enospc") {
        Some(s) => (s.to_string(), true),
        None => (spec, false),
    };
    let (point, nth) = match spec.rsplit_once(':') {
        Some((p, n)) if n.parse::<u32>().is_ok() => (p.to_string(), n.parse().unwrap_or(1)),
        _ => (spec.clone(), 1),
    };
    if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        if enospc {
            const ENOSPC: i32 = 28;
            return Err(crate::error::Error::io(
                format!("failpoint {name}"),
                std::io::Error::from_raw_os_error(ENOSPC),
            ));
        }
        std::process::abort();
    }
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn failpoint(_name: &str) -> crate::error::Result<()> {
    Ok(())
}
