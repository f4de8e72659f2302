use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

/// splitmix64: a small deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Zipf-distributed token ids over a vocabulary, with rarer tokens weighing more (as in
/// learned lexical weights), so pruning sees realistic bound spreads.
struct Vocab {
    cdf: Vec<f64>,
}

impl Vocab {
    fn new(size: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = (1..=size)
            .map(|r| {
                acc += 1.0 / (r as f64).powf(s);
                acc
            })
            .collect::<Vec<_>>();
        let total = acc;
        Vocab {
            cdf: cdf.into_iter().map(|c| c / total).collect(),
        }
    }

    fn rank(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// `n` distinct tokens: ids scrambled from ranks, weights growing with rarity.
    fn vector(&self, rng: &mut Rng, n: usize, correlated: bool) -> SparseVector {
        let v = self.cdf.len();
        let mut pairs: Vec<(u32, f32)> = Vec::with_capacity(n);
        let mut seen = std::collections::HashSet::new();
        while pairs.len() < n && seen.len() < v {
            let r = self.rank(rng);
            if seen.insert(r) {
                let id = ((r as u64 * 7919) % v as u64) as u32;
                let u = rng.unit();
                let w = if correlated {
                    (0.05 + 0.3 * ((1 + r) as f64).ln() / (v as f64).ln()) * (0.5 + u)
                } else {
                    0.01 + u
                };
                pairs.push((id, w as f32));
            }
        }
        pairs.sort_by_key(|p| p.0);
        SparseVector::new(
            pairs.iter().map(|p| p.0).collect(),
            pairs.iter().map(|p| p.1).collect(),
        )
        .expect("valid vector")
    }
}

fn corpus(rng: &mut Rng, vocab: &Vocab, n: usize, lo: usize, hi: usize) -> Vec<SparseVector> {
    (0..n)
        .map(|_| {
            let len = lo + rng.below((hi - lo + 1) as u64) as usize;
            vocab.vector(rng, len, true)
        })
        .collect()
}

fn all(n: u64) -> DocSet {
    (0..n).collect()
}

/// Asserts that the index and brute force agree on every query and `k`, over `allow`.
fn assert_exact(
    idx: &SparseIndex,
    docs: &[(u64, SparseVector)],
    queries: &[SparseVector],
    allow: &DocSet,
    ks: &[usize],
) {
    let kmax = ks.iter().copied().max().unwrap_or(0);
    for (qn, q) in queries.iter().enumerate() {
        // Brute force's order is total, so its top k is a prefix of its top kmax.
        let all = search_brute_force(
            q,
            kmax,
            docs.iter()
                .filter(|(d, _)| allow.contains(*d))
                .map(|(d, v)| (*d, v)),
        );
        for &k in ks {
            let want = &all[..k.min(all.len())];
            let got = idx.search(q, k, allow);
            assert_eq!(got.len(), want.len(), "query {qn} k {k}: lengths differ");
            for (g, w) in got.iter().zip(want) {
                assert!(
                    g.0 == w.0 && g.1.to_bits() == w.1.to_bits(),
                    "query {qn} k {k}: got {got:?}\nwant {want:?}"
                );
            }
        }
    }
}

/// The vectors as documents 0, 1, 2, …
fn numbered(vectors: Vec<SparseVector>) -> Vec<(u64, SparseVector)> {
    (0..).zip(vectors).collect()
}

fn add_all(idx: &mut SparseIndex, docs: &[(u64, SparseVector)], seq: u64, next_doc: u64) {
    let adds: Vec<(u64, &SparseVector)> = docs.iter().map(|(d, v)| (*d, v)).collect();
    idx.apply(&adds, seq, next_doc).expect("apply");
}

#[test]
fn exact_on_random_data_across_segments_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let vocab = Vocab::new(30_000, 1.0);
    let vecs = corpus(&mut rng, &vocab, 4000, 50, 150);
    // Document numbers with gaps, as after deletions and docs without sparse weights.
    let docs: Vec<(u64, SparseVector)> = vecs
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as u64 * 3 + (i as u64 % 2), v))
        .collect();
    let end = docs.last().unwrap().0 + 1;
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    idx.set_flush_threshold(110_000);
    for (i, chunk) in docs.chunks(250).enumerate() {
        let next = chunk.last().unwrap().0 + 1;
        add_all(&mut idx, chunk, i as u64 + 1, next);
    }
    assert!(idx.segments() >= 3, "{} segments", idx.segments());
    assert!(idx.mem.postings > 0);
    let mut queries: Vec<SparseVector> = (0..120)
        .map(|_| {
            let n = 5 + rng.below(40) as usize;
            vocab.vector(&mut rng, n, true)
        })
        .collect();
    queries.extend((0..30).map(|_| vocab.vector(&mut rng, 20, false)));
    let ks = [1, 3, 10, 50, 1000];
    assert_exact(&idx, &docs, &queries, &all(end), &ks);
    let subset: DocSet = docs
        .iter()
        .map(|d| d.0)
        .filter(|_| rng.below(3) != 0)
        .collect();
    assert_exact(&idx, &docs, &queries, &subset, &ks);

    let sparse: DocSet = docs
        .iter()
        .map(|d| d.0)
        .filter(|_| rng.below(20) == 0)
        .collect();
    assert_exact(&idx, &docs, &queries[..40], &sparse, &[1, 10]);

    // Merge with deletions, then the memory segment again.
    let total = idx.postings();
    idx.merge(&subset).unwrap();
    assert_eq!(idx.segments(), 1);
    assert!(idx.postings() < total);
    assert_eq!(idx.committed(), idx.pending());
    let kept: Vec<(u64, SparseVector)> = docs
        .iter()
        .filter(|d| subset.contains(d.0))
        .cloned()
        .collect();
    assert_exact(&idx, &kept, &queries, &all(end), &ks);
    let more: Vec<(u64, SparseVector)> = corpus(&mut rng, &vocab, 300, 50, 150)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (end + i as u64, v))
        .collect();
    add_all(&mut idx, &more, 99, end + 300);
    let mut now = kept.clone();
    now.extend(more.iter().cloned());
    assert_exact(&idx, &now, &queries, &all(end + 300), &ks);

    // Reopen: the memory segment is gone; catching up restores the same answers.
    let committed = idx.committed();
    drop(idx);
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    assert_eq!(idx.committed(), committed);
    let redo: Vec<(u64, SparseVector)> = more
        .iter()
        .filter(|d| d.0 >= committed.1)
        .cloned()
        .collect();
    add_all(&mut idx, &redo, 99, end + 300);
    assert_exact(&idx, &now, &queries, &all(end + 300), &ks);
}

