//! Kernel tests: every back end this CPU has against the portable one, across awkward sizes.

use super::super::{Precision, encode, maxsim_reference};
use super::{Backend, Query, Scratch, score};

/// SplitMix64 with a Box–Muller normal.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn gauss(&mut self) -> f32 {
        let u = ((self.next() >> 40) as f32 + 1.0) / (1u64 << 24) as f32;
        let v = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    /// `n` random unit vectors of `dim` values, row-major.
    pub fn units(&mut self, n: usize, dim: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| self.gauss()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.extend(v.iter().map(|x| x / norm));
        }
        out
    }
}

/// The back ends this CPU can run for `precision`.
fn backends(precision: Precision) -> Vec<Backend> {
    let mut b = vec![Backend::Scalar];
    let best = Backend::detect(precision);
    if best != Backend::Scalar {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            b.push(Backend::Avx2);
        }
        if best == Backend::Bf16 {
            b.push(Backend::Bf16);
        }
    }
    b
}

fn run(backend: Backend, precision: Precision, q: &[f32], doc: &[f32], dim: usize) -> f32 {
    let mut bytes = Vec::new();
    encode(precision, dim, doc, &mut bytes);
    let query = Query::new(q, dim, precision, backend);
    score(&query, &bytes, doc.len() / dim, &mut Scratch::default())
}

#[test]
fn f32_simd_matches_scalar() {
    let mut rng = Rng(1);
    for dim in [1, 3, 7, 13, 33, 100, 257, 1030] {
        for (nq, nd) in [(1, 1), (3, 5), (5, 67), (32, 130)] {
            let q = rng.units(nq, dim);
            let d = rng.units(nd, dim);
            let want = run(Backend::Scalar, Precision::F32, &q, &d, dim);
            let reference = maxsim_reference(&q, &d, dim);
            assert!(
                (want - reference).abs() < 1e-5,
                "dim {dim}: {want} vs {reference}"
            );
            for b in backends(Precision::F32) {
                let got = run(b, Precision::F32, &q, &d, dim);
                assert!(
                    (got - want).abs() < 1e-5,
                    "{b:?} dim {dim} {nq}x{nd}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn quantized_simd_matches_scalar() {
    let mut rng = Rng(2);
    for precision in [Precision::F16, Precision::Int8, Precision::Binary] {
        for dim in [1, 5, 16, 31, 33, 100, 1030] {
            for (nq, nd) in [(1, 1), (3, 5), (6, 67)] {
                let q = rng.units(nq, dim);
                let d = rng.units(nd, dim);
                let want = run(Backend::Scalar, precision, &q, &d, dim);
                for b in backends(precision) {
                    let got = run(b, precision, &q, &d, dim);
                    // bf16 rounding of the query (and f16 values): relative error ≤ 2^-8 per
                    // product, so |error| ≤ 2^-8 · Σ|q_i p_i| ≤ 4e-3 for unit vectors (Binary
                    // entries are ±1, scaled by binary_scale).
                    let tol = if precision == Precision::Binary {
                        1e-2
                    } else {
                        5e-3
                    };
                    assert!(
                        (got - want).abs() < tol,
                        "{precision:?} {b:?} dim {dim} {nq}x{nd}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn all_negative_scores_keep_their_maximum() {
    // q = (1, 0); doc tokens (-0.6, -0.8) and (-0.8, -0.6): dots -0.6 and -0.8, max -0.6. The
    // padding rows (copies of the last token) and the −∞ start must not change that.
    let q = [1.0, 0.0];
    let d = [-0.6, -0.8, -0.8, -0.6];
    for b in backends(Precision::F32) {
        let got = run(b, Precision::F32, &q, &d, 2);
        assert!((got + 0.6).abs() < 1e-6, "{b:?}: {got}");
    }
}

#[test]
fn binary_decode_matches_signs() {
    // dim 35 spans a partial byte and a partial 32-value chunk.
    let mut rng = Rng(3);
    let dim = 35;
    let d = rng.units(4, dim);
    let q = rng.units(3, dim);
    let signs: Vec<f32> = d
        .iter()
        .map(|&x| if x > 0.0 { 1.0 } else { -1.0 })
        .collect();
    let want = maxsim_reference(&q, &signs, dim) * super::binary_scale(dim);
    for b in backends(Precision::Binary) {
        let got = run(b, Precision::Binary, &q, &d, dim);
        assert!((got - want).abs() < 1e-2, "{b:?}: {got} vs {want}");
    }
}
