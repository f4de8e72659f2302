//! BGE-M3 post-processing, as FlagEmbedding's `BGEM3FlagModel` does it, and the two linear
//! heads (`sparse_linear`, `colbert_linear`) read from safetensors files.

use std::collections::BTreeMap;
use std::path::Path;

use crate::document::SparseVector;
use crate::error::{Error, Result};

/// Divides by the L2 norm, or by 1e-12 when the norm is smaller (torch's `normalize`).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Token weights to a sparse vector: special tokens skipped, only positive weights kept, the
/// largest weight of a repeated id kept.
pub(crate) fn sparse_from_tokens(ids: &[u32], weights: &[f32], skip: &[u32]) -> SparseVector {
    let mut best: BTreeMap<u32, f32> = BTreeMap::new();
    for (&id, &w) in ids.iter().zip(weights) {
        if skip.contains(&id) || w.is_nan() || w <= 0.0 {
            continue;
        }
        let e = best.entry(id).or_insert(w);
        if w > *e {
            *e = w;
        }
    }
    let (indices, values) = best.into_iter().unzip();
    // Ascending unique ids and finite positive weights: `new` cannot fail, but stay total.
    SparseVector::new(indices, values).unwrap_or_default()
}

/// Mean of the first `rows` rows of a row-major `[rows, dim]` block.
pub(crate) fn mean_rows(hidden: &[f32], rows: usize, dim: usize) -> Vec<f32> {
    let mut out = vec![0f32; dim];
    for row in hidden.chunks_exact(dim).take(rows) {
        out.iter_mut().zip(row).for_each(|(o, x)| *o += x);
    }
    let n = rows.max(1) as f32;
    out.iter_mut().for_each(|o| *o /= n);
    out
}

/// A linear layer `y = W x + b` with `W` of shape `[out, inp]`.
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    pub(crate) out: usize,
    pub(crate) inp: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Linear {
    /// Reads `weight` and `bias` (optionally prefixed, e.g. `sparse_linear.weight`) from a
    /// safetensors file.
    pub(crate) fn read(path: &Path) -> Result<Linear> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let tensors = safetensors(&bytes).map_err(|r| Error::corrupted(path, r))?;
        let find = |name: &str| {
            tensors
                .iter()
                .find(|t| t.name == name || t.name.ends_with(&format!(".{name}")))
                .ok_or_else(|| {
                    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
                    Error::Model(format!(
                        "{}: no tensor named {name:?} (found {names:?})",
                        path.display()
                    ))
                })
        };
        let (w, b) = (find("weight")?, find("bias")?);
        let bad = |what: String| Error::Model(format!("{}: {what}", path.display()));
        let [out, inp] = w.shape[..] else {
            return Err(bad(format!("weight has shape {:?}, expected 2-d", w.shape)));
        };
        if b.shape != [out] {
            return Err(bad(format!(
                "bias has shape {:?}, expected [{out}]",
                b.shape
            )));
        }
        if out == 0 || inp == 0 {
            return Err(bad("empty weight".into()));
        }
        Ok(Linear {
            out,
            inp,
            weight: w.data.clone(),
            bias: b.data.clone(),
        })
    }

    /// `y = W x + b` for each row of `x`: `x` is row-major `[rows, inp]`, `y` `[rows, out]`.
    pub(crate) fn apply(&self, x: &[f32], y: &mut [f32]) {
        assert!(
            x.len().is_multiple_of(self.inp) && x.len() / self.inp * self.out == y.len(),
            "Linear::apply: {} inputs and {} outputs for a [{}, {}] weight",
            x.len(),
            y.len(),
            self.out,
            self.inp
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            unsafe { apply_avx2_fma(self, x, y) };
            return;
        }
        linear_rows(self, x, y);
    }

    #[cfg(test)]
    pub(crate) fn from_parts(out: usize, inp: usize, weight: Vec<f32>, bias: Vec<f32>) -> Linear {
        Linear {
            out,
            inp,
            weight,
            bias,
        }
    }
}

