//! Download a model repository from the Hugging Face hub (or any server speaking its API).
//!
//! Lists `{endpoint}/api/models/{repo}/tree/{revision}?recursive=true` (following
//! `Link: <..>; rel="next"` pagination), keeps the files matched by the include globs,
//! downloads each from `{endpoint}/{repo}/resolve/{revision}/{path}` into `{path}.part`
//! (resuming with `Range` when a partial file exists), verifies size and checksum
//! (SHA-256 for LFS files, git blob SHA-1 otherwise), then fsyncs and renames it into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Include patterns used by [`FetchOptions::default`]: what BGE-M3 style repos and
/// their ONNX exports need, without the full PyTorch weights.
pub const DEFAULT_INCLUDE: &[&str] = &[
    "tokenizer.json",
    "config.json",
    "*.onnx",
    "*.onnx_data",
    "*.onnx.data",
    "onnx/*",
    "sparse_linear.safetensors",
    "colbert_linear.safetensors",
    "sparse_linear.pt",
    "colbert_linear.pt",
    "1_Pooling/config.json",
];

const MAX_PAGES: usize = 10_000;
const MAX_LISTING_BYTES: u64 = 64 << 20;
const CHUNK: usize = 256 << 10;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Hub base URL; default `$HF_ENDPOINT` or `https://huggingface.co`. `http://` is allowed.
    pub endpoint: String,
    /// Branch, tag or commit; default `main`.
    pub revision: String,
    /// Glob patterns on repo paths: `*` within a path segment, `**` across segments,
    /// `?` one character. A pattern without `/` only matches top-level files.
    pub include: Vec<String>,
    /// Sent as `Authorization: Bearer ..`; default `$HF_TOKEN`.
    pub token: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        FetchOptions {
            endpoint: env("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            revision: "main".into(),
            include: DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect(),
            token: env("HF_TOKEN").map(|t| t.trim().to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// Path inside the repository (`/`-separated), also the path under `to`.
    pub path: String,
    pub size: u64,
    /// Already present with the right size and checksum; nothing was downloaded.
    pub skipped: bool,
    /// Bytes of an earlier partial download that were kept (0 when started from scratch).
    pub resumed_from: u64,
}

/// Progress of [`fetch`]. Per file: `Start`, any number of `Progress`, `Done`. A file
/// already present emits `Start` with `offset == size` then `Done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchEvent<'a> {
    Listed {
        files: usize,
        bytes: u64,
    },
    Start {
        path: &'a str,
        size: u64,
        offset: u64,
    },
    /// `done` counts bytes of the file present so far, including a resumed prefix.
    Progress {
        path: &'a str,
        done: u64,
    },
    Done {
        path: &'a str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {status} from {url}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("network error fetching {url}: {message}")]
    Network { url: String, message: String },
    #[error(
        "checksum mismatch for {path}: expected {expected}, got {actual} \
         (the partial download was deleted; run again to retry)"
    )]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("bad file listing from {url}: {message}")]
    BadListing { url: String, message: String },
    #[error("no file in {repo} matches the include patterns {include:?}")]
    NothingMatched { repo: String, include: Vec<String> },
    #[error(
        "invalid repository id {0:?}: expected \"owner/name\" using letters, digits, '-', '_', '.'"
    )]
    InvalidRepo(String),
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    oid: String,
    size: u64,
}

/// A file to download with what it must hash to.
pub(crate) struct Target {
    path: String,
    size: u64,
    lfs: bool,
    oid: String,
}