#[test]
fn negative_weights_fall_back_to_exact_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(11);
    let vocab = Vocab::new(2000, 1.0);
    let docs: Vec<(u64, SparseVector)> = (0..600)
        .map(|i| {
            let v = vocab.vector(&mut rng, 30, false);
            let vals = v.values().iter().map(|w| w - 0.3).collect();
            (i, SparseVector::new(v.indices().to_vec(), vals).unwrap())
        })
        .collect();
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    add_all(&mut idx, &docs[..300], 1, 300);
    idx.flush().unwrap();
    add_all(&mut idx, &docs[300..], 2, 600);
    let queries: Vec<SparseVector> = (0..40)
        .map(|i| {
            let v = vocab.vector(&mut rng, 15, true);
            let shift = if i % 2 == 0 { 0.2 } else { 0.0 };
            let vals = v.values().iter().map(|w| w - shift).collect();
            SparseVector::new(v.indices().to_vec(), vals).unwrap()
        })
        .collect();
    assert_exact(&idx, &docs, &queries, &all(600), &[1, 10, 100]);
}

#[test]
fn index_is_shareable_across_threads() {
    fn check<T: Send + Sync>() {}
    check::<SparseIndex>();
}

#[test]
fn edge_cases() {
    let tmp = tempfile::tempdir().unwrap();
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    let v = SparseVector::new(vec![1, 5], vec![0.5, 0.25]).unwrap();
    let empty = SparseVector::default();
    assert!(idx.search(&v, 10, &all(10)).is_empty());
    idx.apply(&[(0, &v), (2, &empty), (3, &v)], 1, 5).unwrap();
    assert_eq!(idx.search(&v, 0, &all(10)), vec![]);
    assert_eq!(idx.search(&empty, 10, &all(10)), vec![]);
    assert_eq!(idx.search(&v, 10, &DocSet::new()), vec![]);
    assert_eq!(idx.search(&v, usize::MAX, &all(10)).len(), 2);
    assert_eq!(idx.search(&v, 10, &all(10)), vec![(0, 0.3125), (3, 0.3125)]);
    // Out-of-order or out-of-range documents are refused and change nothing.
    for bad in [
        vec![(5u64, &v), (5, &v)],
        vec![(6, &v), (5, &v)],
        vec![(3, &v)],
        vec![(7, &v)],
    ] {
        let err = idx.apply(&bad, 2, 7);
        assert!(matches!(err, Err(Error::InvalidInput(_))), "{bad:?}");
    }
    assert!(matches!(idx.apply(&[], 2, 4), Err(Error::InvalidInput(_))));
    assert_eq!(idx.pending(), (1, 5));
    assert_eq!(idx.postings(), 4);
    // A merge that keeps nothing leaves no segment.
    idx.merge(&DocSet::new()).unwrap();
    assert_eq!((idx.segments(), idx.postings()), (0, 0));
    assert_eq!(idx.committed(), (1, 5));
    let idx = SparseIndex::open(tmp.path(), true).unwrap();
    assert_eq!((idx.segments(), idx.committed()), (0, (1, 5)));
}

