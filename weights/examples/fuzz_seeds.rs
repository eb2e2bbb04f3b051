//! Writes a few small valid blobs (decoder-only and decoder + UNet, each dtype) into a directory,
//! as seeds for the cargo-fuzz target `fuzz/fuzz_targets/blob_reader.rs`.
//!
//! Run: `cargo run -p ldm-weights --example fuzz_seeds -- fuzz/corpus/blob_reader`

use std::path::PathBuf;

use ldm_weights::*;

fn config(with_unet: bool) -> ModelConfig {
    let mut cfg = ModelConfig::bundle();
    cfg.encoder = None;
    cfg.decoder = Some(DecoderConfig {
        latent_channels: 2,
        num_channels: vec![2],
        num_res_blocks: vec![0],
        out_channels: 1,
        norm_num_groups: 1,
        norm_eps: 1e-6,
    });
    cfg.latent_shape = [2, 2, 2, 2];
    cfg.unet = with_unet.then(|| UnetConfig {
        in_channels: 2,
        out_channels: 2,
        num_channels: vec![1, 2],
        attention_levels: vec![false, true],
        num_head_channels: vec![0, 1],
        num_res_blocks: vec![0, 0],
        norm_num_groups: 1,
        norm_eps: 1e-6,
        attention_output_projection: false,
    });
    cfg
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: fuzz_seeds DIR")?;
    std::fs::create_dir_all(&dir)?;
    for with_unet in [false, true] {
        let cfg = config(with_unet);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let tensors: Vec<TensorData> = expected_tensors(&cfg)
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let v: Vec<f32> = (0..s.numel()).map(|j| ((i * 7 + j) % 13) as f32 / 13.0 - 0.5).collect();
                    TensorData::from_f32(s.name, s.shape, &v, dtype)
                })
                .collect();
            let path = dir.join(format!(
                "seed_{}_{dtype:?}.ldm",
                if with_unet { "unet" } else { "decoder" }
            ));
            write_blob_file(&path, &cfg, &tensors)?;
            println!("{} ({} bytes)", path.display(), std::fs::metadata(&path)?.len());
        }
    }
    Ok(())
}