/// Downloads the files of `repo` matched by `opts.include` into `to`, verifying each.
pub fn fetch(
    repo: &str,
    to: &Path,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<Vec<FetchedFile>, FetchError> {
    validate_repo(repo)?;
    let endpoint = opts.endpoint.trim_end_matches('/');
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        let message = "the endpoint must start with http:// or https://";
        return Err(net(endpoint, message));
    }
    let agent = agent();
    let rev = escape(&opts.revision, false);
    let list_url = format!("{endpoint}/api/models/{repo}/tree/{rev}?recursive=true");
    let targets: Vec<Target> = list(&agent, &list_url, opts)?
        .into_iter()
        .filter(|t| opts.include.iter().any(|p| glob_match(p, &t.path)))
        .collect();
    if targets.is_empty() {
        let (repo, include) = (repo.to_string(), opts.include.clone());
        return Err(FetchError::NothingMatched { repo, include });
    }
    let (files, bytes) = (targets.len(), targets.iter().map(|t| t.size).sum());
    progress(FetchEvent::Listed { files, bytes });
    let mut out = Vec::with_capacity(targets.len());
    for t in &targets {
        let url = format!("{endpoint}/{repo}/resolve/{rev}/{}", escape(&t.path, true));
        out.push(download(&agent, &url, to, t, opts, progress)?);
    }
    Ok(out)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .timeout_per_write(Some(Duration::from_secs(60)))
        .max_redirects(10)
        // The hub redirects LFS files to a CDN on another host: never send it the token.
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        // Byte ranges must refer to the stored bytes, not a compressed encoding.
        .accept_encoding("identity")
        .user_agent(concat!("hybridb/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn get(
    agent: &ureq::Agent,
    url: &str,
    opts: &FetchOptions,
    range_from: u64,
) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
    let mut req = agent.get(url);
    if let Some(token) = &opts.token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    if range_from > 0 {
        req = req.header("Range", format!("bytes={range_from}-"));
    }
    req.call().map_err(|e| net(url, e.to_string()))
}

fn net(url: &str, message: impl Into<String>) -> FetchError {
    let (url, message) = (url.to_string(), message.into());
    FetchError::Network { url, message }
}

fn bad(url: &str, message: String) -> FetchError {
    let url = url.to_string();
    FetchError::BadListing { url, message }
}

fn http_error(url: &str, resp: &ureq::http::Response<ureq::Body>, listing: bool) -> FetchError {
    let status = resp.status().as_u16();
    let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok());
    let hint = match (status, header("x-error-code").unwrap_or("")) {
        (_, "GatedRepo") | (403, _) => {
            "access denied: the repository is gated or the token lacks permission; accept its \
             terms on the hub and set HF_TOKEN to a token with read access"
        }
        (401, _) => "repository not found or needs HF_TOKEN (private or gated repository)",
        (_, "RevisionNotFound") => "revision not found: check the branch, tag or commit",
        (_, "EntryNotFound") => "file not found at this revision",
        (404, _) if listing => {
            "repository or revision not found: check the name (owner/name) and revision; \
             private repositories need HF_TOKEN"
        }
        (404, _) => "file not found at this revision",
        (429, _) => "rate limited by the server: wait and run again (resumes where it stopped)",
        (s, _) if s >= 500 => "server error: run again later (downloads resume)",
        _ => "unexpected response",
    };
    let message = match header("x-error-message") {
        Some(detail) if !detail.is_empty() => format!("{hint} (server: {detail})"),
        _ => hint.to_string(),
    };
    let url = url.to_string();
    FetchError::Http {
        url,
        status,
        message,
    }
}

/// Fetches every page of the listing and returns its files, rejecting unsafe paths.
fn list(agent: &ureq::Agent, first: &str, opts: &FetchOptions) -> Result<Vec<Target>, FetchError> {
    let mut files = Vec::new();
    let mut next = Some(first.to_string());
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(bad(&url, "too many pages (pagination loop?)".into()));
        }
        let mut resp = get(agent, &url, opts, 0)?;
        if resp.status().as_u16() != 200 {
            return Err(http_error(&url, &resp, true));
        }
        next = resp
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link)
            .map(|l| absolute(&url, &l));
        let body = resp.body_mut().with_config().limit(MAX_LISTING_BYTES);
        let body = body.read_to_vec().map_err(|e| net(&url, e.to_string()))?;
        files.extend(parse_listing(&url, &body)?);
    }
    Ok(files)
}

