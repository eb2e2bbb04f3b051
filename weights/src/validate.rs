//! Consistency checks on a `ModelConfig`: everything a config must satisfy before its tensor list
//! (`names::expected_tensors`) or any model built from it can be trusted.
//!
//! The limits are generous (far beyond the bundle) but finite, so that a hostile header cannot
//! describe a model whose tensor sizes overflow or whose planning would exhaust memory.


use thiserror::Error;

use crate::config::{BetaSchedule, DecoderConfig, EncoderConfig, ModelConfig, SchedulerConfig, UnetConfig};

/// Most levels (resolutions) a network may have.
pub const MAX_LEVELS: usize = 8;
/// Most channels of any layer.
pub const MAX_CHANNELS: u32 = 16_384;
/// Most residual blocks per level.
pub const MAX_RES_BLOCKS: u32 = 64;
/// Largest latent spatial extent along one axis.
pub const MAX_LATENT_DIM: u32 = 4_096;
/// Largest number of training timesteps.
pub const MAX_TRAIN_TIMESTEPS: u32 = 100_000;

/// A config inconsistency, naming the offending field.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("the config holds no network (decoder, encoder and unet are all absent)")]
    NoNetwork,
    #[error("{field} is zero")]
    Zero { field: String },
    #[error("{field} = {value} exceeds the limit {max}")]
    TooLarge { field: String, value: u64, max: u64 },
    #[error("{network}: num_channels is empty (a network needs at least one level)")]
    NoLevels { network: &'static str },
    #[error("{field} has {len} entries but num_channels has {levels}")]
    LevelCountMismatch { field: String, len: usize, levels: usize },
    #[error("{field} = {channels} is not divisible by norm_num_groups = {groups}")]
    GroupsNotDividing { field: String, channels: u32, groups: u32 },
    #[error("{field}: {channels} channels are not divisible by {head_channels} channels per head")]
    HeadChannelsNotDividing {
        field: String,
        channels: u32,
        head_channels: u32,
    },
    #[error("{field} must be finite and {requirement}, found {value}")]
    BadFloat {
        field: String,
        requirement: &'static str,
        value: f32,
    },
    #[error("{field} = {found} does not match latent_shape[0] = {expected}")]
    LatentChannelsMismatch { field: String, found: u32, expected: u32 },
    #[error("latent_shape[{axis}] = {size} is not divisible by 2^(unet levels - 1) = {factor}")]
    LatentNotDivisible { axis: usize, size: u32, factor: u32 },
    #[error("scheduler: beta_start = {start} must be below beta_end = {end}")]
    BetaOrder { start: f32, end: f32 },
    #[error("scheduler: default_steps = {steps} exceeds num_train_timesteps = {train}")]
    TooManySteps { steps: u32, train: u32 },
    #[error("scheduler: {field} = {offset} must be below num_train_timesteps = {train}")]
    StepsOffset { field: &'static str, offset: u32, train: u32 },
    #[error("geometry.orientation must be three letters, one of R/L, A/P, S/I per axis, found {found:?}")]
    BadOrientation { found: String },
}

fn zero(field: impl Into<String>) -> ConfigError {
    ConfigError::Zero { field: field.into() }
}

fn check_range(field: &str, value: u32, max: u32) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(zero(field));
    }
    if value > max {
        return Err(ConfigError::TooLarge {
            field: field.to_string(),
            value: value as u64,
            max: max as u64,
        });
    }
    Ok(())
}

fn check_eps(field: &str, eps: f32) -> Result<(), ConfigError> {
    if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
        return Err(ConfigError::BadFloat {
            field: field.to_string(),
            requirement: "in (0, 1)",
            value: eps,
        });
    }
    Ok(())
}

