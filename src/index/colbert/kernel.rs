//! MaxSim kernels: decoding of stored token vectors and the blocked query × document products.
//!
//! A document is scored one tile of [`TILE`] tokens at a time: the tile is decoded once into a
//! padded row-major buffer, then every group of 4 query rows is multiplied with every group of
//! document rows by a register-blocked micro-kernel that keeps running per-query-token maxima.
//! Three back ends, picked at run time: AVX-512 BF16 (`vdpbf16ps`, for the F16, Int8 and Binary
//! precisions: 32 multiply-adds per instruction, products of bf16-rounded values summed in f32),
//! AVX2 + FMA + F16C (f32 arithmetic, every precision) and portable scalar code (f32 arithmetic).
//! F32 collections always use f32 arithmetic, so their scores are exact up to summation order.

use super::Precision;

/// Document tokens decoded per tile (a multiple of 4).
const TILE: usize = 64;

/// The arithmetic used to score one query against one precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backend {
    Scalar,
    Avx2,
    Bf16,
}

impl Backend {
    /// The fastest back end this CPU supports for `precision`.
    pub(super) fn detect(precision: Precision) -> Backend {
        #[cfg(target_arch = "x86_64")]
        {
            if precision != Precision::F32
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16")
            {
                return Backend::Bf16;
            }
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                return Backend::Avx2;
            }
        }
        let _ = precision;
        Backend::Scalar
    }

    /// Result lanes per group of 4 query rows (4 × document rows per micro-kernel step).
    fn lanes(self) -> usize {
        match self {
            Backend::Scalar => 4,
            Backend::Avx2 => 8,
            Backend::Bf16 => 16,
        }
    }
}

/// A validated query, padded to whole groups of 4 rows and rows of a multiple of 32 values.
pub(super) struct Query {
    n: usize,
    groups: usize,
    dim: usize,
    d_pad: usize,
    precision: Precision,
    backend: Backend,
    f32s: Vec<f32>,
    bf16: Vec<u16>,
}