/// Parses one page of the listing into its files, rejecting unsafe paths and bad checksums.
pub(crate) fn parse_listing(url: &str, body: &[u8]) -> Result<Vec<Target>, FetchError> {
    let entries: Vec<Entry> =
        serde_json::from_slice(body).map_err(|e| bad(url, format!("invalid JSON: {e}")))?;
    let mut files = Vec::new();
    for e in entries.into_iter().filter(|e| e.kind == "file") {
        if !safe_path(&e.path) {
            let why = "absolute or contains '..'";
            return Err(bad(url, format!("unsafe file path {:?} ({why})", e.path)));
        }
        let (size, lfs, oid) = match e.lfs {
            Some(l) => (l.size, true, l.oid.to_ascii_lowercase()),
            None => (e.size, false, e.oid.to_ascii_lowercase()),
        };
        let hex_len = if lfs { 64 } else { 40 };
        if oid.len() != hex_len || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(url, format!("no valid checksum for {:?}", e.path)));
        }
        let path = e.path;
        files.push(Target {
            path,
            size,
            lfs,
            oid,
        });
    }
    Ok(files)
}

/// The URL of a `rel="next"` link in one `Link` header value.
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let part = part.trim();
        let (url, params) = part.strip_prefix('<')?.split_once('>')?;
        let next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        next.then(|| url.to_string())
    })
}

/// Resolves a possibly root-relative link against the URL it came from.
pub(crate) fn absolute(base: &str, link: &str) -> String {
    if link.starts_with("http://") || link.starts_with("https://") {
        return link.to_string();
    }
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let origin_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{}", &base[..origin_end], link.trim_start_matches('/'))
}

fn validate_repo(repo: &str) -> Result<(), FetchError> {
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.len() <= 96
            && !s.starts_with(['.', '-'])
            && !s.contains("..")
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(()),
        _ => Err(FetchError::InvalidRepo(repo.into())),
    }
}

