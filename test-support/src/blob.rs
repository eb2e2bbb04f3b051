//! Model blobs written from the fixture checkpoints (autoencoder and UNet safetensors) with the
//! weights crate's writer, holding exactly the tensors a config needs.

use crate::files::{monai, read_safetensors, Tensors};
use ldm_weights::{expected_tensors, write_blob, write_blob_file, Blob, DType, ModelConfig, TensorData};
use std::path::Path;

/// Every tensor `cfg` needs (names per `expected_tensors`), taken from the fixture checkpoints
/// by its unprefixed key and stored as `dtype`. A missing or mis-shaped tensor fails the test.
pub fn fixture_tensors(cfg: &ModelConfig, dtype: DType) -> Vec<TensorData> {
    let files: [(&str, Tensors); 2] = [
        ("autoencoder.", read_safetensors(&monai("autoencoder/autoencoder.safetensors"))),
        ("unet.", read_safetensors(&monai("unet/unet.safetensors"))),
    ];
    expected_tensors(cfg)
        .into_iter()
        .map(|spec| {
            let (shape, data) = files
                .iter()
                .find_map(|(prefix, t)| spec.name.strip_prefix(prefix).map(|key| t.get(key)))
                .unwrap_or_else(|| panic!("unexpected tensor name {}", spec.name))
                .unwrap_or_else(|| panic!("fixture lacks {}", spec.name));
            assert_eq!(shape, &spec.shape, "{}", spec.name);
            TensorData::from_f32(spec.name, spec.shape, data, dtype)
        })
        .collect()
}

/// An in-memory blob of `cfg` with the fixture tensors stored as `dtype`.
pub fn fixture_blob(cfg: &ModelConfig, dtype: DType) -> Blob {
    let mut bytes = Vec::new();
    write_blob(&mut bytes, cfg, &fixture_tensors(cfg, dtype)).unwrap_or_else(|e| panic!("writing the fixture blob: {e}"));
    Blob::from_bytes(bytes).unwrap_or_else(|e| panic!("reading the fixture blob back: {e}"))
}

/// Writes the f32 blob of `cfg` with the fixture tensors to `path`.
pub fn write_fixture_blob(path: &Path, cfg: &ModelConfig) {
    write_blob_file(path, cfg, &fixture_tensors(cfg, DType::F32)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture_config;

    #[test]
    fn blob_holds_every_expected_tensor() {
        let cfg = fixture_config();
        let blob = fixture_blob(&cfg, DType::F32);
        assert_eq!(blob.tensors().len(), expected_tensors(&cfg).len());
    }
}
