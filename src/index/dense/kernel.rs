//! The inner product, with an AVX2/FMA version picked at run time on x86-64.

use std::sync::OnceLock;

type DotFn = fn(&[f32], &[f32]) -> f32;

/// Inner product of the common prefix of `a` and `b`.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    static PICKED: OnceLock<DotFn> = OnceLock::new();
    (PICKED.get_or_init(pick))(a, b)
}

fn pick() -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return |a, b| {
            // Safety: the CPU supports AVX2 and FMA (checked just above).
            unsafe { dot_avx2(a, b) }
        };
    }
    dot_portable
}

/// Eight independent accumulators, so the compiler vectorizes it with whatever it may assume.
pub(crate) fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // Safety: every load reads 8 floats at offsets below `n`, inside both slices.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        while i + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(pa.add(i + 8 * j));
                let y = _mm256_loadu_ps(pb.add(i + 8 * j));
                *s = _mm256_fmadd_ps(x, y, *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            let x = _mm256_loadu_ps(pa.add(i));
            let y = _mm256_loadu_ps(pb.add(i));
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let half = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
        let one = _mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1));
        let mut sum = _mm_cvtss_f32(one);
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_matches_the_naive_sum() {
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 63, 384, 1023, 1024] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() - 0.2).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-3, "n = {n}");
            assert!(
                (dot_portable(&a, &b) as f64 - naive).abs() < 1e-3,
                "n = {n}"
            );
        }
        // Uneven lengths use the common prefix.
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
    }
}