#[test]
fn persistence_and_commit_points() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(3);
    let vocab = Vocab::new(5000, 1.0);
    let docs = numbered(corpus(&mut rng, &vocab, 500, 20, 60));
    let queries: Vec<SparseVector> = (0..30).map(|_| vocab.vector(&mut rng, 20, true)).collect();
    {
        let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
        assert_eq!(idx.committed(), (0, 0));
        add_all(&mut idx, &docs[..200], 4, 200);
        assert_eq!(idx.committed(), (0, 0));
        idx.flush().unwrap();
        assert_eq!(idx.committed(), (4, 200));
        add_all(&mut idx, &docs[200..400], 5, 400);
        idx.flush().unwrap();
        // Applied but never flushed: not persisted.
        add_all(&mut idx, &docs[400..], 6, 500);
        assert_eq!((idx.committed(), idx.pending()), ((5, 400), (6, 500)));
        // A commit without sparse documents still advances the manifest on flush.
    }
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    assert_eq!(idx.committed(), (5, 400));
    assert_eq!(idx.segments(), 2);
    assert_exact(&idx, &docs[..400], &queries, &all(500), &[10]);
    add_all(&mut idx, &docs[400..], 6, 500);
    assert_exact(&idx, &docs, &queries, &all(500), &[10]);
    idx.apply(&[], 7, 520).unwrap();
    idx.flush().unwrap();
    drop(idx);
    let idx = SparseIndex::open(tmp.path(), true).unwrap();
    assert_eq!((idx.committed(), idx.segments()), ((7, 520), 3));
    assert_exact(&idx, &docs, &queries, &all(500), &[10]);
    // An orphan segment (a crash before the manifest) is removed on open.
    let orphan = tmp.path().join("seg-77.spx");
    std::fs::write(&orphan, b"junk").unwrap();
    drop(idx);
    let idx = SparseIndex::open(tmp.path(), true).unwrap();
    assert!(!orphan.exists());
    assert_eq!(idx.segments(), 3);
}

