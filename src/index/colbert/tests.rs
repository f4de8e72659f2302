//! Store tests: hand-computed MaxSim, precision round trips, persistence, corruption.

use std::path::Path;

use super::kernel::tests::Rng;
use super::*;

fn open(dir: &Path, dim: usize, p: Precision, committed: u64) -> Result<ColbertStore> {
    ColbertStore::open(dir, dim, p, committed, true)
}

fn corrupted_file(r: Result<impl Sized>) -> String {
    match r {
        Err(Error::Corrupted { path, .. }) => path.file_name().unwrap().to_string_lossy().into(),
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(_) => panic!("expected Corrupted, got Ok"),
    }
}

#[test]
fn hand_computed_maxsim() {
    let tmp = tempfile::tempdir().unwrap();
    let s2 = open(&tmp.path().join("2"), 2, Precision::F32, 0).unwrap();
    // Doc 0: p1 = (0.6, 0.8), p2 = (1, 0).
    s2.append(0, &[Some(&[0.6, 0.8, 1.0, 0.0])]).unwrap();
    let v = s2.view(1).unwrap();
    // q1 = (1, 0): max(0.6, 1) = 1; q2 = (0, 1): max(0.8, 0) = 0.8; mean (1 + 0.8) / 2 = 0.9.
    let got = v.maxsim(&[1.0, 0.0, 0.0, 1.0], 0).unwrap().unwrap();
    assert!((got - 0.9).abs() < 1e-6, "{got}");

    let s3 = open(&tmp.path().join("3"), 3, Precision::F32, 0).unwrap();
    // Doc 0: p1 = (0.8, 0.6, 0), p2 = (0, 0.6, 0.8).
    s3.append(0, &[Some(&[0.8, 0.6, 0.0, 0.0, 0.6, 0.8])])
        .unwrap();
    let v = s3.view(1).unwrap();
    // q1 = (0.6, 0.8, 0): q1·p1 = 0.48 + 0.48 = 0.96, q1·p2 = 0.48 → 0.96.
    // q2 = (0, 0, 1):     q2·p1 = 0, q2·p2 = 0.8 → 0.8. Mean (0.96 + 0.8) / 2 = 0.88.
    let q = [0.6, 0.8, 0.0, 0.0, 0.0, 1.0];
    let got = v.maxsim(&q, 0).unwrap().unwrap();
    assert!((got - 0.88).abs() < 1e-6, "{got}");
    assert!((maxsim_reference(&q, &[0.8, 0.6, 0.0, 0.0, 0.6, 0.8], 3) - 0.88).abs() < 1e-6);
    // One query token q = (1, 0, 0): max(0.8, 0) = 0.8.
    let got = v.maxsim(&[1.0, 0.0, 0.0], 0).unwrap().unwrap();
    assert!((got - 0.8).abs() < 1e-6, "{got}");
}

#[test]
fn precisions_round_trip() {
    let (dim, n) = (40, 12);
    let mut rng = Rng(5);
    let docs: Vec<Vec<f32>> = (0..n).map(|i| rng.units(1 + 7 * i, dim)).collect();
    let queries: Vec<Vec<f32>> = (0..4).map(|i| rng.units(1 + 5 * i, dim)).collect();
    let refs: Vec<Option<&[f32]>> = docs.iter().map(|d| Some(d.as_slice())).collect();
    let ids: Vec<u64> = (0..n as u64).collect();
    // f32: exact up to summation order; f16: f16 storage plus bf16 products; int8: 1/254 of
    // each token's largest value per coordinate.
    for (p, tol) in [
        (Precision::F32, 1e-5),
        (Precision::F16, 3e-3),
        (Precision::Int8, 1e-2),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let s = open(tmp.path(), dim, p, 0).unwrap();
        s.append(0, &refs).unwrap();
        let v = s.view(n as u64).unwrap();
        for q in &queries {
            let many = v.maxsim_many(q, &ids).unwrap();
            for (i, d) in docs.iter().enumerate() {
                let want = maxsim_reference(q, d, dim);
                let got = v.maxsim(q, i as u64).unwrap().unwrap();
                assert!((got - want).abs() < tol, "{p:?} doc {i}: {got} vs {want}");
                assert_eq!(many[i], Some(got));
            }
        }
    }
}

