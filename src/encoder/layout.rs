//! What a model directory holds: the files the encoder reads, found before anything is loaded.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Pooling of a dense-only model's token states into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first ([CLS]) token's state.
    Cls,
    /// The mean of the non-padding tokens' states.
    Mean,
}

impl std::str::FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            other => Err(Error::invalid(format!(
                "unknown pooling {other:?} (expected cls or mean)"
            ))),
        }
    }
}

/// The files of a model directory.
#[derive(Debug)]
pub(crate) struct ModelFiles {
    pub(crate) tokenizer: PathBuf,
    pub(crate) onnx: PathBuf,
    /// `sparse_linear.safetensors` and `colbert_linear.safetensors`, when both are present.
    pub(crate) heads: Option<(PathBuf, PathBuf)>,
    /// BGE-M3 heads present only as PyTorch `.pt` files, which are not read.
    pub(crate) torch_heads: bool,
    /// The sentence-transformers pooling named in `1_Pooling/config.json`.
    pub(crate) pooling: Option<Pooling>,
    /// Longest input the position embeddings allow, from `config.json`.
    pub(crate) position_limit: Option<usize>,
}

/// Lists a directory for error messages: "a, b/, c".
fn listing(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let mut n = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() {
                        n.push('/');
                    }
                    n
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

/// `name` in `dir` or in `dir/onnx`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join("onnx").join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

fn find_onnx(dir: &Path) -> Result<Option<PathBuf>> {
    if let Some(p) = find(dir, "model.onnx") {
        return Ok(Some(p));
    }
    let mut all = Vec::new();
    for d in [dir.to_path_buf(), dir.join("onnx")] {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_file() && p.extension().is_some_and(|x| x == "onnx") {
                all.push(p);
            }
        }
    }
    all.sort();
    match all.len() {
        0 => Ok(None),
        1 => Ok(all.pop()),
        _ => Err(Error::Model(format!(
            "{} holds several ONNX files ({}); keep one, or name the one to use model.onnx",
            dir.display(),
            all.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Model(format!("{} is not valid JSON: {e}", path.display())))
}

/// Reads `1_Pooling/config.json` as sentence-transformers writes it.
fn pooling(dir: &Path) -> Result<Option<Pooling>> {
    let path = dir.join("1_Pooling/config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let v = read_json(&path)?;
    let on = |k: &str| v.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
    if on("pooling_mode_cls_token") {
        Ok(Some(Pooling::Cls))
    } else if on("pooling_mode_mean_tokens") {
        Ok(Some(Pooling::Mean))
    } else {
        Err(Error::Model(format!(
            "{}: only CLS and mean pooling are supported",
            path.display()
        )))
    }
}

/// The longest input allowed by `config.json`'s position embeddings. RoBERTa-family models
/// start positions after the padding index, which costs two slots.
fn position_limit(dir: &Path) -> Result<Option<usize>> {
    let Some(path) = find(dir, "config.json") else {
        return Ok(None);
    };
    let v = read_json(&path)?;
    let Some(max) = v.get("max_position_embeddings").and_then(|m| m.as_u64()) else {
        return Ok(None);
    };
    let roberta = matches!(
        v.get("model_type").and_then(|m| m.as_str()),
        Some("xlm-roberta" | "roberta" | "camembert")
    );
    let offset = if roberta { 2 } else { 0 };
    Ok(Some((max as usize).saturating_sub(offset)))
}

impl ModelFiles {
    pub(crate) fn find(dir: &Path) -> Result<ModelFiles> {
        if !dir.is_dir() {
            return Err(Error::Model(format!(
                "model directory {} does not exist",
                dir.display()
            )));
        }
        let missing = |what: &str| {
            Error::Model(format!(
                "{} is not a model directory: {what} (it holds {}). Expected tokenizer.json and \
                 an ONNX model, in the directory or in onnx/",
                dir.display(),
                listing(dir)
            ))
        };
        let tokenizer = find(dir, "tokenizer.json").ok_or_else(|| missing("no tokenizer.json"))?;
        let onnx = find_onnx(dir)?.ok_or_else(|| missing("no .onnx file"))?;
        let sparse = find(dir, "sparse_linear.safetensors");
        let colbert = find(dir, "colbert_linear.safetensors");
        let heads = match (sparse, colbert) {
            (Some(s), Some(c)) => Some((s, c)),
            (None, None) => None,
            (s, _) => {
                return Err(Error::Model(format!(
                    "{} has {} but not {}; BGE-M3 heads come as a pair",
                    dir.display(),
                    if s.is_some() {
                        "sparse_linear.safetensors"
                    } else {
                        "colbert_linear.safetensors"
                    },
                    if s.is_some() {
                        "colbert_linear.safetensors"
                    } else {
                        "sparse_linear.safetensors"
                    }
                )));
            }
        };
        let torch_heads = heads.is_none()
            && (find(dir, "sparse_linear.pt").is_some()
                || find(dir, "colbert_linear.pt").is_some());
        Ok(ModelFiles {
            tokenizer,
            onnx,
            heads,
            torch_heads,
            pooling: pooling(dir)?,
            position_limit: position_limit(dir)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_was_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = ModelFiles::find(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");

        std::fs::write(dir.path().join("weights.bin"), b"x").unwrap();
        let e = ModelFiles::find(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("no tokenizer.json") && e.contains("weights.bin"),
            "{e}"
        );

        std::fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
        let e = ModelFiles::find(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no .onnx file"), "{e}");

        std::fs::create_dir(dir.path().join("onnx")).unwrap();
        std::fs::write(dir.path().join("onnx/a.onnx"), b"x").unwrap();
        std::fs::write(dir.path().join("b.onnx"), b"x").unwrap();
        let e = ModelFiles::find(dir.path()).unwrap_err().to_string();
        assert!(e.contains("several ONNX files"), "{e}");

        std::fs::remove_file(dir.path().join("b.onnx")).unwrap();
        std::fs::write(dir.path().join("sparse_linear.safetensors"), b"x").unwrap();
        let e = ModelFiles::find(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not colbert_linear.safetensors"), "{e}");

        std::fs::write(dir.path().join("colbert_linear.safetensors"), b"x").unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            br#"{"model_type": "xlm-roberta", "max_position_embeddings": 8194}"#,
        )
        .unwrap();
        let f = ModelFiles::find(dir.path()).unwrap();
        assert_eq!(f.onnx, dir.path().join("onnx/a.onnx"));
        assert!(f.heads.is_some());
        assert_eq!(f.position_limit, Some(8192));
        assert_eq!(f.pooling, None);
    }
}
