//! In-process text encoding with ONNX Runtime: BGE-M3 (dense, sparse and ColBERT outputs from
//! one model pass) or a dense-only sentence-embedding model.
//!
//! [`Encoder::open`] reads a model directory and recognises one of three layouts:
//! 1. `tokenizer.json` + an ONNX model whose outputs are `dense_vecs`, `sparse_vecs` and
//!    `colbert_vecs` (the public BGE-M3 ONNX exports);
//! 2. `tokenizer.json` + an ONNX model that outputs the last hidden state, with the BGE-M3 heads
//!    in `sparse_linear.safetensors` and `colbert_linear.safetensors` (applied here);
//! 3. `tokenizer.json` + an ONNX model that outputs the last hidden state, and no heads: a
//!    dense-only model, pooled by CLS or mean.
//!
//! Post-processing follows FlagEmbedding's `BGEM3FlagModel`: dense is the L2-normalized first
//! token state; sparse is `relu(sparse_linear(h))` per token without the special tokens, the
//! largest weight of a repeated id kept; ColBERT is `colbert_linear(h[1:])`, L2-normalized per
//! token, one row per token after the first.

mod documents;
pub(crate) mod heads;
mod layout;
mod run;
mod runtime;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::document::SparseVector;
use crate::error::{Error, Result};
use heads::Linear;
use layout::ModelFiles;

pub use layout::Pooling;
pub use runtime::{ORT_VERSION, default_runtime_dir, loaded_runtime};

/// Whether a text is a query or a passage (only the configured prefixes differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Passage,
}

/// How an [`Encoder`] loads and runs its model.
#[derive(Clone, Debug)]
pub struct EncoderOptions {
    /// Longest input in tokens, special tokens included; longer texts are truncated (and
    /// reported as such). Capped by the model's position embeddings when `config.json` says.
    pub max_length: usize,
    /// Texts per model run.
    pub batch_size: usize,
    /// Padded tokens per model run (rows × longest row); a batch is cut before it exceeds this.
    /// A single text longer than this still runs alone.
    pub max_batch_tokens: usize,
    /// ONNX Runtime intra-op threads; 0 lets ONNX Runtime decide.
    pub intra_threads: usize,
    /// Pooling of a dense-only model; `None` takes `1_Pooling/config.json`, else CLS.
    pub pooling: Option<Pooling>,
    /// L2-normalize a dense-only model's vectors (BGE-M3 outputs are always normalized).
    pub normalize: bool,
    /// Prepended to query texts before tokenization (e5 models use "query: ").
    pub query_prefix: String,
    /// Prepended to passage texts before tokenization (e5 models use "passage: ").
    pub passage_prefix: String,
    /// The ONNX Runtime shared library; `None` searches as described in the crate docs.
    pub runtime: Option<PathBuf>,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            max_length: 8192,
            batch_size: 16,
            max_batch_tokens: 16_384,
            intra_threads: 0,
            pooling: None,
            normalize: true,
            query_prefix: String::new(),
            passage_prefix: String::new(),
            runtime: None,
        }
    }
}

/// The model layout found in a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The model itself outputs `dense_vecs`, `sparse_vecs` and `colbert_vecs`.
    M3Outputs,
    /// The model outputs hidden states; the BGE-M3 heads are applied in Rust.
    M3Heads,
    /// A dense-only sentence-embedding model.
    DenseOnly,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::M3Outputs => "bge-m3 (dense_vecs, sparse_vecs, colbert_vecs outputs)",
            Layout::M3Heads => "bge-m3 (hidden state + sparse/colbert heads)",
            Layout::DenseOnly => "dense-only",
        }
    }
}

/// What an [`Encoder`] produces, known once the model is loaded.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub layout: Layout,
    pub onnx: PathBuf,
    pub dense_dim: usize,
    /// ColBERT token dimension (BGE-M3 layouts only).
    pub colbert_dim: Option<usize>,
    /// Whether sparse weights are produced (BGE-M3 layouts only).
    pub sparse: bool,
    /// The effective maximum input length in tokens.
    pub max_length: usize,
    /// Pooling in use (dense-only layout).
    pub pooling: Option<Pooling>,
}