#[test]
fn flushes_merge_into_a_logarithmic_number_of_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(11);
    let vocab = Vocab::new(5000, 1.0);
    let docs = numbered(corpus(&mut rng, &vocab, 2400, 20, 60));
    let queries: Vec<SparseVector> = (0..40).map(|_| vocab.vector(&mut rng, 15, true)).collect();
    let lock = std::sync::RwLock::new(Some(SparseIndex::open(tmp.path(), true).unwrap()));
    let mut most = 0;
    for (i, chunk) in docs.chunks(50).enumerate() {
        if let Some(idx) = lock.write().unwrap().as_mut() {
            add_all(idx, chunk, i as u64 + 1, chunk.last().unwrap().0 + 1);
            idx.flush().unwrap();
        }
        super::merge_tiers(&lock).unwrap();
        let index = lock.read().unwrap();
        let idx = index.as_ref().unwrap();
        // Sizes at least halve from one segment to the next, so 48 flushes leave at most
        // log2(48) + 1 = 6 of them, in document order.
        let sizes: Vec<u64> = idx.segments.iter().map(|s| s.postings).collect();
        assert!(
            sizes.windows(2).all(|p| p[0] >= 2 * p[1]),
            "after flush {i}: {sizes:?}"
        );
        assert!(idx.segments.windows(2).all(|p| p[0].max_doc < p[1].min_doc));
        most = most.max(sizes.len());
    }
    let idx = lock.into_inner().unwrap().unwrap();
    assert!((2..=6).contains(&most), "{most} segments at most");
    assert_eq!(
        idx.postings(),
        docs.iter().map(|d| d.1.indices().len() as u64).sum::<u64>()
    );
    assert_exact(&idx, &docs, &queries, &all(2400), &[1, 10, 100]);
    // The manifest names the merged segments; the replaced files are gone.
    let segments = idx.segments();
    drop(idx);
    let files = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "spx")
        })
        .count();
    assert_eq!(files, segments);
    let idx = SparseIndex::open(tmp.path(), true).unwrap();
    assert_eq!((idx.committed(), idx.segments()), ((48, 2400), segments));
    assert_exact(&idx, &docs, &queries, &all(2400), &[10]);
}

/// Builds a one-segment index and returns its directory and the segment's path.
fn one_segment() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let vocab = Vocab::new(3000, 1.0);
    let docs = numbered(corpus(&mut rng, &vocab, 300, 10, 40));
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    add_all(&mut idx, &docs, 1, 300);
    idx.flush().unwrap();
    let path = idx.segments[0].path.clone();
    (tmp, path)
}

fn assert_corrupted(dir: &Path, file: &Path) {
    match SparseIndex::open(dir, true) {
        Err(Error::Corrupted { path, .. }) => assert_eq!(path, file),
        Err(e) => panic!("expected Corrupted for {}, got {e}", file.display()),
        Ok(_) => panic!("expected Corrupted for {}, opened fine", file.display()),
    }
}

#[test]
fn corruption_is_reported_not_panicked() {
    let (tmp, seg) = one_segment();
    let good = std::fs::read(&seg).unwrap();
    // Truncations at many lengths, and flipped bytes everywhere (sampled).
    for len in [0, 1, 15, 16, 60, good.len() / 2, good.len() - 1] {
        std::fs::write(&seg, &good[..len]).unwrap();
        assert_corrupted(tmp.path(), &seg);
    }
    let step = (good.len() / 400).max(1);
    for at in (0..good.len()).step_by(step) {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        std::fs::write(&seg, &bad).unwrap();
        assert_corrupted(tmp.path(), &seg);
    }
    std::fs::remove_file(&seg).unwrap();
    assert_corrupted(tmp.path(), &seg);
    std::fs::write(&seg, &good).unwrap();
    assert!(SparseIndex::open(tmp.path(), true).is_ok());

    let man = tmp.path().join(MANIFEST);
    let good_man = std::fs::read(&man).unwrap();
    for at in 0..good_man.len() {
        let mut bad = good_man.clone();
        bad[at] ^= 0x01;
        std::fs::write(&man, &bad).unwrap();
        assert_corrupted(tmp.path(), &man);
    }
    std::fs::write(&man, &good_man[..20]).unwrap();
    assert_corrupted(tmp.path(), &man);
    std::fs::remove_file(&man).unwrap();
    assert_corrupted(tmp.path(), &man);
}

