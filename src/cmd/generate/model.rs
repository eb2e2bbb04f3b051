//! Which model blob `generate` and `bench` use (`--model`, `$BRATS_LDM_MODEL`, else the shipped
//! default found beside the executable or in the source tree), opening it with its path in every
//! error, and its checksum as manifests and headers record it.

use anyhow::{bail, Context};
use ldm_weights::Blob;
use std::path::{Path, PathBuf};

/// File name of the shipped default model, and where it lives in the source tree.
pub const DEFAULT_MODEL_FILE: &str = "brats-ldm-default.blob";
pub const DEFAULT_MODEL_DIR: &str = "weights/default";
/// Environment variable that points at a model blob when `--model` is not given.
pub const MODEL_ENV: &str = "BRATS_LDM_MODEL";

/// Resolves `--model`, or finds the shipped default model.
pub fn resolve_model(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(MODEL_ENV) {
        return Ok(PathBuf::from(p));
    }
    let candidates = default_model_candidates();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "no --model given and the default model {DEFAULT_MODEL_DIR}/{DEFAULT_MODEL_FILE} was not found \
         (looked in: {}); the default model is made by `brats-ldm train` and shipped in the source tree's \
         {DEFAULT_MODEL_DIR}/; pass --model BLOB (e.g. a blob made by `brats-ldm convert`) or set {MODEL_ENV}",
        looked.join(", ")
    )
}

/// Where the shipped default model may be: beside the executable (installed layouts), above it
/// (a build inside a checkout: target/<profile>/brats-ldm), and in this crate's source tree.
pub fn default_model_candidates() -> Vec<PathBuf> {
    let rel = Path::new(DEFAULT_MODEL_DIR).join(DEFAULT_MODEL_FILE);
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(DEFAULT_MODEL_FILE));
        out.push(dir.join("../share/brats-ldm").join(DEFAULT_MODEL_FILE));
        for ancestor in dir.ancestors().take(4) {
            out.push(ancestor.join(&rel));
        }
    }
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel));
    let mut unique: Vec<PathBuf> = Vec::with_capacity(out.len());
    for p in out {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    unique
}

/// Opens and validates a blob, naming the file in every error.
pub fn open_model(path: &Path) -> anyhow::Result<Blob> {
    Blob::open(path).with_context(|| format!("cannot load model {}", path.display()))
}

/// Hex form of a blob checksum as recorded in manifests and headers.
pub fn checksum_hex(blob: &Blob) -> String {
    format!("{:016x}", blob.checksum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_model_wins_and_missing_default_says_where_it_comes_from() {
        let p = resolve_model(Some(Path::new("/x/m.blob"))).unwrap();
        assert_eq!(p, PathBuf::from("/x/m.blob"));
        let candidates = default_model_candidates();
        assert!(candidates
            .iter()
            .any(|c| c.ends_with("weights/default/brats-ldm-default.blob")));
    }
}
