//! Finding and loading the ONNX Runtime shared library.
//!
//! The library is loaded at run time (ort's `load-dynamic`), once per process. It is looked
//! for, in order: the path given in [`EncoderOptions::runtime`](super::EncoderOptions), the
//! `ORT_DYLIB_PATH` environment variable, `$XDG_DATA_HOME/hybridb/onnxruntime/` (default
//! `~/.local/share/hybridb/onnxruntime/`, where `scripts/setup-onnxruntime.sh` installs it),
//! and the directory of the running executable.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::{Error, Result};

/// The onnxruntime release the project is built and tested against (PyPI `onnxruntime`).
pub const ORT_VERSION: &str = "1.31.1";

const HOW_TO_INSTALL: &str = "install it with `scripts/setup-onnxruntime.sh`, or run \
     `pip install onnxruntime==1.31.1` and set ORT_DYLIB_PATH to \
     <site-packages>/onnxruntime/capi/libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<(Environment, PathBuf)> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

fn library_name() -> String {
    if cfg!(target_os = "macos") {
        format!("libonnxruntime.{ORT_VERSION}.dylib")
    } else if cfg!(windows) {
        "onnxruntime.dll".to_string()
    } else {
        format!("libonnxruntime.so.{ORT_VERSION}")
    }
}

/// The default install directory: `$XDG_DATA_HOME/hybridb/onnxruntime`.
pub fn default_runtime_dir() -> Option<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/share"),
    };
    Some(data.join("hybridb/onnxruntime"))
}

/// Candidate library paths, most specific first.
fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    if let Some(d) = default_runtime_dir() {
        out.push(d.join(library_name()));
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.to_path_buf()))
    {
        out.push(d.join(library_name()));
    }
    out
}

/// Loads onnxruntime (first call only) and returns the process-wide environment.
pub(crate) fn environment(explicit: Option<&Path>) -> Result<&'static Environment> {
    if let Some((env, _)) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((env, _)) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let tried = candidates(explicit);
    let Some(path) = tried.iter().find(|p| p.is_file()) else {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Runtime(format!(
            "the ONNX Runtime library was not found (looked for {}); {HOW_TO_INSTALL}",
            if list.is_empty() {
                "nothing: no HOME and no ORT_DYLIB_PATH".to_string()
            } else {
                list.join(", ")
            }
        )));
    };
    let builder = ort::init_from(path).map_err(|e| {
        Error::Runtime(format!(
            "could not load ONNX Runtime from {}: {e}; {HOW_TO_INSTALL}",
            path.display()
        ))
    })?;
    let env = builder.with_name("hybridb").build().map_err(|e| {
        Error::Runtime(format!(
            "could not start ONNX Runtime from {}: {e}",
            path.display()
        ))
    })?;
    Ok(&ENVIRONMENT.get_or_init(|| (env, path.clone())).0)
}

/// The library path in use, once loaded.
pub fn loaded_runtime() -> Option<&'static Path> {
    ENVIRONMENT.get().map(|(_, p)| p.as_path())
}