#[test]
fn structurally_bad_segment_with_valid_crc_is_refused() {
    let (tmp, seg) = one_segment();
    let good = std::fs::read(&seg).unwrap();
    // Damage a field, then fix the checksum so only validation can notice.
    let reseal = |mut b: Vec<u8>| {
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let dict_offset = u64_at(&good, good.len() - 52) as usize;
    // The first list: its block entries from offset 16, then its packed offsets.
    let packed = 16 + 24 * u32_at(&good, dict_offset + 8) as usize;
    assert!(
        u32_at(&good, 24) > 0,
        "the first block should hold several postings"
    );
    let cases: Vec<(usize, u8)> = vec![
        (16, 0x05),               // first block's first document
        (24, 0x01),               // first block's span (last − first document)
        (28, 0x40),               // first block's maximum
        (32, 0x01),               // first block's start is not 0
        (36, 0x01),               // first block's offsets do not start the list's
        (packed, 0x01),           // first posting offset of the first block is not 0
        (dict_offset, 0xff),      // first term id
        (dict_offset + 4, 0x01),  // posting count
        (dict_offset + 8, 0x07),  // block count
        (dict_offset + 12, 0x40), // list maximum
        (dict_offset + 16, 0x04), // list offset
        (good.len() - 52, 0x08),  // dictionary offset
        (good.len() - 36, 0x01),  // postings total
        (good.len() - 12, 0x80),  // minimum weight sign
    ];
    for (at, x) in cases {
        let mut bad = good.clone();
        bad[at] ^= x;
        std::fs::write(&seg, reseal(bad)).unwrap();
        assert_corrupted(tmp.path(), &seg);
    }
}

#[test]
fn pruning_skips_most_postings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(21);
    let vocab = Vocab::new(30_000, 1.0);
    let docs = numbered(corpus(&mut rng, &vocab, 20_000, 50, 150));
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    add_all(&mut idx, &docs, 1, 20_000);
    idx.flush().unwrap();
    let allow = all(20_000);
    let mut sum = SearchStats::default();
    for _ in 0..50 {
        let q = vocab.vector(&mut rng, 30, true);
        let (hits, st) = idx.search_pruned_with_stats(&q, 10, &allow);
        let want = search_brute_force(&q, 10, docs.iter().map(|(d, v)| (*d, v)));
        assert_eq!(hits, want);
        assert_eq!(idx.search(&q, 10, &allow), want);
        sum.total += st.total;
        sum.decoded += st.decoded;
        sum.visited += st.visited;
        sum.scored += st.scored;
    }
    let visited = sum.visited as f64 / sum.total as f64;
    let decoded = sum.decoded as f64 / sum.total as f64;
    eprintln!("pruning over 50 queries: {sum:?}; visited {visited:.3}, decoded {decoded:.3}");
    // Without pruning every posting is read at least once (and the survivors' again).
    assert!(visited < 0.6, "visited {visited:.3} of the postings");
    assert!(decoded < 0.7, "decoded {decoded:.3} of the postings");
    assert!(sum.scored < 50 * 20_000 / 20, "scored {}", sum.scored);
}

fn datasets() -> Option<PathBuf> {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets");
    [local, PathBuf::from("/work/shared/datasets")]
        .into_iter()
        .map(|d| d.join("korquad-v1-dev"))
        .find(|d| d.join("corpus.sparse.jsonl").exists())
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn read_sparse(path: &Path) -> Vec<SparseVector> {
    #[derive(serde::Deserialize)]
    struct Raw {
        indices: Vec<u32>,
        values: Vec<f32>,
    }
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let r: Raw = serde_json::from_str(l).unwrap();
            SparseVector::new(r.indices, r.values).unwrap()
        })
        .collect()
}

