//! 8-bit codes of the vector rows, held in memory for graph searches: a quarter of the bytes
//! per distance, which is what bounds a search once the rows outgrow the CPU caches.
//!
//! Row `n` is stored as `round(x / s)` with `s = max |x| / 127` (symmetric, one scale per row);
//! the query as 16-bit integers with a scale of its own. Their inner product is an exact
//! integer sum, the same on every CPU, times the two scales. Searches rescore what they find
//! with the `f32` rows, so codes only steer the walk.

use rayon::prelude::*;

use super::Vectors;
use super::pages::reserve_huge;

const CODE_MAX: f32 = 127.0;

/// The 8-bit codes of rows `0..rows` (a row without a vector, or with a non-finite value, has a
/// NaN scale: it is the farthest from every query).
#[derive(Default)]
pub(crate) struct Codes {
    dim: usize,
    rows: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// A query quantized for [`Codes::distance`].
pub(crate) struct QueryCode {
    values: Vec<i16>,
    scale: f32,
}

impl Codes {
    pub fn new(dim: usize) -> Codes {
        Codes {
            dim,
            ..Codes::default()
        }
    }

    /// Rows covered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Codes of rows `from..to` of `vectors`, for [`Codes::append`]; computed in parallel.
    pub fn encode(vectors: &Vectors, from: usize, to: usize) -> (Vec<i8>, Vec<f32>) {
        let dim = vectors.dim;
        let n = to.saturating_sub(from);
        let mut codes = Vec::new();
        reserve_huge(&mut codes, n * dim);
        codes.resize(n * dim, 0);
        let mut scales = vec![f32::NAN; n];
        if dim == 0 {
            return (codes, scales);
        }
        codes
            .par_chunks_mut(dim)
            .zip(scales.par_iter_mut())
            .enumerate()
            .for_each(|(i, (code, scale))| {
                if let Some(row) = vectors.row((from + i) as u64) {
                    *scale = encode_row(row, code);
                }
            });
        (codes, scales)
    }

    /// Appends the codes of the next rows (from [`Codes::encode`] at `from == self.rows()`).
    pub fn append(&mut self, codes: Vec<i8>, scales: Vec<f32>) {
        debug_assert_eq!(codes.len(), scales.len() * self.dim);
        if self.codes.is_empty() {
            self.codes = codes;
            self.scales = scales;
        } else {
            reserve_huge(&mut self.codes, codes.len());
            self.codes.extend_from_slice(&codes);
            self.scales.extend_from_slice(&scales);
        }
        self.rows = self.scales.len();
    }

    /// The query's codes: 16-bit, as fine as the sums allow without overflow.
    pub fn query(&self, q: &[f32]) -> QueryCode {
        // The whole sum must fit an i32 (the kernel pads the dimension to blocks of 16).
        let padded = (self.dim.div_ceil(16).max(1) * 16) as f64;
        let limit = (i32::MAX as f64 / (CODE_MAX as f64 * padded)).floor();
        let qmax = limit.min(8191.0) as f32;
        let max = q.iter().fold(
            0.0f32,
            |m, x| if x.is_finite() { m.max(x.abs()) } else { m },
        );
        let scale = if max > 0.0 { max / qmax } else { 1.0 };
        let mut values: Vec<i16> = q
            .iter()
            .map(|x| {
                if x.is_finite() {
                    (x / scale).round().clamp(-qmax, qmax) as i16
                } else {
                    0
                }
            })
            .collect();
        values.resize(self.dim, 0);
        QueryCode { values, scale }
    }

    /// The approximate negated inner product of `q` and row `row`; `None` past the rows.
    #[inline]
    pub fn distance(&self, q: &QueryCode, row: u32) -> Option<f32> {
        let row = row as usize;
        let scale = *self.scales.get(row)?;
        let code = self.codes.get(row * self.dim..(row + 1) * self.dim)?;
        let d = -(dot_i8(code, &q.values) as f32) * scale * q.scale;
        Some(if d.is_nan() { f32::INFINITY } else { d })
    }

    /// Asks the CPU to start loading row `row`'s codes and scale (a hint).
    #[inline]
    pub fn prefetch(&self, row: u32) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(scale), Some(code)) = (
            self.scales.get(row as usize),
            self.codes
                .get(row as usize * self.dim..(row as usize + 1) * self.dim),
        ) {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // Safety: a prefetch of a valid address has no effect but on the cache.
            unsafe { _mm_prefetch(std::ptr::from_ref(scale).cast::<i8>(), _MM_HINT_T0) };
            for line in code.chunks(64) {
                // Safety: as above.
                unsafe { _mm_prefetch(line.as_ptr(), _MM_HINT_T0) };
            }
        }
    }
}

