//! Test-only: the small two-level decoder + UNet (with attention) that the backends' unit tests
//! build from random weights, defined once.

use ldm_weights::{DecoderConfig, ModelConfig, UnetConfig};

/// Decoder [8, 16] (latent 4) and UNet [16, 32] with attention at level 2, at `latent_shape`.
pub(crate) fn small_model_config(latent_shape: [u32; 4]) -> ModelConfig {
    let mut cfg = ModelConfig::bundle();
    cfg.encoder = None;
    cfg.decoder = Some(DecoderConfig {
        latent_channels: 4,
        num_channels: vec![8, 16],
        num_res_blocks: vec![1, 1],
        out_channels: 1,
        norm_num_groups: 4,
        norm_eps: 1e-6,
    });
    cfg.unet = Some(UnetConfig {
        in_channels: 4,
        out_channels: 4,
        num_channels: vec![16, 32],
        attention_levels: vec![false, true],
        num_head_channels: vec![0, 16],
        num_res_blocks: vec![1, 1],
        norm_num_groups: 8,
        norm_eps: 1e-6,
        attention_output_projection: false,
    });
    cfg.latent_shape = latent_shape;
    cfg
}
