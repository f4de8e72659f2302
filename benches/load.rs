//! Concurrent load: reader threads run hybrid queries while one writer ingests and commits, for
//! a bounded time, then the same readers run alone as the baseline. Every result is checked
//! against what the writer had committed when the search started and ended. Run with
//! `cargo bench --bench load [-- --docs N --seconds S --baseline-seconds S --readers R --batch B
//! --upserts U --deletes D --dim D --colbert-dim C]` (or the same names in upper case with `LOAD_` in
//! the environment: `LOAD_SECONDS=60`). Exits non-zero when a check fails.
//!
//! Checks, on every result: no error; no id of a batch whose commit had not started by the end
//! of the search; no version (metadata `batch`) newer than that; no id deleted, and no version
//! replaced, by a commit that completed before the search started; no duplicate ids; filters
//! applied; a document of a completed batch, queried by its own vectors and text within its
//! batch, is found; `db.seq()` never goes backwards and is never behind a completed commit.
//! After the load phase the database is audited against the writer's log of commits.
//!
//! Document ids are `b{batch}-{i}`, one commit a batch; the pre-load is batches 1..=P of the
//! same size, written before the readers start. Each document's metadata holds `{"batch": b}`
//! (the batch that wrote this version). The writer only upserts and deletes pre-loaded ids, each
//! at most once, so readers know which version of every id may be visible.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use hybridb::{Database, Document, Hit, Metric, Precision, Query, Schema, SparseVector};
use serde_json::json;

mod common;

use common::Rng;

const CLUSTERS: usize = 200;
const VOCABULARY: usize = 2000;
const SPARSE_VOCABULARY: f32 = 30_000.0;
const COLBERT_TOKENS: usize = 4;
const QUERY_TOKENS: usize = 8;

struct Params {
    docs: usize,
    seconds: u64,
    baseline_seconds: u64,
    readers: usize,
    batch: usize,
    upserts: usize,
    deletes: usize,
    dim: usize,
    colbert_dim: usize,
}

impl Params {
    fn from_args() -> Params {
        // `--name N`, else `LOAD_NAME=N`, else the default.
        let get = |name: &str, default: usize| {
            let env = format!("LOAD_{}", name.to_uppercase().replace('-', "_"));
            let default = std::env::var(env)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default);
            common::arg(&format!("--{name}"), default)
        };
        Params {
            docs: get("docs", 20_000),
            seconds: get("seconds", 20) as u64,
            baseline_seconds: get("baseline-seconds", 10) as u64,
            readers: get("readers", 8),
            batch: get("batch", 500).max(1),
            upserts: get("upserts", 25),
            deletes: get("deletes", 25),
            dim: get("dim", 384),
            colbert_dim: get("colbert-dim", 128),
        }
    }
}

/// Deterministic synthetic content: any document's vectors and text can be rebuilt from its
/// seed, so readers can query for a document the writer committed without sharing it.
struct Gen {
    colbert_dim: usize,
    centres: Vec<Vec<f32>>,
    words: Vec<String>,
}

struct Content {
    dense: Vec<f32>,
    sparse: SparseVector,
    text: String,
}

impl Gen {
    fn new(dim: usize, colbert_dim: usize) -> Gen {
        let mut rng = Rng(42);
        let centres = (0..CLUSTERS)
            .map(|_| (0..dim).map(|_| rng.normal()).collect())
            .collect();
        let syllables: Vec<char> = (0..400)
            .map(|i| char::from_u32(0xAC00 + i * 27).expect("hangul syllable"))
            .collect();
        let words = (0..VOCABULARY)
            .map(|_| {
                (0..3)
                    .map(|_| syllables[(rng.next() % 400) as usize])
                    .collect()
            })
            .collect();
        Gen {
            colbert_dim,
            centres,
            words,
        }
    }