/// Each row of `x` through the layer, one dot product at a time.
fn linear_rows(l: &Linear, x: &[f32], y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(l.inp).zip(y.chunks_exact_mut(l.out)) {
        for ((yo, w), b) in yr.iter_mut().zip(l.weight.chunks_exact(l.inp)).zip(&l.bias) {
            *yo = dot(w, xr) + b;
        }
    }
}

/// Dot product in eight independent lanes, so the loop vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Input rows per block in [`apply_avx2_fma`]: each weight row is loaded once per block, and
/// the block's dot products are independent chains of fused multiply-adds.
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 4;

/// [`linear_rows`] with AVX2 fused multiply-adds, eight lanes per dot product as in [`dot`],
/// over blocks of input rows. The crate is built for the x86-64 baseline, whose vectors are
/// half as wide and have no FMA; left to itself, the compiler vectorizes a blocked loop across
/// rows instead of lanes, with spills. The ColBERT head, a [tokens, hidden] × [hidden, dim]
/// product per text, is most of the encoding time spent outside ONNX Runtime.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn apply_avx2_fma(l: &Linear, x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::{
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let (inp, out) = (l.inp, l.out);
    let whole = inp / 8 * 8;
    for (xb, yb) in x.chunks(BLOCK * inp).zip(y.chunks_mut(BLOCK * out)) {
        let rows = xb.len() / inp;
        // A short last block repeats its last row; the repeats are computed but not stored.
        let xs: [&[f32]; BLOCK] = std::array::from_fn(|r| &xb[r.min(rows - 1) * inp..][..inp]);
        for (o, (w, b)) in l.weight.chunks_exact(inp).zip(&l.bias).enumerate() {
            let mut acc = [_mm256_setzero_ps(); BLOCK];
            for k in (0..whole).step_by(8) {
                // SAFETY: k + 8 <= whole <= inp, the length of w and of every xs[r].
                unsafe {
                    let wv = _mm256_loadu_ps(w.as_ptr().add(k));
                    for (a, xr) in acc.iter_mut().zip(&xs) {
                        *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr.as_ptr().add(k)), *a);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(rows) {
                let mut lanes = [0f32; 8];
                // SAFETY: lanes has room for the eight values stored.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
                let tail = w[whole..].iter().zip(&xs[r][whole..]);
                yb[r * out + o] =
                    lanes.iter().sum::<f32>() + tail.map(|(p, q)| p * q).sum::<f32>() + b;
            }
        }
    }
}