/// Checks a per-level channel list plus its matching res-block list and group count.
fn check_levels(
    network: &'static str,
    num_channels: &[u32],
    num_res_blocks: &[u32],
    groups: u32,
) -> Result<(), ConfigError> {
    let levels = num_channels.len();
    if levels == 0 {
        return Err(ConfigError::NoLevels { network });
    }
    if levels > MAX_LEVELS {
        return Err(ConfigError::TooLarge {
            field: format!("{network}.num_channels length"),
            value: levels as u64,
            max: MAX_LEVELS as u64,
        });
    }
    if num_res_blocks.len() != levels {
        return Err(ConfigError::LevelCountMismatch {
            field: format!("{network}.num_res_blocks"),
            len: num_res_blocks.len(),
            levels,
        });
    }
    check_range(&format!("{network}.norm_num_groups"), groups, MAX_CHANNELS)?;
    for (i, &c) in num_channels.iter().enumerate() {
        let field = format!("{network}.num_channels[{i}]");
        check_range(&field, c, MAX_CHANNELS)?;
        if c % groups != 0 {
            return Err(ConfigError::GroupsNotDividing {
                field,
                channels: c,
                groups,
            });
        }
    }
    for (i, &r) in num_res_blocks.iter().enumerate() {
        let field = format!("{network}.num_res_blocks[{i}]");
        if r > MAX_RES_BLOCKS {
            return Err(ConfigError::TooLarge {
                field,
                value: r as u64,
                max: MAX_RES_BLOCKS as u64,
            });
        }
    }
    Ok(())
}

impl DecoderConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_levels(
            "decoder",
            &self.num_channels,
            &self.num_res_blocks,
            self.norm_num_groups,
        )?;
        check_range("decoder.latent_channels", self.latent_channels, MAX_CHANNELS)?;
        check_range("decoder.out_channels", self.out_channels, MAX_CHANNELS)?;
        check_eps("decoder.norm_eps", self.norm_eps)
    }
}

impl EncoderConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_levels(
            "encoder",
            &self.num_channels,
            &self.num_res_blocks,
            self.norm_num_groups,
        )?;
        check_range("encoder.in_channels", self.in_channels, MAX_CHANNELS)?;
        check_range("encoder.latent_channels", self.latent_channels, MAX_CHANNELS)?;
        check_eps("encoder.norm_eps", self.norm_eps)
    }
}

impl UnetConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_levels("unet", &self.num_channels, &self.num_res_blocks, self.norm_num_groups)?;
        let levels = self.num_channels.len();
        for (field, len) in [
            ("unet.attention_levels", self.attention_levels.len()),
            ("unet.num_head_channels", self.num_head_channels.len()),
        ] {
            if len != levels {
                return Err(ConfigError::LevelCountMismatch {
                    field: field.to_string(),
                    len,
                    levels,
                });
            }
        }
        check_range("unet.in_channels", self.in_channels, MAX_CHANNELS)?;
        check_range("unet.out_channels", self.out_channels, MAX_CHANNELS)?;
        check_eps("unet.norm_eps", self.norm_eps)?;
        // The time embedding is 4 * C0 wide.
        let c0 = self.num_channels[0];
        if c0.saturating_mul(4) > MAX_CHANNELS {
            return Err(ConfigError::TooLarge {
                field: "unet time embedding (4 * num_channels[0])".to_string(),
                value: c0 as u64 * 4,
                max: MAX_CHANNELS as u64,
            });
        }
        // Attention levels need a head size dividing their channels; the middle block always
        // has attention, with the deepest level's head size.
        for i in 0..levels {
            let needs_heads = self.attention_levels[i] || i + 1 == levels;
            if !needs_heads {
                continue;
            }
            let field = format!("unet.num_head_channels[{i}]");
            let h = self.num_head_channels[i];
            if h == 0 {
                return Err(zero(field));
            }
            let c = self.num_channels[i];
            if !c.is_multiple_of(h) {
                return Err(ConfigError::HeadChannelsNotDividing {
                    field,
                    channels: c,
                    head_channels: h,
                });
            }
        }
        Ok(())
    }
}