/// One encoded text.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    pub dense: Vec<f32>,
    /// Token id → weight (BGE-M3 layouts).
    pub sparse: Option<SparseVector>,
    /// Token vectors, row-major `[tokens, colbert_dim]` (BGE-M3 layouts).
    pub colbert: Option<Vec<f32>>,
    /// Tokens fed to the model, special tokens included.
    pub tokens: usize,
    /// Whether the text was cut at `max_length`.
    pub truncated: bool,
}

/// How the model's outputs become embeddings.
enum Head {
    Outputs,
    Rust { sparse: Linear, colbert: Linear },
    Dense { pooling: Pooling },
}

/// The model inputs present besides `input_ids`, and their integer type.
struct Inputs {
    attention_mask: bool,
    token_type_ids: bool,
    int32: bool,
}

/// A loaded model: tokenizer, ONNX Runtime session and post-processing.
pub struct Encoder {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    head: Head,
    inputs: Inputs,
    /// The output read: hidden state (or pooled vector) for `Rust`/`Dense` heads.
    output: String,
    /// cls, eos, pad and unk ids: never given sparse weight.
    special: Vec<u32>,
    pad_id: u32,
    options: EncoderOptions,
    info: ModelInfo,
}

fn model_err(context: &Path, e: impl std::fmt::Display) -> Error {
    Error::Model(format!("{}: {e}", context.display()))
}

impl Encoder {
    /// Loads a model directory (see the module docs for the layouts).
    pub fn open(dir: impl AsRef<Path>, options: EncoderOptions) -> Result<Encoder> {
        let dir = dir.as_ref();
        if options.max_length < 2 || options.batch_size == 0 {
            return Err(Error::invalid(
                "max_length must be at least 2 and batch_size at least 1",
            ));
        }
        let files = ModelFiles::find(dir)?;
        let max_length = files
            .position_limit
            .map_or(options.max_length, |l| l.min(options.max_length));
        let mut tokenizer =
            Tokenizer::from_file(&files.tokenizer).map_err(|e| model_err(&files.tokenizer, e))?;
        tokenizer
            .with_padding(None)
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| model_err(&files.tokenizer, e))?;
        let id = |names: &[&str]| names.iter().find_map(|n| tokenizer.token_to_id(n));
        let special: Vec<u32> = [
            id(&["<s>", "[CLS]"]),
            id(&["</s>", "[SEP]"]),
            id(&["<pad>", "[PAD]"]),
            id(&["<unk>", "[UNK]"]),
        ]
        .into_iter()
        .flatten()
        .collect();
        let pad_id = id(&["<pad>", "[PAD]"]).unwrap_or(0);