impl Query {
    /// Pads `query` (row-major, `n × dim`, already validated) for `backend`.
    pub(super) fn new(query: &[f32], dim: usize, precision: Precision, backend: Backend) -> Query {
        let n = query.len() / dim;
        let groups = n.div_ceil(4);
        let d_pad = dim.div_ceil(32) * 32;
        let mut f32s = vec![0.0f32; groups * 4 * d_pad];
        for (row, src) in f32s.chunks_exact_mut(d_pad).zip(query.chunks_exact(dim)) {
            row[..dim].copy_from_slice(src);
        }
        let bf16 = if backend == Backend::Bf16 {
            let b = f32s.iter().map(|&x| bf16_bits(x)).collect();
            f32s = Vec::new();
            b
        } else {
            Vec::new()
        };
        Query {
            n,
            groups,
            dim,
            d_pad,
            precision,
            backend,
            f32s,
            bf16,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Per-thread buffers reused across documents.
#[derive(Default)]
pub(super) struct Scratch {
    f32s: Vec<f32>,
    bf16: Vec<u16>,
    scales: Vec<f32>,
    gmax: Vec<f32>,
}

/// The factor applied to a binary token's ±1 dot product: each sign stands for ±1/√dim (the
/// sign vector scaled to unit length). The unbiased √(π/2)/√dim was measured worse: the max
/// over a document's tokens picks up the quantization noise, and 1/√dim offsets that.
pub(super) fn binary_scale(dim: usize) -> f32 {
    1.0 / (dim as f32).sqrt()
}

/// Rounds to the nearest bf16 (ties to even); inputs are finite.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// MaxSim of `q` against the `count` encoded tokens in `bytes` (`count × bytes_per_token`).
pub(super) fn score(q: &Query, bytes: &[u8], count: usize, s: &mut Scratch) -> f32 {
    let bpt = q.precision.bytes_per_token(q.dim);
    let lanes = q.backend.lanes();
    s.gmax.clear();
    s.gmax.resize(q.groups * lanes, f32::NEG_INFINITY);
    s.scales.clear();
    s.scales.resize(TILE, 1.0);
    let mut t0 = 0;
    while t0 < count {
        let rows = (count - t0).min(TILE);
        let tile = &bytes[t0 * bpt..(t0 + rows) * bpt];
        let padded = rows.div_ceil(4) * 4;
        match q.backend {
            Backend::Bf16 => {
                s.bf16.resize(TILE * q.d_pad, 0);
                decode_bf16(q, tile, rows, &mut s.bf16, &mut s.scales);
                pad_rows(&mut s.bf16, &mut s.scales, q.d_pad, rows, padded);
            }
            _ => {
                s.f32s.resize(TILE * q.d_pad, 0.0);
                let f16c = q.backend == Backend::Avx2;
                decode_f32(q, tile, rows, &mut s.f32s, &mut s.scales, f16c);
                pad_rows(&mut s.f32s, &mut s.scales, q.d_pad, rows, padded);
            }
        }
        block(q, s, padded);
        t0 += rows;
    }
    let per_doc = lanes / 4;
    let mut sum = 0.0f32;
    for i in 0..q.n {
        let at = (i / 4) * lanes + (i % 4) * per_doc;
        sum += s.gmax[at..at + per_doc]
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    }
    let mut score = sum / q.n as f32;
    if q.precision == Precision::Binary {
        score *= binary_scale(q.dim);
    }
    score
}

/// Fills rows `rows..padded` with copies of the last row, which leaves every maximum unchanged.
fn pad_rows<T: Copy>(buf: &mut [T], scales: &mut [f32], d_pad: usize, rows: usize, padded: usize) {
    for r in rows..padded {
        buf.copy_within((rows - 1) * d_pad..rows * d_pad, r * d_pad);
        scales[r] = scales[rows - 1];
    }
}

/// Runs the micro-kernel of `q.backend` over the first `rows` decoded rows in `s`.
fn block(q: &Query, s: &mut Scratch, rows: usize) {
    let (groups, d_pad) = (q.groups, q.d_pad);
    let scales = (q.precision == Precision::Int8).then_some(&s.scales[..rows]);
    assert!(
        rows.is_multiple_of(4)
            && d_pad.is_multiple_of(32)
            && s.gmax.len() >= groups * q.backend.lanes()
    );
    match q.backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Bf16 => {
            assert!(q.bf16.len() >= groups * 4 * d_pad && s.bf16.len() >= rows * d_pad);
            // Safety: `Backend::detect` checked the CPU features; the asserts above bound every
            // pointer the kernel forms.
            unsafe { x86::block_bf16(&q.bf16, &s.bf16, d_pad, groups, rows, scales, &mut s.gmax) }
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => {
            assert!(q.f32s.len() >= groups * 4 * d_pad && s.f32s.len() >= rows * d_pad);
            // Safety: as above.
            unsafe { x86::block_f32(&q.f32s, &s.f32s, d_pad, groups, rows, scales, &mut s.gmax) }
        }
        _ => block_scalar(
            &q.f32s,
            &s.f32s,
            d_pad,
            q.dim,
            groups,
            rows,
            scales,
            &mut s.gmax,
        ),
    }
}

/// Portable kernel: one running maximum per query row (`gmax[i]`).
#[allow(clippy::too_many_arguments)]
fn block_scalar(
    q: &[f32],
    p: &[f32],
    d_pad: usize,
    dim: usize,
    groups: usize,
    rows: usize,
    scales: Option<&[f32]>,
    gmax: &mut [f32],
) {
    for i in 0..groups * 4 {
        let qi = &q[i * d_pad..i * d_pad + dim];
        for j in 0..rows {
            let mut d = dot(qi, &p[j * d_pad..j * d_pad + dim]);
            if let Some(s) = scales {
                d *= s[j];
            }
            gmax[i] = gmax[i].max(d);
        }
    }
}

/// The portable inner product shared with the dense leg.
pub(super) use crate::index::dense::dot_portable as dot;

/// Decodes `rows` tokens into f32 rows of `q.d_pad` values (zero padded); Int8 scales go to
/// `scales` and are applied after the dot product.
fn decode_f32(
    q: &Query,
    bytes: &[u8],
    rows: usize,
    out: &mut [f32],
    scales: &mut [f32],
    f16c: bool,
) {
    let (dim, d_pad) = (q.dim, q.d_pad);
    let bpt = q.precision.bytes_per_token(dim);
    for r in 0..rows {
        let src = &bytes[r * bpt..(r + 1) * bpt];
        let dst = &mut out[r * d_pad..(r + 1) * d_pad];
        dst[dim..].fill(0.0);
        let dst = &mut dst[..dim];
        match q.precision {
            Precision::F32 => {
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Precision::F16 => {
                #[cfg(target_arch = "x86_64")]
                if f16c {
                    // Safety: `f16c` is only true when the CPU has F16C and AVX; `src` holds
                    // 2·dim bytes and `dst` dim values.
                    unsafe { x86::f16_to_f32(src, dst) };
                    continue;
                }
                let _ = f16c;
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
            Precision::Int8 => {
                scales[r] = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                for (d, &b) in dst.iter_mut().zip(&src[4..]) {
                    *d = b as i8 as f32;
                }
            }
            Precision::Binary => {
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = if src[k / 8] >> (k % 8) & 1 == 1 {
                        1.0
                    } else {
                        -1.0
                    };
                }
            }
        }
    }
}

/// Decodes `rows` tokens into bf16 rows of `q.d_pad` values (zero padded).
fn decode_bf16(q: &Query, bytes: &[u8], rows: usize, out: &mut [u16], scales: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let (dim, d_pad) = (q.dim, q.d_pad);
        let bpt = q.precision.bytes_per_token(dim);
        for r in 0..rows {
            let src = &bytes[r * bpt..(r + 1) * bpt];
            let dst = &mut out[r * d_pad..(r + 1) * d_pad];
            // Safety: only reached with `Backend::Bf16`, whose features `detect` checked; the
            // functions stay within `src` (one encoded token) and `dst` (d_pad ≥ dim values).
            unsafe {
                match q.precision {
                    Precision::F16 => x86::f16_to_bf16(src, dst, dim),
                    Precision::Int8 => {
                        scales[r] = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                        x86::i8_to_bf16(&src[4..], dst, dim)
                    }
                    Precision::Binary => x86::bits_to_bf16(src, dst, dim),
                    Precision::F32 => {
                        for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                            *d = bf16_bits(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                        }
                        dst[dim..].fill(0);
                    }
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (q, bytes, rows, out, scales);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 and AVX-512 kernels. Callers check the CPU features and the buffer sizes.

    use std::arch::x86_64::*;

    use super::bf16_bits;

    /// Lanes (a0+a2, b0+b2, a1+a3, b1+b3) in each 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pair16(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    }

    /// From two `pair16` results: (a, b, c, d) partial sums in each 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn quad16(ab: __m512, cd: __m512) -> __m512 {
        let (x, y) = (_mm512_castps_pd(ab), _mm512_castps_pd(cd));
        let lo = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
        let hi = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
        _mm512_add_ps(lo, hi)
    }

    /// Adds 128-bit lanes pairwise: (u.L0+u.L1, u.L2+u.L3, v.L0+v.L1, v.L2+v.L3).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes16(u: __m512, v: __m512) -> __m512 {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(u, v),
            _mm512_shuffle_f32x4::<0xDD>(u, v),
        )
    }

    /// Lane `l` of the result is the sum of all lanes of `r[l]`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce16(r: &[__m512; 16]) -> __m512 {
        let u0 = quad16(pair16(r[0], r[1]), pair16(r[2], r[3]));
        let u1 = quad16(pair16(r[4], r[5]), pair16(r[6], r[7]));
        let u2 = quad16(pair16(r[8], r[9]), pair16(r[10], r[11]));
        let u3 = quad16(pair16(r[12], r[13]), pair16(r[14], r[15]));
        lanes16(lanes16(u0, u1), lanes16(u2, u3))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn load_bh(p: *const u16) -> __m512bh {
        // Safety: the caller guarantees 32 readable values; both types are 64 plain bytes.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast())) }
    }

    /// 4 query rows × 4 document rows per step, bf16 products summed in f32. `gmax` holds 16
    /// running maxima per query group: lane 4i + j is query row i against document rows ≡ j.
    ///
    /// Safety: AVX-512F/BW/BF16 present; `q` holds `groups·4·d_pad` values, `p` `rows·d_pad`,
    /// `rows % 4 == 0`, `d_pad % 32 == 0`, `gmax` `groups·16`, `scales` (if any) `rows`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn block_bf16(
        q: &[u16],
        p: &[u16],
        d_pad: usize,
        groups: usize,
        rows: usize,
        scales: Option<&[f32]>,
        gmax: &mut [f32],
    ) {
        let steps = d_pad / 32;
        for g in 0..groups {
            // Safety (this block and the loads below): offsets stay inside `q`, `p`, `gmax`.
            let qp = unsafe { q.as_ptr().add(g * 4 * d_pad) };
            let mut run = unsafe { _mm512_loadu_ps(gmax.as_ptr().add(g * 16)) };
            for j0 in (0..rows).step_by(4) {
                let pp = unsafe { p.as_ptr().add(j0 * d_pad) };
                let mut acc = [_mm512_setzero_ps(); 16];
                for s in 0..steps {
                    let o = s * 32;
                    let (qv, pv) = unsafe {
                        (
                            [
                                load_bh(qp.add(o)),
                                load_bh(qp.add(d_pad + o)),
                                load_bh(qp.add(2 * d_pad + o)),
                                load_bh(qp.add(3 * d_pad + o)),
                            ],
                            [
                                load_bh(pp.add(o)),
                                load_bh(pp.add(d_pad + o)),
                                load_bh(pp.add(2 * d_pad + o)),
                                load_bh(pp.add(3 * d_pad + o)),
                            ],
                        )
                    };
                    for i in 0..4 {
                        for j in 0..4 {
                            acc[4 * i + j] = _mm512_dpbf16_ps(acc[4 * i + j], qv[i], pv[j]);
                        }
                    }
                }
                let mut dots = reduce16(&acc);
                if let Some(s) = scales {
                    let sv = unsafe { _mm_loadu_ps(s.as_ptr().add(j0)) };
                    dots = _mm512_mul_ps(dots, _mm512_broadcast_f32x4(sv));
                }
                run = _mm512_max_ps(run, dots);
            }
            unsafe { _mm512_storeu_ps(gmax.as_mut_ptr().add(g * 16), run) };
        }
    }

    /// Lane `l` of the result is the sum of all lanes of `r[l]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn reduce8(r: &[__m256; 8]) -> __m256 {
        let u0 = _mm256_hadd_ps(_mm256_hadd_ps(r[0], r[1]), _mm256_hadd_ps(r[2], r[3]));
        let u1 = _mm256_hadd_ps(_mm256_hadd_ps(r[4], r[5]), _mm256_hadd_ps(r[6], r[7]));
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(u0, u1),
            _mm256_permute2f128_ps::<0x31>(u0, u1),
        )
    }

    /// 4 query rows × 2 document rows per step in f32 FMA. `gmax` holds 8 running maxima per
    /// query group: lane 2i + j is query row i against document rows ≡ j (mod 2).
    ///
    /// Safety: AVX2 and FMA present; sizes as for [`block_bf16`] with `gmax` `groups·8`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_f32(
        q: &[f32],
        p: &[f32],
        d_pad: usize,
        groups: usize,
        rows: usize,
        scales: Option<&[f32]>,
        gmax: &mut [f32],
    ) {
        let steps = d_pad / 8;
        for g in 0..groups {
            // Safety (this block and the loads below): offsets stay inside `q`, `p`, `gmax`.
            let qp = unsafe { q.as_ptr().add(g * 4 * d_pad) };
            let mut run = unsafe { _mm256_loadu_ps(gmax.as_ptr().add(g * 8)) };
            for j0 in (0..rows).step_by(2) {
                let pp = unsafe { p.as_ptr().add(j0 * d_pad) };
                let mut acc = [_mm256_setzero_ps(); 8];
                for s in 0..steps {
                    let o = s * 8;
                    let (qv, pv) = unsafe {
                        (
                            [
                                _mm256_loadu_ps(qp.add(o)),
                                _mm256_loadu_ps(qp.add(d_pad + o)),
                                _mm256_loadu_ps(qp.add(2 * d_pad + o)),
                                _mm256_loadu_ps(qp.add(3 * d_pad + o)),
                            ],
                            [
                                _mm256_loadu_ps(pp.add(o)),
                                _mm256_loadu_ps(pp.add(d_pad + o)),
                            ],
                        )
                    };
                    for i in 0..4 {
                        for j in 0..2 {
                            acc[2 * i + j] = _mm256_fmadd_ps(qv[i], pv[j], acc[2 * i + j]);
                        }
                    }
                }
                let mut dots = reduce8(&acc);
                if let Some(s) = scales {
                    let (s0, s1) = (s[j0], s[j0 + 1]);
                    dots = _mm256_mul_ps(dots, _mm256_setr_ps(s0, s1, s0, s1, s0, s1, s0, s1));
                }
                run = _mm256_max_ps(run, dots);
            }
            unsafe { _mm256_storeu_ps(gmax.as_mut_ptr().add(g * 8), run) };
        }
    }