/// A relative, `/`-separated path that stays inside the destination directory
/// (`:` would name a drive or stream on Windows).
fn safe_path(p: &str) -> bool {
    let bad_char = |c: char| c == '\\' || c == '\0' || (cfg!(windows) && c == ':');
    !p.is_empty()
        && !p.contains(bad_char)
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

/// Percent-encodes everything but unreserved characters (and `/` if `keep_slash`).
fn escape(s: &str, keep_slash: bool) -> String {
    let keep =
        |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/');
    s.bytes()
        .map(|b| {
            if keep(b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Glob match on `/`-separated paths: `*` and `?` stay within a segment, a `**`
/// segment matches any number (including zero) of segments.
pub(crate) fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|i| match_segments(rest, &segs[i..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => {
                match_segment(p.as_bytes(), s.as_bytes()) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

enum Hasher {
    Sha256(Sha256),
    GitSha1(Sha1),
}

impl Hasher {
    fn new(t: &Target) -> Hasher {
        if t.lfs {
            Hasher::Sha256(Sha256::new())
        } else {
            let mut h = Sha1::new();
            h.update(format!("blob {}\0", t.size).as_bytes());
            Hasher::GitSha1(h)
        }
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::GitSha1(h) => h.update(data),
        }
    }
    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::GitSha1(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Write for Hasher {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.update(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` exists with the target's size and checksum.
fn verified(path: &Path, t: &Target) -> Result<bool, FetchError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == t.size => {
            let (mut h, file) = (Hasher::new(t), File::open(path).map_err(io_err(path))?);
            io::copy(&mut file.take(t.size), &mut h).map_err(io_err(path))?;
            Ok(h.hex() == t.oid)
        }
        _ => Ok(false),
    }
}

fn download(
    agent: &ureq::Agent,
    url: &str,
    to: &Path,
    t: &Target,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<FetchedFile, FetchError> {
    let dest = t.path.split('/').fold(to.to_path_buf(), |p, s| p.join(s));
    let mut part = dest.clone().into_os_string();
    part.push(".part");
    let (part, path, size) = (PathBuf::from(part), t.path.as_str(), t.size);
    let mut out = FetchedFile {
        path: t.path.clone(),
        size,
        skipped: true,
        resumed_from: 0,
    };
    if verified(&dest, t)? {
        progress(FetchEvent::Start {
            path,
            size,
            offset: size,
        });
        progress(FetchEvent::Done { path });
        return Ok(out);
    }
    out.skipped = false;
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > size || (have == size && !verified(&part, t)?) {
        have = 0; // longer than the file, or complete but wrong: start over
    }
    let mut resp = if have < size {
        Some(request(agent, url, opts, &mut have)?)
    } else {
        None
    };
    if let Some(n) = resp.as_ref().and_then(|r| r.body().content_length())
        && have + n != size
    {
        return Err(mismatch(
            t,
            format!("{size} bytes"),
            format!("{} bytes", have + n),
        ));
    }
    out.resumed_from = have;
    progress(FetchEvent::Start {
        path,
        size,
        offset: have,
    });

    let mut opener = OpenOptions::new();
    opener.create(true).read(true).write(true).truncate(false);
    let mut file = opener.open(&part).map_err(io_err(&part))?;
    file.set_len(have).map_err(io_err(&part))?;
    let mut h = Hasher::new(t); // the checksum covers the kept prefix too
    io::copy(&mut (&file).take(have), &mut h).map_err(io_err(&part))?;
    file.seek(SeekFrom::Start(have)).map_err(io_err(&part))?;
    let (mut done, mut cause) = (have, "connection closed".to_string());
    if let Some(resp) = resp.as_mut() {
        let mut body = resp.body_mut().as_reader();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    cause = e.to_string();
                    break;
                }
            };
            if done + n as u64 > size {
                drop(file);
                let _ = fs::remove_file(&part);
                return Err(mismatch(t, format!("{size} bytes"), "more".into()));
            }
            h.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io_err(&part))?;
            done += n as u64;
            progress(FetchEvent::Progress { path, done });
        }
    }
    file.sync_all().map_err(io_err(&part))?;
    drop(file);
    if done < size {
        let kept = "the partial file is kept, run again to resume";
        return Err(net(
            url,
            format!("{cause} after {done} of {size} bytes; {kept}"),
        ));
    }
    let actual = h.hex();
    if actual != t.oid {
        let _ = fs::remove_file(&part);
        let algo = if t.lfs { "sha256" } else { "git-sha1" };
        return Err(mismatch(t, format!("{algo} {}", t.oid), actual));
    }
    fs::rename(&part, &dest).map_err(io_err(&dest))?;
    if let Some(dir) = dest.parent() {
        // Make the rename durable; directories cannot be opened for this on every platform.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    progress(FetchEvent::Done { path });
    Ok(out)
}

/// GET from byte `*have`; sets `*have` to 0 when the server sends the whole file instead.
fn request(
    agent: &ureq::Agent,
    url: &str,
    opts: &FetchOptions,
    have: &mut u64,
) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
    let r = get(agent, url, opts, *have)?;
    let range_start = || {
        let v = r.headers().get("content-range")?.to_str().ok()?;
        let (start, _) = v.trim().strip_prefix("bytes ")?.split_once('-')?;
        start.trim().parse::<u64>().ok()
    };
    match r.status().as_u16() {
        206 if *have > 0 && range_start() == Some(*have) => Ok(r),
        200 => {
            *have = 0; // the server ignored the range
            Ok(r)
        }
        416 if *have > 0 => {
            *have = 0; // the partial file does not fit what the server has: start over
            request(agent, url, opts, have)
        }
        206 => Err(net(
            url,
            format!("asked for bytes {have}- but got another range"),
        )),
        _ => Err(http_error(url, &r, false)),
    }
}

fn mismatch(t: &Target, expected: String, actual: String) -> FetchError {
    FetchError::Checksum {
        path: t.path.clone(),
        expected,
        actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_segments() {
        assert!(glob_match("*.onnx", "model.onnx"));
        assert!(!glob_match("*.onnx", "onnx/model.onnx"));
        assert!(glob_match("onnx/*", "onnx/model.onnx"));
        assert!(!glob_match("onnx/*", "onnx/sub/model.onnx"));
        assert!(!glob_match("onnx/*", "onnx"));
        assert!(glob_match("config.json", "config.json"));
        assert!(!glob_match("config.json", "1_Pooling/config.json"));
        assert!(glob_match("1_Pooling/config.json", "1_Pooling/config.json"));
        assert!(glob_match("**/*.onnx", "model.onnx"));
        assert!(glob_match("**/*.onnx", "a/b/c/model.onnx"));
        assert!(glob_match("a/**/z", "a/z"));
        assert!(glob_match("a/**/z", "a/b/c/z"));
        assert!(!glob_match("a/**/z", "b/z"));
        assert!(glob_match("**", "anything/at/all"));
        assert!(glob_match("model.?nnx", "model.onnx"));
        assert!(!glob_match("*.onnx", "model.onnx_data"));
        assert!(glob_match("*.onnx_data", "model.onnx_data"));
        assert!(glob_match("*", "x"));
        assert!(!glob_match("*", "x/y"));
        assert!(glob_match("*sparse*", "sparse_linear.safetensors"));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn default_patterns() {
        let inc = |p: &str| DEFAULT_INCLUDE.iter().any(|g| glob_match(g, p));
        let want = "tokenizer.json config.json model.onnx model.onnx_data onnx/model.onnx \
                    onnx/model.onnx_data sparse_linear.safetensors 1_Pooling/config.json";
        want.split_whitespace().for_each(|p| assert!(inc(p), "{p}"));
        let skip = "pytorch_model.bin model.safetensors sentencepiece.bpe.model README.md";
        skip.split_whitespace()
            .for_each(|p| assert!(!inc(p), "{p}"));
    }

    #[test]
    fn repo_ids_paths_escaping() {
        for ok in "BAAI/bge-m3 a/b org_1/m.v2-x".split(' ') {
            assert!(validate_repo(ok).is_ok(), "{ok}");
        }
        for bad in "bge-m3 /a/b a/b/c a/.. ../b a/b%20c a/ a/b?x a/.b -a/b".split(' ') {
            let err = validate_repo(bad);
            assert!(matches!(err, Err(FetchError::InvalidRepo(_))), "{bad}");
        }
        assert!(validate_repo("").is_err() && validate_repo("a/b c").is_err());
        assert!(safe_path("onnx/model.onnx"));
        for bad in "../evil /etc/passwd a/../../b a//b ./a a\\b a/".split(' ') {
            assert!(!safe_path(bad), "{bad}");
        }
        assert!(!safe_path(""));
        assert_eq!(escape("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(escape("onnx/a b.onnx", true), "onnx/a%20b.onnx");
    }

    #[test]
    fn link_headers() {
        let h = r#"<https://hf.co/api/x?cursor=ab%3D>; rel="next""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://hf.co/api/x?cursor=ab%3D")
        );
        assert_eq!(
            next_link(r#"<http://a/1>; rel="prev", <http://a/3>; rel=next"#).unwrap(),
            "http://a/3"
        );
        assert_eq!(next_link(r#"<http://a/1>; rel="prev""#), None);
        assert_eq!(
            absolute("http://h:1/api/x?y", "/api/z?c=2"),
            "http://h:1/api/z?c=2"
        );
        assert_eq!(absolute("http://h:1/api", "https://o/p"), "https://o/p");
    }

    #[test]
    fn git_blob_sha1() {
        // `printf 'hello\n' | git hash-object --stdin`
        let (path, oid) = ("x".to_string(), String::new());
        let mut h = Hasher::new(&Target {
            path,
            size: 6,
            lfs: false,
            oid,
        });
        h.update(b"hello\n");
        assert_eq!(h.hex(), "ce013625030ba8dba906f756967f9e9ca394464a");
    }
}
