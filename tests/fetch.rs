//! `fetch` against a minimal HTTP/1.1 hub + CDN served on loopback by the test itself.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybridb::fetch::{FetchError, FetchEvent, FetchOptions, FetchedFile, fetch};
use sha1::{Digest, Sha1};
use sha2::Sha256;

// ---------------------------------------------------------------- a tiny HTTP/1.1 server

#[derive(Debug, Clone)]
struct Req {
    target: String,
    headers: HashMap<String, String>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the full Content-Length but only this many body bytes, then close.
    cut_after: Option<usize>,
}

type Log = Arc<Mutex<Vec<Req>>>;

struct Server {
    base: String,
    log: Log,
}

impl Server {
    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

/// Serves on `ip` (port chosen by the OS), one thread per connection, `Connection: close`.
fn serve(ip: &str, handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let (handler, log2) = (Arc::new(handler), log.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (handler, log) = (handler.clone(), log2.clone());
            std::thread::spawn(move || {
                let _ = handle(stream, &*handler, &log);
            });
        }
    });
    Server { base, log }
}

fn handle(mut stream: TcpStream, handler: &dyn Fn(&Req) -> Resp, log: &Log) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Req { target, headers };
    log.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let n = resp
        .cut_after
        .unwrap_or(resp.body.len())
        .min(resp.body.len());
    stream.write_all(&resp.body[..n])?;
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}

fn status(status: u16, headers: &[(&str, &str)]) -> Resp {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Resp {
        status,
        headers,
        ..Resp::default()
    }
}

/// Serves `body` honouring `Range: bytes=k-` unless `ignore_range`.
fn serve_bytes(req: &Req, body: &[u8], ignore_range: bool) -> Resp {
    let from = req.header("range").and_then(|r| {
        r.strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    });
    match from {
        Some(k) if !ignore_range && k >= body.len() => status(416, &[]),
        Some(k) if !ignore_range => {
            let range = format!("bytes {k}-{}/{}", body.len() - 1, body.len());
            Resp {
                body: body[k..].to_vec(),
                ..status(206, &[("Content-Range", &range)])
            }
        }
        _ => Resp {
            body: body.to_vec(),
            ..status(200, &[])
        },
    }
}

// ---------------------------------------------------------------- the fake hub