    /// Converts little-endian f16 values to f32. Safety: F16C and AVX present.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
        let n = dst.len().min(src.len() / 2);
        let mut k = 0;
        while k + 8 <= n {
            // Safety: k + 8 ≤ n keeps both 8-value accesses in bounds.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(2 * k).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(k), _mm256_cvtph_ps(h));
            }
            k += 8;
        }
        for k in k..n {
            dst[k] =
                half::f16::from_bits(u16::from_le_bytes([src[2 * k], src[2 * k + 1]])).to_f32();
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn store_bh(dst: *mut u16, v: __m512) {
        // Safety: the caller guarantees 16 writable values; `__m256bh` is 32 plain bytes.
        unsafe {
            let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(dst.cast(), h);
        }
    }

    /// Converts `dim` little-endian f16 values to bf16 and zeroes `dst[dim..]`.
    /// Safety: AVX-512F/BF16 present.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn f16_to_bf16(src: &[u8], dst: &mut [u16], dim: usize) {
        let n = dim.min(dst.len()).min(src.len() / 2);
        let mut k = 0;
        while k + 16 <= n {
            // Safety: k + 16 ≤ n keeps both 16-value accesses in bounds.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(2 * k).cast());
                store_bh(dst.as_mut_ptr().add(k), _mm512_cvtph_ps(h));
            }
            k += 16;
        }
        for k in k..n {
            let x = half::f16::from_bits(u16::from_le_bytes([src[2 * k], src[2 * k + 1]]));
            dst[k] = bf16_bits(x.to_f32());
        }
        dst[n..].fill(0);
    }

    /// Converts `dim` i8 values to bf16 (exactly) and zeroes `dst[dim..]`.
    /// Safety: AVX-512F/BF16 present.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn i8_to_bf16(src: &[u8], dst: &mut [u16], dim: usize) {
        let n = dim.min(dst.len()).min(src.len());
        let mut k = 0;
        while k + 16 <= n {
            // Safety: k + 16 ≤ n keeps both 16-value accesses in bounds.
            unsafe {
                let b = _mm_loadu_si128(src.as_ptr().add(k).cast());
                let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
                store_bh(dst.as_mut_ptr().add(k), f);
            }
            k += 16;
        }
        for k in k..n {
            dst[k] = bf16_bits(src[k] as i8 as f32);
        }
        dst[n..].fill(0);
    }

    /// Expands `dim` sign bits (LSB first, 1 = +1) to bf16 ±1 and zeroes `dst[dim..]`.
    /// Safety: AVX-512F/BW present.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn bits_to_bf16(src: &[u8], dst: &mut [u16], dim: usize) {
        let (plus, minus) = (
            _mm512_set1_epi16(0x3F80),
            _mm512_set1_epi16(0xBF80u16 as i16),
        );
        let n = dim.min(dst.len()).min(src.len() * 8);
        let mut k = 0;
        while k < n {
            let mut word = [0u8; 4];
            let end = (k / 8 + 4).min(src.len());
            word[..end - k / 8].copy_from_slice(&src[k / 8..end]);
            let bits = u32::from_le_bytes(word);
            let left = n - k;
            let valid = if left >= 32 {
                u32::MAX
            } else {
                (1u32 << left) - 1
            };
            let v = _mm512_maskz_mov_epi16(valid, _mm512_mask_blend_epi16(bits, minus, plus));
            if k + 32 <= dst.len() {
                // Safety: k + 32 ≤ dst.len().
                unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(k).cast(), v) };
            } else {
                let mut tmp = [0u16; 32];
                // Safety: `tmp` holds 32 values.
                unsafe { _mm512_storeu_si512(tmp.as_mut_ptr().cast(), v) };
                let m = dst.len() - k;
                dst[k..].copy_from_slice(&tmp[..m]);
            }
            k += 32;
        }
        if k < dst.len() {
            dst[k..].fill(0);
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