#[test]
fn exact_on_korquad() {
    let Some(dir) = datasets() else {
        eprintln!("korquad-v1-dev not found; skipping");
        return;
    };
    let corpus = read_sparse(&dir.join("corpus.sparse.jsonl"));
    let queries = read_sparse(&dir.join("queries.sparse.jsonl"));
    let docs = numbered(corpus);
    let n = docs.len() as u64;
    let tmp = tempfile::tempdir().unwrap();
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    for (i, chunk) in docs.chunks(300).enumerate() {
        let next = chunk.last().unwrap().0 + 1;
        add_all(&mut idx, chunk, i as u64 + 1, next);
        if i < 2 {
            idx.flush().unwrap();
        }
    }
    assert_exact(&idx, &docs, &queries, &all(n), &[1, 10, 100]);
    let odd: DocSet = (0..n).filter(|d| d % 2 == 1).collect();
    assert_exact(&idx, &docs, &queries[..500], &odd, &[10]);
    idx.merge(&all(n)).unwrap();
    assert_exact(&idx, &docs, &queries[..500], &all(n), &[10]);

    // Recall@10 against the qrels.
    let ids: Vec<String> = read_jsonl(&dir.join("corpus.jsonl"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let qrels = read_jsonl(&dir.join("queries.jsonl"));
    let mut recall = 0.0;
    for (q, rel) in queries.iter().zip(&qrels) {
        let rel: Vec<&str> = rel["relevant"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_str())
            .collect();
        let hits = idx.search(q, 10, &all(n));
        let found = rel
            .iter()
            .filter(|r| hits.iter().any(|h| ids[h.0 as usize] == **r))
            .count();
        recall += found as f64 / rel.len().max(1) as f64;
    }
    recall /= queries.len() as f64;
    eprintln!("korquad sparse R@10 = {recall:.4}");
    assert!(recall > 0.8, "R@10 {recall}");
}

#[test]
fn a_merge_does_not_claim_the_memory_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(13);
    let vocab = Vocab::new(3000, 1.0);
    let docs = numbered(corpus(&mut rng, &vocab, 300, 20, 40));
    let queries: Vec<SparseVector> = (0..20).map(|_| vocab.vector(&mut rng, 10, true)).collect();
    let lock = std::sync::RwLock::new(Some(SparseIndex::open(tmp.path(), true).unwrap()));
    if let Some(idx) = lock.write().unwrap().as_mut() {
        // Two equal segments (a merge is due), then documents only in memory.
        add_all(idx, &docs[..100], 1, 100);
        idx.flush().unwrap();
        add_all(idx, &docs[100..200], 2, 200);
        idx.flush().unwrap();
        add_all(idx, &docs[200..], 3, 300);
    }
    super::merge_tiers(&lock).unwrap();
    let idx = lock.into_inner().unwrap().unwrap();
    assert_eq!(idx.segments(), 1);
    assert_eq!((idx.committed(), idx.pending()), ((2, 200), (3, 300)));
    assert_exact(&idx, &docs, &queries, &all(300), &[10]);
    drop(idx);
    // The memory segment is lost with the process; the manifest must not say otherwise.
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    assert_eq!(idx.committed(), (2, 200));
    add_all(&mut idx, &docs[200..], 3, 300);
    assert_exact(&idx, &docs, &queries, &all(300), &[10]);
}

/// The postings of `docs` by term, in document order.
fn by_term(docs: &[(u64, SparseVector)]) -> BTreeMap<u32, Vec<(u64, f32)>> {
    let mut out: BTreeMap<u32, Vec<(u64, f32)>> = BTreeMap::new();
    for (d, v) in docs {
        for (&t, &w) in v.indices().iter().zip(v.values()) {
            out.entry(t).or_default().push((*d, w));
        }
    }
    out
}

/// A version-1 segment file (every offset a `u32`; offsets, weights, then block entries), written
/// from `storage-format.md`'s description rather than by the index's writer.
fn v1_segment(postings: &BTreeMap<u32, Vec<(u64, f32)>>) -> Vec<u8> {
    let mut f = b"HDBSPSEG".to_vec();
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    let mut dict = Vec::new();
    let (mut total, mut min_doc, mut max_doc, mut min_w) = (0u64, u64::MAX, 0u64, f32::MAX);
    for (&term, list) in postings {
        let blocks: Vec<&[(u64, f32)]> = list.chunks(128).collect();
        let max = list.iter().map(|p| p.1).fold(f32::MIN, f32::max);
        dict.extend_from_slice(&term.to_le_bytes());
        dict.extend_from_slice(&(list.len() as u32).to_le_bytes());
        dict.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
        dict.extend_from_slice(&max.to_le_bytes());
        dict.extend_from_slice(&(f.len() as u64).to_le_bytes());
        for b in &blocks {
            for p in *b {
                f.extend_from_slice(&((p.0 - b[0].0) as u32).to_le_bytes());
            }
        }
        for p in list {
            f.extend_from_slice(&p.1.to_le_bytes());
            min_w = min_w.min(p.1);
        }
        for (i, b) in blocks.iter().enumerate() {
            let bmax = b.iter().map(|p| p.1).fold(f32::MIN, f32::max);
            f.extend_from_slice(&b[0].0.to_le_bytes());
            f.extend_from_slice(&b[b.len() - 1].0.to_le_bytes());
            f.extend_from_slice(&bmax.to_le_bytes());
            f.extend_from_slice(&((i * 128) as u32).to_le_bytes());
        }
        total += list.len() as u64;
        min_doc = min_doc.min(list[0].0);
        max_doc = max_doc.max(list[list.len() - 1].0);
    }
    let dict_offset = f.len() as u64;
    let terms = (dict.len() / 24) as u64;
    f.extend_from_slice(&dict);
    for v in [dict_offset, terms, total, min_doc, max_doc] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&min_w.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

#[test]
fn version_1_segments_are_still_read_and_merged_into_version_2() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(31);
    let vocab = Vocab::new(2000, 1.0);
    let docs = numbered(corpus(&mut rng, &vocab, 1500, 5, 60));
    let queries: Vec<SparseVector> = (0..30).map(|_| vocab.vector(&mut rng, 12, true)).collect();
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    add_all(&mut idx, &docs[..1000], 1, 1000);
    idx.flush().unwrap();
    // Replace the segment with the same postings in the version-1 layout.
    let path = idx.segments[0].path.clone();
    drop(idx);
    let v1 = v1_segment(&by_term(&docs[..1000]));
    assert_eq!(u32_at(&v1, 8), 1);
    std::fs::write(&path, &v1).unwrap();
    let mut idx = SparseIndex::open(tmp.path(), true).unwrap();
    assert_eq!(idx.segments[0].version, 1);
    let want: HashMap<u64, Vec<(u32, f32)>> = docs[..1000]
        .iter()
        .map(|(d, v)| {
            (
                *d,
                v.indices()
                    .iter()
                    .copied()
                    .zip(v.values().iter().copied())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(idx.forward(), want);
    assert_exact(&idx, &docs[..1000], &queries, &all(1000), &[1, 10]);

    // A version-1 segment searched beside a version-2 one, then both merged into version 2.
    add_all(&mut idx, &docs[1000..], 2, 1500);
    idx.flush().unwrap();
    assert_eq!(idx.segments.len(), 2);
    assert_eq!(idx.segments[1].version, 2);
    assert_exact(&idx, &docs, &queries, &all(1500), &[1, 10]);
    idx.merge(&all(1500)).unwrap();
    assert_eq!(idx.segments.len(), 1);
    assert_eq!(idx.segments[0].version, 2);
    let merged = std::fs::metadata(&idx.segments[0].path).unwrap().len();
    assert_exact(&idx, &docs, &queries, &all(1500), &[1, 10]);
    // Packed offsets take at most 11 bits here (documents < 1500), against 32 in version 1.
    let v1_len = v1_segment(&by_term(&docs)).len() as u64;
    let postings = idx.postings();
    assert!(
        merged + 2 * postings < v1_len,
        "{merged} bytes for {postings} postings, {v1_len} in version 1"
    );
}