/// Writes the codes of `row` into `code`; returns the scale (NaN if a value is not finite).
fn encode_row(row: &[f32], code: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    for x in row {
        if !x.is_finite() {
            return f32::NAN;
        }
        max = max.max(x.abs());
    }
    if max == 0.0 {
        return 0.0;
    }
    let scale = max / CODE_MAX;
    for (c, x) in code.iter_mut().zip(row) {
        *c = (x / scale).round().clamp(-CODE_MAX, CODE_MAX) as i8;
    }
    scale
}

/// `Σ a[i]·b[i]` over the common prefix, exactly (the caller keeps the sum in range).
#[inline]
fn dot_i8(a: &[i8], b: &[i16]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // Safety: the CPU supports AVX2 (checked just above).
        return unsafe { dot_i8_avx2(a, b) };
    }
    dot_i8_portable(a, b)
}

fn dot_i8_portable(a: &[i8], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as i32 * y as i32)
        .fold(0i32, i32::wrapping_add)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_i8_avx2(a: &[i8], b: &[i16]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // Safety: every load reads 16 values at offsets below `n`, inside both slices.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); 2];
        while i + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i + 16 * j).cast()));
                let y = _mm256_loadu_si256(pb.add(i + 16 * j).cast());
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(x, y));
            }
            i += 32;
        }
        while i + 16 <= n {
            let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i).cast()));
            let y = _mm256_loadu_si256(pb.add(i).cast());
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x, y));
            i += 16;
        }
        let s = _mm256_add_epi32(acc[0], acc[1]);
        let half = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let pairs = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0b01_00_11_10));
        let one = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b00_00_00_01));
        let mut sum = _mm_cvtsi128_si32(one);
        while i < n {
            sum = sum.wrapping_add(*pa.add(i) as i32 * *pb.add(i) as i32);
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn kernels_agree_at_every_tail_length() {
        let mut seed = 7;
        for n in 0..80 {
            let a: Vec<i8> = (0..n).map(|_| (lcg(&mut seed) * 127.0) as i8).collect();
            let b: Vec<i16> = (0..n).map(|_| (lcg(&mut seed) * 8191.0) as i16).collect();
            let want: i64 = a.iter().zip(&b).map(|(&x, &y)| x as i64 * y as i64).sum();
            assert_eq!(dot_i8_portable(&a, &b) as i64, want, "n = {n}");
            assert_eq!(dot_i8(&a, &b) as i64, want, "n = {n}");
        }
    }

    #[test]
    fn extreme_values_do_not_overflow_at_the_largest_dimension() {
        let dim = 65_536;
        let codes = Codes::new(dim);
        let q = codes.query(&vec![1.0; dim]);
        let row = vec![CODE_MAX as i8; dim];
        let want: i64 = q.values.iter().map(|&v| v as i64 * CODE_MAX as i64).sum();
        assert!(
            want <= i32::MAX as i64,
            "the query scale keeps the sum in range"
        );
        assert_eq!(dot_i8(&row, &q.values) as i64, want);
    }

    #[test]
    fn approximate_distance_tracks_the_exact_one() {
        let dim = 384;
        let mut seed = 11;
        let mut rows: Vec<Vec<f32>> = (0..50)
            .map(|_| (0..dim).map(|_| lcg(&mut seed)).collect())
            .collect();
        for r in rows.iter_mut() {
            super::super::normalize(r);
        }
        rows[3][5] = f32::NAN;
        let mut codes = Codes::new(dim);
        let mut c = vec![0i8; rows.len() * dim];
        let s: Vec<f32> = rows
            .iter()
            .zip(c.chunks_mut(dim))
            .map(|(r, code)| encode_row(r, code))
            .collect();
        codes.append(c, s);
        let mut q: Vec<f32> = (0..dim).map(|_| lcg(&mut seed)).collect();
        super::super::normalize(&mut q);
        let qc = codes.query(&q);
        for (i, r) in rows.iter().enumerate() {
            let got = codes.distance(&qc, i as u32).unwrap();
            if i == 3 {
                assert_eq!(got, f32::INFINITY, "a row with NaN is the farthest");
                continue;
            }
            let want = -super::super::dot(&q, r);
            // Rounding error per value is at most half a step of each scale.
            assert!((got - want).abs() < 0.01, "row {i}: {got} vs {want}");
        }
        assert_eq!(codes.distance(&qc, 50), None);
    }
}
