//! Tokenization, length-sorted batching, model runs and post-processing.

use std::borrow::Cow;

use ort::session::{SessionInputValue, SessionOutputs};
use ort::value::Tensor;

use super::heads::{l2_normalize, mean_rows, sparse_from_tokens};
use super::{Embedding, Encoder, Head, Pooling};
use crate::error::{Error, Result};

/// Output dimensions seen by a model run.
pub(super) struct Dims {
    pub(super) dense: usize,
    pub(super) colbert: Option<usize>,
}

/// A tokenized text.
struct Tokens {
    ids: Vec<u32>,
    truncated: bool,
}

/// A 3-d `[batch, rows, dim]` (or 2-d `[batch, dim]`) f32 output.
struct Output<'a> {
    name: &'a str,
    shape: Vec<usize>,
    data: &'a [f32],
}

impl<'a> Output<'a> {
    fn get(outputs: &'a SessionOutputs<'_>, name: &'a str) -> Result<Output<'a>> {
        let value = outputs
            .get(name)
            .ok_or_else(|| Error::Model(format!("the model produced no {name:?} output")))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::Model(format!("output {name:?}: {e}")))?;
        let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
        Ok(Output { name, shape, data })
    }

    /// Checks the rank and the batch size, and returns the per-item dims.
    fn dims(&self, rank: usize, batch: usize) -> Result<&[usize]> {
        if self.shape.len() != rank || self.shape[0] != batch {
            return Err(Error::Model(format!(
                "output {:?} has shape {:?}, expected {rank} dimensions with batch {batch}",
                self.name, self.shape
            )));
        }
        Ok(&self.shape[1..])
    }

    /// Item `b` as one contiguous slice.
    fn item(&self, b: usize) -> &[f32] {
        let n: usize = self.shape[1..].iter().product();
        &self.data[b * n..(b + 1) * n]
    }
}