    fn seed(batch: u64, i: usize, salt: u64) -> Rng {
        Rng((batch << 32 | i as u64) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A unit vector near one of the cluster centres.
    fn dense(&self, rng: &mut Rng) -> Vec<f32> {
        let c = &self.centres[(rng.next() % CLUSTERS as u64) as usize];
        let mut v: Vec<f32> = c.iter().map(|x| x + 0.4 * rng.normal()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    /// Zipf-like term ids, ascending and unique, positive weights.
    fn sparse(rng: &mut Rng, terms: usize) -> SparseVector {
        let mut ids: Vec<u32> = (0..terms)
            .map(|_| {
                let u = rng.unit().max(1e-6);
                (u * u * u * SPARSE_VOCABULARY) as u32
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let values = ids.iter().map(|_| 0.01 + rng.unit()).collect();
        SparseVector::new(ids, values).expect("ascending ids")
    }

    /// `n` words from the vocabulary, skewed toward the first ones.
    fn text(&self, rng: &mut Rng, n: usize) -> String {
        let words: Vec<&str> = (0..n)
            .map(|_| {
                let u = rng.unit();
                self.words[(u * u * VOCABULARY as f32) as usize].as_str()
            })
            .collect();
        words.join(" ")
    }

    /// Unit rows of ColBERT token vectors.
    fn tokens(&self, rng: &mut Rng, rows: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..rows * self.colbert_dim)
            .map(|_| rng.unit() - 0.5)
            .collect();
        for r in v.chunks_mut(self.colbert_dim) {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= n);
        }
        v
    }

    fn content(&self, rng: &mut Rng) -> Content {
        Content {
            dense: self.dense(rng),
            sparse: Gen::sparse(rng, 30),
            text: self.text(rng, 12),
        }
    }

    /// Document `i` of `batch`. An upsert of a pre-loaded id gets fresh content (`salt` 1).
    fn doc(&self, id: String, batch: u64, i: usize, salt: u64) -> Document {
        let mut rng = Gen::seed(batch, i, salt);
        let c = self.content(&mut rng);
        let mut d = Document::new(id)
            .text(c.text)
            .metadata(json!({ "batch": batch }))
            .dense(c.dense)
            .sparse(c.sparse);
        if self.colbert_dim > 0 {
            d = d.colbert(self.tokens(&mut rng, COLBERT_TOKENS));
        }
        d
    }

    /// The content of new document `i` of `batch`, as the writer generated it.
    fn new_content(&self, batch: u64, i: usize) -> Content {
        self.content(&mut Gen::seed(batch, i, 0))
    }
}

#[derive(Clone, Copy)]
enum Change {
    Upserted(u64),
    Deleted(u64),
}

/// What the writer publishes to the readers.
struct Shared {
    /// The highest batch whose `commit()` has been called.
    started: AtomicU64,
    /// The highest batch whose `commit()` has returned.
    done: AtomicU64,
    /// Batches 1..=preloaded were written before the readers started.
    preloaded: u64,
    /// Batch b commits as seq `seq0 + b`.
    seq0: u64,
    /// Pre-loaded ids the writer upserted or deleted, with the batch; entered before the
    /// batch's commit starts.
    changed: RwLock<HashMap<String, Change>>,
    /// Per committed batch, recorded after its commit returned: the ids it committed.
    log: Mutex<Vec<BatchLog>>,
}

struct BatchLog {
    batch: u64,
    seq: u64,
    new: usize,
    upserted: Vec<String>,
    deleted: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hybrid,
    Probe,
    Filtered,
    Reranked,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Hybrid => "hybrid: dense + sparse + bm25",
            Kind::Probe => "hybrid, the old content of an id upserted or deleted",
            Kind::Filtered => "hybrid + filter batch = b (a committed doc's own vectors)",
            Kind::Reranked => "hybrid + ColBERT rerank",
        }
    }
}

/// One reader's measurements.
#[derive(Default)]
struct ReaderOut {
    /// (kind, during a commit, ms)
    latencies: Vec<(Kind, bool, f64)>,
    violations: BTreeMap<&'static str, u64>,
    examples: Vec<String>,
}

impl ReaderOut {
    fn violation(&mut self, what: &'static str, detail: String) {
        *self.violations.entry(what).or_default() += 1;
        if self.examples.len() < 5 {
            self.examples.push(format!("{what}: {detail}"));
        }
    }
}

fn parse_id(id: &str) -> Option<(u64, usize)> {
    let (b, i) = id.strip_prefix('b')?.split_once('-')?;
    Some((b.parse().ok()?, i.parse().ok()?))
}

/// Runs queries until `deadline` and checks every result against the writer's progress.
fn reader(
    db: &Database,
    synth: &Gen,
    shared: &Shared,
    p: &Params,
    r: usize,
    deadline: Instant,
) -> ReaderOut {
    let mut out = ReaderOut::default();
    let mut rng = Rng(1000 + r as u64);
    let mut last_seq = 0;
    let mut n = r;
    while Instant::now() < deadline {
        n += 1;
        let kind = match n % 4 {
            1 => Kind::Probe,
            2 => Kind::Filtered,
            3 if p.colbert_dim > 0 => Kind::Reranked,
            _ => Kind::Hybrid,
        };
        let done_before = shared.done.load(SeqCst);
        let started_before = shared.started.load(SeqCst);
        // The filtered query asks for a document of a committed batch by its own vectors and
        // text, restricted to that batch: it must come back (unless the writer changed it).
        let mut target = None;
        // The probe queries with the pre-load content of an id that a committed batch upserted
        // or deleted: if the old version were still visible it would rank first.
        let probe = (kind == Kind::Probe)
            .then(|| {
                let log = shared.log.lock().expect("log");
                let entry = log.iter().rev().find(|e| e.batch <= done_before)?;
                let ids: Vec<&String> = entry.upserted.iter().chain(&entry.deleted).collect();
                let id = ids.get((rng.next() % ids.len().max(1) as u64) as usize)?;
                parse_id(id)
            })
            .flatten();
        let kind = if kind == Kind::Probe && probe.is_none() {
            Kind::Hybrid
        } else {
            kind
        };
        let query = match kind {
            Kind::Probe => {
                let (b, i) = probe.expect("probe id");
                let c = synth.new_content(b, i);
                Query::new().dense(c.dense).sparse(c.sparse).text(c.text)
            }
            Kind::Filtered => {
                let b = if rng.next().is_multiple_of(2) {
                    done_before
                } else {
                    1 + rng.next() % done_before
                };
                let i = (rng.next() % p.batch as u64) as usize;
                let c = synth.new_content(b, i);
                target = Some((b, format!("b{b}-{i}")));
                Query::new()
                    .dense(c.dense)
                    .sparse(c.sparse)
                    .text(c.text)
                    .filter_eq("batch", json!(b))
            }
            _ => {
                let mut q = Query::new()
                    .dense(synth.dense(&mut rng))
                    .sparse(Gen::sparse(&mut rng, 16))
                    .text(synth.text(&mut rng, 3));
                if kind == Kind::Reranked {
                    q = q.colbert(synth.tokens(&mut rng, QUERY_TOKENS));
                }
                q
            }
        }
        .k(10);
        let seq_before = db.seq();
        let start = Instant::now();
        let result = db.search(&query);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let seq_after = db.seq();
        let started_after = shared.started.load(SeqCst);
        out.latencies.push((kind, started_before > done_before, ms));

        if seq_before < last_seq || seq_after < seq_before {
            out.violation(
                "snapshot seq went backwards",
                format!("{last_seq} then {seq_before} then {seq_after}"),
            );
        }
        last_seq = seq_after;
        if seq_before < shared.seq0 + done_before {
            out.violation(
                "stale snapshot",
                format!("seq {seq_before} after batch {done_before} committed"),
            );
        }
        let hits = match result {
            Ok(h) => h,
            Err(e) => {
                out.violation("search error", e.to_string());
                continue;
            }
        };
        check_hits(
            &mut out,
            &hits,
            shared,
            p,
            target.as_ref(),
            done_before,
            started_after,
        );
    }
    out
}

fn check_hits(
    out: &mut ReaderOut,
    hits: &[Hit],
    shared: &Shared,
    p: &Params,
    target: Option<&(u64, String)>,
    done_before: u64,
    started_after: u64,
) {
    let changed = shared.changed.read().expect("changed");
    let mut seen = HashSet::new();
    for h in hits {
        if !seen.insert(h.id.as_str()) {
            out.violation("duplicate id in one result", h.id.clone());
        }
        let Some((b, i)) = parse_id(&h.id) else {
            out.violation("unknown id", h.id.clone());
            continue;
        };
        if b == 0 || i >= p.batch {
            out.violation("unknown id", h.id.clone());
        }
        if b > started_after {
            out.violation(
                "uncommitted write visible",
                format!("{} while batch {started_after} was the last started", h.id),
            );
        }
        let Some(version) = h
            .document
            .as_ref()
            .and_then(|d| d.metadata.get("batch"))
            .and_then(|v| v.as_u64())
        else {
            out.violation("hit without its document", h.id.clone());
            continue;
        };
        if version > started_after {
            out.violation(
                "uncommitted write visible",
                format!(
                    "{} at version {version}, last started {started_after}",
                    h.id
                ),
            );
        }
        if let Some((f, _)) = target
            && version != *f
        {
            out.violation(
                "filter not applied",
                format!("{} has batch {version}, filter {f}", h.id),
            );
        }
        let preloaded = b <= shared.preloaded;
        let expected_ok = match (preloaded, changed.get(&h.id)) {
            (true, Some(&Change::Deleted(d))) => {
                if d <= done_before {
                    out.violation(
                        "deleted id visible",
                        format!("{} deleted by batch {d}, {done_before} done before", h.id),
                    );
                }
                version == b
            }
            (true, Some(&Change::Upserted(u))) => {
                if u <= done_before && version != u {
                    out.violation(
                        "replaced version visible",
                        format!("{} at {version}, upserted by {u} before the search", h.id),
                    );
                }
                version == b || version == u
            }
            _ => version == b,
        };
        if !expected_ok {
            out.violation("unknown version", format!("{} at version {version}", h.id));
        }
    }
    if let Some((b, id)) = target
        && !changed.contains_key(id)
        && !hits.iter().any(|h| &h.id == id)
    {
        out.violation(
            "committed write not found",
            format!("{id} (batch {b}, {done_before} done before the search)"),
        );
    }
}

struct WriterOut {
    commits: usize,
    new_docs: usize,
    upserts: usize,
    deletes: usize,
    secs: f64,
    commit_ms: Vec<f64>,
    error: Option<String>,
}

/// Writes batches until `deadline`: `p.batch` new documents, `p.upserts` replacements and
/// `p.deletes` deletions of pre-loaded ids, one commit each.
fn writer(db: &Database, synth: &Gen, shared: &Shared, p: &Params, deadline: Instant) -> WriterOut {
    let mut rng = Rng(7);
    // Pre-loaded ids in random order; each is changed at most once.
    let mut pool: Vec<String> = (1..=shared.preloaded)
        .flat_map(|b| (0..p.batch).map(move |i| format!("b{b}-{i}")))
        .collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut out = WriterOut {
        commits: 0,
        new_docs: 0,
        upserts: 0,
        deletes: 0,
        secs: 0.0,
        commit_ms: Vec::new(),
        error: None,
    };
    let start = Instant::now();
    let mut batch = shared.preloaded;
    let result = (|| -> hybridb::Result<()> {
        while Instant::now() < deadline {
            batch += 1;
            let mut w = db.writer()?;
            for i in 0..p.batch {
                w.upsert(synth.doc(format!("b{batch}-{i}"), batch, i, 0))?;
            }
            let mut upserted = Vec::new();
            let mut deleted = Vec::new();
            for j in 0..p.upserts {
                let Some(id) = pool.pop() else { break };
                w.upsert(synth.doc(id.clone(), batch, j, 1))?;
                upserted.push(id);
            }
            for _ in 0..p.deletes {
                let Some(id) = pool.pop() else { break };
                w.delete(&id)?;
                deleted.push(id);
            }
            {
                let mut changed = shared.changed.write().expect("changed");
                for id in &upserted {
                    changed.insert(id.clone(), Change::Upserted(batch));
                }
                for id in &deleted {
                    changed.insert(id.clone(), Change::Deleted(batch));
                }
            }
            shared.started.store(batch, SeqCst);
            let t = Instant::now();
            let info = w.commit()?;
            out.commit_ms.push(t.elapsed().as_secs_f64() * 1e3);
            shared.done.store(batch, SeqCst);
            let expect = (
                shared.seq0 + batch,
                (p.batch + upserted.len()) as u64,
                (upserted.len() + deleted.len()) as u64,
            );
            if (info.seq, info.upserted, info.removed) != expect {
                return Err(hybridb::Error::Store(format!(
                    "batch {batch}: commit reported seq {} upserted {} removed {}, expected {expect:?}",
                    info.seq, info.upserted, info.removed
                )));
            }
            out.commits += 1;
            out.new_docs += p.batch;
            out.upserts += upserted.len();
            out.deletes += deleted.len();
            shared.log.lock().expect("log").push(BatchLog {
                batch,
                seq: info.seq,
                new: p.batch,
                upserted,
                deleted,
            });
        }
        Ok(())
    })();
    out.secs = start.elapsed().as_secs_f64();
    out.error = result.err().map(|e| format!("batch {batch}: {e}"));
    out
}

/// After the writer stopped: the database holds exactly what the log says was committed.
fn audit(db: &Database, shared: &Shared, p: &Params) -> Vec<String> {
    let log = shared.log.lock().expect("log");
    let mut problems = Vec::new();
    let mut expect_len = shared.preloaded * p.batch as u64;
    for (n, entry) in log.iter().enumerate() {
        if entry.batch != shared.preloaded + n as u64 + 1 || entry.seq != shared.seq0 + entry.batch
        {
            problems.push(format!(
                "log entry {n}: batch {} seq {}",
                entry.batch, entry.seq
            ));
        }
        expect_len += entry.new as u64;
        expect_len -= entry.deleted.len() as u64;
        let version = |id: &str| {
            db.get(id)
                .map(|d| d.and_then(|d| d.metadata.get("batch").and_then(|v| v.as_u64())))
        };
        for i in [0, entry.new / 2, entry.new.saturating_sub(1)] {
            let id = format!("b{}-{i}", entry.batch);
            if entry.new > 0 && !matches!(version(&id), Ok(Some(v)) if v == entry.batch) {
                problems.push(format!("{id}: committed, not found at its version"));
            }
        }
        for id in &entry.upserted {
            if !matches!(version(id), Ok(Some(v)) if v == entry.batch) {
                problems.push(format!(
                    "{id}: upserted by batch {}, not at that version",
                    entry.batch
                ));
            }
        }
        for id in &entry.deleted {
            if !matches!(version(id), Ok(None)) {
                problems.push(format!(
                    "{id}: deleted by batch {}, still there",
                    entry.batch
                ));
            }
        }
    }
    if db.len() != expect_len {
        problems.push(format!(
            "{} live documents, expected {expect_len}",
            db.len()
        ));
    }
    let last = log.last().map_or(shared.preloaded, |e| e.batch);
    if db.seq() != shared.seq0 + last {
        problems.push(format!("seq {}, expected {}", db.seq(), shared.seq0 + last));
    }
    problems
}

/// Runs `p.readers` readers for `seconds`, with the writer when `with_writer`.
fn phase(
    db: &Database,
    synth: &Gen,
    shared: &Shared,
    p: &Params,
    seconds: u64,
    with_writer: bool,
) -> (Vec<ReaderOut>, Option<WriterOut>, f64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    std::thread::scope(|s| {
        let w = with_writer.then(|| s.spawn(|| writer(db, synth, shared, p, deadline)));
        let readers: Vec<_> = (0..p.readers)
            .map(|r| s.spawn(move || reader(db, synth, shared, p, r, deadline)))
            .collect();
        let outs: Vec<ReaderOut> = readers
            .into_iter()
            .map(|h| h.join().expect("reader panicked"))
            .collect();
        let elapsed = start.elapsed().as_secs_f64();
        let w = w.map(|h| h.join().expect("writer panicked"));
        (outs, w, elapsed)
    })
}

/// p50, p99 and max in milliseconds.
fn percentiles(mut t: Vec<f64>) -> (f64, f64, f64) {
    if t.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), t[t.len() - 1])
}