#[test]
fn binary_ranks_an_easy_case() {
    // Each query is one document's tokens plus a little noise: that document must rank first.
    let (dim, n) = (256, 20);
    let mut rng = Rng(6);
    let docs: Vec<Vec<f32>> = (0..n).map(|_| rng.units(30, dim)).collect();
    let refs: Vec<Option<&[f32]>> = docs.iter().map(|d| Some(d.as_slice())).collect();
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), dim, Precision::Binary, 0).unwrap();
    s.append(0, &refs).unwrap();
    let v = s.view(n as u64).unwrap();
    let ids: Vec<u64> = (0..n as u64).collect();
    for (src, d) in docs.iter().enumerate() {
        let noise = rng.units(8, dim);
        let q: Vec<f32> = d[..8 * dim]
            .iter()
            .zip(&noise)
            .map(|(a, b)| a + 0.3 * b)
            .collect();
        let mut q = q;
        q.chunks_exact_mut(dim).for_each(|r| {
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= norm);
        });
        let scores = v.maxsim_many(&q, &ids).unwrap();
        let best = (0..n).max_by(|&a, &b| scores[a].unwrap().total_cmp(&scores[b].unwrap()));
        assert_eq!(best, Some(src));
    }
}

#[test]
fn persistence_cutoff_and_empty_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let dim = 3;
    let a = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    let b = [0.0, 0.0, 1.0];
    {
        let s = open(tmp.path(), dim, Precision::F16, 0).unwrap();
        s.append(0, &[Some(&a), None, Some(&[])]).unwrap();
        // A gap: documents 3 and 4 get empty entries.
        s.append(5, &[Some(&b)]).unwrap();
        assert_eq!(s.docs(), 6);
        // Uncommitted: 6 and 7.
        s.append(6, &[Some(&b), Some(&a)]).unwrap();
    }
    // Reopen with 6 committed: entries 6 and 7 are cut off.
    let s = open(tmp.path(), dim, Precision::F16, 6).unwrap();
    assert_eq!(s.docs(), 6);
    let docs_len = std::fs::metadata(tmp.path().join("docs.bin"))
        .unwrap()
        .len();
    assert_eq!(docs_len, HEADER + 6 * ENTRY);
    let tokens_len = std::fs::metadata(tmp.path().join("tokens.bin"))
        .unwrap()
        .len();
    assert_eq!(tokens_len, HEADER + 3 * 2 * dim as u64);
    assert!(matches!(s.view(7), Err(Error::InvalidInput(_))));
    let v = s.view(6).unwrap();
    let counts: Vec<usize> = (0..7).map(|d| v.tokens(d)).collect();
    assert_eq!(counts, [2, 0, 0, 0, 0, 1, 0]);
    let q = [0.0, 0.0, 1.0];
    assert_eq!(v.maxsim(&q, 0).unwrap(), Some(0.0));
    assert_eq!(v.maxsim(&q, 1).unwrap(), None);
    assert_eq!(v.maxsim(&q, 2).unwrap(), None);
    assert_eq!(v.maxsim(&q, 5).unwrap(), Some(1.0));
    assert_eq!(v.maxsim(&q, 6).unwrap(), None);
    // An empty query scores nothing.
    assert_eq!(v.maxsim_many(&[], &[0, 5]).unwrap(), [None, None]);
    // Appending continues after the cut.
    s.append(6, &[Some(&a)]).unwrap();
    let v2 = s.view(7).unwrap();
    assert_eq!(v2.maxsim(&[1.0, 0.0, 0.0], 6).unwrap(), Some(1.0));
    // Older views are unaffected.
    assert_eq!(v.tokens(6), 0);
    drop(s);

    // Read-only: no truncation, committed count bounds the view.
    let ro = ColbertStore::open(tmp.path(), dim, Precision::F16, 5, false).unwrap();
    assert!(matches!(ro.append(5, &[None]), Err(Error::ReadOnly)));
    assert_eq!(ro.view(5).unwrap().tokens(0), 2);
    assert!(ro.view(6).is_err());
    // More committed documents than entries: corrupted.
    assert_eq!(
        corrupted_file(open(tmp.path(), dim, Precision::F16, 9)),
        "docs.bin"
    );
    // Schema mismatch.
    assert_eq!(
        corrupted_file(open(tmp.path(), 4, Precision::F16, 7)),
        "tokens.bin"
    );
    assert_eq!(
        corrupted_file(open(tmp.path(), dim, Precision::F32, 7)),
        "tokens.bin"
    );
}

