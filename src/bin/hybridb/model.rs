//! Commands and options that involve a model: encoding text, fetching a model directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hybridb::fetch::{self, FetchEvent, FetchOptions};
use hybridb::{Embedding, Encoder, EncoderOptions, Pooling, TextKind};
use indicatif::{ProgressBar, ProgressStyle};

/// How to load and run the encoder.
#[derive(Args, Clone, Debug)]
pub struct EncoderArgs {
    /// Model directory: BGE-M3 (ONNX with dense/sparse/colbert outputs, or hidden state +
    /// sparse_linear/colbert_linear.safetensors) or a dense-only model; encodes the text.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Longest input in tokens (special tokens included); longer texts are truncated.
    #[arg(long, default_value_t = 8192)]
    pub max_length: usize,
    /// Texts per model run.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Pooling of a dense-only model: cls or mean (default: 1_Pooling/config.json, else cls).
    #[arg(long)]
    pub pooling: Option<Pooling>,
    /// Do not L2-normalize a dense-only model's vectors.
    #[arg(long)]
    pub no_normalize: bool,
    /// Prefix for query texts (e5 models: "query: ").
    #[arg(long, default_value = "")]
    pub query_prefix: String,
    /// Prefix for passage texts (e5 models: "passage: ").
    #[arg(long, default_value = "")]
    pub passage_prefix: String,
    /// The ONNX Runtime library (default: ORT_DYLIB_PATH, then
    /// ~/.local/share/hybridb/onnxruntime/, installed by scripts/setup-onnxruntime.sh).
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
}

impl EncoderArgs {
    /// Loads the model, if one was given.
    pub fn open(&self) -> Result<Option<Encoder>> {
        let Some(dir) = &self.model else {
            return Ok(None);
        };
        let options = EncoderOptions {
            max_length: self.max_length,
            batch_size: self.batch_size,
            intra_threads: self.threads,
            pooling: self.pooling,
            normalize: !self.no_normalize,
            query_prefix: self.query_prefix.clone(),
            passage_prefix: self.passage_prefix.clone(),
            runtime: self.onnxruntime.clone(),
            ..EncoderOptions::default()
        };
        let enc = Encoder::open(dir, options)
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        let info = enc.info();
        eprintln!(
            "model {}: {}, dense {}{}{}, max length {}",
            dir.display(),
            info.layout.as_str(),
            info.dense_dim,
            if info.sparse { ", sparse" } else { "" },
            info.colbert_dim
                .map(|d| format!(", colbert {d}"))
                .unwrap_or_default(),
            info.max_length
        );
        Ok(Some(enc))
    }
}