fn select(outs: &[ReaderOut], keep: impl Fn(Kind, bool) -> bool) -> Vec<f64> {
    outs.iter()
        .flat_map(|o| &o.latencies)
        .filter(|(k, c, _)| keep(*k, *c))
        .map(|x| x.2)
        .collect()
}

fn main() {
    let p = Params::from_args();
    println!(
        "# hybridb load benchmark ({} threads available)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let synth = Gen::new(p.dim, p.colbert_dim);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut schema = Schema::new().dense(p.dim, Metric::Cosine).sparse().text();
    if p.colbert_dim > 0 {
        schema = schema.colbert(p.colbert_dim, Precision::F16);
    }
    let db = Database::open_or_create(dir.path(), schema).expect("create");
    // The pre-load: batches 1..=P of `p.batch` new documents, one commit each, no readers.
    let preloaded = p.docs.div_ceil(p.batch).max(1) as u64;
    let start = Instant::now();
    let mut preload_ms = Vec::new();
    for b in 1..=preloaded {
        let mut w = db.writer().expect("writer");
        for i in 0..p.batch {
            w.upsert(synth.doc(format!("b{b}-{i}"), b, i, 0))
                .expect("upsert");
        }
        let t = Instant::now();
        w.commit().expect("commit");
        preload_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let preload_secs = start.elapsed().as_secs_f64();
    let n0 = preloaded as usize * p.batch;
    println!(
        "setup: {n0} documents pre-loaded in {preloaded} commits of {} in {preload_secs:.1} s \
         ({}-d cosine, ~30 sparse terms, 12 words of a {VOCABULARY}-word vocabulary{})",
        p.batch,
        p.dim,
        if p.colbert_dim > 0 {
            format!(
                ", ColBERT {}-d f16 x {COLBERT_TOKENS} tokens",
                p.colbert_dim
            )
        } else {
            String::new()
        }
    );
    let shared = Shared {
        started: AtomicU64::new(preloaded),
        done: AtomicU64::new(preloaded),
        preloaded,
        seq0: db.seq() - preloaded,
        changed: RwLock::new(HashMap::new()),
        log: Mutex::new(Vec::new()),
    };
    println!(
        "load: {} readers + 1 writer ({} new + {} upserts + {} deletes a commit) for {} s; \
         then baseline: the same readers alone for {} s on the final collection\n",
        p.readers, p.batch, p.upserts, p.deletes, p.seconds, p.baseline_seconds
    );

    let (load, w, load_secs) = phase(&db, &synth, &shared, &p, p.seconds, true);
    let w = w.expect("writer ran");
    let problems = audit(&db, &shared, &p);
    let (base, _, base_secs) = phase(&db, &synth, &shared, &p, p.baseline_seconds, false);

    let written = w.new_docs + w.upserts;
    let (c50, c99, cmax) = percentiles(w.commit_ms.clone());
    let n_load = select(&load, |_, _| true).len();
    let n_base = select(&base, |_, _| true).len();
    println!("| | value |\n|---|---|");
    println!("| readers | {} |", p.readers);
    println!("| writer commits done | {} |", w.commits);
    println!(
        "| docs written | {written} ({} new + {} upserts; {} deletes) |",
        w.new_docs, w.upserts, w.deletes
    );
    let (a50, a99, amax) = percentiles(preload_ms);
    println!(
        "| docs/s written (pre-load, writer alone) | {:.0} ({:.0}) |",
        written as f64 / w.secs,
        n0 as f64 / preload_secs
    );
    println!(
        "| commit latency p50 / p99 / max ms (pre-load) | {c50:.1} / {c99:.1} / {cmax:.1} \
         ({a50:.1} / {a99:.1} / {amax:.1}) |"
    );
    println!(
        "| queries under load (q/s) | {n_load} ({:.1}) |",
        n_load as f64 / load_secs
    );
    println!(
        "| queries baseline, no writer (q/s) | {n_base} ({:.1}) |",
        n_base as f64 / base_secs
    );
    let stalled = select(&load, |_, _| true)
        .iter()
        .filter(|&&ms| ms > 1000.0)
        .count();
    println!("| queries under load taking > 1 s | {stalled} |");
    println!("| live documents at the end | {} |", db.len());

    println!(
        "\n| query | n | baseline p50 / p99 / max ms | under load p50 / p99 / max ms | load / baseline p50, p99 |"
    );
    println!("|---|---|---|---|---|");
    let mut kinds = vec![Kind::Hybrid, Kind::Probe, Kind::Filtered];
    if p.colbert_dim > 0 {
        kinds.push(Kind::Reranked);
    }
    let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = vec![(
        "**all queries**".into(),
        select(&base, |_, _| true),
        select(&load, |_, _| true),
    )];
    for k in kinds {
        rows.push((
            k.name().into(),
            select(&base, |x, _| x == k),
            select(&load, |x, _| x == k),
        ));
    }
    let base_all = select(&base, |_, _| true);
    rows.push((
        "all, started while a commit ran".into(),
        base_all.clone(),
        select(&load, |_, c| c),
    ));
    rows.push((
        "all, started between commits".into(),
        base_all,
        select(&load, |_, c| !c),
    ));
    for (name, b, l) in rows {
        let n = l.len();
        let (b50, b99, bmax) = percentiles(b);
        let (l50, l99, lmax) = percentiles(l);
        println!(
            "| {name} | {n} | {b50:.2} / {b99:.2} / {bmax:.2} | {l50:.2} / {l99:.2} / {lmax:.2} | {:.2}, {:.2} |",
            l50 / b50,
            l99 / b99
        );
    }

    let mut violations: BTreeMap<&str, u64> = BTreeMap::new();
    let mut examples = Vec::new();
    for o in load.iter().chain(&base) {
        for (k, v) in &o.violations {
            *violations.entry(k).or_default() += v;
        }
        examples.extend(o.examples.iter().cloned());
    }
    if let Some(e) = &w.error {
        *violations.entry("writer error").or_default() += 1;
        examples.push(format!("writer error: {e}"));
    }
    if !problems.is_empty() {
        *violations.entry("final audit").or_default() += problems.len() as u64;
        examples.extend(problems.into_iter().map(|p| format!("final audit: {p}")));
    }
    let total: u64 = violations.values().sum();
    println!("\nviolations: {total}");
    for (k, v) in &violations {
        println!("- {k}: {v}");
    }
    for e in examples.iter().take(20) {
        println!("  e.g. {e}");
    }
    if total > 0 {
        std::process::exit(1);
    }
}