#[test]
fn rewrites_only_the_unviewed_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 2, Precision::Int8, 0).unwrap();
    s.append(
        0,
        &[Some(&[1.0, 0.0]), Some(&[0.0, 1.0]), Some(&[0.0, 1.0])],
    )
    .unwrap();
    let v = s.view(1).unwrap();
    // A failed commit is retried from document 1 with other content.
    s.append(1, &[Some(&[1.0, 0.0, 0.6, 0.8])]).unwrap();
    assert_eq!(s.docs(), 2);
    let v2 = s.view(2).unwrap();
    assert_eq!(v2.tokens(1), 2);
    assert!((v2.maxsim(&[1.0, 0.0], 1).unwrap().unwrap() - 1.0).abs() < 1e-2);
    assert!(matches!(s.append(0, &[None]), Err(Error::InvalidInput(_))));
    assert!((v.maxsim(&[1.0, 0.0], 0).unwrap().unwrap() - 1.0).abs() < 1e-2);
}

#[test]
fn rejects_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 2, Precision::F16, 0).unwrap();
    let bad: [&[f32]; 4] = [&[1.0], &[f32::NAN, 0.0], &[f32::INFINITY, 0.0], &[1e6, 0.0]];
    for v in bad {
        assert!(
            matches!(s.append(0, &[Some(v)]), Err(Error::InvalidInput(_))),
            "{v:?}"
        );
    }
    assert_eq!(s.docs(), 0);
    s.append(0, &[Some(&[1.0, 0.0])]).unwrap();
    let v = s.view(1).unwrap();
    assert!(matches!(v.maxsim(&[1.0], 0), Err(Error::InvalidInput(_))));
    assert!(matches!(
        v.maxsim(&[f32::NAN, 0.0], 0),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        v.maxsim_many(&[1.0, 0.0, 1.0], &[0]),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(v.maxsim(&[1.0, 0.0], 9).unwrap(), None);
    assert!(matches!(
        open(tmp.path(), 0, Precision::F16, 0),
        Err(Error::InvalidInput(_))
    ));
    assert!("int4".parse::<Precision>().is_err());
    for p in [
        Precision::F32,
        Precision::F16,
        Precision::Int8,
        Precision::Binary,
    ] {
        assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
    }
    assert_eq!(Precision::Int8.bytes_per_token(1024), 1028);
    assert_eq!(Precision::Binary.bytes_per_token(1024), 128);
}

/// A store of three documents (2 tokens each, dim 4, F32), all committed.
fn three_docs(dir: &Path) {
    let s = open(dir, 4, Precision::F32, 0).unwrap();
    let t = [0.5f32; 8];
    s.append(0, &[Some(&t), Some(&t), Some(&t)]).unwrap();
}

fn patch(path: &Path, at: u64, f: impl Fn(u8) -> u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] = f(bytes[at as usize]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn corruption_is_reported_not_panicked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (tokens, docs) = (dir.join("tokens.bin"), dir.join("docs.bin"));
    three_docs(dir);
    let q = [0.5f32; 4];

    // A flipped byte in document 1's tokens: that document fails, the others still score.
    patch(&tokens, HEADER + 2 * 16 + 5, |b| b ^ 0x10);
    let s = open(dir, 4, Precision::F32, 3).unwrap();
    let v = s.view(3).unwrap();
    assert_eq!(corrupted_file(v.maxsim(&q, 1)), "tokens.bin");
    assert_eq!(corrupted_file(v.maxsim_many(&q, &[0, 1, 2])), "tokens.bin");
    assert!(v.maxsim(&q, 0).unwrap().is_some() && v.maxsim(&q, 2).unwrap().is_some());
    drop((v, s));
    patch(&tokens, HEADER + 2 * 16 + 5, |b| b ^ 0x10);

    // Entry fields: a count of 0 and a start far past the end.
    patch(&docs, HEADER + ENTRY + 8, |_| 0);
    let v = open(dir, 4, Precision::F32, 3).unwrap().view(3).unwrap();
    assert_eq!(corrupted_file(v.maxsim(&q, 1)), "tokens.bin");
    patch(&docs, HEADER + ENTRY + 8, |_| 2);
    patch(&docs, HEADER + ENTRY + 7, |_| 0x7F);
    let v = open(dir, 4, Precision::F32, 3).unwrap().view(3).unwrap();
    assert_eq!(v.tokens(1), 0);
    assert_eq!(corrupted_file(v.maxsim(&q, 1)), "docs.bin");
    // The last committed entry is read on open.
    // Start 2^32 + 4: tokens.bin is too short for it; start ≈ 2^63: the offset overflows.
    patch(&docs, HEADER + 2 * ENTRY + 4, |_| 1);
    assert_eq!(
        corrupted_file(open(dir, 4, Precision::F32, 3)),
        "tokens.bin"
    );
    patch(&docs, HEADER + 2 * ENTRY + 4, |_| 0);
    patch(&docs, HEADER + 2 * ENTRY + 7, |_| 0xFF);
    assert_eq!(corrupted_file(open(dir, 4, Precision::F32, 3)), "docs.bin");
    patch(&docs, HEADER + 2 * ENTRY + 7, |_| 0);
    patch(&docs, HEADER + ENTRY + 7, |_| 0);
    open(dir, 4, Precision::F32, 3).unwrap();

    // Bad headers.
    for (path, name) in [(&tokens, "tokens.bin"), (&docs, "docs.bin")] {
        patch(path, 3, |b| b ^ 1);
        assert_eq!(corrupted_file(open(dir, 4, Precision::F32, 3)), name);
        patch(path, 3, |b| b ^ 1);
        patch(path, 12, |b| b ^ 1);
        assert_eq!(corrupted_file(open(dir, 4, Precision::F32, 3)), name);
        patch(path, 12, |b| b ^ 1);
    }
    open(dir, 4, Precision::F32, 3).unwrap();

    // Truncated files.
    let f = std::fs::OpenOptions::new().write(true).open(&docs).unwrap();
    f.set_len(HEADER + 2 * ENTRY + 3).unwrap();
    assert_eq!(corrupted_file(open(dir, 4, Precision::F32, 3)), "docs.bin");
    f.set_len(HEADER - 1).unwrap();
    assert_eq!(corrupted_file(open(dir, 4, Precision::F32, 3)), "docs.bin");
    let dir = &dir.join("fresh");
    three_docs(dir);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("tokens.bin"))
        .unwrap();
    f.set_len(HEADER + 5 * 16).unwrap();
    assert_eq!(
        corrupted_file(open(dir, 4, Precision::F32, 3)),
        "tokens.bin"
    );
    f.set_len(20).unwrap();
    assert_eq!(
        corrupted_file(open(dir, 4, Precision::F32, 3)),
        "tokens.bin"
    );
}

#[test]
fn view_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ColbertView>();
    check::<ColbertStore>();
}

/// A view maps only the bytes its documents cover: tokens a later, uncommitted append wrote
/// past them are outside the map (a cut-off of that tail cannot fault a reader).
#[test]
fn a_view_maps_only_its_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 2, Precision::F32, 0).unwrap();
    s.append(0, &[Some(&[1.0, 0.0, 0.0, 1.0])]).unwrap();
    s.append(1, &[Some(&[1.0, 0.0, 0.0, 1.0, 0.6, 0.8])])
        .unwrap();
    let v = s.view(1).unwrap();
    assert_eq!(v.total_tokens, 2);
    let bpt = Precision::F32.bytes_per_token(2) as u64;
    assert_eq!(
        v.tokens_map.as_ref().unwrap().len() as u64,
        HEADER + 2 * bpt
    );
    assert_eq!(v.docs_map.as_ref().unwrap().len() as u64, HEADER + ENTRY);
    assert_eq!(s.view(2).unwrap().total_tokens, 5);
}