impl SchedulerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "scheduler.num_train_timesteps",
            self.num_train_timesteps,
            MAX_TRAIN_TIMESTEPS,
        )?;
        for (field, v) in [
            ("scheduler.beta_start", self.beta_start),
            ("scheduler.beta_end", self.beta_end),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1.0) {
                return Err(ConfigError::BadFloat {
                    field: field.to_string(),
                    requirement: "in (0, 1)",
                    value: v,
                });
            }
        }
        if self.beta_start >= self.beta_end {
            return Err(ConfigError::BetaOrder {
                start: self.beta_start,
                end: self.beta_end,
            });
        }
        match self.beta_schedule {
            BetaSchedule::Sigmoid { sig_range } if !(sig_range.is_finite() && sig_range > 0.0 && sig_range <= 100.0) => {
                return Err(ConfigError::BadFloat {
                    field: "scheduler.beta_schedule.sig_range".into(),
                    requirement: "in (0, 100]",
                    value: sig_range,
                });
            }
            BetaSchedule::Cosine { s } if !(s.is_finite() && (0.0..1.0).contains(&s)) => {
                return Err(ConfigError::BadFloat {
                    field: "scheduler.beta_schedule.s".into(),
                    requirement: "in [0, 1)",
                    value: s,
                });
            }
            _ => {}
        }
        for (field, offset) in [
            ("ddim.steps_offset", self.ddim.steps_offset),
            ("pndm.steps_offset", self.pndm.steps_offset),
        ] {
            if offset >= self.num_train_timesteps {
                return Err(ConfigError::StepsOffset {
                    field,
                    offset,
                    train: self.num_train_timesteps,
                });
            }
        }
        if self.default_steps == 0 {
            return Err(zero("scheduler.default_steps"));
        }
        if self.default_steps > self.num_train_timesteps {
            return Err(ConfigError::TooManySteps {
                steps: self.default_steps,
                train: self.num_train_timesteps,
            });
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Checks every network config, the scheduler, the geometry, and the agreements between them
    /// (latent channels, latent shape divisibility). The first violation found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.decoder.is_none() && self.encoder.is_none() && self.unet.is_none() {
            return Err(ConfigError::NoNetwork);
        }
        let [lat_c, d, h, w] = self.latent_shape;
        check_range("latent_shape[0]", lat_c, MAX_CHANNELS)?;
        for (axis, size) in [(1usize, d), (2, h), (3, w)] {
            check_range(&format!("latent_shape[{axis}]"), size, MAX_LATENT_DIM)?;
        }
        let agree = |field: &str, found: u32| {
            if found == lat_c {
                Ok(())
            } else {
                Err(ConfigError::LatentChannelsMismatch {
                    field: field.to_string(),
                    found,
                    expected: lat_c,
                })
            }
        };
        if let Some(dec) = &self.decoder {
            dec.validate()?;
            agree("decoder.latent_channels", dec.latent_channels)?;
        }
        if let Some(enc) = &self.encoder {
            enc.validate()?;
            agree("encoder.latent_channels", enc.latent_channels)?;
        }
        if let Some(unet) = &self.unet {
            unet.validate()?;
            agree("unet.in_channels", unet.in_channels)?;
            agree("unet.out_channels", unet.out_channels)?;
            let factor = 1u32 << (unet.num_channels.len() - 1);
            for (axis, size) in [(1usize, d), (2, h), (3, w)] {
                if size % factor != 0 {
                    return Err(ConfigError::LatentNotDivisible { axis, size, factor });
                }
            }
        }
        self.scheduler.validate()?;
        if !(self.scale_factor.is_finite() && self.scale_factor > 0.0) {
            return Err(ConfigError::BadFloat {
                field: "scale_factor".to_string(),
                requirement: "positive",
                value: self.scale_factor,
            });
        }
        for (i, &s) in self.geometry.spacing_mm.iter().enumerate() {
            if !(s.is_finite() && s > 0.0) {
                return Err(ConfigError::BadFloat {
                    field: format!("geometry.spacing_mm[{i}]"),
                    requirement: "positive",
                    value: s,
                });
            }
        }
        let [lo, hi] = self.geometry.intensity_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(ConfigError::BadFloat {
                field: "geometry.intensity_range[1]".to_string(),
                requirement: "above intensity_range[0]",
                value: hi,
            });
        }
        if !valid_orientation(&self.geometry.orientation) {
            return Err(ConfigError::BadOrientation {
                found: self.geometry.orientation.clone(),
            });
        }
        Ok(())
    }
}

/// Three letters, one from each of the pairs R/L, A/P, S/I, in any order (e.g. "RAS", "LPS").
fn valid_orientation(code: &str) -> bool {
    let b = code.as_bytes();
    if b.len() != 3 {
        return false;
    }
    let mut seen = [false; 3];
    for &c in b {
        let axis = match c {
            b'R' | b'L' => 0,
            b'A' | b'P' => 1,
            b'S' | b'I' => 2,
            _ => return false,
        };
        if seen[axis] {
            return false;
        }
        seen[axis] = true;
    }
    true
}