impl Encoder {
    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Model(format!("tokenizer: {e}")))?;
        Ok(enc
            .into_iter()
            .map(|e| Tokens {
                truncated: !e.get_overflowing().is_empty(),
                ids: e.get_ids().to_vec(),
            })
            .collect())
    }

    pub(super) fn encode_texts(
        &self,
        texts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Embedding>> {
        let tokens = self.tokenize(texts)?;
        // Longest first, so each batch pads to its first row.
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].ids.len()));
        let mut out: Vec<Option<Embedding>> = vec![None; tokens.len()];
        let mut start = 0;
        while start < order.len() {
            let longest = tokens[order[start]].ids.len().max(1);
            let fit = (self.options.max_batch_tokens / longest).max(1);
            let end = order.len().min(start + self.options.batch_size.min(fit));
            let batch: Vec<&Tokens> = order[start..end].iter().map(|&i| &tokens[i]).collect();
            for (i, e) in order[start..end].iter().zip(self.run_batch(&batch, None)?) {
                out[*i] = Some(e);
            }
            start = end;
            progress(start);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Runs texts through the model and reports the output dimensions.
    pub(super) fn run_dims(&self, texts: &[&str]) -> Result<Dims> {
        let tokens = self.tokenize(texts)?;
        let batch: Vec<&Tokens> = tokens.iter().collect();
        let mut dims = None;
        self.run_batch(&batch, Some(&mut dims))?;
        dims.ok_or_else(|| Error::Model("the model produced no output".into()))
    }

    /// One model run over texts padded to the longest.
    fn run_batch(
        &self,
        batch: &[&Tokens],
        dims: Option<&mut Option<Dims>>,
    ) -> Result<Vec<Embedding>> {
        let (rows, cols) = (
            batch.len(),
            batch.iter().map(|t| t.ids.len()).max().unwrap_or(0),
        );
        let mut ids = vec![i64::from(self.pad_id); rows * cols];
        let mut mask = vec![0i64; rows * cols];
        for (r, t) in batch.iter().enumerate() {
            for (c, &id) in t.ids.iter().enumerate() {
                ids[r * cols + c] = i64::from(id);
                mask[r * cols + c] = 1;
            }
        }
        let shape = [rows, cols];
        let tensor = |v: Vec<i64>| -> Result<SessionInputValue<'static>> {
            let t = if self.inputs.int32 {
                let v: Vec<i32> = v.into_iter().map(|x| x as i32).collect();
                Tensor::from_array((shape, v)).map(SessionInputValue::from)
            } else {
                Tensor::from_array((shape, v)).map(SessionInputValue::from)
            };
            t.map_err(|e| Error::Model(format!("input tensor: {e}")))
        };
        let mut inputs: Vec<(Cow<str>, SessionInputValue)> =
            vec![(Cow::from("input_ids"), tensor(ids)?)];
        if self.inputs.token_type_ids {
            inputs.push((Cow::from("token_type_ids"), tensor(vec![0; rows * cols])?));
        }
        if self.inputs.attention_mask {
            inputs.push((Cow::from("attention_mask"), tensor(mask)?));
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(inputs)
            .map_err(|e| Error::Model(format!("model run failed: {e}")))?;
        let (embeddings, seen) = match &self.head {
            Head::Outputs => self.read_m3_outputs(&outputs, batch, cols)?,
            Head::Rust { .. } | Head::Dense { .. } => self.read_hidden(&outputs, batch, cols)?,
        };
        if let Some(d) = dims {
            *d = Some(seen);
        }
        Ok(embeddings)
    }

    /// The three BGE-M3 outputs of the model itself.
    fn read_m3_outputs(
        &self,
        outputs: &SessionOutputs<'_>,
        batch: &[&Tokens],
        cols: usize,
    ) -> Result<(Vec<Embedding>, Dims)> {
        let rows = batch.len();
        let dense = Output::get(outputs, "dense_vecs")?;
        let sparse = Output::get(outputs, "sparse_vecs")?;
        let colbert = Output::get(outputs, "colbert_vecs")?;
        let dense_dim = dense.dims(2, rows)?[0];
        // [batch, tokens, 1] or [batch, tokens].
        let sparse_ok = match sparse.shape[..] {
            [b, t] | [b, t, 1] => b == rows && t == cols,
            _ => false,
        };
        if !sparse_ok {
            return Err(Error::Model(format!(
                "output \"sparse_vecs\" has shape {:?}, expected [{rows}, {cols}, 1]",
                sparse.shape
            )));
        }
        let cd = colbert.dims(3, rows)?;
        if cd[0] != cols.saturating_sub(1) {
            return Err(Error::Model(format!(
                "output \"colbert_vecs\" has shape {:?}, expected [{rows}, {}, dim] (one row per \
                 token after the first)",
                colbert.shape,
                cols.saturating_sub(1)
            )));
        }
        let colbert_dim = cd[1];
        if dense_dim == 0 || colbert_dim == 0 {
            return Err(Error::Model(format!(
                "outputs \"dense_vecs\" {:?} and \"colbert_vecs\" {:?} must have a nonzero \
                 last dimension",
                dense.shape, colbert.shape
            )));
        }
        let embeddings = batch
            .iter()
            .enumerate()
            .map(|(b, t)| {
                let n = t.ids.len();
                let mut d = dense.item(b).to_vec();
                l2_normalize(&mut d);
                let w = &sparse.item(b)[..n];
                let mut c = colbert.item(b)[..n.saturating_sub(1) * colbert_dim].to_vec();
                c.chunks_exact_mut(colbert_dim).for_each(l2_normalize);
                self.embedding(t, d, Some((w.to_vec(), c)))
            })
            .collect();
        let dims = Dims {
            dense: dense_dim,
            colbert: Some(colbert_dim),
        };
        Ok((embeddings, dims))
    }

    /// Hidden states through the Rust heads (BGE-M3) or pooling (dense-only).
    fn read_hidden(
        &self,
        outputs: &SessionOutputs<'_>,
        batch: &[&Tokens],
        cols: usize,
    ) -> Result<(Vec<Embedding>, Dims)> {
        let rows = batch.len();
        let out = Output::get(outputs, &self.output)?;
        if out.shape.len() == 2 && matches!(self.head, Head::Dense { .. }) {
            // A pooled sentence embedding: nothing to pool.
            let dim = out.dims(2, rows)?[0];
            let embeddings = batch
                .iter()
                .enumerate()
                .map(|(b, t)| self.dense_only(t, out.item(b).to_vec()))
                .collect();
            return Ok((
                embeddings,
                Dims {
                    dense: dim,
                    colbert: None,
                },
            ));
        }
        let hd = out.dims(3, rows)?;
        if hd[0] != cols || hd[1] == 0 {
            return Err(Error::Model(format!(
                "output {:?} has shape {:?}, expected [{rows}, {cols}, hidden]",
                out.name, out.shape
            )));
        }
        let hidden = hd[1];
        if let Head::Rust { sparse, colbert } = &self.head {
            for (name, l) in [("sparse_linear", sparse), ("colbert_linear", colbert)] {
                if l.inp != hidden {
                    return Err(super::model_err(
                        &self.info.onnx,
                        format!(
                            "{name} takes {} inputs but the model's hidden size is {hidden}",
                            l.inp
                        ),
                    ));
                }
            }
        }
        let mut embeddings = Vec::with_capacity(rows);
        let mut colbert_dim = None;
        for (b, t) in batch.iter().enumerate() {
            let n = t.ids.len();
            let h = &out.item(b)[..n * hidden];
            let e = match &self.head {
                Head::Rust { sparse, colbert } => {
                    let mut dense = h[..hidden].to_vec();
                    l2_normalize(&mut dense);
                    let mut w = vec![0f32; n];
                    sparse.apply(h, &mut w);
                    w.iter_mut().for_each(|wt| *wt = wt.max(0.0));
                    // ColBERT rows for tokens 1..n, all in one call.
                    let mut c = vec![0f32; n.saturating_sub(1) * colbert.out];
                    colbert.apply(h.get(hidden..).unwrap_or_default(), &mut c);
                    c.chunks_exact_mut(colbert.out).for_each(l2_normalize);
                    colbert_dim = Some(colbert.out);
                    self.embedding(t, dense, Some((w, c)))
                }
                Head::Dense { pooling } => {
                    let v = match pooling {
                        Pooling::Cls => h[..hidden].to_vec(),
                        Pooling::Mean => mean_rows(h, n, hidden),
                    };
                    self.dense_only(t, v)
                }
                Head::Outputs => {
                    return Err(Error::Model(
                        "hidden-state path used for a three-output model".into(),
                    ));
                }
            };
            embeddings.push(e);
        }
        let dims = Dims {
            dense: hidden,
            colbert: colbert_dim,
        };
        Ok((embeddings, dims))
    }

    fn dense_only(&self, t: &Tokens, mut dense: Vec<f32>) -> Embedding {
        if self.options.normalize {
            l2_normalize(&mut dense);
        }
        self.embedding(t, dense, None)
    }

    /// Assembles an embedding; `m3` is (per-token sparse weights, ColBERT rows).
    fn embedding(
        &self,
        t: &Tokens,
        dense: Vec<f32>,
        m3: Option<(Vec<f32>, Vec<f32>)>,
    ) -> Embedding {
        let (sparse, colbert) = match m3 {
            Some((w, c)) => (Some(sparse_from_tokens(&t.ids, &w, &self.special)), Some(c)),
            None => (None, None),
        };
        Embedding {
            dense,
            sparse,
            colbert,
            tokens: t.ids.len(),
            truncated: t.truncated,
        }
    }
}