        let env = runtime::environment(options.runtime.as_deref())?;
        let session = Session::builder(env)
            .and_then(|b| Ok(b.with_intra_threads(options.intra_threads.max(1))?))
            .and_then(|mut b| b.commit_from_file(&files.onnx))
            .map_err(|e| model_err(&files.onnx, format!("ONNX Runtime could not load it: {e}")))?;
        let inputs = Self::check_inputs(&session, &files.onnx)?;
        let outputs: Vec<(String, usize)> = session
            .outputs()
            .iter()
            .map(|o| {
                let rank = o.dtype().tensor_shape().map_or(0, |s| s.len());
                (o.name().to_string(), rank)
            })
            .collect();
        let has = |n: &str| outputs.iter().any(|(o, _)| o == n);
        let hidden = outputs
            .iter()
            .find(|(n, _)| n == "last_hidden_state" || n == "token_embeddings")
            .or_else(|| outputs.iter().find(|(_, r)| *r == 3))
            .or_else(|| outputs.iter().find(|(n, _)| n == "sentence_embedding"))
            .map(|(n, _)| n.clone());
        let (layout, head, output) =
            if has("dense_vecs") && has("sparse_vecs") && has("colbert_vecs") {
                (Layout::M3Outputs, Head::Outputs, String::new())
            } else if let (Some(h), Some((s, c))) = (&hidden, &files.heads) {
                let (sparse, colbert) = (Linear::read(s)?, Linear::read(c)?);
                if sparse.out != 1 {
                    return Err(model_err(
                        s,
                        format!("sparse_linear maps to {} values, expected 1", sparse.out),
                    ));
                }
                (Layout::M3Heads, Head::Rust { sparse, colbert }, h.clone())
            } else if hidden.is_some() && files.torch_heads {
                return Err(Error::Model(format!(
                    "{} has the BGE-M3 heads as PyTorch files (sparse_linear.pt, \
                     colbert_linear.pt), which are not read. Convert each to safetensors: \
                     python -c \"import torch, safetensors.torch as st; \
                     st.save_file(torch.load('sparse_linear.pt'), 'sparse_linear.safetensors')\" \
                     (and the same for colbert_linear), or remove them to use the model \
                     dense-only",
                    dir.display()
                )));
            } else if let Some(h) = hidden {
                let pooling = options.pooling.or(files.pooling).unwrap_or(Pooling::Cls);
                (Layout::DenseOnly, Head::Dense { pooling }, h)
            } else {
                let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
                return Err(Error::Model(format!(
                    "{}: layout not recognised. The model's outputs are {names:?}; expected \
                     dense_vecs + sparse_vecs + colbert_vecs (BGE-M3 export), or a \
                     last_hidden_state output [batch, tokens, hidden] (with \
                     sparse_linear/colbert_linear.safetensors for BGE-M3)",
                    files.onnx.display()
                )));
            };
        let pooling = match &head {
            Head::Dense { pooling } => Some(*pooling),
            _ => None,
        };
        let mut encoder = Encoder {
            session: Mutex::new(session),
            tokenizer,
            head,
            inputs,
            output,
            special,
            pad_id,
            options,
            info: ModelInfo {
                layout,
                onnx: files.onnx,
                dense_dim: 0,
                colbert_dim: None,
                sparse: layout != Layout::DenseOnly,
                max_length,
                pooling,
            },
        };
        encoder.probe()?;
        Ok(encoder)
    }

    /// Encodes an empty text once to learn (and check) the output dimensions.
    fn probe(&mut self) -> Result<()> {
        // The run checks the heads' input size against the hidden size.
        let dims = self.run_dims(&[""])?;
        self.info.dense_dim = dims.dense;
        self.info.colbert_dim = dims.colbert;
        Ok(())
    }

    fn check_inputs(session: &Session, onnx: &Path) -> Result<Inputs> {
        let mut found = Inputs {
            attention_mask: false,
            token_type_ids: false,
            int32: false,
        };
        let mut ids = false;
        for i in session.inputs() {
            let ty = match i.dtype() {
                ValueType::Tensor { ty, .. } => *ty,
                _ => TensorElementType::String,
            };
            if !matches!(ty, TensorElementType::Int64 | TensorElementType::Int32) {
                return Err(model_err(
                    onnx,
                    format!("input {:?} is not an int64/int32 tensor", i.name()),
                ));
            }
            match i.name() {
                "input_ids" => {
                    ids = true;
                    found.int32 = ty == TensorElementType::Int32;
                }
                "attention_mask" => found.attention_mask = true,
                "token_type_ids" => found.token_type_ids = true,
                other => {
                    return Err(model_err(
                        onnx,
                        format!(
                            "unexpected model input {other:?} (known: input_ids, \
                             attention_mask, token_type_ids)"
                        ),
                    ));
                }
            }
        }
        if !ids {
            return Err(model_err(onnx, "the model has no input_ids input"));
        }
        Ok(found)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn options(&self) -> &EncoderOptions {
        &self.options
    }

    /// Encodes texts, in batches sorted by length.
    pub fn encode(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Embedding>> {
        self.encode_with_progress(texts, kind, &mut |_| {})
    }

    /// As [`encode`](Self::encode), calling `progress` with the number of texts done after
    /// each model run.
    pub fn encode_with_progress(
        &self,
        texts: &[&str],
        kind: TextKind,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Embedding>> {
        let prefix = match kind {
            TextKind::Query => &self.options.query_prefix,
            TextKind::Passage => &self.options.passage_prefix,
        };
        if prefix.is_empty() {
            self.encode_texts(texts, progress)
        } else {
            let owned: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            self.encode_texts(&refs, progress)
        }
    }
}