/// Encodes texts with a progress bar (shown for more than one batch).
pub fn encode_all(enc: &Encoder, texts: &[&str], kind: TextKind) -> Result<Vec<Embedding>> {
    let bar = if texts.len() > enc.options().batch_size {
        ProgressBar::new(texts.len() as u64).with_style(ProgressStyle::with_template(
            "encoding {bar:40} {pos}/{len} texts ({per_sec}, eta {eta})",
        )?)
    } else {
        ProgressBar::hidden()
    };
    let out = enc.encode_with_progress(texts, kind, &mut |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    Ok(out)
}

/// `hybridb encode`: one JSON object (or a summary line) per text.
pub fn encode_cmd(args: &EncoderArgs, texts: &[String], query: bool, json: bool) -> Result<()> {
    let enc = args
        .open()?
        .context("give --model DIR: the model to encode with")?;
    let kind = if query {
        TextKind::Query
    } else {
        TextKind::Passage
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for (text, e) in texts.iter().zip(encode_all(&enc, &refs, kind)?) {
        if json {
            println!("{}", serde_json::to_string(&embedding_json(&enc, &e))?);
        } else {
            let snippet: String = text.chars().take(40).collect();
            println!(
                "{snippet:?}: {} tokens{}, dense {}, sparse {} terms, colbert {} rows",
                e.tokens,
                if e.truncated { " (truncated)" } else { "" },
                e.dense.len(),
                e.sparse.as_ref().map_or(0, |s| s.indices().len()),
                e.colbert
                    .as_ref()
                    .zip(enc.info().colbert_dim)
                    .map_or(0, |(c, d)| c.len() / d)
            );
        }
    }
    Ok(())
}

fn embedding_json(enc: &Encoder, e: &Embedding) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("dense".into(), serde_json::json!(e.dense));
    if let Some(s) = &e.sparse {
        let map: serde_json::Map<String, serde_json::Value> = s
            .indices()
            .iter()
            .zip(s.values())
            .map(|(i, w)| (i.to_string(), serde_json::json!(w)))
            .collect();
        obj.insert("sparse".into(), map.into());
    }
    if let (Some(c), Some(dim)) = (&e.colbert, enc.info().colbert_dim) {
        let rows: Vec<&[f32]> = c.chunks_exact(dim).collect();
        obj.insert("colbert".into(), serde_json::json!(rows));
    }
    obj.insert("tokens".into(), e.tokens.into());
    obj.insert("truncated".into(), e.truncated.into());
    obj.into()
}

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Download a model repository from the Hugging Face hub (resumable, checksums verified).
    Fetch {
        /// Repository, e.g. BAAI/bge-m3.
        repo: String,
        /// Target directory.
        #[arg(long)]
        to: PathBuf,
        /// Branch, tag or commit.
        #[arg(long, default_value = "main")]
        revision: String,
        /// Glob of repository paths to fetch; repeatable (default: tokenizer, config, ONNX
        /// files, BGE-M3 heads, pooling config).
        #[arg(long)]
        include: Vec<String>,
        /// Hub address (default: HF_ENDPOINT, else https://huggingface.co).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Load a model directory and print its layout and dimensions.
    Info {
        #[command(flatten)]
        encoder: EncoderArgs,
    },
}

pub fn model_cmd(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Fetch {
            repo,
            to,
            revision,
            include,
            endpoint,
        } => fetch_cmd(&repo, &to, revision, include, endpoint),
        ModelCommand::Info { encoder } => {
            let enc = encoder.open()?.context("give --model DIR")?;
            let info = enc.info();
            println!("layout       {}", info.layout.as_str());
            println!("onnx         {}", info.onnx.display());
            println!("dense        {}", info.dense_dim);
            println!("sparse       {}", info.sparse);
            match info.colbert_dim {
                Some(d) => println!("colbert      {d}"),
                None => println!("colbert      none"),
            }
            if let Some(p) = info.pooling {
                println!("pooling      {p:?}");
            }
            println!("max length   {}", info.max_length);
            if let Some(p) = hybridb::loaded_runtime() {
                println!("onnxruntime  {}", p.display());
            }
            Ok(())
        }
    }
}

fn fetch_cmd(
    repo: &str,
    to: &Path,
    revision: String,
    include: Vec<String>,
    endpoint: Option<String>,
) -> Result<()> {
    let mut opts = FetchOptions {
        revision,
        ..FetchOptions::default()
    };
    if !include.is_empty() {
        opts.include = include;
    }
    if let Some(e) = endpoint {
        opts.endpoint = e;
    }
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "{msg:30!} {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    )?);
    let mut total_done = 0u64;
    let mut file_done = 0u64;
    let files = fetch::fetch(repo, to, &opts, &mut |ev| match ev {
        FetchEvent::Listed { bytes, .. } => bar.set_length(bytes),
        FetchEvent::Start { path, offset, .. } => {
            bar.set_message(path.to_string());
            file_done = offset;
            bar.set_position(total_done + offset);
        }
        FetchEvent::Progress { done, .. } => {
            file_done = done;
            bar.set_position(total_done + done);
        }
        FetchEvent::Done { .. } => {
            total_done += file_done;
            file_done = 0;
        }
    })
    .with_context(|| format!("fetching {repo} into {}", to.display()))?;
    bar.finish_and_clear();
    let (skipped, fetched): (Vec<_>, Vec<_>) = files.iter().partition(|f| f.skipped);
    let bytes: u64 = fetched.iter().map(|f| f.size).sum();
    println!(
        "{repo}: {} files downloaded ({bytes} bytes), {} already present and verified, in {}",
        fetched.len(),
        skipped.len(),
        to.display()
    );
    Ok(())
}