struct RepoFile {
    path: &'static str,
    body: Vec<u8>,
    lfs: bool,
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn git_sha1_hex(b: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

fn files() -> Vec<RepoFile> {
    let mut x = 12345u32;
    let big: Vec<u8> = (0..300_000)
        .map(|_| {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    let tokenizer: Vec<u8> = format!(
        "{{\"vocab\": [{}]}}",
        (0..2000)
            .map(|i| format!("\"t{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    )
    .into_bytes();
    vec![
        RepoFile {
            path: "config.json",
            body: br#"{"hidden_size": 8}"#.to_vec(),
            lfs: false,
        },
        RepoFile {
            path: "tokenizer.json",
            body: tokenizer,
            lfs: false,
        },
        RepoFile {
            path: "model.onnx_data",
            body: big,
            lfs: true,
        },
        RepoFile {
            path: "onnx/model.onnx",
            body: b"onnx-graph-bytes".repeat(100),
            lfs: false,
        },
        RepoFile {
            path: "README.md",
            body: b"# not downloaded\n".to_vec(),
            lfs: false,
        },
    ]
}

fn listing_entry(f: &RepoFile) -> serde_json::Value {
    let mut e = serde_json::json!({"type": "file", "path": f.path, "size": f.body.len(), "oid": git_sha1_hex(&f.body)});
    if f.lfs {
        e["oid"] = git_sha1_hex(b"pointer").into();
        e["lfs"] = serde_json::json!({"oid": sha256_hex(&f.body), "size": f.body.len(), "pointerSize": 134});
    }
    e
}

#[derive(Default)]
struct Knobs {
    /// Cut the first response for this path after this many body bytes.
    cut_first: Option<(&'static str, usize)>,
    ignore_range: bool,
    /// Serve altered bytes (same length) for this path.
    corrupt: Option<&'static str>,
    extra_entries: Vec<serde_json::Value>,
    require_token: Option<&'static str>,
}

struct Hub {
    hub: Server,
    cdn: Server,
    files: Vec<RepoFile>,
}

fn hub(knobs: Knobs) -> Hub {
    let knobs = Arc::new(knobs);
    let cut_done = Arc::new(AtomicBool::new(false));
    let by_path = Arc::new(
        files()
            .into_iter()
            .map(|f| (f.path, f))
            .collect::<HashMap<_, _>>(),
    );
    let body_of = {
        let (knobs, cut_done) = (knobs.clone(), cut_done.clone());
        move |req: &Req, f: &RepoFile| {
            let mut body = f.body.clone();
            if knobs.corrupt == Some(f.path) {
                body[0] ^= 0xff;
            }
            let mut resp = serve_bytes(req, &body, knobs.ignore_range);
            if let Some((p, n)) = knobs.cut_first
                && p == f.path
                && !cut_done.swap(true, Ordering::SeqCst)
            {
                resp.cut_after = Some(n);
            }
            resp
        }
    };
    // A second loopback address makes the CDN another host (so no Authorization is forwarded).
    let cdn_ip = if TcpListener::bind(("127.0.0.2", 0)).is_ok() {
        "127.0.0.2"
    } else {
        "127.0.0.1"
    };
    let cdn = {
        let (by_path, body_of) = (by_path.clone(), body_of.clone());
        serve(cdn_ip, move |req| {
            let f = by_path
                .values()
                .find(|f| req.target == format!("/lfs/{}", sha256_hex(&f.body)));
            f.map_or_else(|| status(404, &[]), |f| body_of(req, f))
        })
    };
    let cdn_base = cdn.base.clone();
    let base_cell: Arc<Mutex<String>> = Arc::default();
    let hub = {
        let base_cell = base_cell.clone();
        serve("127.0.0.1", move |req| {
            let base = base_cell.lock().unwrap().clone();
            if let Some(tok) = knobs.require_token
                && req.header("authorization") != Some(&format!("Bearer {tok}"))
            {
                return status(401, &[("X-Error-Code", "RepoNotFound")]);
            }
            let tree = "/api/models/org/model/tree/main?recursive=true";
            let mut entries: Vec<serde_json::Value> = files().iter().map(listing_entry).collect();
            entries.insert(
                3,
                serde_json::json!({"type": "directory", "path": "onnx", "oid": "0"}),
            );
            entries.extend(knobs.extra_entries.iter().cloned());
            if req.target == tree {
                let link = format!("<{base}{tree}&cursor=p2>; rel=\"next\"");
                let body = serde_json::to_vec(&entries[..3]).unwrap();
                return Resp {
                    body,
                    ..status(200, &[("Link", &link)])
                };
            }
            if req.target == format!("{tree}&cursor=p2") {
                return Resp {
                    body: serde_json::to_vec(&entries[3..]).unwrap(),
                    ..status(200, &[])
                };
            }
            match req
                .target
                .strip_prefix("/org/model/resolve/main/")
                .and_then(|p| by_path.get(p))
            {
                Some(f) if f.lfs => status(
                    302,
                    &[(
                        "Location",
                        &format!("{cdn_base}/lfs/{}", sha256_hex(&f.body)),
                    )],
                ),
                Some(f) => body_of(req, f),
                None => status(
                    404,
                    &[
                        ("X-Error-Code", "RepoNotFound"),
                        ("X-Error-Message", "Repository not found"),
                    ],
                ),
            }
        })
    };
    *base_cell.lock().unwrap() = hub.base.clone();
    Hub {
        hub,
        cdn,
        files: files(),
    }
}

impl Hub {
    fn opts(&self) -> FetchOptions {
        FetchOptions {
            endpoint: self.hub.base.clone(),
            token: None,
            ..FetchOptions::default()
        }
    }
    fn body(&self, path: &str) -> &[u8] {
        &self.files.iter().find(|f| f.path == path).unwrap().body
    }
    fn resolve_requests(&self) -> Vec<Req> {
        self.hub
            .requests()
            .into_iter()
            .filter(|r| r.target.contains("/resolve/"))
            .collect()
    }
}

fn run(to: &Path, opts: &FetchOptions) -> Result<Vec<FetchedFile>, FetchError> {
    fetch("org/model", to, opts, &mut |_| {})
}

const MATCHED: [&str; 4] = [
    "config.json",
    "tokenizer.json",
    "model.onnx_data",
    "onnx/model.onnx",
];

fn assert_complete(h: &Hub, to: &Path) {
    for p in MATCHED {
        assert_eq!(std::fs::read(to.join(p)).unwrap(), h.body(p), "{p}");
        assert!(
            !to.join(format!("{p}.part")).exists(),
            "{p}.part left behind"
        );
    }
    assert!(!to.join("README.md").exists());
}

// ---------------------------------------------------------------- tests

#[test]
fn downloads_verifies_and_reports_progress() {
    let h = hub(Knobs::default());
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("m");
    let mut events = Vec::new();
    let got = fetch("org/model", &to, &h.opts(), &mut |e| {
        events.push(format!("{e:?}"))
    })
    .unwrap();
    assert_complete(&h, &to);
    let paths: Vec<&str> = got.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, MATCHED);
    assert!(got.iter().all(|f| !f.skipped && f.resumed_from == 0));
    assert_eq!(got[2].size, 300_000);
    let total: usize = MATCHED.iter().map(|p| h.body(p).len()).sum();
    assert_eq!(
        events[0],
        format!(
            "{:?}",
            FetchEvent::Listed {
                files: 4,
                bytes: total as u64
            }
        )
    );
    assert_eq!(events.iter().filter(|e| e.starts_with("Done")).count(), 4);
    assert!(
        events
            .iter()
            .any(|e| e == "Progress { path: \"model.onnx_data\", done: 300000 }")
    );
    // Both listing pages were read; README.md was never requested; the LFS file came via the CDN.
    let hub_reqs = h.hub.requests();
    assert!(hub_reqs.iter().any(|r| r.target.ends_with("&cursor=p2")));
    assert!(hub_reqs.iter().all(|r| !r.target.contains("README")));
    assert_eq!(h.resolve_requests().len(), 4);
    assert_eq!(h.cdn.requests().len(), 1);
    assert!(hub_reqs.iter().all(|r| r.header("authorization").is_none()));
}

#[test]
fn second_run_skips_verified_files() {
    let h = hub(Knobs::default());
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &h.opts()).unwrap();
    let before = h.resolve_requests().len();
    let got = run(dir.path(), &h.opts()).unwrap();
    assert!(got.iter().all(|f| f.skipped), "{got:?}");
    assert_eq!(h.resolve_requests().len(), before, "nothing re-downloaded");
    // A damaged file is not skipped: it is downloaded again.
    std::fs::write(dir.path().join("config.json"), b"{\"hidden_size\": 9}").unwrap();
    let got = run(dir.path(), &h.opts()).unwrap();
    assert!(!got[0].skipped && got[1..].iter().all(|f| f.skipped));
    assert_complete(&h, dir.path());
}

#[test]
fn resumes_after_connection_cut_mid_body() {
    let h = hub(Knobs {
        cut_first: Some(("model.onnx_data", 100_000)),
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let err = run(dir.path(), &h.opts()).unwrap_err();
    assert!(matches!(err, FetchError::Network { .. }), "{err}");
    assert!(err.to_string().contains("run again to resume"), "{err}");
    let part = dir.path().join("model.onnx_data.part");
    let k = std::fs::metadata(&part).unwrap().len();
    assert_eq!(k, 100_000);
    assert!(!dir.path().join("model.onnx_data").exists());

    let got = run(dir.path(), &h.opts()).unwrap();
    let lfs = got.iter().find(|f| f.path == "model.onnx_data").unwrap();
    assert_eq!((lfs.resumed_from, lfs.skipped), (k, false));
    let cdn = h.cdn.requests();
    assert_eq!(cdn.len(), 2);
    assert_eq!(cdn[0].header("range"), None);
    assert_eq!(
        cdn[1].header("range"),
        Some("bytes=100000-"),
        "Range survives the redirect"
    );
    assert_complete(&h, dir.path());
}

#[test]
fn resumes_from_existing_part_file() {
    let h = hub(Knobs::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json.part"),
        &h.body("tokenizer.json")[..1000],
    )
    .unwrap();
    let got = run(dir.path(), &h.opts()).unwrap();
    assert_eq!(got[1].resumed_from, 1000);
    let tok = h
        .resolve_requests()
        .into_iter()
        .find(|r| r.target.ends_with("tokenizer.json"))
        .unwrap();
    assert_eq!(tok.header("range"), Some("bytes=1000-"));
    assert_complete(&h, dir.path());
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let h = hub(Knobs {
        ignore_range: true,
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json.part"), b"garbage prefix").unwrap();
    let got = run(dir.path(), &h.opts()).unwrap();
    assert_eq!(got[1].resumed_from, 0);
    assert_complete(&h, dir.path());
}

#[test]
fn checksum_mismatch_fails_and_leaves_nothing() {
    for (path, algo) in [("config.json", "git-sha1"), ("model.onnx_data", "sha256")] {
        let h = hub(Knobs {
            corrupt: Some(path),
            ..Knobs::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let err = run(dir.path(), &h.opts()).unwrap_err();
        match &err {
            FetchError::Checksum {
                path: p,
                expected,
                actual,
            } => {
                assert_eq!(p, path);
                assert!(expected.starts_with(algo) && !expected.ends_with(actual.as_str()));
            }
            other => panic!("expected a checksum error, got {other}"),
        }
        assert!(!dir.path().join(path).exists());
        assert!(!dir.path().join(format!("{path}.part")).exists());
    }
}

#[test]
fn missing_repo_and_auth_errors_are_clear() {
    let h = hub(Knobs::default());
    let dir = tempfile::tempdir().unwrap();
    let err = fetch("org/missing", dir.path(), &h.opts(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, FetchError::Http { status: 404, .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("not found") && msg.contains("HF_TOKEN") && msg.contains("org/missing"),
        "{msg}"
    );

    let h = hub(Knobs {
        require_token: Some("hf_good"),
        ..Knobs::default()
    });
    let err = run(dir.path(), &h.opts()).unwrap_err();
    assert!(matches!(err, FetchError::Http { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let err = fetch("../etc", dir.path(), &h.opts(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, FetchError::InvalidRepo(_)), "{err}");
    let opts = FetchOptions {
        include: vec!["*.bin".into()],
        ..h.opts()
    };
    let opts = FetchOptions {
        token: Some("hf_good".into()),
        ..opts
    };
    let err = run(dir.path(), &opts).unwrap_err();
    assert!(matches!(err, FetchError::NothingMatched { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn path_traversal_in_listing_is_rejected() {
    for evil in ["../evil.json", "onnx/../../evil.json", "/tmp/evil.json"] {
        let entry = serde_json::json!({"type": "file", "path": evil, "size": 2, "oid": git_sha1_hex(b"{}")});
        let h = hub(Knobs {
            extra_entries: vec![entry],
            ..Knobs::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("m");
        let opts = FetchOptions {
            include: vec!["**".into()],
            ..h.opts()
        };
        let err = run(&to, &opts).unwrap_err();
        assert!(matches!(err, FetchError::BadListing { .. }), "{err}");
        assert!(err.to_string().contains(evil), "{err}");
        assert!(!dir.path().join("evil.json").exists());
        assert!(!to.exists(), "nothing written");
        assert!(h.resolve_requests().is_empty());
    }
}

#[test]
fn token_is_sent_to_the_hub_only() {
    let h = hub(Knobs {
        require_token: Some("hf_secret"),
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        token: Some("hf_secret".into()),
        ..h.opts()
    };
    run(dir.path(), &opts).unwrap();
    assert_complete(&h, dir.path());
    let hub_reqs = h.hub.requests();
    assert_eq!(hub_reqs.len(), 6, "two listing pages + four files");
    assert!(
        hub_reqs
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer hf_secret"))
    );
    if h.cdn.base.contains("127.0.0.2") {
        assert_eq!(
            h.cdn.requests()[0].header("authorization"),
            None,
            "token leaked to the CDN"
        );
    }
}

#[test]
fn revision_is_path_escaped() {
    let h = hub(Knobs::default());
    let dir = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        revision: "refs/pr/1".into(),
        ..h.opts()
    };
    let err = run(dir.path(), &opts).unwrap_err();
    assert!(matches!(err, FetchError::Http { status: 404, .. }), "{err}");
    assert!(err.to_string().contains("revision"), "{err}");
    assert_eq!(
        h.hub.requests()[0].target,
        "/api/models/org/model/tree/refs%2Fpr%2F1?recursive=true"
    );
}

#[test]
fn command_line_fetch_then_skip() {
    let h = hub(Knobs::default());
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("m");
    let cli = |repo: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hybridb"))
            .args(["model", "fetch", repo, "--to"])
            .arg(&to)
            .args(["--endpoint", &h.hub.base])
            .env_remove("HF_TOKEN")
            .output()
            .unwrap()
    };
    let out = cli("org/model");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 files downloaded"), "{stdout}");
    assert_complete(&h, &to);
    let out = cli("org/model");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 files downloaded (0 bytes), 4 already present"),
        "{stdout}"
    );
    let out = cli("org/missing");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not found"),
        "{stderr}"
    );
}
