//! The `network_def` section: MONAI's `DiffusionModelUNet` constructor arguments, validated into
//! the UNet's configuration.

use ldm_weights::UnetConfig;
use serde::Deserialize;

use super::{check_common, invalid, ArchError, PerLevel};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkDef {
    #[serde(rename = "_target_")]
    _target: Option<String>,
    spatial_dims: Option<u32>,
    in_channels: u32,
    out_channels: u32,
    /// monai >= 1.4 calls it `channels`.
    #[serde(alias = "channels")]
    num_channels: Vec<u32>,
    attention_levels: Vec<bool>,
    num_head_channels: PerLevel<u32>,
    num_res_blocks: Option<PerLevel<u32>>,
    norm_num_groups: Option<u32>,
    norm_eps: Option<f32>,
    /// Not a MONAI argument: whether attention applies `proj_attn` (generative 0.2.3: never).
    attention_output_projection: Option<bool>,
    /// monai >= 1.4's name for the same switch (its default there is true).
    include_fc: Option<bool>,
    /// monai >= 1.4: one fused q/k/v linear; not supported (checkpoints must hold to_q/to_k/to_v).
    use_combined_linear: Option<bool>,
    resblock_updown: Option<bool>,
    with_conditioning: Option<bool>,
    transformer_num_layers: Option<u32>,
    cross_attention_dim: Option<serde_json::Value>,
    num_class_embeds: Option<serde_json::Value>,
    upcast_attention: Option<bool>,
    use_flash_attention: Option<bool>,
    dropout_cattn: Option<f32>,
}

const NET: &str = "network_def";

impl NetworkDef {
    pub(super) fn validate(self) -> Result<UnetConfig, ArchError> {
        let levels = self.num_channels.len();
        let groups = self.norm_num_groups.unwrap_or(32);
        let eps = self.norm_eps.unwrap_or(1e-6);
        check_common(NET, self.spatial_dims, &self.num_channels, groups, eps)?;
        if self.attention_levels.len() != levels {
            return Err(invalid(
                NET,
                format!(
                    "attention_levels has {} entries but num_channels has {levels}",
                    self.attention_levels.len()
                ),
            ));
        }
        if self.resblock_updown == Some(true) {
            return Err(invalid(NET, "resblock_updown is not supported"));
        }
        if self.with_conditioning == Some(true)
            || self
                .cross_attention_dim
                .as_ref()
                .is_some_and(|v| !v.is_null())
            || self.num_class_embeds.as_ref().is_some_and(|v| !v.is_null())
        {
            return Err(invalid(NET, "conditioning (with_conditioning, cross_attention_dim, num_class_embeds) is not supported"));
        }
        if self.transformer_num_layers.is_some_and(|n| n != 1) {
            return Err(invalid(
                NET,
                "transformer_num_layers only matters with conditioning, which is not supported",
            ));
        }
        let _ = (
            self.upcast_attention,
            self.use_flash_attention,
            self.dropout_cattn,
        );
        if self.use_combined_linear == Some(true) {
            return Err(invalid(
                NET,
                "use_combined_linear (fused qkv) is not supported",
            ));
        }
        let projection = match (self.attention_output_projection, self.include_fc) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    NET,
                    "attention_output_projection and include_fc disagree",
                ));
            }
            (a, b) => a.or(b).unwrap_or(false),
        };
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(invalid(
                NET,
                "in_channels and out_channels must be positive",
            ));
        }
        let mut heads = self
            .num_head_channels
            .expand(levels, NET, "num_head_channels")?;
        // The middle block always has attention at the deepest level's channels.
        for (i, h) in heads.iter_mut().enumerate() {
            let needs = self.attention_levels[i] || i + 1 == levels;
            if !needs {
                *h = 0;
                continue;
            }
            let c = self.num_channels[i];
            if *h == 0 || !c.is_multiple_of(*h) {
                return Err(invalid(
                    NET,
                    format!("num_head_channels {h} at level {i} does not divide its {c} channels"),
                ));
            }
        }
        let res = self.num_res_blocks.unwrap_or(PerLevel::One(2)).expand(
            levels,
            NET,
            "num_res_blocks",
        )?;
        Ok(UnetConfig {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            num_channels: self.num_channels,
            attention_levels: self.attention_levels,
            num_head_channels: heads,
            num_res_blocks: res,
            norm_num_groups: groups,
            norm_eps: eps,
            attention_output_projection: projection,
        })
    }
}