struct Tensor {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Parses a safetensors file (u64 LE header length, JSON header, raw LE data) into f32 tensors.
/// F32, F16 and BF16 are accepted.
fn safetensors(bytes: &[u8]) -> std::result::Result<Vec<Tensor>, String> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("shorter than the 8-byte header length")?;
    let header_len = u64::from_le_bytes(len_bytes);
    let header_end = usize::try_from(header_len)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format!("header length {header_len} exceeds the file"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..header_end]).map_err(|e| format!("header: {e}"))?;
    let data = &bytes[header_end..];
    let mut out = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"].as_str().unwrap_or_default();
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .ok_or_else(|| format!("{name}: no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{name}: bad shape"))?;
        let offsets: Vec<usize> = info["data_offsets"]
            .as_array()
            .map(|o| {
                o.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .unwrap_or_default();
        let [begin, end] = offsets[..] else {
            return Err(format!("{name}: bad data_offsets"));
        };
        let raw = data
            .get(begin..end)
            .filter(|_| begin <= end)
            .ok_or_else(|| format!("{name}: data [{begin}, {end}) outside the file"))?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("{name}: shape overflows"))?;
        let width = match dtype {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => return Err(format!("{name}: unsupported dtype {other:?}")),
        };
        if count.checked_mul(width) != Some(raw.len()) {
            return Err(format!(
                "{name}: {} bytes for shape {shape:?} of {dtype}",
                raw.len()
            ));
        }
        let data = match dtype {
            "F32" => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "F16" => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        out.push(Tensor { name, shape, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_matches_torch() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }

    #[test]
    fn sparse_keeps_max_positive_and_skips_specials() {
        // ids:    <s>=0  7    9    7    3(unk) 2(</s>)  5
        let ids = [0, 7, 9, 7, 3, 2, 5];
        let w = [0.9, 0.2, -0.1, 0.5, 0.8, 0.7, 0.0];
        let s = sparse_from_tokens(&ids, &w, &[0, 1, 2, 3]);
        assert_eq!(s.indices(), &[7]);
        assert_eq!(s.values(), &[0.5]);
    }

    #[test]
    fn linear_and_mean_by_hand() {
        let l = Linear::from_parts(2, 3, vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0], vec![0.5, -0.5]);
        let mut y = [0.0; 2];
        l.apply(&[1.0, 1.0, 2.0], &mut y);
        assert_eq!(y, [9.5, 0.5]);
        // Long rows take the lane path: 20 ones dotted with 0..20 is 190.
        let l = Linear::from_parts(1, 20, vec![1.0; 20], vec![0.0]);
        let x: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let mut y = [0.0];
        l.apply(&x, &mut y);
        assert_eq!(y, [190.0]);
        // Several rows at once (blocks of four and a short last block) against one at a time,
        // and against the portable path; the values are exact in f32, so any order agrees.
        let (out, inp) = (3, 11);
        let w: Vec<f32> = (0..out * inp).map(|i| (i % 7) as f32 - 3.0).collect();
        let l = Linear::from_parts(out, inp, w, vec![0.5, -1.0, 2.0]);
        let x: Vec<f32> = (0..6 * inp).map(|i| (i % 5) as f32 * 0.5).collect();
        let mut all = vec![0.0; 6 * out];
        l.apply(&x, &mut all);
        for (xr, yr) in x.chunks(inp).zip(all.chunks(out)) {
            let mut one = [0.0; 3];
            l.apply(xr, &mut one);
            assert_eq!(yr, one);
        }
        let mut portable = vec![0.0; 6 * out];
        linear_rows(&l, &x, &mut portable);
        assert_eq!(all, portable);
        l.apply(&[], &mut []);
        let m = mean_rows(&[1.0, 2.0, 3.0, 6.0, 100.0, 100.0], 2, 2);
        assert_eq!(m, vec![2.0, 4.0]);
    }

    fn safetensors_file(entries: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, raw) in entries {
            let begin = data.len();
            data.extend_from_slice(raw);
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
            );
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        out
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_heads_from_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("colbert_linear.safetensors");
        let w16: Vec<u8> = [1.0f32, 0.5, -2.0, 0.25]
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        let bytes = safetensors_file(&[
            ("colbert_linear.weight", "F16", vec![2, 2], w16),
            ("colbert_linear.bias", "F32", vec![2], f32s(&[1.0, 2.0])),
        ]);
        std::fs::write(&p, &bytes).unwrap();
        let l = Linear::read(&p).unwrap();
        assert_eq!((l.out, l.inp), (2, 2));
        let mut y = [0.0; 2];
        l.apply(&[2.0, 4.0], &mut y);
        assert_eq!(
            y,
            [1.0 * 2.0 + 0.5 * 4.0 + 1.0, -2.0 * 2.0 + 0.25 * 4.0 + 2.0]
        );

        // Every truncation is an error, never a panic.
        for cut in 0..bytes.len() {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(Linear::read(&p).is_err(), "cut at {cut}");
        }
        // Bias of the wrong shape.
        let bad = safetensors_file(&[
            ("weight", "F32", vec![1, 2], f32s(&[1.0, 2.0])),
            ("bias", "F32", vec![2], f32s(&[1.0, 2.0])),
        ]);
        std::fs::write(&p, bad).unwrap();
        let e = Linear::read(&p).unwrap_err().to_string();
        assert!(e.contains("bias has shape [2], expected [1]"), "{e}");
    }
}
