//! The `autoencoder_def` section: MONAI's `AutoencoderKL` constructor arguments, validated into
//! the decoder's and encoder's configurations.

use ldm_weights::{DecoderConfig, EncoderConfig};
use serde::Deserialize;

use super::{check_common, invalid, ArchError, PerLevel};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AutoencoderDef {
    #[serde(rename = "_target_")]
    _target: Option<String>,
    spatial_dims: Option<u32>,
    in_channels: Option<u32>,
    out_channels: Option<u32>,
    latent_channels: u32,
    /// monai >= 1.4 calls it `channels`.
    #[serde(alias = "channels")]
    num_channels: Vec<u32>,
    num_res_blocks: Option<PerLevel<u32>>,
    norm_num_groups: Option<u32>,
    norm_eps: Option<f32>,
    attention_levels: Option<Vec<bool>>,
    with_encoder_nonlocal_attn: Option<bool>,
    with_decoder_nonlocal_attn: Option<bool>,
    use_flash_attention: Option<bool>,
    use_checkpointing: Option<bool>,
    /// monai >= 1.4's name for `use_checkpointing`.
    use_checkpoint: Option<bool>,
    use_convtranspose: Option<bool>,
    /// monai >= 1.4 attention options; attention inside the autoencoder is refused anyway.
    include_fc: Option<bool>,
    use_combined_linear: Option<bool>,
}

const AE: &str = "autoencoder_def";

impl AutoencoderDef {
    pub(super) fn validate(self) -> Result<(DecoderConfig, EncoderConfig), ArchError> {
        let levels = self.num_channels.len();
        let groups = self.norm_num_groups.unwrap_or(32);
        let eps = self.norm_eps.unwrap_or(1e-6);
        check_common(AE, self.spatial_dims, &self.num_channels, groups, eps)?;
        if self
            .attention_levels
            .as_deref()
            .is_some_and(|a| a.iter().any(|&x| x))
        {
            return Err(invalid(AE, "attention inside the autoencoder is not supported (attention_levels must be all false)"));
        }
        if self.with_encoder_nonlocal_attn == Some(true)
            || self.with_decoder_nonlocal_attn == Some(true)
        {
            return Err(invalid(
                AE,
                "non-local attention inside the autoencoder is not supported",
            ));
        }
        if self.use_convtranspose == Some(true) {
            return Err(invalid(
                AE,
                "use_convtranspose is not supported (the bundle upsamples by nearest + conv)",
            ));
        }
        let _ = (
            self.use_flash_attention,
            self.use_checkpointing,
            self.use_checkpoint,
            self.include_fc,
            self.use_combined_linear,
        );
        if let Some(a) = &self.attention_levels {
            if a.len() != levels {
                return Err(invalid(
                    AE,
                    format!(
                        "attention_levels has {} entries but num_channels has {levels}",
                        a.len()
                    ),
                ));
            }
        }
        if self.latent_channels == 0 {
            return Err(invalid(AE, "latent_channels is 0"));
        }
        let res =
            self.num_res_blocks
                .unwrap_or(PerLevel::One(2))
                .expand(levels, AE, "num_res_blocks")?;
        let in_channels = self.in_channels.unwrap_or(1);
        let out_channels = self.out_channels.unwrap_or(1);
        if in_channels == 0 || out_channels == 0 {
            return Err(invalid(AE, "in_channels and out_channels must be positive"));
        }
        Ok((
            DecoderConfig {
                latent_channels: self.latent_channels,
                num_channels: self.num_channels.clone(),
                num_res_blocks: res.clone(),
                out_channels,
                norm_num_groups: groups,
                norm_eps: eps,
            },
            EncoderConfig {
                in_channels,
                num_channels: self.num_channels,
                num_res_blocks: res,
                latent_channels: self.latent_channels,
                norm_num_groups: groups,
                norm_eps: eps,
            },
        ))
    }
}
